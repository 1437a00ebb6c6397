//! `ecs-hook`: ECS's Lambda lifecycle hook for `ecs-native` services. Each invocation finds the
//! deployment of its service deployment (recording one when the rollout was started outside
//! Flightdeck), reads the gates (alarms, stopped tasks of the new revision), decides, saves, and
//! only then answers from the record: SUCCEEDED when every gate is green, FAILED once the
//! deployment is rolling back, IN_PROGRESS (ask again after `callBackDelay`) while an approval
//! is pending, and whenever a read or a write fails: an outage of Flightdeck neither lets a
//! rollout through unjudged nor rolls a good one back. With `gates.analysis` it takes the canary
//! judge's look too (the production rule's target groups, then GetMetricData), and holds the call
//! before ECS's next production shift until a verdict taken after the step's bake.

use serde_json::Value;
use tracing::{info, warn};

use super::shifter::{judge_native, revision_task_definition, stopped_failures};
use super::{HandlerError, StageEdit, apply, update_stage};
use crate::deployment::{Deployment, Status, Trigger};
use crate::events::EventError;
use crate::lifecycle::{self, ExternalRollout, Fact, HookCall};
use crate::native::{HookAnswer, HookInvocation, HookStatus};
use crate::ports::{
    Adapters, AlarmReader, Clock, Created, DeploymentStore, EcsControl, MetricsReader, PortError,
};
use crate::registration::{Engine, LookupKey, Registration};

/// How soon ECS asks again while an approval is pending.
pub const WAIT_SECONDS: u32 = 60;
/// How soon ECS asks again after a read or write failed.
pub const RETRY_SECONDS: u32 = 15;

/// Answers one invocation. Only an input that is not a hook invocation at all is an error;
/// everything else gets an answer.
pub async fn handle<P: Adapters, A: AlarmReader + MetricsReader>(
    ports: &P,
    alarms: &A,
    input: &Value,
) -> Result<HookAnswer, HandlerError> {
    let call = HookInvocation::parse(input).map_err(|message| EventError::Malformed {
        id: input
            .get("executionId")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        detail_type: "ECS lifecycle hook".to_string(),
        message,
    })?;
    let execution = call.execution_id.as_str();
    match answer(ports, alarms, &call).await {
        Ok((answer, why)) => {
            info!(execution, stage = ?call.stage, status = ?answer.hook_status,
                  service_deployment = %call.service_deployment_arn, "hook answered: {why}");
            Ok(answer)
        }
        Err(e) => {
            warn!(execution, stage = ?call.stage, error = %e,
                  service_deployment = %call.service_deployment_arn,
                  "hook cannot decide; ECS asks again");
            Ok(HookAnswer::ask_again(
                RETRY_SECONDS,
                call.hook_details.clone(),
            ))
        }
    }
}

/// `(cluster, service)` of a service ARN (`…:service/CLUSTER/SERVICE`, or the older
/// `…:service/SERVICE`).
fn service_of(arn: &str) -> Option<(Option<&str>, &str)> {
    let (_, path) = arn.split_once(":service/")?;
    match path.split_once('/') {
        Some((cluster, service)) if !cluster.is_empty() && !service.is_empty() => {
            Some((Some(cluster), service))
        }
        None if !path.is_empty() => Some((None, path)),
        _ => None,
    }
}

/// The target revision's share of the traffic, as ECS reported it (weights by service revision).
fn percent(weights: &std::collections::BTreeMap<String, f64>, revision: &str) -> Option<u8> {
    weights
        .get(revision)
        .filter(|w| w.is_finite())
        .map(|w| w.clamp(0.0, 100.0).round() as u8)
}

