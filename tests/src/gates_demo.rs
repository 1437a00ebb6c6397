//! Part four of the local demo: the gates. A canary failed by the canary judge, which reads the
//! two colours' ALB metrics with GetMetricData from the local CloudWatch (ministack serves
//! PutMetricData and GetMetricData; the demo plays the load balancer and publishes what it would:
//! per-minute RequestCount, HTTPCode_Target_5XX_Count and TargetResponseTime). Then a push held
//! by a change freeze that starts when the window ends, and a revert in one API call.

use aws_sdk_cloudwatch::primitives::DateTime as SmithyTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use chrono::{DateTime, Duration, Utc};
use flightdeck::api::{self, ApiRequest};
use flightdeck::deployment::{Deployment, Listener, Status, Trigger};
use flightdeck::handlers::{on_ecs_event, on_image_push, shifter};
use flightdeck::ports::Clock;
use flightdeck::registration::target_group_dimension;
use serde_json::{Value, json};

use crate::local_api::local_config;
use crate::{
    AlbFixture, ManualClock, Result, Stack, image_push, local_sdk_config, repo_root, timeline,
};

fn step(text: &str) {
    println!("\n▶ {text}");
}

pub async fn run() -> Result<()> {
    judged_canary().await?;
    freeze_and_revert().await
}

/// One minute of what the load balancer publishes for a target group.
struct Published {
    requests: f64,
    errors: f64,
    p99_seconds: f64,
}

/// Publishes `minutes` minutes of ALB metrics for `target_group` from `from` on.
async fn publish(
    stack: &Stack,
    load_balancer: &str,
    target_group: &str,
    from: DateTime<Utc>,
    minutes: i64,
    m: &Published,
) -> Result<()> {
    let dims = [
        Dimension::builder()
            .name("LoadBalancer")
            .value(load_balancer)
            .build(),
        Dimension::builder()
            .name("TargetGroup")
            .value(target_group)
            .build(),
    ];
    for minute in 0..minutes {
        let at = from + Duration::minutes(minute) + Duration::seconds(5);
        let at = SmithyTime::from_secs(at.timestamp());
        let datum = |name: &str, value: f64, unit: StandardUnit| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.to_vec()))
                .timestamp(at)
                .value(value)
                .unit(unit)
                .build()
        };
        stack
            .cloudwatch
            .put_metric_data()
            .namespace("AWS/ApplicationELB")
            .metric_data(datum("RequestCount", m.requests, StandardUnit::Count))
            .metric_data(datum(
                "HTTPCode_Target_5XX_Count",
                m.errors,
                StandardUnit::Count,
            ))
            .metric_data(datum(
                "TargetResponseTime",
                m.p99_seconds,
                StandardUnit::Seconds,
            ))
            .send()
            .await?;
    }
    Ok(())
}

