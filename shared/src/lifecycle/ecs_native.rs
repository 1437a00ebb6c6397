//! The `ecs-native` engine: ECS runs the rollout itself (its BLUE_GREEN, LINEAR or CANARY
//! strategy: scale-up, test traffic, production traffic in steps, bakes) and calls `ecs-hook` at
//! each lifecycle stage. Flightdeck starts it with UpdateService, follows its service deployment
//! (the reconcile loop's DescribeServiceDeployments and the hook's invocations), answers the hook
//! from the same gates as every engine, and rolls back with StopServiceDeployment(ROLLBACK).
//!
//! - The record is bound to one service deployment: the one UpdateService's answer named, or —
//!   that answer lost — the first one seen whose target revision runs the new task definition.
//!   Nothing ECS says of another service deployment changes this record.
//! - DEPLOYING until ECS moves production traffic, then SHIFTING with ECS's production weight;
//!   SUCCEEDED when ECS reports the service deployment SUCCESSFUL.
//! - A rollback ECS starts on its own (its circuit breaker, its alarms, a hook answered FAILED)
//!   is followed as ROLLING_BACK; ROLLBACK_SUCCESSFUL is ROLLED_BACK with ECS's reason,
//!   ROLLBACK_FAILED (or a stop without rollback) is FAILED with the urgent alert.
//! - An approval is asked at the hook, not before the start: the stage is answered IN_PROGRESS
//!   until another principal approves, and the progress deadline waits meanwhile.

use chrono::{DateTime, Duration, Utc};

use super::{
    Engine, HookCall, NativeView, ServiceObservation, alert, finish, note, record_observed,
    roll_back, rolled_back, succeed, transition,
};
use crate::alerts::EventType;
use crate::deployment::{
    AuditEvent, Deployment, Effect, NativeRollout, Progress, Rollback, State, Status, Trigger,
    short_task_definition,
};
use crate::native::{HookStage, HookStatus, NativeStrategy};
use crate::registration::Registration;

pub(super) struct EcsNative;

/// `…/service-deployment/CLUSTER/SERVICE/ID` → `ID`, for text meant to be read.
pub fn short_service_deployment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn strategy_name(d: &Deployment) -> &'static str {
    d.native
        .as_ref()
        .map_or("BLUE_GREEN", |n| n.strategy.name())
}

/// Approval is asked at the hook: pending while nobody approved.
fn approval_pending(d: &Deployment) -> bool {
    d.approval_required && d.approved_by.is_none()
}

/// How long ECS may rightly show no progress: the progress deadline plus the longest bake it
/// holds a step for.
fn window(d: &Deployment) -> Duration {
    let bake = d
        .native
        .as_ref()
        .map_or(0, |n| n.strategy.longest_bake_minutes());
    super::deadline(d) + Duration::minutes(i64::from(bake))
}

/// ECS showed progress: the deadline starts again.
fn progressed(d: &mut Deployment, now: DateTime<Utc>) {
    let until = now + window(d);
    if let Some(progress) = d.progress_mut() {
        progress.progress_deadline = until;
    }
}

impl Engine for EcsNative {
    fn deploy(&self, d: &mut Deployment, _registered: &super::Registered) -> Effect {
        Effect::Deploy {
            service: d.rollout.ecs_service.clone(),
            task_definition: d.rollout.new_task_definition.clone().unwrap_or_default(),
            desired_count: None,
            strategy: d.native.as_ref().map(|n| n.strategy.clone()),
        }
    }

    fn put_on(&self, d: &Deployment) -> String {
        format!(
            "ECS service {}, rolled out by ECS's {} strategy",
            d.rollout.ecs_service,
            strategy_name(d)
        )
    }