async fn answer<P: Adapters, A: AlarmReader + MetricsReader>(
    ports: &P,
    alarms: &A,
    call: &HookInvocation,
) -> Result<(HookAnswer, String), HandlerError> {
    let reply = |status: HookStatus, why: String| {
        let delay = (status == HookStatus::InProgress).then_some(WAIT_SECONDS);
        let answer = HookAnswer {
            hook_status: status,
            call_back_delay: delay,
            hook_details: call.hook_details.clone(),
        };
        (answer, why)
    };
    let Some((cluster, service)) = service_of(&call.service_arn) else {
        return Err(PortError::remote(
            "ECS lifecycle hook",
            format!("{} is not an ECS service ARN", call.service_arn),
        )
        .into());
    };
    let registrations = ports
        .store()
        .registrations_by(&LookupKey::EcsService(service.to_string()))
        .await?;
    let Some(registration) = registrations.into_iter().find(|r| {
        matches!(&r.spec.engine, Engine::EcsNative { service: s } if s == service)
            && cluster.is_none_or(|c| c == r.spec.cluster)
    }) else {
        // Not Flightdeck's to judge: no registration names this service as ecs-native.
        let why = format!(
            "ECS service {service} has no ecs-native registration; Flightdeck does not gate it"
        );
        return Ok(reply(HookStatus::Succeeded, why));
    };
    let stage = call.stage.name().to_string();
    let mut active = Vec::new();
    for id in ports
        .store()
        .active(&registration.service, &registration.environment)
        .await?
    {
        active.extend(ports.store().get(&id).await?);
    }
    let mut target = Target {
        revision: &call.target_service_revision_arn,
        read: None,
    };
    // The newest records, read once: an ended one may own this service deployment (as its
    // rollback, or bound to it while ECS still rolls it back).
    let recent = ports
        .store()
        .page(
            &registration.service,
            &registration.environment,
            None,
            RECENT,
            None,
        )
        .await?
        .deployments;
    if let Some(id) = rollback_of(ports, &active, &recent, call, &mut target).await? {
        let why = format!(
            "the service deployment puts deployment {id}'s previous revision back: the \
             rollback goes on"
        );
        return Ok(reply(HookStatus::Succeeded, why));
    }
    let Some((d, target)) = find_or_record(
        ports,
        &registration,
        active,
        &recent,
        call,
        &stage,
        &mut target,
    )
    .await?
    else {
        let why = "the service's first deployment: there is no previous revision to roll back \
                   to, so Flightdeck does not gate it"
            .to_string();
        return Ok(reply(HookStatus::Succeeded, why));
    };
    let id = d.id.clone();
    // The gates, read now: a read that fails is an error (IN_PROGRESS), never a pass.
    let gates_read = matches!(d.status(), Status::Deploying | Status::Shifting);
    if gates_read {
        let mut names = d.alarms.clone();
        names.extend(registration.spec.gates.alarms.iter().cloned());
        names.sort();
        names.dedup();
        if !names.is_empty() {
            for state in alarms.states(&names).await? {
                if state.state == "ALARM" {
                    let fact = Fact::AlarmFired {
                        alarm: state.name,
                        reason: state.reason,
                        gating: true,
                        since: None,
                    };
                    apply(ports, &id, &fact).await?;
                }
            }
        }
        for task in stopped_failures(ports, &d).await? {
            apply(ports, &id, &Fact::Task(task)).await?;
        }
    }
    // What ECS says of the service deployment now: rolling back, ECS calls the traffic stages
    // again, and a rollback is let go on whatever the record says (it learns of it here).
    let view = ports
        .ecs()
        .service_deployment(&call.service_deployment_arn)
        .await?
        .ok_or_else(|| {
            PortError::remote(
                "ECS DescribeServiceDeployments",
                format!(
                    "service deployment {} not found",
                    call.service_deployment_arn
                ),
            )
        })?;
    let ecs_rolls_back = view.status.starts_with("ROLLBACK");
    let observed = Fact::NativeObserved(lifecycle::NativeView {
        arn: view.arn,
        status: view.status,
        stage: view.stage,
        target_task_definition: target.clone(),
        production_percent: view.production_percent,
        status_reason: view.status_reason,
        rollback_reason: view.rollback_reason,
        serving: None,
    });
    let observed = apply(ports, &id, &observed).await?;
    // The canary judge's look (its read failing is an error: IN_PROGRESS, never a pass), so that
    // the stage this invocation answers is decided with its verdict.
    if gates_read && !ecs_rolls_back {
        judge_native(ports, alarms, observed.as_ref().unwrap_or(&d), false).await?;
    }
    let fact = Fact::HookInvoked(HookCall {
        service_deployment_arn: call.service_deployment_arn.clone(),
        stage,
        target_task_definition: target,
        test_percent: percent(
            &call.test_traffic_weights,
            &call.target_service_revision_arn,
        ),
        production_percent: percent(
            &call.production_traffic_weights,
            &call.target_service_revision_arn,
        ),
    });
    let after = apply(ports, &id, &fact)
        .await?
        .ok_or_else(|| HandlerError::NotFound(id.clone()))?;
    let bound = after
        .native
        .as_ref()
        .and_then(|n| n.service_deployment_arn.as_deref());
    if bound != Some(call.service_deployment_arn.as_str()) {
        return Err(PortError::remote(
            "ECS lifecycle hook",
            format!(
                "deployment {id} follows another service deployment ({})",
                bound.unwrap_or("none yet")
            ),
        )
        .into());
    }
    if ecs_rolls_back {
        let why = format!(
            "deployment {id}: ECS is rolling the service deployment back; the hook lets the rollback go on"
        );
        return Ok(reply(HookStatus::Succeeded, why));
    }
    let (status, why) = lifecycle::hook_answer(&after);
    // A record that was not rolling out yet when this invocation loaded it (its start's save
    // still on its way) had its gates unread: never a pass on that; ECS asks again shortly.
    if status == HookStatus::Succeeded && !gates_read && after.status() != Status::Succeeded {
        let why = format!(
            "deployment {id} started while the hook read it ({}); its gates are read at the next \
             invocation",
            after.status()
        );
        return Ok((
            HookAnswer::ask_again(RETRY_SECONDS, call.hook_details.clone()),
            why,
        ));
    }
    Ok(reply(status, format!("deployment {id}: {why}")))
}

