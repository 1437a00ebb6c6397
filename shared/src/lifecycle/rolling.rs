//! The `rolling` engine: ECS replaces the service's tasks itself (circuit breaker on); ready
//! is ECS's word that the rollout is steady, a rollback is UpdateService back to the previous
//! revision, and SHIFTING is only the bake with all traffic on the new revision.

use chrono::{DateTime, Duration, Utc};

use super::{
    Engine, ServiceObservation, concerns, note_or_ready, rolled_back, succeed, transition,
};
use crate::deployment::{Deployment, Effect, State, Status, short_task_definition};

pub(super) struct Rolling;

impl Engine for Rolling {
    fn deploy(&self, d: &mut Deployment, _registered: &super::Registered) -> Effect {
        Effect::Deploy {
            service: d.rollout.ecs_service.clone(),
            task_definition: d.rollout.new_task_definition.clone().unwrap_or_default(),
            desired_count: None,
            strategy: None,
        }
    }

    fn put_on(&self, d: &Deployment) -> String {
        format!("ECS service {}", d.rollout.ecs_service)
    }

    fn observe(&self, d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>) {
        match d.status() {
            // The service's own desired count now (autoscaling may have changed it since the
            // start); ready when ECS reports the rollout of the new revision done.
            Status::Deploying => {
                let ready = note_or_ready(d, seen, seen.desired.max(1), seen.steady, now);
                if let Some(why) = ready {
                    if let Some(progress) = d.progress_mut() {
                        progress.settled_at.get_or_insert(now);
                    }
                    super::ready(d, why, "aws.ecs", now);
                }
            }
            // The service itself says it: whether our call's answer came back or not (it may
            // have been lost), or ECS's circuit breaker got there first.
            Status::RollingBack => super::rolled_back_if_serving(d, seen, now),
            _ => {}
        }
    }

    /// ECS says the service is settled: during a rollout on the new revision, during a rollback
    /// on the previous one.
    fn settled(
        &self,
        d: &mut Deployment,
        at: DateTime<Utc>,
        ecs_deployment_id: Option<&str>,
        now: DateTime<Utc>,
    ) {
        match d.status() {
            Status::Deploying => {
                let ours = match ecs_deployment_id {
                    Some(id) => concerns(
                        d.rollout.ecs_deployment_id.as_deref(),
                        d.rollout.started_at,
                        id,
                        at,
                    ),
                    None => d.rollout.started_at.is_some_and(|since| at >= since),
                };
                let unsettled = d.progress_mut().filter(|p| p.settled_at.is_none());
                if ours && let Some(progress) = unsettled {
                    progress.settled_at = Some(at);
                    d.updated_at = now;
                    let desired = d.rollout.desired_count.unwrap_or(1);
                    let why = format!(
                        "ECS reports the rollout of {} steady ({desired} desired)",
                        d.rollout
                            .new_task_definition
                            .as_deref()
                            .map(short_task_definition)
                            .unwrap_or("the new revision")
                    );
                    super::ready(d, why, "aws.ecs", now);
                }
            }
            Status::RollingBack => {
                let Some(rollback) = d.rollback().cloned() else {
                    return;
                };
                let Some(issued_at) = rollback.issued_at else {
                    return;
                };
                let ours = match ecs_deployment_id {
                    Some(id) => concerns(
                        rollback.ecs_deployment_id.as_deref(),
                        Some(issued_at),
                        id,
                        at,
                    ),
                    None => at >= issued_at,
                };
                if ours {
                    let why = format!(
                        "ECS reports the service steady on the previous revision {}",
                        short_task_definition(&rollback.to_task_definition)
                    );
                    rolled_back(d, why, "aws.ecs", now);
                }
            }
            _ => {}
        }
    }

    /// All traffic is on the new revision once ECS replaced the tasks: succeed, or bake first.
    fn ready(&self, d: &mut Deployment, why: String, actor: &str, now: DateTime<Utc>) {
        d.traffic_percent = 100;
        if d.bake_minutes == 0 {
            succeed(d, now);
        } else {
            let Some(mut progress) = d.progress().cloned() else {
                return;
            };
            progress.bake_until = Some(now + Duration::minutes(i64::from(d.bake_minutes)));
            let reason = format!("{why}; baking for {} min", d.bake_minutes);
            transition(d, State::Shifting(progress), reason, actor, now);
        }
    }

    fn bake_over(&self, d: &mut Deployment, now: DateTime<Utc>) {
        succeed(d, now);
    }

    fn succeeded(&self, d: &mut Deployment, _now: DateTime<Utc>) -> String {
        if d.bake_minutes == 0 {
            let desired = d.rollout.desired_count.unwrap_or(1);
            format!("{desired} new-revision tasks running and ECS reports the rollout steady")
        } else {
            format!(
                "bake of {} min passed with every gate green",
                d.bake_minutes
            )
        }
    }

    fn roll_back(&self, _d: &mut Deployment, previous: String) -> Effect {
        Effect::RollBack {
            to_task_definition: previous,
        }
    }
}