    /// UpdateService answers with the service deployment it started.
    fn started(&self, d: &mut Deployment, now: DateTime<Utc>) {
        let arn = d
            .rollout
            .ecs_deployment_id
            .clone()
            .filter(|id| id.contains(":service-deployment/"));
        if let Some(native) = d.native.as_mut()
            && native.service_deployment_arn.is_none()
        {
            native.service_deployment_arn = arn;
        }
        progressed(d, now);
    }

    /// DescribeServices confirms a rollback that was not ECS's own (the service deployment had
    /// completed before the stop, so the previous revision was put back by UpdateService; or it
    /// never started): the service steady on the previous revision.
    fn observe(&self, d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>) {
        if d.status() != Status::RollingBack {
            return;
        }
        let issued = d.rollback().is_some_and(|r| r.issued_at.is_some());
        let ecs_rolls_back = d
            .native
            .as_ref()
            .and_then(|n| n.ecs_status.as_deref())
            .is_some_and(|s| s != "SUCCESSFUL");
        if issued && !ecs_rolls_back {
            super::rolled_back_if_serving(d, seen, now);
        } else {
            record_observed(d, seen.observed(seen.desired, now));
        }
    }

    /// ECS's own word decides readiness (`native_observed`).
    fn ready(&self, _d: &mut Deployment, _why: String, _actor: &str, _now: DateTime<Utc>) {}

    /// ECS holds its own bakes.
    fn bake_over(&self, _d: &mut Deployment, _now: DateTime<Utc>) {}

    fn succeeded(&self, d: &mut Deployment, _now: DateTime<Utc>) -> String {
        let sd = d
            .native
            .as_ref()
            .and_then(|n| n.service_deployment_arn.as_deref())
            .map(short_service_deployment)
            .unwrap_or("of the rollout");
        format!(
            "ECS reports service deployment {sd} SUCCESSFUL: its {} rollout is done",
            strategy_name(d)
        )
    }

    fn roll_back(&self, _d: &mut Deployment, previous: String) -> Effect {
        Effect::StopRollout {
            to_task_definition: previous,
        }
    }

    fn rollback_call(&self, to: &str) -> String {
        format!(
            "rollback of ECS's service deployment (back to {})",
            short_task_definition(to)
        )
    }

    /// Held on purpose only once the hook has asked for the approval, or holds a rollout
    /// started outside Flightdeck for a change freeze (until the freeze ends): before that (ECS
    /// has not reached a hooked stage, say tasks that cannot be placed) the progress deadline
    /// runs.
    fn held(&self, d: &Deployment, now: DateTime<Utc>) -> bool {
        let native = d.native.as_ref();
        (approval_pending(d) && native.is_some_and(|n| n.approval_asked))
            || native
                .and_then(|n| n.frozen_until)
                .is_some_and(|until| now < until)
    }

    fn approval_at_start(&self) -> bool {
        false
    }

    fn progress_window(&self, d: &Deployment) -> Duration {
        window(d)
    }

    fn deadline_reason(&self, d: &Deployment) -> Option<String> {
        let native = d.native.as_ref()?;
        let sd = native
            .service_deployment_arn
            .as_deref()
            .map(short_service_deployment)
            .unwrap_or("(not seen yet)");
        Some(format!(
            "progress deadline: ECS's service deployment {sd} showed no progress for {} min past \
             its longest bake (last seen {} at {})",
            d.progress_deadline_minutes,
            native.ecs_status.as_deref().unwrap_or("nothing"),
            native.stage.as_deref().unwrap_or("no stage"),
        ))
    }

    fn native_observed(&self, d: &mut Deployment, view: &NativeView, now: DateTime<Utc>) {
        native_observed(d, view, now);
    }

    fn hook_invoked(&self, d: &mut Deployment, call: &HookCall, now: DateTime<Utc>) {
        hook_invoked(d, call, now);
    }
}

