//! The core loop against the local stack over real HTTP: push -> deploy -> observe -> roll back ->
//! alert. Each test makes its own table, topic, queue, cluster and service, so they run in
//! parallel from a clean state. Needs the emulator: run `infra/local/test`.

use flightdeck::deployment::{Deployment, ImagePush, Status};
use flightdeck::handlers::{self, HandlerError, on_ecs_event, on_image_push, shifter};
use flightdeck::ports::DeploymentStore;
use flightdeck_local::{Result, Stack, image_push, local_sdk_config};
use serde_json::{Value, json};

const ENV: &str = "staging";

async fn stack(name: &str, desired: i32) -> Result<Stack> {
    let unique = format!(
        "{name}-{}",
        &flightdeck_local::hex64(&format!("{name}{:?}", std::time::SystemTime::now()))[..8]
    );
    let stack = Stack::create(local_sdk_config().await?, &unique, "checkout-api", desired).await?;
    stack.register_sample(ENV).await?;
    Ok(stack)
}

fn alert_types(alerts: &[flightdeck_local::ReceivedAlert]) -> Vec<&str> {
    alerts.iter().map(|a| a.event_type.as_str()).collect()
}

/// Pushes `tag` and returns the deployment id and the new revision's task definition.
async fn push(stack: &Stack, tag: &str) -> Result<(String, String)> {
    let outcome = on_image_push::handle(&stack.ports(), image_push("checkout-api", tag)?).await?;
    let d = outcome.deployments.first().ok_or("no deployment created")?;
    assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
    let new_td = d
        .rollout
        .new_task_definition
        .clone()
        .ok_or("no new revision recorded")?;
    Ok((d.id.clone(), new_td))
}

#[tokio::test]
async fn a_good_push_rolls_out_by_digest_and_succeeds() -> Result<()> {
    let stack = stack("good", 2).await?;
    let (id, new_td) = push(&stack, "v1.1.0").await?;

    // The service runs the new revision, and it differs only in the image, pinned by digest.
    assert_eq!(stack.service_task_definition().await?, new_td);
    let td = stack
        .ecs
        .describe_task_definition()
        .task_definition(&new_td)
        .send()
        .await?;
    let container = &td.task_definition.unwrap().container_definitions.unwrap()[0];
    let d = stack.deployment(&id).await?;
    assert_eq!(container.image.as_deref(), Some(d.image.as_str()));
    assert!(d.image.contains("/checkout-api@sha256:"), "{}", d.image);
    assert_eq!(container.memory, Some(512));
    assert_eq!(
        d.rollout.previous_task_definition.as_deref(),
        Some(stack.initial_task_definition.as_str())
    );

    let mut ecs = stack.ecs_events();
    let ports = stack.ports();
    for _ in 0..2 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_running(&task, &new_td, 3)?).await?;
    }
    assert_eq!(
        stack.deployment(&id).await?.status(),
        Status::Deploying,
        "ECS has not reported completion yet"
    );
    on_ecs_event::handle(&ports, ecs.deployment_completed("ecs-svc/1")?).await?;

    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::Succeeded, "{:?}", d.reason);
    assert_eq!(d.traffic_percent, 100);
    assert!(d.finished_at().is_some());
    let alerts = stack.received_alerts().await?;
    assert_eq!(
        alert_types(&alerts),
        ["deployment.started", "deployment.succeeded"]
    );
    let succeeded = &alerts[1];
    assert_eq!(
        (succeeded.service.as_str(), succeeded.environment.as_str()),
        ("checkout-api", ENV)
    );
    assert_eq!(succeeded.document["deployment_id"], json!(id));
    assert_eq!(succeeded.document["status"], json!("SUCCEEDED"));
    assert!(succeeded.subject.len() < 100);
    Ok(())
}

#[tokio::test]
async fn the_same_ecr_event_twice_makes_one_deployment_one_revision_one_alert() -> Result<()> {
    let stack = stack("replay", 1).await?;
    let event = image_push("checkout-api", "v2.0.0")?;
    let ports = stack.ports();
    on_image_push::handle(&ports, event.clone()).await?;
    on_image_push::handle(&ports, event.clone()).await?;
    // And delivered twice at the same moment.
    let (a, b) = tokio::join!(
        on_image_push::handle(&ports, event.clone()),
        on_image_push::handle(&ports, event.clone())
    );
    a?;
    b?;

    assert_eq!(stack.deployments(ENV).await?.len(), 1);
    assert_eq!(
        stack.task_definition_revisions().await?.len(),
        2,
        "the original and one new revision"
    );
    assert_eq!(
        alert_types(&stack.received_alerts().await?),
        ["deployment.started"]
    );
    Ok(())
}

