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