/// Whether `arn` is this rollout's service deployment: the one bound already, or — none bound
/// yet — one whose target revision runs the new task definition, which it then becomes.
fn bind(d: &mut Deployment, arn: &str, target: Option<&str>) -> bool {
    let new = d.rollout.new_task_definition.clone();
    let Some(native) = d.native.as_mut() else {
        return false;
    };
    match &native.service_deployment_arn {
        Some(bound) => bound == arn,
        None if target.is_some() && new.as_deref() == target => {
            native.service_deployment_arn = Some(arn.to_string());
            true
        }
        None => false,
    }
}

fn followed(d: &Deployment) -> bool {
    matches!(
        d.status(),
        Status::Deploying | Status::Shifting | Status::RollingBack
    ) || d.starting()
}

/// ECS's stage and production weight: recorded when they change; production traffic moving
/// makes a DEPLOYING rollout SHIFTING. Production traffic moving while an approval is pending
/// means the hook was not asked (ecs-hook is missing from the service's lifecycle hooks): the
/// rollout is rolled back rather than let through unapproved.
fn follow(
    d: &mut Deployment,
    stage: Option<&str>,
    percent: Option<u8>,
    actor: &str,
    now: DateTime<Utc>,
) {
    if !matches!(d.status(), Status::Deploying | Status::Shifting) {
        return;
    }
    let shifting = percent.is_some_and(|p| p > 0)
        || stage.is_some_and(|s| {
            matches!(
                s,
                "PRODUCTION_TRAFFIC_SHIFT" | "POST_PRODUCTION_TRAFFIC_SHIFT" | "BAKE_TIME"
            )
        });
    // ECS's CANARY and LINEAR only move production traffic forward while rolling out (a
    // rollback is a status of its own): a lower share is an older word (a late or retried hook
    // invocation, a read taken before one) and changes nothing.
    if let Some(p) = percent
        && p > d.traffic_percent
    {
        // ECS moved production traffic further past a step the canary judge had not let go
        // (ecs-hook is not registered for PRE_PRODUCTION_TRAFFIC_SHIFT): a step nobody judged
        // is not passed; rolled back as an unapproved shift is.
        if let Some(why) = unjudged(d) {
            d.traffic_percent = p;
            roll_back(d, why, "flightdeck", now);
            return;
        }
        d.traffic_percent = p;
        d.updated_at = now;
        if let Some(native) = d.native.as_mut() {
            native.percent_since = Some(now);
            native.verdict_hold = false;
        }
        progressed(d, now);
    }
    if shifting && approval_pending(d) {
        let reason = format!(
            "{} requires approval, but ECS moved production traffic without waiting for the \
             lifecycle hook: add ecs-hook to the service's lifecycleHooks for \
             PRE_PRODUCTION_TRAFFIC_SHIFT (see README)",
            d.environment
        );
        roll_back(d, reason, "flightdeck", now);
        return;
    }
    if shifting && d.status() == Status::Deploying {
        let Some(progress) = d.progress().cloned() else {
            return;
        };
        let reason = format!(
            "ECS is shifting production traffic to the new revision ({}% so far, {} strategy)",
            d.traffic_percent,
            strategy_name(d)
        );
        transition(d, State::Shifting(progress), reason, actor, now);
        progressed(d, now);
    }
}

/// Why ECS moving production traffic past the current step is not let through: the canary
/// judge (`gates.analysis`) has no passing verdict on it taken after its bake.
fn unjudged(d: &Deployment) -> Option<String> {
    super::judge_window(d)?;
    match super::judge_at_bake_end(d) {
        Some(Ok(())) => None,
        Some(Err(why)) => Some(why),
        None => Some(format!(
            "ECS moved production traffic past the {}% step before the canary judge had a \
             verdict taken after its {} min bake: add ecs-hook to the service's lifecycleHooks \
             for PRE_PRODUCTION_TRAFFIC_SHIFT (see README)",
            d.traffic_percent, d.bake_minutes
        )),
    }
}

