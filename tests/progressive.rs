//! Progressive delivery on the local stack: `alb-weights` canary and linear runs with the listener
//! weights read back from the emulated ELBv2 at every step, alarm gates (EventBridge events, the
//! direct alarm action, the reconcile loop's DescribeAlarms), approval, promotion and the
//! one-in-flight policy. Bake times run on a manual clock. Needs the emulators: `infra/local/test`.

use chrono::Duration;
use flightdeck::deployment::{Deployment, Status};
use flightdeck::handlers::{self, on_alarm, on_image_push, shifter};
use flightdeck::ports::{Clock, DeploymentStore};
use flightdeck_local::{
    AlbFixture, LocalPorts, ManualClock, Result, Stack, alarm_event, image_push, local_sdk_config,
};
use serde_json::{Value, json};

const STAGING: &str = "staging";

struct Alb {
    stack: Stack,
    /// Alarms are account-wide in the emulator, so each test gates on its own.
    alarm: String,
    alb: AlbFixture,
    clock: ManualClock,
    ports: LocalPorts<ManualClock>,
}

async fn alb(name: &str, strategy: Value, edit: impl FnOnce(&mut Value)) -> Result<Alb> {
    let unique = format!(
        "{name}-{}",
        &flightdeck_local::hex64(&format!("{name}{:?}", std::time::SystemTime::now()))[..6]
    );
    let stack = Stack::create(local_sdk_config().await?, &unique, "checkout-web-blue", 2).await?;
    let alb = stack.add_alb("checkout-web-green").await?;
    let alarm = format!("{unique}-5xx");
    stack.put_alarm(&alarm).await?;
    stack
        .register_alb("checkout-web.staging.json", STAGING, &alb, |doc| {
            doc["strategy"] = strategy;
            doc["promote_to"] = Value::Null;
            doc["gates"]["alarms"] = json!([alarm.clone()]);
            edit(doc);
        })
        .await?;
    let clock = ManualClock::starting_now();
    let ports = stack.ports_with_clock(clock.clone());
    Ok(Alb {
        stack,
        alarm,
        alb,
        clock,
        ports,
    })
}

impl Alb {
    async fn push(&self, tag: &str) -> Result<String> {
        let outcome = on_image_push::handle(&self.ports, image_push("checkout-web", tag)?).await?;
        // The idle colour's tasks come up and ECS registers them in its target group.
        self.stack
            .targets_up(&self.alb.green_target_group_arn, 2)
            .await?;
        Ok(outcome
            .deployments
            .first()
            .ok_or("no deployment")?
            .id
            .clone())
    }

    async fn shift(&self) -> Result<()> {
        shifter::handle(&self.ports, &self.stack.alarms()).await?;
        Ok(())
    }

    async fn status(&self, id: &str) -> Result<Status> {
        Ok(self.stack.deployment(id).await?.status())
    }

    async fn weights(&self) -> Result<(i32, i32)> {
        self.stack.rule_weights(&self.alb).await
    }

    fn weight_changes(&self) -> usize {
        self.ports.traffic.calls().1
    }

    async fn alert_types(&self) -> Result<Vec<String>> {
        Ok(self
            .stack
            .received_alerts()
            .await?
            .into_iter()
            .map(|a| a.event_type)
            .collect())
    }
}