#[tokio::test]
async fn scale_in_and_old_revision_stops_never_count_toward_a_crash_loop() -> Result<()> {
    let stack = stack("benign", 2).await?;
    let (id, new_td) = push(&stack, "v1.1.0").await?;
    let mut ecs = stack.ecs_events();
    let ports = stack.ports();
    let old_td = stack.initial_task_definition.clone();
    for _ in 0..4 {
        let old_task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_scaled_in(&old_task, &old_td, 7)?).await?;
        let old_crash = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_exec_format_error(&old_crash, &old_td, 5)?).await?;
    }
    let new_task = ecs.new_task_arn();
    on_ecs_event::handle(&ports, ecs.task_scaled_in(&new_task, &new_td, 7)?).await?;

    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
    assert_eq!(d.failed_count, 0);
    assert_eq!(stack.service_task_definition().await?, new_td);
    assert_eq!(
        alert_types(&stack.received_alerts().await?),
        ["deployment.started"]
    );
    Ok(())
}

#[tokio::test]
async fn a_crash_loop_puts_the_previous_revision_back_and_alerts_once() -> Result<()> {
    let stack = stack("crash", 2).await?;
    let (id, new_td) = push(&stack, "v1.2.0").await?;
    let mut ecs = stack.ecs_events();
    let ports = stack.ports();
    let mut crashes = Vec::new();
    for _ in 0..3 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_running(&task, &new_td, 3)?).await?;
        crashes.push(ecs.task_exec_format_error(&task, &new_td, 5)?);
    }
    for crash in &crashes[..2] {
        on_ecs_event::handle(&ports, crash.clone()).await?;
    }
    assert_eq!(
        stack.deployment(&id).await?.status(),
        Status::Deploying,
        "two failures are below the limit of 3"
    );
    on_ecs_event::handle(&ports, crashes[2].clone()).await?;

    // The emulated service is back on the previous task definition.
    assert_eq!(
        stack.service_task_definition().await?,
        stack.initial_task_definition
    );
    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RollingBack);
    let issued = d.rollback().and_then(|r| r.issued_at);
    assert!(issued.is_some(), "the rollback call is recorded as issued");

    // ECS reports the service steady again; redeliveries of everything change nothing.
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;
    for crash in &crashes {
        on_ecs_event::handle(&ports, crash.clone()).await?;
    }
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;

    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RolledBack);
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.contains("exec format error"), "{reason}");
    assert!(d.finished_at().is_some());
    assert!(
        d.events
            .iter()
            .any(|e| e.status == Some(Status::RollingBack))
    );
    assert!(d.outbox.is_empty());

    let alerts = stack.received_alerts().await?;
    assert_eq!(
        alert_types(&alerts),
        ["deployment.started", "deployment.rolled_back"]
    );
    let rolled_back = &alerts[1];
    assert_eq!(rolled_back.severity, "warning");
    assert!(
        rolled_back.document["reason"]
            .as_str()
            .unwrap_or("")
            .contains("exec format error")
    );
    assert_eq!(rolled_back.document["version"], json!("1"));
    Ok(())
}

#[tokio::test]
async fn concurrent_crash_events_roll_back_once() -> Result<()> {
    let stack = stack("race", 1).await?;
    let (id, new_td) = push(&stack, "v3.0.0").await?;
    let mut ecs = stack.ecs_events();
    let ports = stack.ports();
    let events: Vec<Value> = (0..4)
        .map(|_| {
            let task = ecs.new_task_arn();
            ecs.task_exec_format_error(&task, &new_td, 5)
        })
        .collect::<Result<_>>()?;
    let (a, b, c, d) = tokio::join!(
        on_ecs_event::handle(&ports, events[0].clone()),
        on_ecs_event::handle(&ports, events[1].clone()),
        on_ecs_event::handle(&ports, events[2].clone()),
        on_ecs_event::handle(&ports, events[3].clone()),
    );
    for r in [a, b, c, d] {
        r?;
    }
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;

    let deployment = stack.deployment(&id).await?;
    assert_eq!(
        deployment.status(),
        Status::RolledBack,
        "{:?}",
        deployment.reason
    );
    let rollbacks = deployment
        .events
        .iter()
        .filter(|e| e.status == Some(Status::RollingBack))
        .count();
    assert_eq!(rollbacks, 1);
    assert_eq!(
        alert_types(&stack.received_alerts().await?),
        ["deployment.started", "deployment.rolled_back"]
    );
    Ok(())
}