/// The task definition of the invocation's target revision: read once, when first needed.
struct Target<'a> {
    revision: &'a str,
    read: Option<Option<String>>,
}

impl Target<'_> {
    async fn get<P: Adapters>(&mut self, ports: &P) -> Result<Option<String>, HandlerError> {
        if self.read.is_none() {
            self.read = Some(revision_task_definition(ports, self.revision).await?);
        }
        Ok(self.read.clone().flatten())
    }
}

/// How many of a service and environment's newest records the hook looks through for the one
/// whose rollback a service deployment is (newer pushes, queued or aborted meanwhile, may have
/// come after it).
const RECENT: u32 = 10;

/// The deployment whose rollback this service deployment is (UpdateService back to the
/// previous revision, when the rollout had completed before the rollback): by the ARN the call
/// answered — also once that deployment has ended (its rollback's deadline may pass while ECS
/// still walks the rollback) — or, that answer lost, by its target revision being the previous
/// revision of a deployment rolling back or ended FAILED with its rollback issued. Such a
/// service deployment is never gated or recorded as a rollout of its own: stopping it would put
/// the bad revision back.
async fn rollback_of<P: Adapters>(
    ports: &P,
    active: &[Deployment],
    recent: &[Deployment],
    call: &HookInvocation,
    target: &mut Target<'_>,
) -> Result<Option<String>, HandlerError> {
    let arn = call.service_deployment_arn.as_str();
    let ended = recent
        .iter()
        .filter(|d| !active.iter().any(|a| a.id == d.id));
    for d in active.iter().chain(ended).filter(|d| !bound_to(d, arn)) {
        // Rolling back, the call may have landed with its answer (or the invocation that made
        // it) lost: its service deployment is recognised by its target revision all the same.
        let Some(rollback) = d
            .rollback()
            .filter(|r| r.issued_at.is_some() || d.status() == Status::RollingBack)
        else {
            continue;
        };
        let ours = match rollback.ecs_deployment_id.as_deref() {
            Some(back) => back == arn,
            None if matches!(d.status(), Status::RollingBack | Status::Failed) => {
                target.get(ports).await?.as_deref() == Some(&rollback.to_task_definition)
            }
            None => false,
        };
        if ours {
            return Ok(Some(d.id.clone()));
        }
    }
    Ok(None)
}

fn bound_to(d: &Deployment, arn: &str) -> bool {
    d.native
        .as_ref()
        .and_then(|n| n.service_deployment_arn.as_deref())
        == Some(arn)
}

/// The deployment of the invocation's service deployment, and — when it was recognised by its
/// target revision rather than bound already — the task definition that recognised it. A
/// rollout nobody in Flightdeck started is recorded (`None`: the service's first deployment,
/// which has nothing to roll back to).
async fn find_or_record<P: Adapters>(
    ports: &P,
    registration: &Registration,
    active: Vec<Deployment>,
    recent: &[Deployment],
    call: &HookInvocation,
    stage: &str,
    target: &mut Target<'_>,
) -> Result<Option<(Deployment, Option<String>)>, HandlerError> {
    let arn = call.service_deployment_arn.as_str();
    let mut unbound = Vec::new();
    for d in active {
        if bound_to(&d, arn) {
            // ECS runs this rollout: a release before it still watched is watched no longer
            // (asked at every hook call, so that a call that failed after recording the
            // rollout is made up for by the next).
            if d.trigger == Trigger::External && d.in_flight() {
                take_slot(ports, registration, &d.id).await?;
                super::end_watches(ports, &d).await?;
            }
            return Ok(Some((d, None)));
        }
        let free = d
            .native
            .as_ref()
            .is_some_and(|n| n.service_deployment_arn.is_none());
        if free && d.rollout.new_task_definition.is_some() {
            unbound.push(d);
        }
    }
    // Ended already (ECS asks again while it rolls back, say).
    if let Some(d) = recent.iter().find(|d| bound_to(d, arn)) {
        return Ok(Some((d.clone(), None)));
    }
    let external_id = lifecycle::external_deployment_id(arn);
    if let Some(d) = ports.store().get(&external_id).await? {
        return Ok(Some((d, None)));
    }
    let target = target.get(ports).await?.ok_or_else(|| {
        PortError::remote(
            "ECS DescribeServiceRevisions",
            format!(
                "service revision {} not found",
                call.target_service_revision_arn
            ),
        )
    })?;
    if let Some(d) = unbound
        .into_iter()
        .find(|d| d.rollout.new_task_definition.as_deref() == Some(target.as_str()))
    {
        return Ok(Some((d, Some(target))));
    }
    record_external(ports, registration, call, stage, target).await
}