#[tokio::test]
async fn a_canary_moves_the_listener_weights_step_by_step_and_holds_each_bake() -> Result<()> {
    let t = alb(
        "canary",
        json!({"type": "canary", "steps": [10, 50, 100], "bake_minutes": 5}),
        |_| {},
    )
    .await?;
    let id = t.push("v2.0.0").await?;
    let d = t.stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::Deploying);
    assert_eq!(
        t.weights().await?,
        (100, 0),
        "nothing shifts before the green tasks run"
    );
    let (green_desired, green_td) = t.stack.service_state("checkout-web-green").await?;
    assert_eq!(green_desired, 2, "green scaled to blue's desired count");
    assert_eq!(Some(green_td), d.rollout.new_task_definition);

    t.shift().await?;
    assert_eq!(t.status(&id).await?, Status::Shifting);
    assert_eq!(t.weights().await?, (90, 10));
    // The reconcile loop run again in the same minute changes nothing: no ELBv2 calls at all
    // (reads included), no alerts.
    let calls = t.ports.traffic.calls();
    let alerts = t.alert_types().await?;
    t.shift().await?;
    assert_eq!(t.ports.traffic.calls(), calls);
    assert!(t.alert_types().await?.is_empty());
    assert_eq!(alerts, ["deployment.started"]);

    t.clock.advance(Duration::minutes(4));
    t.shift().await?;
    assert_eq!(t.weights().await?, (90, 10), "bake of 5 minutes not over");
    t.clock.advance(Duration::minutes(1));
    t.shift().await?;
    assert_eq!(t.weights().await?, (50, 50));
    t.clock.advance(Duration::minutes(5));
    t.shift().await?;
    assert_eq!(t.weights().await?, (0, 100));
    assert_eq!(
        t.status(&id).await?,
        Status::Shifting,
        "the last step bakes too"
    );
    t.clock.advance(Duration::minutes(5));
    t.shift().await?;
    let d = t.stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::Succeeded);
    assert_eq!(d.traffic_percent, 100);
    assert_eq!(t.alert_types().await?, ["deployment.succeeded"]);
    assert_eq!(
        t.stack.service_state("checkout-web-blue").await?.0,
        2,
        "old colour kept for 5 minutes"
    );

    t.clock.advance(Duration::minutes(5));
    t.shift().await?;
    assert_eq!(
        t.stack.service_state("checkout-web-blue").await?.0,
        0,
        "old colour scaled down"
    );
    assert!(t.stack.deployment(&id).await?.traffic.unwrap().scaled_down);
    assert_eq!(t.weight_changes(), 3);
    Ok(())
}

#[tokio::test]
async fn a_linear_run_adds_the_step_percent_every_interval() -> Result<()> {
    let t = alb(
        "linear",
        json!({"type": "linear", "step_percent": 40, "interval_minutes": 2}),
        |_| {},
    )
    .await?;
    let id = t.push("v2.1.0").await?;
    let mut seen = Vec::new();
    for _ in 0..4 {
        t.shift().await?;
        seen.push(t.weights().await?);
        t.clock.advance(Duration::minutes(2));
    }
    assert_eq!(seen, [(60, 40), (20, 80), (0, 100), (0, 100)]);
    assert_eq!(t.status(&id).await?, Status::Succeeded);
    Ok(())
}

#[tokio::test]
async fn an_alarm_puts_all_traffic_back_on_stable_in_one_call_and_alerts_once() -> Result<()> {
    let t = alb(
        "alarm",
        json!({"type": "canary", "steps": [10, 100], "bake_minutes": 5}),
        |_| {},
    )
    .await?;
    let id = t.push("v2.2.0").await?;
    t.shift().await?;
    assert_eq!(t.weights().await?, (90, 10));
    let before = t.weight_changes();

    let reason = "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0)";
    t.stack.set_alarm(&t.alarm, "ALARM", reason).await?;
    let event = alarm_event(
        "cloudwatch-alarm-state-change.json",
        &t.alarm,
        "ALARM",
        reason,
    )?;
    on_alarm::handle(&t.ports, event.clone()).await?;

    assert_eq!(t.weights().await?, (100, 0));
    assert_eq!(
        t.weight_changes(),
        before + 1,
        "one ELBv2 call puts everything back"
    );
    let d = t.stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RolledBack);
    assert!(d.reason.clone().unwrap_or_default().contains(&t.alarm));
    assert!(
        d.events
            .iter()
            .any(|e| e.actor.as_deref() == Some("aws.cloudwatch")
                && e.reason.as_deref().unwrap_or("").contains(&t.alarm))
    );
    assert_eq!(
        t.stack.service_state("checkout-web-green").await?.0,
        0,
        "new colour scaled in"
    );

    // Redelivered, and the reconcile loop seeing the alarm too: nothing more happens.
    on_alarm::handle(&t.ports, event).await?;
    t.shift().await?;
    assert_eq!(t.weight_changes(), before + 1);
    let alerts = t.stack.received_alerts().await?;
    let types: Vec<&str> = alerts.iter().map(|a| a.event_type.as_str()).collect();
    assert_eq!(types, ["deployment.started", "deployment.rolled_back"]);
    assert!(
        alerts[1].document["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&t.alarm)
    );
    Ok(())
}