#[tokio::test]
async fn ecs_reporting_the_deployment_failed_is_recorded_and_rolled_back() -> Result<()> {
    let stack = stack("ecsfail", 1).await?;
    let (id, _) = push(&stack, "v4.0.0").await?;
    let mut event = flightdeck_local::sample("ecs-deployment-failed-circuit-breaker.json")?;
    let now = json!(chrono::Utc::now().to_rfc3339());
    event["time"] = now.clone();
    event["detail"]["updatedAt"] = now;
    event["resources"] = json!([format!(
        "arn:aws:ecs:eu-west-1:123456789012:service/{}/checkout-api",
        stack.cluster
    )]);
    on_ecs_event::handle(&stack.ports(), event).await?;

    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RollingBack);
    assert!(d.reason.unwrap_or_default().contains("circuit breaker"));
    assert_eq!(
        stack.service_task_definition().await?,
        stack.initial_task_definition
    );
    Ok(())
}

#[tokio::test]
async fn malformed_and_unexpected_events_are_refused_without_a_record() -> Result<()> {
    let stack = stack("bad", 1).await?;
    let ports = stack.ports();

    // Not an EventBridge event at all.
    let err = on_image_push::handle(&ports, json!({"hello": "world"}))
        .await
        .unwrap_err();
    assert!(matches!(err, HandlerError::Event(_)), "{err}");

    // A push whose digest is not a digest: refused, naming the event id.
    let mut bad_digest = image_push("checkout-api", "v1.0.1")?;
    bad_digest["detail"]["image-digest"] = json!("sha256:nothex");
    let err = on_image_push::handle(&ports, bad_digest)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("push-checkout-api-v1.0.1") && err.contains("image-digest"),
        "{err}"
    );

    // A push without the required repository name.
    let mut no_repo = image_push("checkout-api", "v1.0.2")?;
    no_repo["detail"]
        .as_object_mut()
        .unwrap()
        .remove("repository-name");
    let err = on_image_push::handle(&ports, no_repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("repository-name"), "{err}");

    // Logged skips: another detail-type, an untagged push, a delete, a tag no pattern matches.
    let mut untagged = flightdeck_local::sample("ecr-image-push-untagged.json")?;
    untagged["detail"]["repository-name"] = json!("checkout-api");
    let mut unmatched = image_push("checkout-api", "latest")?;
    unmatched["id"] = json!("unmatched-tag");
    for event in [
        flightdeck_local::sample("ecs-service-steady-state.json")?,
        untagged,
        flightdeck_local::sample("ecr-image-delete.json")?,
        unmatched,
    ] {
        let id = event["id"].as_str().unwrap_or("").to_string();
        let outcome = on_image_push::handle(&ports, event).await?;
        let why = outcome.skipped.unwrap_or_default();
        assert!(why.contains(&id), "skip reason names the event id: {why}");
    }

    // An ECS task event missing its task ARN.
    let mut ecs = stack.ecs_events();
    let task = ecs.new_task_arn();
    let mut broken = ecs.task_running(&task, &stack.initial_task_definition, 2)?;
    broken["detail"].as_object_mut().unwrap().remove("taskArn");
    let err = on_ecs_event::handle(&ports, broken)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("taskArn"), "{err}");

    assert!(stack.deployments(ENV).await?.is_empty());
    assert_eq!(stack.task_definition_revisions().await?.len(), 1);
    assert!(stack.received_alerts().await?.is_empty());
    Ok(())
}

/// (index name, key schema, projection type)
type IndexShape = (String, Vec<(String, String)>, String);