async fn judged_canary() -> Result<()> {
    println!("\n════════ Canary judge: the new colour against the stable one ════════");
    let stack = Stack::create(
        local_sdk_config().await?,
        "flightdeck-judge",
        "checkout-web-blue",
        2,
    )
    .await?;
    let alb: AlbFixture = stack.add_alb("checkout-web-green").await?;
    let registration = stack
        .register_alb("checkout-web.staging.json", "staging", &alb, |doc| {
            doc["promote_to"] = Value::Null;
            doc["gates"]["alarms"] = json!([]);
            doc["gates"]["analysis"] = json!({
                "min_requests": 100, "max_error_rate_increase": 0.01,
                "max_latency_increase": 0.25, "confidence": 0.95, "no_data": "fail"
            });
        })
        .await?;
    println!(
        "Registered checkout-web/staging: canary {:?}% with {} min bake, no alarms; judged by {:?}",
        registration.traffic_steps(),
        registration.bake_minutes(),
        registration.spec.gates.analysis
    );
    // The reconcile loop's minutes run on a clock that starts a quarter of an hour ago, so the
    // metrics the demo publishes for "the last minutes" are in the local CloudWatch's past.
    let clock = ManualClock::starting_at(Utc::now() - Duration::minutes(15));
    let ports = stack.ports_with_clock(clock.clone());
    let cloudwatch = stack.alarms();

    step("CI pushes checkout-web:v3.0.0 (it answers 8% of requests with a 5xx, slowly)");
    let outcome = on_image_push::handle(&ports, image_push("checkout-web", "v3.0.0")?).await?;
    let id = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .id
        .clone();
    stack.targets_up(&alb.green_target_group_arn, 2).await?;
    step("shifter: green is healthy at its desired count; 10% of traffic to green");
    shifter::handle(&ports, &cloudwatch).await?;
    let from = clock.now();
    println!(
        "  listener rule: blue/green {:?}",
        stack.rule_weights(&alb).await?
    );

    let load_balancer = Listener::Rule(alb.rule_arn.clone())
        .load_balancer_dimension()
        .ok_or("the rule ARN names no load balancer")?
        .to_string();
    step("the load balancer publishes four minutes of metrics for both target groups");
    let green = Published {
        requests: 110.0,
        errors: 9.0,
        p99_seconds: 0.62,
    };
    let blue = Published {
        requests: 990.0,
        errors: 1.0,
        p99_seconds: 0.21,
    };
    let (green_tg, blue_tg) = (
        target_group_dimension(&alb.green_target_group_arn),
        target_group_dimension(&alb.blue_target_group_arn),
    );
    publish(&stack, &load_balancer, green_tg, from, 4, &green).await?;
    publish(&stack, &load_balancer, blue_tg, from, 4, &blue).await?;
    println!(
        "  green ({green_tg}): {} requests/min, {} 5xx, p99 {} ms; blue ({blue_tg}): {} requests/min, {} 5xx, p99 {} ms",
        green.requests,
        green.errors,
        green.p99_seconds * 1000.0,
        blue.requests,
        blue.errors,
        blue.p99_seconds * 1000.0
    );

    step("four and a half minutes into the bake: shifter reads both colours with GetMetricData");
    clock.advance(Duration::seconds(270));
    shifter::handle(&ports, &cloudwatch).await?;
    let weights = stack.rule_weights(&alb).await?;
    let d = stack.deployment(&id).await?;
    println!(
        "  deployment {id} {}; listener rule blue/green {weights:?}",
        d.status()
    );
    println!("\n══ Timeline ══");
    print!("{}", timeline::merged(std::slice::from_ref(&d)));
    println!("\n══ SNS alerts ══");
    for a in &stack.received_alerts().await? {
        print!("{}", timeline::alert(a));
    }
    let judged = d
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("canary judge fail"));
    if d.status() != Status::RolledBack || weights != (100, 0) || !judged {
        return Err(format!(
            "the judged canary ended {} with weights {weights:?}: {:?}",
            d.status(),
            d.reason
        )
        .into());
    }
    println!(
        "\nCanary judge: green worse than blue beyond the margins; all traffic back on blue, ROLLED_BACK with the figures."
    );
    Ok(())
}

/// Plays ECS for a rolling deployment that goes well: two tasks of its revision start, two old
/// ones stop, ECS completes its deployment.
async fn ecs_rolls_out(
    stack: &Stack,
    ports: &crate::LocalPorts<ManualClock>,
    ecs: &mut crate::EcsSimulator,
    d: &Deployment,
    from_td: &str,
) -> Result<Deployment> {
    let td = d
        .rollout
        .new_task_definition
        .clone()
        .ok_or("no new revision registered")?;
    for _ in 0..2 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(ports, ecs.task_running(&task, &td, 3)?).await?;
        let old = ecs.new_task_arn();
        on_ecs_event::handle(ports, ecs.task_scaled_in(&old, from_td, 7)?).await?;
    }
    on_ecs_event::handle(ports, ecs.deployment_completed("ecs-svc/1")?).await?;
    stack.deployment(&d.id).await
}