#[tokio::test]
async fn the_reconcile_loop_rolls_back_on_an_alarm_it_reads_itself() -> Result<()> {
    let t = alb(
        "loop",
        json!({"type": "canary", "steps": [10, 100], "bake_minutes": 5}),
        |_| {},
    )
    .await?;
    let id = t.push("v2.3.0").await?;
    t.shift().await?;
    t.stack
        .set_alarm(&t.alarm, "ALARM", "latency above 800 ms")
        .await?;
    t.shift().await?;
    assert_eq!(t.weights().await?, (100, 0));
    let d = t.stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RolledBack);
    assert!(
        d.reason
            .unwrap_or_default()
            .contains("latency above 800 ms")
    );
    Ok(())
}

#[tokio::test]
async fn composite_and_metric_math_alarms_are_handled() -> Result<()> {
    let t = alb(
        "alarms",
        json!({"type": "canary", "steps": [10, 100], "bake_minutes": 5}),
        |doc| {
            let own = doc["gates"]["alarms"][0]
                .as_str()
                .unwrap_or_default()
                .to_string();
            doc["gates"]["alarms"] = json!([own.clone(), own.replace("-5xx", "-health")]);
        },
    )
    .await?;
    let health = t.alarm.replace("-5xx", "-health");
    // A composite alarm that gates the deployment rolls it back.
    let id = t.push("v2.4.0").await?;
    t.shift().await?;
    let composite = alarm_event(
        "cloudwatch-alarm-composite.json",
        &health,
        "ALARM",
        "the 5xx alarm went to ALARM",
    )?;
    on_alarm::handle(&t.ports, composite).await?;
    assert_eq!(t.status(&id).await?, Status::RolledBack);
    assert_eq!(t.weights().await?, (100, 0));
    t.stack.received_alerts().await?;

    // A metric-math alarm on the service's target group that gates nothing: alarm.fired, naming
    // the most recent deployment as the suspect, once however often it is delivered.
    let mut math = alarm_event(
        "cloudwatch-alarm-metric-math.json",
        "checkout-web-error-rate",
        "ALARM",
        "error rate 8.3% > 2%",
    )?;
    let tg = t
        .alb
        .blue_target_group_arn
        .rsplit_once(':')
        .map(|(_, r)| r.to_string())
        .unwrap_or_default();
    for m in math["detail"]["configuration"]["metrics"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if m.get("metricStat").is_some() {
            m["metricStat"]["metric"]["dimensions"]["TargetGroup"] = json!(tg);
        }
    }
    on_alarm::handle(&t.ports, math.clone()).await?;
    on_alarm::handle(&t.ports, math).await?;
    let alerts = t.stack.received_alerts().await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].event_type, "alarm.fired");
    assert_eq!(alerts[0].document["deployment_id"], json!(id));
    let reason = alerts[0].document["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains("checkout-web-error-rate") && reason.contains("ago"),
        "{reason}"
    );

    // OK transitions are recorded, not alerted; alarms on unmanaged services are skipped.
    let ok = alarm_event(
        "cloudwatch-alarm-state-change.json",
        &t.alarm,
        "OK",
        "back to normal",
    )?;
    on_alarm::handle(&t.ports, ok).await?;
    let mut foreign = alarm_event(
        "cloudwatch-alarm-state-change.json",
        "someone-elses",
        "ALARM",
        "x",
    )?;
    foreign["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] =
        json!({"ClusterName": "other", "ServiceName": "other"});
    let skipped = on_alarm::handle(&t.ports, foreign).await?;
    assert!(
        skipped
            .skipped
            .unwrap_or_default()
            .contains("not on a managed service")
    );
    // The direct alarm-action payload is accepted too.
    let direct = alarm_event(
        "cloudwatch-alarm-action-direct.json",
        &t.alarm,
        "OK",
        "fine",
    )?;
    on_alarm::handle(&t.ports, direct).await?;
    assert!(t.stack.received_alerts().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn success_promotes_to_production_which_waits_for_a_different_approver() -> Result<()> {
    let t = alb(
        "promote",
        json!({"type": "all-at-once", "bake_minutes": 0}),
        |doc| {
            doc["promote_to"] = json!("production");
        },
    )
    .await?;
    let alarm = t.alarm.clone();
    // Production has its own pair of ECS services (one ECS service has one registration).
    t.stack
        .add_service("checkout-web-production-blue", 2)
        .await?;
    t.stack
        .add_service("checkout-web-production-green", 0)
        .await?;
    t.stack
        .register_alb(
            "checkout-web.production.json",
            "production",
            &t.alb,
            |doc| {
                doc["gates"]["alarms"] = json!([alarm]);
            },
        )
        .await?;
    // Staging is started through the API by the CI role (one session of it).
    let ci = "arn:aws:sts::123456789012:assumed-role/ci-deployer/run-1";
    let registration = t
        .ports
        .store
        .registrations()
        .await?
        .into_iter()
        .find(|r| r.environment == STAGING)
        .ok_or("no staging registration")?;
    let digest = format!("sha256:{}", flightdeck_local::hex64("v3.0.0"));
    let requested = Deployment::from_api(
        &registration,
        "d-promote-staging".into(),
        format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/checkout-web@{digest}"),
        digest,
        Some("v3.0.0".into()),
        ci,
        t.clock.now(),
    );
    let staging = handlers::create_and_start(&t.ports, requested).await?.id;
    t.stack.targets_up(&t.alb.green_target_group_arn, 2).await?;
    t.shift().await?; // green ready: 100% at once
    t.shift().await?; // bake 0 passed: SUCCEEDED, promotion created
    assert_eq!(t.status(&staging).await?, Status::Succeeded);

    let production = t.stack.latest("checkout-web", "production").await?;
    assert_eq!(production.status(), Status::AwaitingApproval);
    assert_eq!(
        production.digest,
        t.stack.deployment(&staging).await?.digest
    );
    assert_eq!(production.promoted_from.as_deref(), Some(staging.as_str()));
    assert!(
        t.alert_types()
            .await?
            .contains(&"deployment.approval_required".to_string())
    );
    let weights = t.weights().await?;
    t.shift().await?;
    assert_eq!(
        t.weights().await?,
        weights,
        "nothing shifts before approval"
    );

    // The principal that started the chain cannot approve it, under any session name.
    let same_role = "arn:aws:sts::123456789012:assumed-role/ci-deployer/laptop";
    let refused = handlers::approve(&t.ports, &production.id, same_role)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("cannot approve"), "{refused}");
    assert_eq!(t.status(&production.id).await?, Status::AwaitingApproval);

    let approved = handlers::approve(
        &t.ports,
        &production.id,
        "arn:aws:iam::123456789012:role/release-approver",
    )
    .await?;
    assert_eq!(approved.status(), Status::Deploying);
    assert_eq!(
        approved.approved_by.as_deref(),
        Some("arn:aws:iam::123456789012:role/release-approver")
    );
    Ok(())
}

#[tokio::test]
async fn a_push_mid_shift_waits_its_turn_and_a_newer_one_supersedes_it() -> Result<()> {
    let t = alb(
        "queue",
        json!({"type": "canary", "steps": [50, 100], "bake_minutes": 2}),
        |_| {},
    )
    .await?;
    let first = t.push("v4.0.0").await?;
    t.shift().await?;
    assert_eq!(t.weights().await?, (50, 50));

    let second = t.push("v4.0.1").await?;
    let d = t.stack.deployment(&second).await?;
    assert_eq!(
        (d.status(), d.queued_behind()),
        (Status::Pending, Some(first.as_str()))
    );
    let third = t.push("v4.0.2").await?;
    assert_eq!(t.status(&second).await?, Status::Superseded);
    assert_eq!(t.status(&third).await?, Status::Pending);
    assert_eq!(
        t.weights().await?,
        (50, 50),
        "the queued pushes did not touch traffic"
    );

    // The first finishes; the next run of the reconcile loop starts the third.
    for _ in 0..3 {
        t.clock.advance(Duration::minutes(2));
        t.shift().await?;
    }
    assert_eq!(t.status(&first).await?, Status::Succeeded);
    let d = t.stack.deployment(&third).await?;
    assert!(
        matches!(d.status(), Status::Deploying | Status::Shifting),
        "{:?}",
        d.status()
    );
    assert_eq!(
        d.rollout.ecs_service, "checkout-web-blue",
        "the new revision goes to the idle colour"
    );
    Ok(())
}

// --- failures the correctness review reproduced; each test names the behaviour it pins ---

#[tokio::test]
async fn back_to_back_blue_green_never_scales_down_the_colour_the_next_deployment_took()
-> Result<()> {
    let t = alb(
        "b2b",
        json!({"type": "all-at-once", "bake_minutes": 0}),
        |_| {},
    )
    .await?;
    let first = t.push("v5.0.0").await?; // onto green
    t.shift().await?; // green ready: 100%
    t.shift().await?; // SUCCEEDED; blue is owed a scale-down in 5 minutes
    assert_eq!(t.status(&first).await?, Status::Succeeded);
    assert_eq!(t.weights().await?, (0, 100));

    // The next push arrives a minute later and takes the idle colour: blue.
    t.clock.advance(Duration::minutes(1));
    let outcome = on_image_push::handle(&t.ports, image_push("checkout-web", "v5.0.1")?).await?;
    let second = outcome.deployments[0].id.clone();
    assert_eq!(t.status(&second).await?, Status::Deploying);
    let (blue_desired, blue_td) = t.stack.service_state("checkout-web-blue").await?;
    assert_eq!(blue_desired, 2);
    t.stack.targets_up(&t.alb.blue_target_group_arn, 2).await?;

    // The first deployment's scale-down falls due: blue is the second one's now, so it is moot.
    t.clock.advance(Duration::minutes(5));
    t.shift().await?;
    assert_eq!(
        t.stack.service_state("checkout-web-blue").await?,
        (2, blue_td),
        "blue keeps the second deployment's tasks"
    );
    let first_record = t.stack.deployment(&first).await?;
    assert!(
        first_record.events.iter().any(|e| e
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("left as it is")),
        "{:?}",
        first_record.events
    );
    t.shift().await?;
    assert_eq!(t.status(&second).await?, Status::Succeeded);
    assert_eq!(t.weights().await?, (100, 0));
    // The second deployment's own scale-down retires green, and only green.
    t.clock.advance(Duration::minutes(5));
    t.shift().await?;
    assert_eq!(t.stack.service_state("checkout-web-green").await?.0, 0);
    assert_eq!(t.stack.service_state("checkout-web-blue").await?.0, 2);
    Ok(())
}

#[tokio::test]
async fn no_traffic_moves_to_a_colour_without_healthy_targets() -> Result<()> {
    let t = alb(
        "health",
        json!({"type": "canary", "steps": [10, 100], "bake_minutes": 5}),
        |_| {},
    )
    .await?;
    let outcome = on_image_push::handle(&t.ports, image_push("checkout-web", "v6.0.0")?).await?;
    let id = outcome.deployments[0].id.clone();
    // Green runs (the emulator says so) but nothing is registered in its target group yet.
    t.shift().await?;
    assert_eq!(t.status(&id).await?, Status::Deploying);
    assert_eq!(t.weights().await?, (100, 0));
    t.stack.targets_up(&t.alb.green_target_group_arn, 2).await?;
    t.shift().await?;
    assert_eq!(t.status(&id).await?, Status::Shifting);
    assert_eq!(t.weights().await?, (90, 10));
    Ok(())
}

#[tokio::test]
async fn a_throttled_weight_step_never_undoes_a_rollback() -> Result<()> {
    let t = alb(
        "undo",
        json!({"type": "canary", "steps": [10, 50, 100], "bake_minutes": 5}),
        |_| {},
    )
    .await?;
    let id = t.push("v7.0.0").await?;
    t.shift().await?;
    assert_eq!(t.weights().await?, (90, 10));
    // The 50% step's ModifyRule is throttled.
    t.clock.advance(Duration::minutes(5));
    t.ports.traffic.throttle_next_writes(1);
    t.shift().await?;
    assert_eq!(t.weights().await?, (90, 10));
    // The alarm fires: all traffic back on blue.
    t.stack.set_alarm(&t.alarm, "ALARM", "5xx over 5").await?;
    let event = alarm_event(
        "cloudwatch-alarm-state-change.json",
        &t.alarm,
        "ALARM",
        "5xx over 5",
    )?;
    on_alarm::handle(&t.ports, event).await?;
    assert_eq!(t.status(&id).await?, Status::RolledBack);
    assert_eq!(t.weights().await?, (100, 0));
    // Well past any claim lease, the reconcile loop runs again: the stale step never comes back.
    for _ in 0..3 {
        t.clock.advance(Duration::minutes(2));
        t.shift().await?;
    }
    assert_eq!(t.weights().await?, (100, 0));
    let d = t.stack.deployment(&id).await?;
    assert_eq!((d.status(), d.traffic_percent), (Status::RolledBack, 0));
    Ok(())
}