#[tokio::test]
async fn the_local_table_has_the_keys_and_indexes_the_template_deploys() -> Result<()> {
    let stack = stack("table", 1).await?;
    let described = stack
        .dynamodb
        .describe_table()
        .table_name(&stack.table)
        .send()
        .await?;
    let table = described.table.ok_or("no table")?;
    let template = flightdeck_local::table_definition()?;
    let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        schema
            .iter()
            .map(|k| (k.attribute_name.clone(), k.key_type.as_str().to_string()))
            .collect()
    };
    let template_keys = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|k| {
                (
                    k["AttributeName"].as_str().unwrap_or("").to_string(),
                    k["KeyType"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        keys(table.key_schema()),
        template_keys(&template["KeySchema"])
    );
    let mut local: Vec<IndexShape> = table
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            let projection = g
                .projection
                .as_ref()
                .and_then(|p| p.projection_type.as_ref())
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            (
                g.index_name.clone().unwrap_or_default(),
                keys(g.key_schema()),
                projection,
            )
        })
        .collect();
    let mut expected: Vec<IndexShape> = template["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["IndexName"].as_str().unwrap_or("").to_string(),
                template_keys(&g["KeySchema"]),
                g["Projection"]["ProjectionType"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    local.sort();
    expected.sort();
    assert_eq!(local, expected);
    assert_eq!(expected.len(), 2);
    Ok(())
}

#[tokio::test]
async fn two_different_pushes_at_the_same_moment_start_only_one() -> Result<()> {
    let stack = stack("race2", 1).await?;
    let ports = stack.ports();
    let (a, b) = tokio::join!(
        on_image_push::handle(&ports, image_push("checkout-api", "v5.0.0")?),
        on_image_push::handle(&ports, image_push("checkout-api", "v5.0.1")?)
    );
    a?;
    b?;
    let deployments = stack.deployments(ENV).await?;
    let statuses: Vec<Status> = deployments.iter().map(|d| d.status()).collect();
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Deploying).count(),
        1,
        "{statuses:?}"
    );
    // deployments() is newest first. The older push either started first (the newer one waits
    // behind it) or was superseded by the newer one; it never deploys after the newer one.
    let (newer, older) = (&deployments[0], &deployments[1]);
    match (newer.status(), older.status()) {
        (Status::Pending, Status::Deploying) => {
            assert_eq!(newer.queued_behind(), Some(older.id.as_str()));
        }
        (Status::Deploying, Status::Superseded) => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    assert_eq!(
        stack.task_definition_revisions().await?.len(),
        2,
        "one new revision only"
    );
    assert_eq!(
        alert_types(&stack.received_alerts().await?),
        ["deployment.started"]
    );
    Ok(())
}

// --- failures the correctness review reproduced; each test names the behaviour it pins ---

#[tokio::test]
async fn a_start_attempted_by_several_invocations_at_once_registers_one_revision() -> Result<()> {
    let stack = stack("start3", 1).await?;
    let ports = stack.ports();
    let registration = ports
        .store
        .registrations()
        .await?
        .into_iter()
        .next()
        .ok_or("no registration")?;
    let push = ImagePush {
        registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
        repository: "checkout-api".into(),
        digest: format!("sha256:{}", flightdeck_local::hex64("v7.0.0")),
        tag: Some("v7.0.0".into()),
        event_id: "push-start3".into(),
    };
    let d = Deployment::from_push(&registration, &push, chrono::Utc::now());
    ports.store.create(&d).await?;
    // The invocation that created it, a redelivery and the reconcile loop, all at once.
    let alarms = stack.alarms();
    let (a, b, c) = tokio::join!(
        handlers::start(&ports, &d.id),
        handlers::start(&ports, &d.id),
        shifter::handle(&ports, &alarms)
    );
    a?;
    b?;
    c?;
    let after = stack.deployment(&d.id).await?;
    assert_eq!(after.status(), Status::Deploying, "{:?}", after.reason);
    assert_eq!(
        stack.task_definition_revisions().await?.len(),
        2,
        "the original and one new revision"
    );
    assert_eq!(
        after.rollout.previous_task_definition.as_deref(),
        Some(stack.initial_task_definition.as_str()),
        "the previous revision is the one that served before, never the new one"
    );
    assert_eq!(
        Some(stack.service_task_definition().await?),
        after.rollout.new_task_definition
    );
    assert_eq!(
        alert_types(&stack.received_alerts().await?),
        ["deployment.started"]
    );
    Ok(())
}

#[tokio::test]
async fn task_events_of_the_deployment_in_flight_are_handled_while_another_waits_behind_it()
-> Result<()> {
    let stack = stack("queuedtasks", 1).await?;
    let (first, first_td) = push(&stack, "v8.0.0").await?;
    let ports = stack.ports();
    let queued = on_image_push::handle(&ports, image_push("checkout-api", "v8.0.1")?).await?;
    assert_eq!(queued.deployments[0].status(), Status::Pending);
    let mut ecs = stack.ecs_events();
    let task = ecs.new_task_arn();
    // Before, every one of these failed with `StillStarting` and went to the dead-letter queue.
    on_ecs_event::handle(&ports, ecs.task_running(&task, &first_td, 2)?).await?;
    let crashed = ecs.new_task_arn();
    on_ecs_event::handle(&ports, ecs.task_exec_format_error(&crashed, &first_td, 3)?).await?;
    assert_eq!(stack.deployment(&first).await?.failed_count, 1);
    Ok(())
}

