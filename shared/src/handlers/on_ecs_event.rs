//! `on-ecs-event`: task, deployment and service events of a managed ECS service become facts for
//! the deployment in flight on it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{info, warn};

use super::shifter::observe;
use super::{HandlerError, Outcome, apply};
use crate::deployment::{Deployment, Status};
use crate::events::{
    self, ECS_DEPLOYMENT_STATE_CHANGE, ECS_SERVICE_ACTION, ECS_TASK_STATE_CHANGE,
    EcsDeploymentStateChange, EcsServiceAction, EcsTaskStateChange, Envelope, EventError,
};
use crate::lifecycle::{Fact, TaskObservation};
use crate::ports::{Adapters, Clock, DeploymentStore};
use crate::registration::LookupKey;

/// Which ECS service an event is about, and what it says.
struct Parsed {
    cluster: Option<String>,
    service: String,
    fact: Fact,
}

pub async fn handle<P: Adapters>(ports: &P, event: Value) -> Result<Outcome, HandlerError> {
    let envelope = events::envelope(event)?;
    let event_id = events::event_id(&envelope).to_string();
    let parsed = match parse(&envelope, ports.clock().now())? {
        Ok(parsed) => parsed,
        Err(why) => {
            info!(event_id, "skipped: {why}");
            return Ok(Outcome::skipped(why));
        }
    };

    let key = LookupKey::EcsService(parsed.service.clone());
    let registrations = ports.store().registrations_by(&key).await?;
    let managed: Vec<_> = registrations
        .iter()
        .filter(|r| {
            r.ecs_services().contains(&parsed.service.as_str())
                && parsed
                    .cluster
                    .as_deref()
                    .is_none_or(|c| c == r.spec.cluster)
        })
        .collect();
    if managed.is_empty() {
        let why = format!(
            "event {event_id}: ECS service {} is not managed by Flightdeck",
            parsed.service
        );
        info!(event_id, "skipped: {why}");
        return Ok(Outcome::skipped(why));
    }

    let mut outcome = Outcome::default();
    for registration in managed {
        for id in ports
            .store()
            .active(&registration.service, &registration.environment)
            .await?
        {
            let Some(current) = ports.store().get(&id).await? else {
                continue;
            };
            // Events speak of one ECS service: the one taking the new revision. A deployment
            // still starting or queued has no task of its own yet (its revision is recorded
            // before ECS is told to run it), so the event is not about it.
            // A SUCCEEDED deployment in its watch window still counts its revision's crashes.
            let watched = current.watch_until().is_some() && matches!(parsed.fact, Fact::Task(_));
            if current.rollout.ecs_service != parsed.service
                || !(watched
                    || matches!(
                        current.status(),
                        Status::Deploying | Status::Shifting | Status::RollingBack
                    ))
            {
                continue;
            }
            // "Steady" (or "completed" for an ECS deployment we cannot name) says nothing of
            // which revision: ECS may have rolled the service back by itself, its FAILED event
            // lost or late. It counts only when the service runs the revision awaited.
            if current.native.is_none()
                && settles_by_word(&current, &parsed.fact)
                && let Some(seen) = observe(ports, &current).await?
                && !awaits(&current, &seen.task_definition)
            {
                info!(event_id, deployment_id = %id, runs = %seen.task_definition,
                      "skipped: ECS reports the service steady on a revision this deployment does not await");
                continue;
            }
            let Some(mut d) = apply(ports, &id, &parsed.fact).await? else {
                continue;
            };
            // ecs-native: a deployment or service event says ECS moved on; what to is read from
            // the service deployment now rather than at the next tick.
            if d.native.is_some()
                && matches!(
                    parsed.fact,
                    Fact::EcsDeployment { .. } | Fact::ServiceAction { .. }
                )
                && let Some(view) = super::shifter::native_view(ports, &d).await?
                && let Some(after) = apply(ports, &id, &Fact::NativeObserved(view)).await?
            {
                d = after;
            }
            // A new-revision task running may be what makes the rollout ready: look now rather
            // than at the next tick.
            if let Fact::Task(task) = &parsed.fact
                && d.native.is_none()
                && task.last_status == "RUNNING"
                && d.status() == Status::Deploying
                && d.rollout.new_task_definition.as_deref()
                    == Some(task.task_definition_arn.as_str())
                && let Some(seen) = observe(ports, &d).await?
                && let Some(after) = apply(ports, &id, &Fact::ServiceObserved(seen)).await?
            {
                d = after;
            }
            info!(event_id, deployment_id = %d.id, status = %d.status(), "ECS event applied");
            outcome.deployments.push(d);
        }
    }
    if outcome.deployments.is_empty() {
        outcome.skipped = Some(format!(
            "event {event_id}: no deployment in flight for ECS service {}",
            parsed.service
        ));
    }
    Ok(outcome)
}

