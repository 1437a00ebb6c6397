//! The local demo (README command 1 runs it through `infra/local/demo`): on the emulators, a good
//! push rolls out and succeeds, then a push whose tasks crash with an exec format error is rolled
//! back by itself. ECS's scheduler is simulated: it reports task and deployment events the way ECS
//! does, reading the service's task definition back from the emulator. Then an ALB canary cut
//! short by an alarm, and ECS's own canary (ecs-native) held at its hook for approval and rolled
//! back by an alarm (on the simulation's ECS: see `native_demo`); then the gates: a canary failed
//! by the canary judge on ALB metrics from the local CloudWatch, a push held by a change freeze,
//! and a revert in one call (see `gates_demo`). Exits non-zero if anything ends other than it
//! should.

use std::process::ExitCode;

use flightdeck::deployment::Status;
use flightdeck::handlers::{on_alarm, on_ecs_event, on_image_push, shifter};
use flightdeck_local::{
    ManualClock, Result, Stack, alarm_event, image_push, local_sdk_config, repo_root, timeline,
};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    println!("\n▶ {text}");
}

async fn run() -> Result<()> {
    let stack = Stack::create(
        local_sdk_config().await?,
        "flightdeck-local",
        "checkout-api",
        2,
    )
    .await?;
    println!(
        "Local stack: table {}, topic {}, ECS service {}/{} on {}",
        stack.table, stack.topic_arn, stack.cluster, stack.service, stack.initial_task_definition
    );

    let file = repo_root().join("infra/local/registrations/checkout-api.staging.json");
    let registration = stack
        .register("checkout-api", "staging", &std::fs::read_to_string(&file)?)
        .await?;
    println!(
        "Registered checkout-api/staging from {}: pushes of {}:{} deploy to {}/{} (rolling, crash loop at {} failed tasks)",
        file.strip_prefix(repo_root()).unwrap_or(&file).display(),
        registration.spec.repository,
        registration.spec.tag_pattern,
        registration.spec.cluster,
        registration.ecs_service(),
        registration.spec.gates.max_failed_tasks
    );

    let ports = stack.ports();
    let mut ecs = stack.ecs_events();

    step("CI pushes checkout-api:v1.1.0 to ECR");
    let outcome = on_image_push::handle(&ports, image_push("checkout-api", "v1.1.0")?).await?;
    let good = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .clone();
    let good_td = good
        .rollout
        .new_task_definition
        .clone()
        .ok_or("no new revision")?;
    println!(
        "  deployment {} {}; ECS service now on {}",
        good.id,
        good.status(),
        stack.service_task_definition().await?
    );

    step(
        "ECS starts two tasks of the new revision, replaces the old ones, completes its deployment",
    );
    for _ in 0..2 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_running(&task, &good_td, 3)?).await?;
        let old = ecs.new_task_arn();
        on_ecs_event::handle(
            &ports,
            ecs.task_scaled_in(&old, &stack.initial_task_definition, 7)?,
        )
        .await?;
    }
    on_ecs_event::handle(&ports, ecs.deployment_completed("ecs-svc/1")?).await?;
    let good = stack.deployment(&good.id).await?;
    println!("  deployment {} {}", good.id, good.status());

    step("CI pushes checkout-api:v1.2.0, built for arm64 by mistake");
    let outcome = on_image_push::handle(&ports, image_push("checkout-api", "v1.2.0")?).await?;
    let bad = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .clone();
    let bad_td = bad
        .rollout
        .new_task_definition
        .clone()
        .ok_or("no new revision")?;
    println!(
        "  deployment {} {}; ECS service now on {}",
        bad.id,
        bad.status(),
        stack.service_task_definition().await?
    );

    step("ECS tries to start the new revision; every task dies with exec format error");
    for _ in 0..3 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_exec_format_error(&task, &bad_td, 5)?).await?;
    }
    let serving = stack.service_task_definition().await?;
    println!(
        "  deployment {} {}; ECS service now on {serving}",
        bad.id,
        stack.deployment(&bad.id).await?.status()
    );

    step("ECS reports the service steady on the previous revision");
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;
    let good = stack.deployment(&good.id).await?;
    let bad = stack.deployment(&bad.id).await?;

    println!("\n══ Timeline (from the deployment records in DynamoDB) ══");
    print!("{}", timeline::merged(&[good.clone(), bad.clone()]));

    println!("\n══ SNS alerts, as the subscriber queue received them ══");
    let alerts = stack.received_alerts().await?;
    for a in &alerts {
        print!("{}", timeline::alert(a));
    }

    let mut problems = Vec::new();
    if good.status() != Status::Succeeded {
        problems.push(format!(
            "v1.1.0 ended {}, expected SUCCEEDED",
            good.status()
        ));
    }
    if bad.status() != Status::RolledBack {
        problems.push(format!(
            "v1.2.0 ended {}, expected ROLLED_BACK",
            bad.status()
        ));
    }
    if serving != good_td {
        problems.push(format!("ECS service is on {serving}, expected {good_td}"));
    }
    let types: Vec<&str> = alerts.iter().map(|a| a.event_type.as_str()).collect();
    let expected = [
        "deployment.started",
        "deployment.succeeded",
        "deployment.started",
        "deployment.rolled_back",
    ];
    if types != expected {
        problems.push(format!("alerts were {types:?}, expected {expected:?}"));
    }
    if !problems.is_empty() {
        return Err(problems.join("; ").into());
    }
    println!(
        "\nRolling: v1.1.0 SUCCEEDED; v1.2.0 ROLLED_BACK by itself, ECS service back on {serving}; {} alerts delivered.",
        alerts.len()
    );
    canary().await
}