#[tokio::test]
async fn a_new_push_of_a_digest_deployed_before_deploys_it_again() -> Result<()> {
    let stack = stack("repush", 1).await?;
    let ports = stack.ports();
    let ecs = stack.ecs_events();
    let (first, _) = push(&stack, "v9.0.0").await?;
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;
    assert_eq!(stack.deployment(&first).await?.status(), Status::Succeeded);
    let (second, _) = push(&stack, "v9.0.1").await?;
    on_ecs_event::handle(&ports, ecs.steady_state()?).await?;
    assert_eq!(stack.deployment(&second).await?.status(), Status::Succeeded);

    // Re-tagging the old image (a revert by re-push) is a new push: a new EventBridge event.
    let mut again = image_push("checkout-api", "v9.0.0")?;
    again["id"] = json!("push-checkout-api-v9.0.0-again");
    let outcome = on_image_push::handle(&ports, again).await?;
    let revert = outcome.deployments.first().ok_or("no deployment")?;
    assert_ne!(revert.id, first);
    assert_eq!(revert.status(), Status::Deploying, "{:?}", revert.reason);
    assert_eq!(revert.digest, stack.deployment(&first).await?.digest);
    assert_eq!(
        Some(stack.service_task_definition().await?),
        revert.rollout.new_task_definition,
        "ECS is told to run the old image again"
    );
    Ok(())
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_is_rolled_back_at_its_deadline_and_a_stalled_rollback_fails_loudly()
-> Result<()> {
    let stack = stack("deadline", 2).await?;
    let clock = flightdeck_local::ManualClock::starting_now();
    let ports = stack.ports_with_clock(clock.clone());
    let outcome = on_image_push::handle(&ports, image_push("checkout-api", "v10.0.0")?).await?;
    let id = outcome.deployments[0].id.clone();
    let alarms = stack.alarms();
    // No ECS event ever comes; the emulator never reports the tasks running.
    clock.advance(chrono::Duration::minutes(9));
    shifter::handle(&ports, &alarms).await?;
    assert_eq!(stack.deployment(&id).await?.status(), Status::Deploying);
    clock.advance(chrono::Duration::minutes(1));
    shifter::handle(&ports, &alarms).await?;
    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::RollingBack);
    let reason = d.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("progress deadline") && reason.contains("0 of 2 tasks running"),
        "{reason}"
    );
    assert_eq!(
        stack.service_task_definition().await?,
        stack.initial_task_definition,
        "UpdateService back to the previous revision"
    );
    // The rollback does not complete either (the emulator runs nothing): FAILED, urgently.
    clock.advance(chrono::Duration::minutes(10));
    shifter::handle(&ports, &alarms).await?;
    let d = stack.deployment(&id).await?;
    assert_eq!(d.status(), Status::Failed);
    assert!(
        d.reason
            .clone()
            .unwrap_or_default()
            .contains("rollback did not complete"),
        "{:?}",
        d.reason
    );
    let alerts = stack.received_alerts().await?;
    assert_eq!(
        alert_types(&alerts),
        ["deployment.started", "deployment.failed"]
    );
    assert_eq!(alerts[1].document["severity"], json!("critical"));
    Ok(())
}