/// A rollout started outside Flightdeck holds its service and environment's slot (a push
/// arriving meanwhile queues behind it), unless a deployment of Flightdeck's own holds it in
/// flight.
async fn take_slot<P: Adapters>(
    ports: &P,
    registration: &Registration,
    id: &str,
) -> Result<(), HandlerError> {
    let (service, environment) = (&registration.service, &registration.environment);
    let mut holders = Vec::new();
    update_stage(ports, service, environment, |stage, _| {
        holders.push(stage.holder.clone());
        Ok(StageEdit::Keep(()))
    })
    .await?;
    let holder = holders.into_iter().flatten().next();
    let free = match holder.as_deref() {
        None => true,
        Some(h) if h == id => false,
        Some(h) => ports
            .store()
            .get(h)
            .await?
            .is_none_or(|o| !o.status().is_active()),
    };
    if free {
        update_stage(ports, service, environment, |stage, _| {
            if stage.holder != holder {
                return Ok(StageEdit::Keep(()));
            }
            stage.holder = Some(id.to_string());
            Ok(StageEdit::Save(()))
        })
        .await?;
    }
    Ok(())
}

/// Records a rollout started outside Flightdeck (once: its id comes from the service
/// deployment) and has it hold its service and environment's slot, so that a push arriving
/// meanwhile queues behind it.
async fn record_external<P: Adapters>(
    ports: &P,
    registration: &Registration,
    call: &HookInvocation,
    stage: &str,
    target: String,
) -> Result<Option<(Deployment, Option<String>)>, HandlerError> {
    let arn = call.service_deployment_arn.as_str();
    let sd = ports.ecs().service_deployment(arn).await?.ok_or_else(|| {
        PortError::remote(
            "ECS DescribeServiceDeployments",
            format!("service deployment {arn} not found"),
        )
    })?;
    let sources = ports
        .ecs()
        .revision_task_definitions(&sd.source_revision_arns)
        .await?;
    let Some((_, previous)) = sources.into_iter().find(|(_, td)| *td != target) else {
        warn!(service_deployment = %arn, "a rollout with no previous revision is not recorded");
        return Ok(None);
    };
    let image = ports
        .ecs()
        .image_of(&target, &registration.spec.container)
        .await?
        .unwrap_or_default();
    let rollout = ExternalRollout {
        service_deployment_arn: arn.to_string(),
        previous_task_definition: previous,
        new_task_definition: target,
        image,
        desired_count: sd.target_desired.max(1),
    };
    let d = lifecycle::external(registration, &rollout, stage, ports.clock().now());
    let id = d.id.clone();
    if ports.store().create(&d).await? == Created::New {
        info!(deployment_id = %id, service_deployment = %arn, "rollout started outside Flightdeck recorded");
    }
    take_slot(ports, registration, &id).await?;
    let d = apply(ports, &id, &Fact::Resume)
        .await?
        .ok_or_else(|| HandlerError::NotFound(id.clone()))?;
    // ECS runs this rollout now: the release before is watched no longer (its watch rollback
    // would undo this one).
    super::end_watches(ports, &d).await?;
    Ok(Some((d, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_arn_names_its_cluster_and_service() {
        assert_eq!(
            service_of("arn:aws:ecs:eu-west-1:123456789012:service/prod/checkout-api"),
            Some((Some("prod"), "checkout-api"))
        );
        assert_eq!(
            service_of("arn:aws:ecs:eu-west-1:123456789012:service/checkout-api"),
            Some((None, "checkout-api"))
        );
        assert_eq!(
            service_of("arn:aws:ecs:eu-west-1:123456789012:cluster/prod"),
            None
        );
    }
}