/// The service's production listener rule and its weights were read for the canary judge:
/// the two target groups it compares are remembered once told apart; when they cannot be, the
/// step being judged has no data, and why.
pub(super) fn production_rule_read(
    d: &mut Deployment,
    rule: Option<&str>,
    weights: &[(String, u32)],
    now: DateTime<Utc>,
) {
    if d.gates.analysis.is_none() || !matches!(d.status(), Status::Deploying | Status::Shifting) {
        return;
    }
    if d.native.as_ref().is_none_or(|n| n.judged_groups.is_some()) {
        return;
    }
    match crate::native::tell_apart(rule, weights, d.traffic_percent) {
        Ok(groups) => {
            let text = format!(
                "canary judge: compares target group {} (new revision) with {} (stable) on {}",
                short_target_group(&groups.canary),
                short_target_group(&groups.stable),
                groups.load_balancer
            );
            if let Some(native) = d.native.as_mut() {
                native.judged_groups = Some(Box::new(groups));
            }
            note(d, text, "flightdeck", now);
        }
        Err(why) => {
            if let Some((step, ..)) = super::judge_window(d) {
                let judgement = crate::judge::Judgement::no_data(&why);
                super::judged(d, &judgement, step, now);
            }
        }
    }
}

/// `…:targetgroup/NAME/ID` → `NAME`, for text meant to be read.
fn short_target_group(arn: &str) -> &str {
    arn.split_once(":targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
}

/// `gates.analysis`: the hook called before ECS shifts production traffic further, while the
/// new revision takes part of it, lets the next shift go only on the canary judge's verdict
/// taken after the step's bake (read by this invocation right before): held (IN_PROGRESS)
/// while there is none, rolled back on a fail (or on no data, by the `no_data` policy).
fn judge_hold(d: &mut Deployment, stage: &str, now: DateTime<Utc>) {
    let next_shift = HookStage::parse(stage) == HookStage::PreProductionTrafficShift;
    let verdict =
        if next_shift && d.status() == Status::Shifting && super::judge_window(d).is_some() {
            super::judge_at_bake_end(d)
        } else {
            Some(Ok(()))
        };
    let held = d.native.as_ref().is_some_and(|n| n.verdict_hold);
    match verdict {
        None if !held => {
            if let Some(native) = d.native.as_mut() {
                native.verdict_hold = true;
            }
            let text = format!(
                "held at {stage}: the canary judge has no verdict on the {}% step taken after its \
                 {} min bake yet",
                d.traffic_percent, d.bake_minutes
            );
            note(d, text, "flightdeck", now);
        }
        None => {}
        Some(verdict) => {
            if let Some(native) = d.native.as_mut() {
                native.verdict_hold = false;
            }
            if let Err(why) = verdict {
                roll_back(d, why, "flightdeck", now);
            }
        }
    }
}

fn native_observed(d: &mut Deployment, view: &NativeView, now: DateTime<Utc>) {
    if !followed(d) || !bind(d, &view.arn, view.target_task_definition.as_deref()) {
        return;
    }
    // A new status, stage or production weight goes on the trail (LINEAR moves the weight
    // within one stage).
    let weight_moved = view
        .production_percent
        .is_some_and(|p| p > d.traffic_percent)
        && matches!(d.status(), Status::Deploying | Status::Shifting);
    let Some(native) = d.native.as_mut() else {
        return;
    };
    let changed = native.ecs_status.as_deref() != Some(view.status.as_str())
        || native.stage.as_deref() != view.stage.as_deref()
        || weight_moved;
    if changed {
        native.ecs_status = Some(view.status.clone());
        native.stage = view.stage.clone();
        let mut text = format!(
            "ECS service deployment {}: {} at {}",
            short_service_deployment(&view.arn),
            view.status,
            view.stage.as_deref().unwrap_or("no stage yet")
        );
        if let Some(p) = view.production_percent {
            text.push_str(&format!(", {p}% of production traffic on the new revision"));
        }
        note(d, text, "aws.ecs", now);
        progressed(d, now);
    }
    if d.status() == Status::Pending {
        return;
    }
    follow(
        d,
        view.stage.as_deref(),
        view.production_percent,
        "aws.ecs",
        now,
    );
    let ecs_rolling_back = matches!(
        view.status.as_str(),
        "ROLLBACK_REQUESTED"
            | "ROLLBACK_IN_PROGRESS"
            | "ROLLBACK_SUCCESSFUL"
            | "ROLLBACK_FAILED"
            | "STOP_REQUESTED"
            | "STOPPED"
    );
    match d.status() {
        // ECS finished a rollout that needed an approval nobody gave (ecs-hook is not among the
        // service's lifecycle hooks, and the reconcile loop saw no stage in between): not a
        // success, rolled back as when production traffic moves unapproved.
        Status::Deploying | Status::Shifting
            if view.status == "SUCCESSFUL" && approval_pending(d) =>
        {
            let reason = format!(
                "{} requires approval, but ECS completed the rollout without waiting for the \
                 lifecycle hook: add ecs-hook to the service's lifecycleHooks for \
                 PRE_PRODUCTION_TRAFFIC_SHIFT (see README)",
                d.environment
            );
            roll_back(d, reason, "flightdeck", now);
        }
        Status::Deploying | Status::Shifting if view.status == "SUCCESSFUL" => {
            let new = d.rollout.new_task_definition.clone().unwrap_or_default();
            match serves(view, &new) {
                Ok(()) => succeed(d, now),
                // ECS is done, the service is not: its tasks of the new revision are still
                // starting, or crashing. The crash gate and the progress deadline still judge it.
                Err(short) if changed => {
                    let text = format!(
                        "ECS reports the rollout done, but {short}: SUCCEEDED waits for them"
                    );
                    note(d, text, "flightdeck", now);
                }
                Err(_) => {}
            }
        }
        Status::Deploying | Status::Shifting if ecs_rolling_back => {
            ecs_rolls_back(d, view, now);
            ended(d, view, now, changed);
        }
        Status::RollingBack => ended(d, view, now, changed),
        _ => {}
    }
}

/// Whether the service, read with the view, runs `revision` at its desired count with ECS done
/// rolling it out; what it runs instead when not.
fn serves(view: &NativeView, revision: &str) -> Result<(), String> {
    let Some(seen) = &view.serving else {
        return Err("the service was not read with it".to_string());
    };
    if seen.running >= seen.desired && seen.steady {
        return Ok(());
    }
    Err(format!(
        "ECS service {} runs {} of its {} tasks on {}{}",
        seen.service,
        seen.running,
        seen.desired,
        short_task_definition(revision),
        if seen.steady { "" } else { " (not steady yet)" }
    ))
}

/// ECS started a rollback of its own (its circuit breaker or alarms, or a hook answered FAILED
/// by another invocation): followed as ROLLING_BACK, with nothing more to call.
fn ecs_rolls_back(d: &mut Deployment, view: &NativeView, now: DateTime<Utc>) {
    let Some(previous) = d.rollout.previous_task_definition.clone() else {
        return;
    };
    let why = view
        .rollback_reason
        .as_deref()
        .or(view.status_reason.as_deref())
        .unwrap_or("no reason given");
    let reason = format!(
        "ECS is rolling back service deployment {} ({}): {why}",
        short_service_deployment(&view.arn),
        view.status
    );
    let rollback = Rollback {
        to_task_definition: previous,
        requested_at: now,
        issued_at: Some(now),
        ecs_deployment_id: None,
        deadline: Some(now + super::deadline(d)),
    };
    transition(d, State::RollingBack { rollback }, reason, "aws.ecs", now);
}

/// While rolling back: ECS's outcome of the service deployment, when it has one.
fn ended(d: &mut Deployment, view: &NativeView, now: DateTime<Utc>, changed: bool) {
    let State::RollingBack { rollback } = &d.state else {
        return;
    };
    let rollback = rollback.clone();
    let sd = short_service_deployment(&view.arn).to_string();
    let why = view
        .rollback_reason
        .as_deref()
        .or(view.status_reason.as_deref())
        .unwrap_or("no reason given")
        .to_string();
    match view.status.as_str() {
        // A call of the phase left may still land (an UpdateService to the new revision): the
        // rollback is confirmed once it cannot.
        "ROLLBACK_SUCCESSFUL" if !d.stale_call_in_flight() => {
            match serves(view, &rollback.to_task_definition) {
                Ok(()) => {
                    let text = format!(
                        "ECS reports the rollback of service deployment {sd} successful: {why}; \
                         {} serves again",
                        short_task_definition(&rollback.to_task_definition)
                    );
                    rolled_back(d, text, "aws.ecs", now);
                }
                // The revision rolled back to does not run (it may be one an earlier failed
                // rollout left behind): not ROLLED_BACK until it does; the rollback's deadline
                // ends it FAILED otherwise, saying what was seen last.
                Err(short) => {
                    if let Some(seen) = &view.serving {
                        record_observed(d, seen.observed(seen.desired, now));
                    }
                    if changed {
                        let text = format!(
                            "ECS reports the rollback of service deployment {sd} successful, \
                             but {short}: ROLLED_BACK waits for them"
                        );
                        note(d, text, "flightdeck", now);
                    }
                }
            }
        }
        "ROLLBACK_FAILED" | "STOPPED" => {
            let what = if view.status == "STOPPED" {
                "stopped without rolling back"
            } else {
                "failed to roll back"
            };
            let text = format!(
                "ECS {what} service deployment {sd}: {why}; the previous revision {} may not be \
                 serving, look at the service now",
                short_task_definition(&rollback.to_task_definition)
            );
            let ended = State::Failed {
                finished_at: now,
                rollback: Some(rollback),
            };
            finish(d, ended, text, "aws.ecs", now);
            alert(d, EventType::Failed, now);
        }
        _ => {}
    }
}

/// What the hook answers for a deployment as it stands (after the gates read for this
/// invocation were decided), and why.
pub fn hook_answer(d: &Deployment) -> (HookStatus, String) {
    match d.status() {
        Status::Pending => (
            HookStatus::InProgress,
            "the rollout's start is still being recorded".to_string(),
        ),
        Status::Deploying | Status::Shifting
            if d.native.as_ref().is_some_and(|n| n.frozen_until.is_some()) =>
        {
            let until = d
                .native
                .as_ref()
                .and_then(|n| n.frozen_until)
                .map(|u| u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            (
                HookStatus::InProgress,
                format!(
                    "a change freeze holds this rollout, started outside Flightdeck, before \
                     production traffic until {until}"
                ),
            )
        }
        Status::Deploying | Status::Shifting
            if approval_pending(d) && d.native.as_ref().is_some_and(|n| n.approval_asked) =>
        {
            (
                HookStatus::InProgress,
                format!(
                    "{} requires approval: waiting for an approver other than whoever started it",
                    d.environment
                ),
            )
        }
        Status::Deploying | Status::Shifting
            if d.native.as_ref().is_some_and(|n| n.verdict_hold) =>
        {
            (
                HookStatus::InProgress,
                format!(
                    "the canary judge has no verdict on the {}% step taken after its {} min bake \
                     yet",
                    d.traffic_percent, d.bake_minutes
                ),
            )
        }
        Status::Deploying | Status::Shifting => (
            HookStatus::Succeeded,
            format!(
                "every gate is green ({} of {} failed tasks, no gating alarm in ALARM)",
                d.failed_count, d.max_failed_tasks
            ),
        ),
        Status::Succeeded => (
            HookStatus::Succeeded,
            "Flightdeck recorded the rollout's success".to_string(),
        ),
        Status::RollingBack | Status::RolledBack | Status::Failed
            if d.native
                .as_ref()
                .and_then(|n| n.ecs_status.as_deref())
                .is_some_and(|s| s.starts_with("ROLLBACK")) =>
        {
            (
                HookStatus::Succeeded,
                "ECS is rolling the service deployment back; the hook lets the rollback go on"
                    .to_string(),
            )
        }
        Status::RollingBack | Status::RolledBack | Status::Failed => (
            HookStatus::Failed,
            d.reason
                .clone()
                .unwrap_or_else(|| "the deployment is being rolled back".to_string()),
        ),
        Status::AwaitingApproval | Status::Superseded | Status::Aborted => (
            HookStatus::Failed,
            format!("deployment {} is {}", d.id, d.status()),
        ),
    }
}

fn percent_text(label: &str, percent: Option<u8>) -> String {
    percent
        .map(|p| format!(", {label} traffic {p}%"))
        .unwrap_or_default()
}

fn hook_invoked(d: &mut Deployment, call: &HookCall, now: DateTime<Utc>) {
    if !followed(d)
        && !matches!(
            d.status(),
            Status::Succeeded | Status::RolledBack | Status::Failed
        )
    {
        return;
    }
    if !bind(
        d,
        &call.service_deployment_arn,
        call.target_task_definition.as_deref(),
    ) {
        return;
    }
    if d.status() != Status::Pending {
        follow(
            d,
            Some(&call.stage),
            call.production_percent,
            "aws.ecs",
            now,
        );
        if matches!(d.status(), Status::Deploying | Status::Shifting) {
            progressed(d, now);
        }
    }
    // The approval holds the last stage before production traffic moves: the stages before it
    // (scale-up, test traffic) go on, so an approver can look at the new revision under test
    // traffic first.
    let before_production = HookStage::parse(&call.stage).before_production_traffic();
    if matches!(d.status(), Status::Deploying | Status::Shifting)
        && approval_pending(d)
        && before_production
        && d.native.as_ref().is_some_and(|n| !n.approval_asked)
    {
        if let Some(native) = d.native.as_mut() {
            native.approval_asked = true;
            native.approval_asked_at = Some(now);
        }
        let text = format!(
            "held at {} until approved: {} requires approval",
            call.stage, d.environment
        );
        note(d, text, "flightdeck", now);
        alert(d, EventType::ApprovalRequired, now);
    }
    freeze_at_hook(d, before_production, &call.stage, now);
    judge_hold(d, &call.stage, now);
    let (status, why) = hook_answer(d);
    let answer = format!("{} {status:?}", call.stage);
    if d.native.as_ref().and_then(|n| n.last_hook.as_deref()) != Some(answer.as_str()) {
        if let Some(native) = d.native.as_mut() {
            native.last_hook = Some(answer);
        }
        let text = format!(
            "lifecycle hook at {}{}{}: answered {} ({why})",
            call.stage,
            percent_text("test", call.test_percent),
            percent_text("production", call.production_percent),
            status.name(),
        );
        note(d, text, "aws.ecs", now);
    }
}

/// A rollout started outside Flightdeck (a console or infrastructure-code change) skipped the
/// freeze Flightdeck's own starts wait out: inside a freeze its hook holds it before production
/// traffic (IN_PROGRESS; ECS asks again every `callBackDelay`), announced once; the freeze over
/// (or overridden), the hook lets ECS go on.
fn freeze_at_hook(d: &mut Deployment, before_production: bool, stage: &str, now: DateTime<Utc>) {
    if d.trigger != Trigger::External || !matches!(d.status(), Status::Deploying | Status::Shifting)
    {
        return;
    }
    let held = d.native.as_ref().and_then(|n| n.frozen_until);
    let frozen = match (&d.gates.freeze, &d.gates.freeze_override) {
        (Some(freeze), None) if before_production => freeze.at(now),
        _ => None,
    };
    match (held, frozen) {
        (None, Some(frozen)) => {
            if let Some(native) = d.native.as_mut() {
                native.frozen_until = Some(frozen.until);
            }
            let reason = format!(
                "change freeze {}: this rollout, started outside Flightdeck, is held at {stage} \
                 until {}",
                frozen.window,
                frozen
                    .until
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            d.reason = Some(super::bounded(reason.clone()));
            note(d, reason, "flightdeck", now);
            alert(d, EventType::Waiting, now);
        }
        (Some(_), None) => {
            if let Some(native) = d.native.as_mut() {
                native.frozen_until = None;
            }
            let text = format!("change freeze over; the hook at {stage} lets ECS go on");
            note(d, text, "flightdeck", now);
        }
        (Some(until), Some(frozen)) if frozen.until != until => {
            if let Some(native) = d.native.as_mut() {
                native.frozen_until = Some(frozen.until);
            }
        }
        _ => {}
    }
}

/// What the hook learnt of a rollout Flightdeck did not start.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalRollout {
    pub service_deployment_arn: String,
    pub previous_task_definition: String,
    pub new_task_definition: String,
    /// The image of the registration's container in the new task definition.
    pub image: String,
    pub desired_count: u32,
}

/// The deployment id of a rollout started outside Flightdeck: one per service deployment.
pub fn external_deployment_id(service_deployment_arn: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(format!("external\n{service_deployment_arn}").as_bytes());
    let hex: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("d-{hex}")
}

/// The record of a rollout ECS runs that Flightdeck did not start (a console, CLI or
/// infrastructure-code change of an `ecs-native` service): DEPLOYING from the moment the hook
/// first heard of it, bound to its service deployment, under the same gates as any other.
pub fn external(
    registration: &Registration,
    rollout: &ExternalRollout,
    stage: &str,
    now: DateTime<Utc>,
) -> Deployment {
    let (digest, tag) = match rollout.image.split_once('@') {
        Some((_, digest)) => (digest.to_string(), None),
        None => {
            let tag = rollout
                .image
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map(|(_, t)| t.to_string());
            (String::new(), tag)
        }
    };
    let mut d = Deployment::new(
        registration,
        external_deployment_id(&rollout.service_deployment_arn),
        rollout.image.clone(),
        digest,
        tag,
        Trigger::External,
        now,
    );
    d.started_by = Some("aws.ecs".to_string());
    d.record(AuditEvent {
        at: now,
        status: Some(Status::Pending),
        reason: Some(format!(
            "ECS service deployment {} of {} was started outside Flightdeck (console, CLI or \
             infrastructure code); its lifecycle hook at {stage} recorded it",
            short_service_deployment(&rollout.service_deployment_arn),
            short_task_definition(&rollout.new_task_definition)
        )),
        actor: Some("aws.ecs".to_string()),
    });
    d.rollout.previous_task_definition = Some(rollout.previous_task_definition.clone());
    d.rollout.new_task_definition = Some(rollout.new_task_definition.clone());
    d.rollout.desired_count = Some(rollout.desired_count);
    d.rollout.started_at = Some(now);
    if let Some(native) = d.native.as_mut() {
        native.service_deployment_arn = Some(rollout.service_deployment_arn.clone());
    } else {
        let mut native = NativeRollout::new(NativeStrategy::BlueGreen { bake_minutes: 0 });
        native.service_deployment_arn = Some(rollout.service_deployment_arn.clone());
        d.native = Some(native);
    }
    let progress = Progress {
        progress_deadline: now + window(&d),
        settled_at: None,
        bake_until: None,
    };
    let reason = format!(
        "following ECS's rollout of {} (was {})",
        short_task_definition(&rollout.new_task_definition),
        short_task_definition(&rollout.previous_task_definition)
    );
    transition(&mut d, State::Deploying(progress), reason, "aws.ecs", now);
    alert(&mut d, EventType::Started, now);
    d
}