async fn freeze_and_revert() -> Result<()> {
    println!("\n════════ A change freeze, and a revert in one call ════════");
    let stack = Stack::create(
        local_sdk_config().await?,
        "flightdeck-gates",
        "checkout-api",
        2,
    )
    .await?;
    // The demo's clock starts 40 minutes ago; the freeze covers its first half hour.
    let start = Utc::now() - Duration::minutes(40);
    let file = repo_root().join("infra/local/registrations/checkout-api.staging.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    doc["cluster"] = Value::String(stack.cluster.clone());
    doc["freeze"] = json!({
        "timezone": "Europe/Berlin",
        "weekly": [],
        "dates": [{ "from": (start - Duration::minutes(1)).to_rfc3339(),
                    "to": (start + Duration::minutes(30)).to_rfc3339(),
                    "reason": "quarter-end close" }]
    });
    stack
        .register("checkout-api", "staging", &doc.to_string())
        .await?;
    println!(
        "Registered checkout-api/staging (rolling) with a freeze: {}",
        doc["freeze"]
    );
    let clock = ManualClock::starting_at(start);
    let ports = stack.ports_with_clock(clock.clone());
    let alarms = stack.alarms();
    let mut ecs = stack.ecs_events();

    step("CI pushes checkout-api:v4.0.0 inside the freeze");
    let outcome = on_image_push::handle(&ports, image_push("checkout-api", "v4.0.0")?).await?;
    let first = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .clone();
    println!(
        "  deployment {} {}: {}",
        first.id,
        first.status(),
        first.reason.as_deref().unwrap_or("-")
    );
    if first.status() != Status::Pending || first.hold().is_none() {
        return Err(format!("the push was not held: {}", first.status()).into());
    }
    let held_td = stack.service_task_definition().await?;

    step("31 minutes later the freeze is over: shifter starts the rollout; ECS rolls it out");
    clock.advance(Duration::minutes(31));
    shifter::handle(&ports, &alarms).await?;
    let first = stack.deployment(&first.id).await?;
    println!("  deployment {} {}", first.id, first.status());
    let first = ecs_rolls_out(&stack, &ports, &mut ecs, &first, &held_td).await?;
    println!("  deployment {} {}", first.id, first.status());
    let good_td = stack.service_task_definition().await?;

    step("CI pushes checkout-api:v4.1.0; it rolls out and succeeds");
    let outcome = on_image_push::handle(&ports, image_push("checkout-api", "v4.1.0")?).await?;
    let second = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .clone();
    let second = ecs_rolls_out(&stack, &ports, &mut ecs, &second, &good_td).await?;
    println!("  deployment {} {}", second.id, second.status());
    let bad_td = stack.service_task_definition().await?;

    step("an operator reverts v4.1.0: POST /deployments/{id}/rollback");
    let request = ApiRequest {
        method: "POST".into(),
        path: format!("/deployments/{}/rollback", second.id),
        caller: Some("arn:aws:sts::123456789012:assumed-role/ci-deployer/release-17".into()),
        account: Some(crate::ACCOUNT.into()),
        ..ApiRequest::default()
    };
    let response = api::handle(&ports, &local_config(), &request).await;
    let revert_id = response.body["id"].as_str().unwrap_or_default().to_string();
    println!(
        "  {} {}: deployment {revert_id} (trigger {}, image {})",
        response.status,
        if response.status == 201 {
            "Created"
        } else {
            "?"
        },
        response.body["trigger"],
        response.body["tag"]
    );
    if response.status != 201 {
        return Err(format!("revert refused: {}", response.body).into());
    }
    let revert = stack.deployment(&revert_id).await?;
    let revert = ecs_rolls_out(&stack, &ports, &mut ecs, &revert, &bad_td).await?;
    let serving = stack.service_task_definition().await?;
    println!(
        "  deployment {revert_id} {}; ECS service now on {serving}",
        revert.status()
    );

    let second = stack.deployment(&second.id).await?;
    println!("\n══ Timeline ══");
    print!(
        "{}",
        timeline::merged(&[first.clone(), second.clone(), revert.clone()])
    );
    println!("\n══ SNS alerts ══");
    let alerts = stack.received_alerts().await?;
    for a in &alerts {
        print!("{}", timeline::alert(a));
    }
    let image_of = |d: &Deployment| d.image.clone();
    if first.status() != Status::Succeeded
        || second.status() != Status::Succeeded
        || revert.status() != Status::Succeeded
        || revert.trigger != Trigger::Revert
        || image_of(&revert) != image_of(&first)
    {
        return Err(format!(
            "freeze/revert ended {} / {} / {} ({:?})",
            first.status(),
            second.status(),
            revert.status(),
            revert.reason
        )
        .into());
    }
    println!(
        "\nFreeze: v4.0.0 held PENDING until the window ended, then SUCCEEDED. Revert: one call \
         deployed v4.0.0's image again as {revert_id}, SUCCEEDED."
    );
    Ok(())
}