/// Part two: a canary on blue/green services behind an ALB, cut short by an alarm.
async fn canary() -> Result<()> {
    println!("\n════════ Canary behind an ALB ════════");
    let stack = Stack::create(
        local_sdk_config().await?,
        "flightdeck-web",
        "checkout-web-blue",
        2,
    )
    .await?;
    let alb = stack.add_alb("checkout-web-green").await?;
    stack.put_alarm("checkout-web-5xx").await?;
    let registration = stack
        .register_alb("checkout-web.staging.json", "staging", &alb, |doc| {
            doc["promote_to"] = serde_json::Value::Null;
        })
        .await?;
    println!(
        "Registered checkout-web/staging from infra/local/registrations/checkout-web.staging.json: \
         alb-weights on {}/checkout-web-blue + checkout-web-green, canary {:?}% with {} min bake, gated by {:?}",
        stack.cluster,
        registration.traffic_steps(),
        registration.bake_minutes(),
        registration.spec.gates.alarms
    );
    // The reconcile loop's minutes pass on a clock the demo moves, so bake times take no waiting.
    let clock = ManualClock::starting_now();
    let ports = stack.ports_with_clock(clock.clone());
    let alarms = stack.alarms();
    let show_weights = |label: &str, (blue, green): (i32, i32)| {
        println!(
            "  {label}: listener rule forwards blue {blue}% / green {green}% (read back from ELBv2)"
        );
    };

    step("CI pushes checkout-web:v2.0.0");
    let outcome = on_image_push::handle(&ports, image_push("checkout-web", "v2.0.0")?).await?;
    let id = outcome
        .deployments
        .first()
        .ok_or("the push created no deployment")?
        .id
        .clone();
    let (green_desired, _) = stack.service_state("checkout-web-green").await?;
    println!(
        "  deployment {id} {}; green scaled to {green_desired} tasks of the new revision",
        stack.deployment(&id).await?.status()
    );
    show_weights("before", stack.rule_weights(&alb).await?);

    // ECS registers green's tasks in its target group as they start.
    stack.targets_up(&alb.green_target_group_arn, 2).await?;
    step(
        "shifter (every minute): green runs at its desired count and is healthy, first canary step",
    );
    shifter::handle(&ports, &alarms).await?;
    show_weights("now", stack.rule_weights(&alb).await?);

    step("two minutes into the 5 minute bake: shifter holds the step");
    clock.advance(chrono::Duration::minutes(2));
    shifter::handle(&ports, &alarms).await?;
    show_weights("still", stack.rule_weights(&alb).await?);

    step("the 5xx alarm fires on the canary (EventBridge -> on-alarm)");
    let reason = "Threshold Crossed: 1 out of the last 1 datapoints [12.0] was greater than the threshold (5.0)";
    stack.set_alarm("checkout-web-5xx", "ALARM", reason).await?;
    on_alarm::handle(
        &ports,
        alarm_event(
            "cloudwatch-alarm-state-change.json",
            "checkout-web-5xx",
            "ALARM",
            reason,
        )?,
    )
    .await?;
    let weights = stack.rule_weights(&alb).await?;
    show_weights("after", weights);
    let d = stack.deployment(&id).await?;
    println!(
        "  deployment {id} {}; green scaled to {}",
        d.status(),
        stack.service_state("checkout-web-green").await?.0
    );

    println!("\n══ Timeline (from the deployment record) ══");
    print!("{}", timeline::merged(std::slice::from_ref(&d)));
    println!("\n══ SNS alerts, as the subscriber queue received them ══");
    let alerts = stack.received_alerts().await?;
    for a in &alerts {
        print!("{}", timeline::alert(a));
    }
    let types: Vec<&str> = alerts.iter().map(|a| a.event_type.as_str()).collect();
    if d.status() != Status::RolledBack
        || weights != (100, 0)
        || types != ["deployment.started", "deployment.rolled_back"]
    {
        return Err(format!(
            "canary ended {} with weights {weights:?} and alerts {types:?}",
            d.status()
        )
        .into());
    }
    println!(
        "\nCanary: 10% on green, alarm fired, all traffic back on blue in one ELBv2 call; deployment ROLLED_BACK."
    );
    flightdeck_local::native_demo::run().await?;
    flightdeck_local::gates_demo::run().await
}