/// Whether `fact` is ECS's word that the service settled, without naming an ECS deployment
/// this record knows.
fn settles_by_word(d: &Deployment, fact: &Fact) -> bool {
    match fact {
        Fact::ServiceAction { event_name, .. } => event_name == "SERVICE_STEADY_STATE",
        Fact::EcsDeployment {
            ecs_deployment_id,
            event_name,
            ..
        } => {
            let known = [
                d.rollout.ecs_deployment_id.as_deref(),
                d.rollback().and_then(|r| r.ecs_deployment_id.as_deref()),
            ];
            event_name == "SERVICE_DEPLOYMENT_COMPLETED"
                && !known.contains(&Some(ecs_deployment_id.as_str()))
        }
        _ => false,
    }
}

/// Whether `task_definition` is the revision the deployment waits to see running.
fn awaits(d: &Deployment, task_definition: &str) -> bool {
    match d.status() {
        Status::RollingBack => d
            .rollback()
            .is_some_and(|r| r.to_task_definition == task_definition),
        _ => d.rollout.new_task_definition.as_deref() == Some(task_definition),
    }
}

/// Parses the event; the inner `Err` is a reason to skip it (not an error of the event).
fn parse(envelope: &Envelope, now: DateTime<Utc>) -> Result<Result<Parsed, String>, EventError> {
    let event_id = events::event_id(envelope);
    let at = |t: Option<DateTime<Utc>>| t.or(envelope.time).unwrap_or(now);
    let service_resource = || {
        envelope
            .resources
            .iter()
            .flatten()
            .find_map(|arn| events::service_from_arn(arn))
            .map(|(cluster, service)| (cluster.map(str::to_string), service.to_string()))
            .ok_or_else(|| EventError::Malformed {
                id: event_id.to_string(),
                detail_type: envelope.detail_type.clone(),
                message: "no ECS service ARN in `resources`".to_string(),
            })
    };
    match envelope.detail_type.as_str() {
        ECS_TASK_STATE_CHANGE => {
            let task: EcsTaskStateChange = events::detail(envelope)?;
            let Some(service) = task.service_name() else {
                return Ok(Err(format!(
                    "event {event_id}: task {} is not a service task (group {:?})",
                    task.task_arn, task.group
                )));
            };
            Ok(Ok(Parsed {
                cluster: Some(task.cluster_name().to_string()),
                service: service.to_string(),
                fact: Fact::Task(TaskObservation {
                    task_arn: task.task_arn.clone(),
                    task_definition_arn: task.task_definition_arn.clone(),
                    last_status: task.last_status.clone(),
                    version: task.version,
                    stop: task.stop(),
                }),
            }))
        }
        ECS_DEPLOYMENT_STATE_CHANGE => {
            let detail: EcsDeploymentStateChange = events::detail(envelope)?;
            let (cluster, service) = service_resource()?;
            Ok(Ok(Parsed {
                cluster,
                service,
                fact: Fact::EcsDeployment {
                    ecs_deployment_id: detail.deployment_id,
                    event_name: detail.event_name,
                    reason: detail.reason,
                    at: at(detail.updated_at),
                },
            }))
        }
        ECS_SERVICE_ACTION => {
            let detail: EcsServiceAction = events::detail(envelope)?;
            let (cluster, service) = service_resource()?;
            let cluster = cluster.or(detail
                .cluster_arn
                .as_deref()
                .map(|a| events::last_segment(a).to_string()));
            Ok(Ok(Parsed {
                cluster,
                service,
                fact: Fact::ServiceAction {
                    event_name: detail.event_name,
                    event_type: detail.event_type,
                    reason: detail.reason,
                    at: at(detail.created_at),
                },
            }))
        }
        other => {
            warn!(event_id, detail_type = other, "unexpected detail-type");
            Ok(Err(format!(
                "event {event_id}: `{other}` is not an ECS event this function handles"
            )))
        }
    }
}
