//! The JSON documents the API returns.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::deployment::{Deployment, Status, Trigger};
use crate::registration::Registration;

/// A deployment as the API returns it (DESIGN.md, "A deployment as the API returns it").
#[derive(Serialize)]
struct DeploymentView<'a> {
    id: &'a str,
    service: &'a str,
    environment: &'a str,
    image: &'a str,
    digest: &'a str,
    tag: Option<&'a str>,
    trigger: Trigger,
    status: Status,
    traffic_percent: u8,
    started_by: Option<&'a str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    reason: Option<&'a str>,
    events: &'a [crate::deployment::AuditEvent],
    /// Who started it (and the chain it was promoted from): none of them may approve it.
    starters: &'a [String],
    /// The phase with the data only it has (bake end, progress deadline, hold, rollback, watch).
    phase: &'a crate::deployment::State,
    /// alb-weights: the weight steps and the one reached; ecs-native: ECS's stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<&'a str>,
    bake_minutes: u32,
    gates: GatesView<'a>,
}

/// Each gate's state, for the dashboard.
#[derive(Serialize)]
struct GatesView<'a> {
    alarms: &'a [String],
    failed_tasks: u32,
    max_failed_tasks: u32,
    failure_reasons: &'a [crate::deployment::FailureTally],
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'a crate::deployment::StepVerdict>,
    watch_minutes: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    findings: &'a [crate::scan::Finding],
}

pub fn deployment_json(d: &Deployment) -> Value {
    serde_json::to_value(DeploymentView {
        id: &d.id,
        service: &d.service,
        environment: &d.environment,
        image: &d.image,
        digest: &d.digest,
        tag: d.tag.as_deref(),
        trigger: d.trigger,
        status: d.status(),
        traffic_percent: d.traffic_percent,
        started_by: d.started_by.as_deref(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        finished_at: d.finished_at(),
        reason: d.reason.as_deref(),
        events: &d.events,
        starters: &d.starters,
        phase: &d.state,
        steps: d.traffic.as_ref().map(|t| t.steps.as_slice()),
        step: d.traffic.as_ref().map(|t| t.step),
        stage: d.native.as_ref().and_then(|n| n.stage.as_deref()),
        bake_minutes: d.bake_minutes,
        gates: GatesView {
            alarms: &d.alarms,
            failed_tasks: d.failed_count,
            max_failed_tasks: d.max_failed_tasks,
            failure_reasons: &d.failure_reasons,
            verdict: d.gates.verdict.as_ref(),
            watch_minutes: d.gates.watch_minutes,
            findings: &d.gates.findings,
        },
    })
    .unwrap_or(Value::Null)
}

pub(super) fn registration_json(r: &Registration) -> Value {
    let mut body = serde_json::to_value(&r.spec).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.insert("service".into(), json!(r.service));
        map.insert("environment".into(), json!(r.environment));
    }
    body
}