#[tokio::test]
async fn a_lost_answer_to_a_write_never_holds_an_effect_back_or_reorders_alerts() -> Result<()> {
    let stack = stack("lostanswer", 1).await?;
    for every in [2, 3] {
        let ports = stack.lossy_ports(every);
        let tag = format!("v11.0.{every}");
        let outcome = on_image_push::handle(&ports, image_push("checkout-api", &tag)?).await?;
        let id = outcome.deployments[0].id.clone();
        let d = stack.deployment(&id).await?;
        assert_eq!(d.status(), Status::Deploying, "{:?}", d.reason);
        let new_td = d.rollout.new_task_definition.clone().ok_or("no revision")?;
        // The started alert went out now, not after a claim lease.
        assert_eq!(
            alert_types(&stack.received_alerts().await?),
            ["deployment.started"]
        );
        let mut ecs = stack.ecs_events();
        for n in 0..3 {
            let task = ecs.new_task_arn();
            on_ecs_event::handle(&ports, ecs.task_exec_format_error(&task, &new_td, 3 + n)?)
                .await?;
        }
        on_ecs_event::handle(&ports, ecs.steady_state()?).await?;
        let d = stack.deployment(&id).await?;
        assert_eq!(d.status(), Status::RolledBack, "{:?}", d.reason);
        assert!(d.outbox.is_empty(), "{:?}", d.outbox);
        assert_eq!(
            alert_types(&stack.received_alerts().await?),
            ["deployment.rolled_back"]
        );
        assert!(
            ports.store.lost() > 3,
            "answers were lost: {}",
            ports.store.lost()
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_whole_audit_trail_is_kept_while_the_record_keeps_only_recent_events() -> Result<()> {
    let stack = stack("trail", 1).await?;
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(
        flightdeck_local::repo_root().join("infra/local/registrations/checkout-api.staging.json"),
    )?)?;
    doc["cluster"] = json!(stack.cluster);
    doc["engine"]["service"] = json!(stack.service);
    doc["gates"]["max_failed_tasks"] = json!(30);
    stack
        .register(&stack.service, ENV, &doc.to_string())
        .await?;
    let (id, new_td) = push(&stack, "v12.0.0").await?;
    let ports = stack.ports();
    let mut ecs = stack.ecs_events();
    for n in 0..30 {
        let task = ecs.new_task_arn();
        on_ecs_event::handle(&ports, ecs.task_out_of_memory(&task, &new_td, 3 + n)?).await?;
    }
    let record = ports.store.get(&id).await?.ok_or("no record")?;
    assert_eq!(record.status(), Status::RollingBack);
    assert_eq!(
        record.events.len(),
        flightdeck::deployment::RECENT_EVENTS,
        "the record keeps the recent events"
    );
    let trail = ports.store.audit_trail(&id).await?;
    // PENDING, DEPLOYING, 30 failures, ROLLING_BACK (and the rollback call issued).
    assert!(trail.len() >= 33, "{}", trail.len());
    assert_eq!(trail.len() as u32, record.events_total);
    assert_eq!(trail[0].status, Some(Status::Pending));
    assert_eq!(
        trail.last().map(|e| &e.reason),
        record.events.last().map(|e| &e.reason)
    );
    Ok(())
}

#[tokio::test]
async fn events_find_their_registrations_by_key_and_a_changed_registration_moves_its_keys()
-> Result<()> {
    use flightdeck::registration::LookupKey;
    let stack = stack("lookups", 1).await?;
    let store = stack.ports().store;
    // Unrelated registrations are never read on an event's path.
    for n in 0..5 {
        let other = format!(
            r#"{{"cluster":"{}","repository":"other-{n}","container":"app",
                "engine":{{"type":"rolling","service":"other-{n}"}}}}"#,
            stack.cluster
        );
        stack.register(&format!("other-{n}"), ENV, &other).await?;
    }
    let by = |key: LookupKey| {
        let store = &store;
        async move {
            store
                .registrations_by(&key)
                .await
                .map(|rs| rs.into_iter().map(|r| r.service).collect::<Vec<_>>())
        }
    };
    assert_eq!(
        by(LookupKey::Repository("checkout-api".into())).await?,
        ["checkout-api"]
    );
    assert_eq!(
        by(LookupKey::EcsService(stack.service.clone())).await?,
        std::slice::from_ref(&stack.service)
    );
    // Re-registered with another alarm: the old alarm no longer leads to it.
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(
        flightdeck_local::repo_root().join("infra/local/registrations/checkout-api.staging.json"),
    )?)?;
    doc["cluster"] = json!(stack.cluster);
    doc["engine"]["service"] = json!(stack.service);
    doc["gates"]["alarms"] = json!(["lookups-before"]);
    stack
        .register(&stack.service, ENV, &doc.to_string())
        .await?;
    assert_eq!(
        by(LookupKey::Alarm("lookups-before".into())).await?.len(),
        1
    );
    doc["gates"]["alarms"] = json!(["lookups-after"]);
    stack
        .register(&stack.service, ENV, &doc.to_string())
        .await?;
    assert!(
        by(LookupKey::Alarm("lookups-before".into()))
            .await?
            .is_empty()
    );
    assert_eq!(by(LookupKey::Alarm("lookups-after".into())).await?.len(), 1);
    assert_eq!(
        store
            .registration(&stack.service, ENV)
            .await?
            .ok_or("missing")?
            .spec
            .gates
            .alarms,
        ["lookups-after"]
    );
    Ok(())
}
