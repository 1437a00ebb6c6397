//! The deployment lifecycle, as one pure function: `(deployment, fact, now) -> deployment`.
//!
//! `PENDING -> (AWAITING_APPROVAL) -> DEPLOYING -> SHIFTING (step n, bake) -> SUCCEEDED`, and from
//! an in-flight state `-> ROLLING_BACK -> ROLLED_BACK`, or `FAILED`, `SUPERSEDED`, `ABORTED`.
//!
//! - The start is decided here too: once the deployment holds its service and environment's
//!   slot, the outbox gets `RegisterRevision`, whose result decides `Deploy`, whose result makes
//!   it DEPLOYING. Every call that changes AWS is an effect; none is made anywhere else.
//! - Every status change is a new phase (`Deployment::phase`). Entering one cancels the AWS calls
//!   decided in the phase left (`outbox::cancel_stale`): a weight step decided before a rollback
//!   never runs after it.
//! - DEPLOYING becomes ready from what ECS and the target group report (the reconcile loop's
//!   observation, or ECS's own word that the rollout completed for `rolling`), never from task
//!   events alone. It has a progress deadline; so has a rollback.
//! - The rolling engine lets ECS replace the tasks and uses SHIFTING only for its bake;
//!   `alb-weights` brings the new colour up during DEPLOYING and moves the listener's weights
//!   step by step during SHIFTING, each step held for its bake and gated by alarms and the
//!   crash-loop count.
//!
//! Every transition appends an audit event. Deciding never touches the network, and deciding the
//! same fact twice changes nothing the second time.

use crate::emf::{Metric, MetricName};
use chrono::{DateTime, Duration, Utc};

use crate::alerts::{Alert, EventType};
use crate::deployment::{
    AuditEvent, Colour, Deployment, Effect, FailedTask, FailureTally, FreezeOverride, Hold,
    Observed, PendingEffect, Progress, RECENT_FAILURES, Rollback, State, Status, Trigger,
    short_task, short_task_definition,
};
use crate::judge::{Judgement, NoData, Verdict};
use crate::outbox;
use crate::principal::same_principal;
use crate::scan::{Missing, ScanReport, counts_text, findings_text};
use crate::stop_reason::StopReason;

mod alb_weights;
mod ecs_native;
#[cfg(test)]
mod gate_tests;
mod rolling;

pub use ecs_native::{
    ExternalRollout, external, external_deployment_id, hook_answer, short_service_deployment,
};

/// What differs between traffic engines, and nothing else: the lifecycle decides statuses,
/// gates, deadlines, fencing and alerts the same way for all of them, and asks the engine only
/// what starting, being ready, a step, a rollback and success mean for it. Adding an engine adds
/// a module here and a line in `engine`.
trait Engine {
    /// The call that puts the registered revision on ECS; records what the engine keeps of the
    /// start.
    fn deploy(&self, d: &mut Deployment, registered: &Registered) -> Effect;
    /// Where the new revision was put, in words.
    fn put_on(&self, d: &Deployment) -> String;
    /// The reconcile loop's view of the service taking the new revision (or, rolling back, the
    /// previous one); only the engine's own service is passed on.
    fn observe(&self, d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>);
    /// ECS says the service is settled (its deployment completed, or steady state).
    fn settled(
        &self,
        _d: &mut Deployment,
        _at: DateTime<Utc>,
        _ecs_deployment_id: Option<&str>,
        _now: DateTime<Utc>,
    ) {
    }
    /// The new revision is ready (the deployment is DEPLOYING).
    fn ready(&self, d: &mut Deployment, why: String, actor: &str, now: DateTime<Utc>);
    /// The reconcile loop's Tick finds the current bake's time up, the shared gates (alarms,
    /// the crash count, read before the Tick) green: the next step or success, or — where the
    /// engine has a gate of its own to read at the end of the bake — nothing until that read.
    fn bake_over(&self, d: &mut Deployment, now: DateTime<Utc>);
    /// Why the deployment succeeded, in words; records what success leaves owed.
    fn succeeded(&self, d: &mut Deployment, now: DateTime<Utc>) -> String;
    /// The call that puts the previous revision back.
    fn roll_back(&self, d: &mut Deployment, previous: String) -> Effect;
    /// What is owed once the previous revision serves again.
    fn rolled_back(&self, _d: &mut Deployment) {}
    /// The reconcile loop read the listener: `percent` of the traffic is on the new revision.
    fn traffic_observed(&self, _d: &mut Deployment, _percent: u8, _now: DateTime<Utc>) {}
    /// The traffic weights were set to `percent` on the new revision.
    fn weights_set(&self, _d: &mut Deployment, _percent: u8, _now: DateTime<Utc>) {}
    /// The reconcile loop's tick on a deployment that succeeded.
    fn tick_succeeded(&self, _d: &mut Deployment, _now: DateTime<Utc>) {}
    /// A scale-down of an ECS service was carried out (`done`) or found moot.
    fn scaled_down(&self, _d: &mut Deployment, _service: &str, _done: bool, _now: DateTime<Utc>) {}
    /// A scale-down was given up on: it is owed no more.
    fn scale_abandoned(&self, _d: &mut Deployment) {}
    /// The rollback call, in words.
    fn rollback_call(&self, to: &str) -> String {
        format!("UpdateService back to {}", short_task_definition(to))
    }
    /// The rollout call was answered (`d.rollout.ecs_deployment_id` is what ECS named).
    fn started(&self, _d: &mut Deployment, _now: DateTime<Utc>) {}
    /// The engine holds the rollout on purpose (an approval asked at the hook): the progress
    /// deadline waits.
    fn held(&self, _d: &Deployment, _now: DateTime<Utc>) -> bool {
        false
    }
    /// Whether an approval is asked before anything changes (else the engine asks it itself).
    fn approval_at_start(&self) -> bool {
        true
    }
    /// How long DEPLOYING may show no progress. Where this is `Some` for SHIFTING too (the
    /// engine has no bake of Flightdeck's own that ends a step), SHIFTING has the deadline too.
    fn progress_window(&self, d: &Deployment) -> Duration {
        deadline(d)
    }
    /// Why a missed progress deadline rolls back, where the engine says it better.
    fn deadline_reason(&self, _d: &Deployment) -> Option<String> {
        None
    }
    /// What ECS says of a service deployment (ecs-native).
    fn native_observed(&self, _d: &mut Deployment, _view: &NativeView, _now: DateTime<Utc>) {}
    /// ECS called the lifecycle hook (ecs-native).
    fn hook_invoked(&self, _d: &mut Deployment, _call: &HookCall, _now: DateTime<Utc>) {}
}

/// The engine of a deployment, from what its registration made of it.
fn engine(d: &Deployment) -> &'static dyn Engine {
    if d.native.is_some() {
        &ecs_native::EcsNative
    } else if d.traffic.is_some() {
        &alb_weights::AlbWeights
    } else {
        &rolling::Rolling
    }
}

/// Whether the deployment waits for an approval before anything of it changes ECS (for
/// `ecs-native` the lifecycle hook asks it instead, at the stage before production traffic).
pub fn approval_before_start(d: &Deployment) -> bool {
    d.approval_required && d.approved_by.is_none() && engine(d).approval_at_start()
}

/// What registering the revision found (see `Fact::RevisionRegistered`).
struct Registered {
    desired_count: u32,
    stable: Option<Colour>,
    stable_owner: Option<String>,
}

/// Something that happened, as far as a deployment is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Fact {
    /// Another deployment of the same service and environment is in flight; wait for it.
    Queued { behind: String },
    /// What this deployment waited for has ended.
    Unblocked,
    /// The environment requires approval before anything changes.
    ApprovalNeeded,
    /// A principal approved the deployment.
    Approved { by: String },
    /// The deployment holds its service and environment's slot: start the rollout.
    SlotTaken,
    /// The new revision is registered (for `alb-weights`: to go on the idle colour; `stable` is
    /// the colour the listener served from and `stable_owner` the deployment that had put its
    /// revision there, as the stage item says).
    RevisionRegistered {
        previous_task_definition: String,
        new_task_definition: String,
        desired_count: u32,
        stable: Option<Colour>,
        stable_owner: Option<String>,
    },
    /// ECS was told to run the new revision.
    RolloutStarted { ecs_deployment_id: Option<String> },
    /// alb-weights, right before the rollout call: the listener sends all traffic to the colour
    /// the new revision was to go on (the release before was rolled back, by its watch, after
    /// this deployment read the listener). The revision goes on the other colour instead, now
    /// idle; `previous_task_definition` and `desired_count` are the live colour's, and
    /// `stable_owner` the deployment that put its revision there, as the stage item says.
    LiveColourMoved {
        live: Colour,
        previous_task_definition: String,
        desired_count: u32,
        stable_owner: Option<String>,
    },
    /// A newer deployment of the same service and environment took over.
    Superseded { by: String },
    /// An `ECS Task State Change` of the deployment's service.
    Task(TaskObservation),
    /// An `ECS Deployment State Change` of the deployment's service.
    EcsDeployment {
        ecs_deployment_id: String,
        event_name: String,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// An `ECS Service Action` of the deployment's service.
    ServiceAction {
        event_name: String,
        event_type: String,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The rollback UpdateService went through.
    RollbackIssued { ecs_deployment_id: Option<String> },
    /// What DescribeServices (and the target group's health, where there is one) says of the
    /// service taking the new revision, as the reconcile loop saw it.
    ServiceObserved(ServiceObservation),
    /// The listener's weights now put `percent` on the new colour.
    WeightsSet { percent: u8 },
    /// The reconcile loop read the listener while rolling back: `percent` is on the new colour
    /// (our weights call may have landed with its answer lost).
    TrafficObserved { percent: u8 },
    /// Nothing new: only what the outbox owes is carried out. Bakes and deadlines are the
    /// reconcile loop's `Tick`, which looks at the service first; a redelivered push, say, must
    /// not pass a bake on what was seen before it ended.
    Resume,
    /// A weight step was not made: right before it, the new colour had fewer healthy targets
    /// than it needs.
    NotHealthy {
        percent: u8,
        healthy: u32,
        needed: u32,
    },
    /// A service was scaled to zero, or the scale-down became moot (`done: false`: a newer
    /// deployment owns the colour now).
    ScaledDown { service: String, done: bool },
    /// A CloudWatch alarm is in ALARM. `gating`: the registration names it as a gate now (an
    /// alarm added to the registration mid-deployment gates it too).
    AlarmFired {
        alarm: String,
        reason: String,
        gating: bool,
        /// When the alarm went into ALARM, as its state-change event says; `None` for the
        /// state read now (DescribeAlarms). A late or redelivered event from before the rollout
        /// started says nothing about it: the reconcile loop's reading decides then.
        since: Option<DateTime<Utc>>,
    },
    /// A CloudWatch alarm left ALARM.
    AlarmCleared {
        alarm: String,
        state: String,
        /// When the alarm changed, as CloudWatch says (a redelivery carries the same time).
        at: Option<DateTime<Utc>>,
    },
    /// Something worth recording that changes nothing else.
    Noted { reason: String, actor: String },
    /// An operator skips the rest of the current step's bake (API `promote`).
    BakeSkipped { by: String },
    /// An operator rolls the deployment back (API `rollback`), or aborts it (API `abort`: a
    /// waiting deployment ends ABORTED, one in flight is rolled back).
    Stopped { by: String, abort: bool },
    /// An effect failed `MAX_ATTEMPTS` times; `error` is the last error.
    EffectGaveUp { seq: u32, error: String },
    /// What DescribeServiceDeployments says of a service deployment (ecs-native).
    NativeObserved(NativeView),
    /// ECS called the lifecycle hook (ecs-native); the answer is `hook_answer` of the record
    /// this decides.
    HookInvoked(HookCall),
    /// What DescribeImageScanFindings says of the image (the vulnerability gate).
    ScanRead(ScanReport),
    /// An admin lets the rollout start inside a change freeze, for the reason given.
    FreezeOverridden { by: String, reason: String },
    /// The canary judge's verdict on step `step` (alb-weights: the weight step's index;
    /// ecs-native: ECS's production percent on the new revision), over the minutes since that
    /// step's weights were set; a verdict on a step the deployment has left is ignored.
    Judged { judgement: Judgement, step: usize },
    /// ecs-native with `gates.analysis`: the service's production listener rule (DescribeServices)
    /// and its forward weights (DescribeRules), read so the judge can tell the new revision's
    /// target group from the stable one.
    ProductionRuleRead {
        rule: Option<String>,
        weights: Vec<(String, u32)>,
    },
    /// Before it takes the slot: the gates that hold a PENDING deployment before anything changes
    /// (the scan, a freeze) hold it now, or end it (the scan's `missing` policy); it never starts.
    CheckGates,
    /// A newer deployment of the service and environment takes over: a SUCCEEDED deployment
    /// is watched no longer (its rollback would undo the newer one).
    WatchEnded { by: String },
    /// Time passed (the reconcile loop's heartbeat).
    Tick,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceObservation {
    pub service: String,
    /// The task definition of the service's primary deployment.
    pub task_definition: String,
    /// Tasks of the intended revision running.
    pub running: u32,
    pub desired: u32,
    /// ECS reports the rollout of `task_definition` finished (one deployment left, or its
    /// rollout state COMPLETED).
    pub steady: bool,
    /// Healthy targets of the intended revision in its target group (alb-weights); `None` where
    /// the service has no target group to read.
    pub healthy_targets: Option<u32>,
}

/// A service deployment as DescribeServiceDeployments reports it (ecs-native).
#[derive(Clone, Debug, PartialEq)]
pub struct NativeView {
    pub arn: String,
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `STOPPED`, `STOP_REQUESTED`, `ROLLBACK_REQUESTED`,
    /// `ROLLBACK_IN_PROGRESS`, `ROLLBACK_SUCCESSFUL`, `ROLLBACK_FAILED` (by name: ECS adds some).
    pub status: String,
    /// The lifecycle stage (`SCALE_UP`, `PRODUCTION_TRAFFIC_SHIFT`, `BAKE_TIME`, …).
    pub stage: Option<String>,
    /// The task definition of its target revision, where it was read (how a rollout whose
    /// service deployment is not known yet recognises it).
    pub target_task_definition: Option<String>,
    /// Production traffic on the target revision, in percent.
    pub production_percent: Option<u8>,
    pub status_reason: Option<String>,
    /// ECS's reason for a rollback, when it rolled back.
    pub rollback_reason: Option<String>,
    /// The service, read with a service deployment that ended SUCCESSFUL (counting tasks of the
    /// new revision) or ROLLBACK_SUCCESSFUL (of the revision rolled back to): ECS's word ends
    /// the record only when the service runs that revision at its desired count.
    pub serving: Option<ServiceObservation>,
}

/// A lifecycle hook invocation, as far as the record is concerned (ecs-native).
#[derive(Clone, Debug, PartialEq)]
pub struct HookCall {
    pub service_deployment_arn: String,
    /// The stage by name (ECS adds stages; an unknown one is answered by the gates that apply
    /// at every stage).
    pub stage: String,
    /// The task definition of the target revision, where it was read.
    pub target_task_definition: Option<String>,
    pub test_percent: Option<u8>,
    pub production_percent: Option<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskObservation {
    pub task_arn: String,
    pub task_definition_arn: String,
    pub last_status: String,
    pub version: i64,
    pub stop: Option<StopReason>,
}

/// The outcome of deciding: the new record, and whether anything changed (nothing to save if not).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub deployment: Deployment,
    pub changed: bool,
    /// Why the fact was refused; the record is unchanged then.
    pub refusal: Option<Refusal>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The actor may not do this (self-approval).
    NotAllowed(String),
    /// The deployment is not in a state where this applies.
    WrongState(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAllowed(m) | Refusal::WrongState(m) => f.write_str(m),
        }
    }
}

pub fn decide(current: &Deployment, fact: &Fact, now: DateTime<Utc>) -> Decision {
    let mut d = current.clone();
    match fact {
        Fact::Queued { behind } => {
            if d.status() == Status::Pending
                && !d.starting()
                && d.queued_behind() != Some(behind.as_str())
            {
                d.state = State::Pending {
                    queued_behind: Some(behind.clone()),
                    hold: None,
                };
                let reason = format!(
                    "queued: deployment {behind} of {} is in flight",
                    d.environment
                );
                note(&mut d, reason, "flightdeck", now);
            }
        }
        Fact::Unblocked => {
            if let State::Pending { queued_behind, .. } = &mut d.state
                && let Some(behind) = queued_behind.take()
            {
                let reason = format!("deployment {behind} ended; starting");
                note(&mut d, reason, "flightdeck", now);
            }
        }
        Fact::ApprovalNeeded => {
            if d.status() == Status::Pending && approval_before_start(&d) {
                let reason = format!(
                    "{} requires approval before the rollout starts",
                    d.environment
                );
                let waiting = State::AwaitingApproval {
                    since: Some(now),
                    reminded: 0,
                };
                transition(&mut d, waiting, reason, "flightdeck", now);
                alert(&mut d, EventType::ApprovalRequired, now);
            }
        }
        Fact::Approved { by } => {
            // ecs-native asks at the hook, with the rollout in flight.
            let held = d.in_flight()
                && d.status() != Status::RollingBack
                && d.approval_required
                && d.approved_by.is_none()
                && !engine(&d).approval_at_start();
            let refusal = if d.status() != Status::AwaitingApproval && !held {
                Some(Refusal::WrongState(format!(
                    "deployment {} is {}, not awaiting approval",
                    d.id,
                    d.status()
                )))
            } else if let Some(starter) = d.starters.iter().find(|s| same_principal(s, by)) {
                let chain = if d.promoted_from.is_some() {
                    " (or a deployment of the promotion chain it came from)"
                } else {
                    ""
                };
                Some(Refusal::NotAllowed(format!(
                    "{by} is the same principal as {starter}, who started deployment {}{chain}, and \
                     cannot approve it; another approver must",
                    d.id
                )))
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return refused(current, refusal);
            }
            d.approved_by = Some(by.clone());
            d.approved_at = Some(now);
            if held {
                let text = format!("approved by {by}; the lifecycle hook lets ECS go on");
                note(&mut d, text, by, now);
                return Decision {
                    changed: d != *current,
                    deployment: d,
                    refusal: None,
                };
            }
            transition(
                &mut d,
                State::Pending {
                    queued_behind: None,
                    hold: None,
                },
                format!("approved by {by}"),
                by,
                now,
            );
        }
        Fact::SlotTaken => {
            if d.status() == Status::Pending && !approval_before_start(&d) && !d.starting() {
                start_unless_held(&mut d, now);
            }
        }
        Fact::ScanRead(report) => scan_read(&mut d, report, now),
        Fact::CheckGates => {
            if d.status() == Status::Pending && !approval_before_start(&d) && !d.starting() {
                held_at_gates(&mut d, now);
            }
        }
        Fact::FreezeOverridden { by, reason } => {
            // A rollout started outside Flightdeck, held at its hook by the freeze, is in flight.
            let hook_frozen = d.native.as_ref().is_some_and(|n| n.frozen_until.is_some());
            if hook_frozen && let Some(native) = d.native.as_mut() {
                native.frozen_until = None;
            }
            if !hook_frozen
                && (!matches!(d.status(), Status::Pending | Status::AwaitingApproval)
                    || d.starting())
            {
                let why = format!(
                    "deployment {} is {}; a freeze override applies only before the rollout starts",
                    d.id,
                    d.status()
                );
                return refused(current, Refusal::WrongState(why));
            }
            if d.gates.freeze_override.is_none() {
                d.gates.freeze_override = Some(FreezeOverride {
                    by: by.clone(),
                    reason: bounded(reason.clone()),
                    at: now,
                });
                let text = format!("change freeze overridden by {by}: {reason}");
                note(&mut d, text, by, now);
            }
        }
        Fact::Judged { judgement, step } => judged(&mut d, judgement, *step, now),
        Fact::ProductionRuleRead { rule, weights } => {
            ecs_native::production_rule_read(&mut d, rule.as_deref(), weights, now);
        }
        Fact::WatchEnded { by } => {
            let ran_its_course = d.watch_until().is_some_and(|until| now >= until);
            if ran_its_course {
                // Over before the newer deployment came: as the reconcile loop's Tick would
                // have ended it (promotion owed), not cut short.
                tick(&mut d, now);
            } else if let State::Succeeded { watch_until, .. } = &mut d.state
                && watch_until.take().is_some()
            {
                watch_over(&mut d);
                // A watch cut short proves nothing: the revision is not promoted (a revert, or a
                // newer release, takes over from it).
                let text = match &d.promote_to {
                    Some(next) => format!(
                        "post-deployment watch ended early: deployment {by} of {} takes over; not \
                         promoted to {next}",
                        d.environment
                    ),
                    None => format!(
                        "post-deployment watch ended early: deployment {by} of {} takes over",
                        d.environment
                    ),
                };
                note(&mut d, text, "flightdeck", now);
            }
        }
        Fact::RevisionRegistered {
            previous_task_definition,
            new_task_definition,
            desired_count,
            stable,
            stable_owner,
        } => {
            if d.status() == Status::Pending && d.rollout.new_task_definition.is_none() {
                d.rollout.previous_task_definition = Some(previous_task_definition.clone());
                d.rollout.new_task_definition = Some(new_task_definition.clone());
                d.rollout.desired_count = Some(*desired_count);
                d.updated_at = now;
                let registered = Registered {
                    desired_count: *desired_count,
                    stable: *stable,
                    stable_owner: stable_owner.clone(),
                };
                let deploy = engine(&d).deploy(&mut d, &registered);
                // The last decision before the rollout call: a freeze that began while the
                // revision was being registered holds it here.
                if !frozen(&mut d, now) {
                    d.rollout.deploy_decided_at = Some(now);
                    push_effect(&mut d, deploy);
                }
            }
        }
        Fact::LiveColourMoved {
            live,
            previous_task_definition,
            desired_count,
            stable_owner,
        } => {
            let planned = d.traffic.as_ref().and_then(|t| t.canary());
            if d.status() == Status::Pending
                && d.rollout.started_at.is_none()
                && d.rollout.new_task_definition.is_some()
                && planned == Some(*live)
            {
                let from = d.rollout.ecs_service.clone();
                d.rollout.previous_task_definition = Some(previous_task_definition.clone());
                d.rollout.desired_count = Some(*desired_count);
                d.updated_at = now;
                let registered = Registered {
                    desired_count: *desired_count,
                    stable: Some(*live),
                    stable_owner: stable_owner.clone(),
                };
                let deploy = engine(&d).deploy(&mut d, &registered);
                let text = format!(
                    "the listener sends all traffic to {from}, the colour this deployment was to \
                     go on (the release before it was rolled back after this deployment read the \
                     listener): it goes on {} instead",
                    d.rollout.ecs_service
                );
                note(&mut d, text, "flightdeck", now);
                d.rollout.deploy_decided_at = Some(now);
                push_effect(&mut d, deploy);
            }
        }
        Fact::RolloutStarted { ecs_deployment_id } => {
            if d.status() == Status::Pending
                && let (Some(new), Some(previous)) = (
                    d.rollout.new_task_definition.clone(),
                    d.rollout.previous_task_definition.clone(),
                )
            {
                d.rollout.ecs_deployment_id = ecs_deployment_id.clone();
                d.rollout.started_at = Some(now);
                engine(&d).started(&mut d, now);
                let on = engine(&d).put_on(&d);
                let reason = format!(
                    "registered {} (was {}) and put it on {on}",
                    short_task_definition(&new),
                    short_task_definition(&previous),
                );
                let progress = Progress {
                    progress_deadline: now + engine(&d).progress_window(&d),
                    settled_at: None,
                    bake_until: None,
                };
                transition(
                    &mut d,
                    State::Deploying(progress),
                    reason,
                    "flightdeck",
                    now,
                );
                alert(&mut d, EventType::Started, now);
            }
        }
        Fact::Superseded { by } => {
            if d.waiting() || (d.status() == Status::Pending && !d.starting()) {
                let reason = format!("superseded by deployment {by}");
                let ended = State::Superseded { finished_at: now };
                finish(&mut d, ended, reason, "flightdeck", now);
            }
        }
        Fact::Task(task) => observe_task(&mut d, task, now),
        Fact::EcsDeployment {
            ecs_deployment_id,
            event_name,
            reason,
            at,
        } => observe_ecs_deployment(
            &mut d,
            ecs_deployment_id,
            event_name,
            reason.as_deref(),
            *at,
            now,
        ),
        Fact::ServiceAction {
            event_name,
            event_type,
            reason,
            at,
        } => {
            if event_name == "SERVICE_STEADY_STATE" {
                settled(&mut d, *at, None, now);
            } else if d.status().is_active() && event_type != "INFO" {
                let why = reason.as_deref().unwrap_or("no reason given");
                let text = format!("ECS reported {event_name}: {why}");
                note_once(&mut d, text, "aws.ecs", *at, now);
            }
        }
        Fact::RollbackIssued { ecs_deployment_id } => {
            if let Some(rollback) = d.rollback_mut().filter(|r| r.issued_at.is_none()) {
                rollback.issued_at = Some(now);
                rollback.ecs_deployment_id = ecs_deployment_id.clone();
                let to = rollback.to_task_definition.clone();
                let requested_at = rollback.requested_at;
                d.updated_at = now;
                let call = engine(&d).rollback_call(&to);
                note(&mut d, format!("{call} issued"), "flightdeck", now);
                push_effect(
                    &mut d,
                    Effect::Measure {
                        metrics: vec![Metric::seconds(
                            MetricName::SignalToRollbackSeconds,
                            requested_at,
                            now,
                        )],
                    },
                );
            }
        }
        Fact::ServiceObserved(seen) => observe_service(&mut d, seen, now),
        Fact::WeightsSet { percent } => engine(&d).weights_set(&mut d, *percent, now),
        Fact::TrafficObserved { percent } => engine(&d).traffic_observed(&mut d, *percent, now),
        Fact::NotHealthy {
            percent,
            healthy,
            needed,
        } => {
            if d.status() == Status::Shifting {
                let reason = format!(
                    "the new colour has {healthy} of {needed} targets healthy; traffic was not \
                     moved to {percent}%"
                );
                roll_back(&mut d, reason, "flightdeck", now);
            }
        }
        Fact::ScaledDown { service, done } => engine(&d).scaled_down(&mut d, service, *done, now),
        Fact::AlarmFired {
            alarm,
            reason,
            gating,
            since,
        } => {
            let gates = *gating || d.alarms.contains(alarm);
            let before = since.filter(|at| d.rollout.started_at.is_some_and(|s| *at < s));
            if let Some(at) = before
                && (d.in_flight() || watching(&d, now))
                && gates
            {
                let text = format!(
                    "alarm `{alarm}` went into ALARM before this rollout started; its state now \
                     decides (reconcile loop)"
                );
                note_once(&mut d, text, "aws.cloudwatch", at, now);
            } else if d.in_flight() && d.status() != Status::RollingBack && gates {
                let why = format!("alarm `{alarm}` is in ALARM: {reason}");
                roll_back(&mut d, why, "aws.cloudwatch", now);
            } else if watching(&d, now) && gates {
                let why = format!("post-deployment watch: alarm `{alarm}` is in ALARM: {reason}");
                roll_back(&mut d, why, "aws.cloudwatch", now);
            }
        }
        Fact::AlarmCleared { alarm, state, at } => {
            if d.status().is_active() && d.alarms.contains(alarm) {
                let text = format!("alarm `{alarm}` is {state}");
                note_once(&mut d, text, "aws.cloudwatch", at.unwrap_or(now), now);
            }
        }
        Fact::Noted { reason, actor } => note(&mut d, reason.clone(), actor, now),
        Fact::BakeSkipped { by } => {
            if d.native.is_some() {
                let why = format!(
                    "deployment {} is an ecs-native rollout: ECS holds its bakes, which \
                     Flightdeck cannot shorten (approve it, or roll it back)",
                    d.id
                );
                return refused(current, Refusal::WrongState(why));
            }
            let State::Shifting(progress) = &mut d.state else {
                let why = format!("deployment {} is {}, not shifting", d.id, d.status());
                return refused(current, Refusal::WrongState(why));
            };
            progress.bake_until = Some(now);
            note(&mut d, "rest of the bake skipped".to_string(), by, now);
        }
        Fact::Stopped { by, abort } => {
            let verb = if *abort { "aborted" } else { "rolled back" };
            if *abort && (d.waiting() || (d.status() == Status::Pending && !d.starting())) {
                let ended = State::Aborted { finished_at: now };
                finish(&mut d, ended, format!("aborted by {by}"), by, now);
            } else if (d.in_flight() || d.starting()) && d.status() != Status::RollingBack {
                roll_back(&mut d, format!("{verb} by {by}"), by, now);
            } else {
                let what = if *abort { "abort" } else { "roll back" };
                let why = format!(
                    "deployment {} is {}; there is nothing to {what}",
                    d.id,
                    d.status()
                );
                return refused(current, Refusal::WrongState(why));
            }
        }
        Fact::EffectGaveUp { seq, error } => gave_up(&mut d, *seq, error, now),
        Fact::NativeObserved(view) => engine(&d).native_observed(&mut d, view, now),
        Fact::HookInvoked(call) => engine(&d).hook_invoked(&mut d, call, now),
        Fact::Tick => tick(&mut d, now),
        Fact::Resume => {}
    }
    let changed = d != *current;
    Decision {
        deployment: d,
        changed,
        refusal: None,
    }
}

fn refused(current: &Deployment, why: Refusal) -> Decision {
    Decision {
        deployment: current.clone(),
        changed: false,
        refusal: Some(why),
    }
}

fn deadline(d: &Deployment) -> Duration {
    Duration::minutes(i64::from(d.progress_deadline_minutes.max(1)))
}

/// The reconcile loop's heartbeat: bakes that passed, progress deadlines, the old colour's
/// scale-down after success.
fn tick(d: &mut Deployment, now: DateTime<Utc>) {
    match &d.state {
        State::Shifting(progress)
            if progress.bake_until.is_some_and(|until| now >= until)
                && !has_pending(d, |e| matches!(e, Effect::SetWeights { .. })) =>
        {
            engine(d).bake_over(d, now);
        }
        State::Deploying(progress) | State::Shifting(progress)
            if now >= progress.progress_deadline
                && (d.status() == Status::Deploying || engine(d).deadline_reason(d).is_some())
                && !engine(d).held(d, now) =>
        {
            let reason = engine(d).deadline_reason(d).unwrap_or_else(|| {
                format!(
                    "progress deadline: the new revision did not become ready within {} min ({})",
                    d.progress_deadline_minutes,
                    observed_text(d)
                )
            });
            roll_back(d, reason, "flightdeck", now);
        }
        State::RollingBack { rollback } if rollback.deadline.is_some_and(|at| now >= at) => {
            let rollback = Some(rollback.clone());
            let pending = d
                .outbox
                .iter()
                .find(|e| e.effect.lane() == crate::deployment::Lane::Aws)
                .map(|e| {
                    let error = e.last_error.as_deref().unwrap_or("no error yet");
                    format!(
                        "; {} still pending after {} attempts ({error})",
                        e.effect.describe(),
                        e.attempts
                    )
                })
                .unwrap_or_default();
            let reason = format!(
                "rollback did not complete within {} min: {}{pending}; the previous revision may \
                 not be serving, look at the service now",
                d.progress_deadline_minutes,
                observed_text(d)
            );
            let ended = State::Failed {
                finished_at: now,
                rollback,
            };
            finish(d, ended, reason, "flightdeck", now);
            alert(d, EventType::Failed, now);
        }
        State::Succeeded {
            watch_until: Some(until),
            ..
        } if now >= *until => {
            let minutes = d.gates.watch_minutes;
            if let State::Succeeded { watch_until, .. } = &mut d.state {
                *watch_until = None;
            }
            watch_over(d);
            let text = format!("post-deployment watch of {minutes} min over with every gate green");
            note(d, text, "flightdeck", now);
            promote_after_watch(d);
            engine(d).tick_succeeded(d, now);
        }
        State::Succeeded { .. } => engine(d).tick_succeeded(d, now),
        State::AwaitingApproval { since, reminded } => {
            let (since, reminded) = (since.unwrap_or(d.updated_at), *reminded);
            if let Some(due) = remind(d, since, reminded, now) {
                d.state = State::AwaitingApproval {
                    since: Some(since),
                    reminded: due,
                };
            }
        }
        // ecs-native asks its approval at the hook, with the rollout held in flight.
        State::Deploying(_) | State::Shifting(_)
            if d.approval_required
                && d.approved_by.is_none()
                && d.native.as_ref().is_some_and(|n| n.approval_asked) =>
        {
            let Some((since, reminded)) = d
                .native
                .as_ref()
                .map(|n| (n.approval_asked_at.unwrap_or(d.updated_at), n.reminded))
            else {
                return;
            };
            if let Some(due) = remind(d, since, reminded, now)
                && let Some(native) = d.native.as_mut()
            {
                native.approval_asked_at = Some(since);
                native.reminded = due;
            }
        }
        _ => {}
    }
}

/// An approval asked at `since` and reminded `reminded` times: the reminder after the reminder
/// interval, the escalation after the escalation interval, once each (only the escalation when
/// both are due at once). Returns how many reminders have gone out now, when one just did.
fn remind(
    d: &mut Deployment,
    since: DateTime<Utc>,
    reminded: u8,
    now: DateTime<Utc>,
) -> Option<u8> {
    let waited = now - since;
    let reminder = Duration::minutes(i64::from(d.gates.reminder_minutes.max(1)));
    let escalation = Duration::minutes(i64::from(d.gates.escalation_minutes.max(1)));
    let due = if reminded < 2 && waited >= escalation {
        2
    } else if reminded < 1 && waited >= reminder {
        1
    } else {
        return None;
    };
    let minutes = waited.num_minutes();
    let text = if due == 2 {
        format!("still awaiting approval after {minutes} min: reminder escalated")
    } else {
        format!("still awaiting approval after {minutes} min: approvers reminded")
    };
    note(d, text, "flightdeck", now);
    let alert = Alert::approval_reminder(d, due == 2, minutes, now);
    push_effect(d, Effect::Alert(Box::new(alert)));
    Some(due)
}

fn observed_text(d: &Deployment) -> String {
    match &d.rollout.observed {
        Some(o) => {
            let mut text = format!("last observed {} of {} tasks running", o.running, o.desired);
            if let Some(h) = o.healthy {
                text.push_str(&format!(", {h} healthy in the target group"));
            }
            text.push_str(&format!(
                " at {}",
                o.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            text
        }
        None => "nothing observed of the service yet".to_string(),
    }
}

/// A call failed `MAX_ATTEMPTS` times. What that means depends on what the call could have
/// changed, since any failed attempt may have taken effect with its answer lost:
/// - an alert never changes the deployment (alerts are retried without end; see `outbox`);
/// - a finished deployment keeps its status and records it;
/// - registering the revision changed nothing ECS runs: the deployment ends FAILED;
/// - a rollout call (UpdateService, a weight step) may have put the new revision on ECS or
///   traffic on it: the deployment rolls back, so that nothing runs unwatched;
/// - a rollback call is kept and retried: the reconcile loop may see the previous revision
///   serving (the call landed), else the rollback deadline ends the deployment FAILED, with the
///   urgent alert naming the call.
fn gave_up(d: &mut Deployment, seq: u32, error: &str, now: DateTime<Utc>) {
    let Some(index) = d.outbox.iter().position(|e| e.seq == seq) else {
        return;
    };
    let why = format!(
        "gave up on {} after {} attempts: {error}",
        d.outbox[index].effect.describe(),
        d.outbox[index].attempts
    );
    if d.status() == Status::RollingBack && !matches!(d.outbox[index].effect, Effect::Alert(_)) {
        if d.outbox[index].attempts == outbox::MAX_ATTEMPTS {
            let text = format!(
                "{} failed {} times ({error}); retried until the rollback deadline",
                d.outbox[index].effect.describe(),
                outbox::MAX_ATTEMPTS
            );
            note(d, text, "flightdeck", now);
        }
        return;
    }
    let effect = d.outbox.remove(index);
    if matches!(effect.effect, Effect::Alert(_)) {
        note(d, why, "flightdeck", now);
    } else if !d.status().is_active() {
        // The deployment's outcome stands; what was to follow it (the promotion, the old
        // colour's scale-down) did not happen, and someone has to hear of it.
        if matches!(effect.effect, Effect::Scale { .. }) {
            engine(d).scale_abandoned(d);
        }
        let alert = Alert::follow_up_failed(d, &why, now);
        note(d, why, "flightdeck", now);
        push_effect(d, Effect::Alert(Box::new(alert)));
    } else if effect.effect == Effect::RegisterRevision {
        let ended = State::Failed {
            finished_at: now,
            rollback: None,
        };
        finish(d, ended, why, "flightdeck", now);
        alert(d, EventType::Failed, now);
    } else {
        let why = format!("{why}; rolling back, as it may have taken effect");
        roll_back(d, why, "flightdeck", now);
    }
}

/// The slot is taken: the rollout starts unless a gate holds it before anything changes — the
/// image's scan (until a result came, or `wait_minutes` passed), then a change freeze (until its
/// window ends; never for a revert, nor once an admin overrode it). Each hold is announced
/// once (`.waiting`); the reconcile loop asks again every minute.
fn start_unless_held(d: &mut Deployment, now: DateTime<Utc>) {
    if held_at_gates(d, now) {
        return;
    }
    if let Some(Hold::Freeze { window, .. }) = d.hold().cloned() {
        let text = match &d.gates.freeze_override {
            Some(o) => format!("change freeze {window} overridden by {}; starting", o.by),
            None => format!("change freeze {window} over; starting"),
        };
        note(d, text, "flightdeck", now);
    }
    d.state = State::Pending {
        queued_behind: None,
        hold: None,
    };
    d.updated_at = now;
    if d.rollout.new_task_definition.is_some() {
        // Registered before a freeze held it: the rollout call is what is left.
        let registered = Registered {
            desired_count: d.rollout.desired_count.unwrap_or(1),
            stable: d.traffic.as_ref().and_then(|t| t.stable),
            stable_owner: d.traffic.as_ref().and_then(|t| t.stable_owner.clone()),
        };
        let deploy = engine(d).deploy(d, &registered);
        d.rollout.deploy_decided_at = Some(now);
        push_effect(d, deploy);
    } else {
        push_effect(d, Effect::RegisterRevision);
    }
}

/// Whether a gate that holds a PENDING deployment before anything changes would hold it now
/// (read only: `start` asks before it takes the slot, so that a push held or failed by a gate
/// never ends the watch of the release before it).
pub fn held_before_start(d: &Deployment, now: DateTime<Utc>) -> bool {
    let scan = d.gates.scan.is_some() && !d.gates.scan_cleared;
    scan || freeze_now(d, now).is_some()
}

/// The change freeze that holds a rollout of `d` now: never a revert's, nor once an admin
/// overrode it.
fn freeze_now(d: &Deployment, now: DateTime<Utc>) -> Option<crate::freeze::Frozen> {
    match (&d.gates.freeze, &d.gates.freeze_override) {
        (Some(freeze), None) if d.trigger != Trigger::Revert => freeze.at(now),
        _ => None,
    }
}

/// The gates before anything changes: the image's scan (until a result came, or `wait_minutes`
/// passed: then `missing` decides), then a change freeze. Whether one holds the deployment (or
/// ended it).
fn held_at_gates(d: &mut Deployment, now: DateTime<Utc>) -> bool {
    let previous = d.hold().cloned();
    if let Some(gate) = d.gates.scan.clone().filter(|_| !d.gates.scan_cleared) {
        let deadline = match &previous {
            Some(Hold::Scan { deadline }) => *deadline,
            _ => now + Duration::minutes(i64::from(gate.wait_minutes)),
        };
        if now < deadline {
            if !matches!(previous, Some(Hold::Scan { .. })) {
                let reason = format!(
                    "waiting for the vulnerability scan of {} (at most {} min; findings at or above {} fail it)",
                    crate::deployment::short_digest(&d.digest),
                    gate.wait_minutes,
                    gate.block_at.as_str()
                );
                hold(d, Hold::Scan { deadline }, reason, now);
            }
            return true;
        }
        let why = format!(
            "no vulnerability scan result within {} min",
            gate.wait_minutes
        );
        if !scan_missing(d, gate.missing, &why, now) {
            return true;
        }
    }
    if frozen(d, now) {
        return true;
    }
    if d.status() != Status::Pending {
        // Ended by the scan's `missing` policy.
        return true;
    }
    false
}

/// Whether a change freeze holds the rollout now (never a revert's, nor once an admin overrode
/// it); a new hold is recorded, and announced once per freeze.
fn frozen(d: &mut Deployment, now: DateTime<Utc>) -> bool {
    let previous = d.hold().cloned();
    let Some(frozen) = freeze_now(d, now) else {
        return false;
    };
    let hold_now = Hold::Freeze {
        until: frozen.until,
        window: frozen.window.clone(),
    };
    if previous.as_ref() != Some(&hold_now) {
        let reason = format!(
            "change freeze {}: the rollout starts at {}",
            frozen.window,
            frozen
                .until
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if matches!(previous, Some(Hold::Freeze { .. })) {
            d.state = State::Pending {
                queued_behind: None,
                hold: Some(hold_now),
            };
            note(d, reason, "flightdeck", now);
        } else {
            hold(d, hold_now, reason, now);
        }
    }
    true
}

/// Holds a PENDING deployment at a gate, with the reason and the `.waiting` alert.
fn hold(d: &mut Deployment, gate: Hold, reason: String, now: DateTime<Utc>) {
    d.state = State::Pending {
        queued_behind: None,
        hold: Some(gate),
    };
    d.reason = Some(bounded(reason.clone()));
    note(d, reason, "flightdeck", now);
    alert(d, EventType::Waiting, now);
}

/// No scan result will come (or none came in time): the `missing` policy decides. Whether the
/// start may go on.
fn scan_missing(d: &mut Deployment, missing: Missing, why: &str, now: DateTime<Utc>) -> bool {
    match missing {
        Missing::Fail => {
            let reason = format!(
                "vulnerability scan: {why} (gates.scan.missing is `fail`); nothing was changed"
            );
            let ended = State::Failed {
                finished_at: now,
                rollback: None,
            };
            finish(d, ended, reason, "flightdeck", now);
            alert(d, EventType::Failed, now);
            false
        }
        Missing::Allow => {
            d.gates.scan_cleared = true;
            let text =
                format!("vulnerability scan: {why}; let through (gates.scan.missing is `allow`)");
            note(d, text, "flightdeck", now);
            true
        }
    }
}

/// The image's scan, as DescribeImageScanFindings reported it, for a deployment the scan holds.
fn scan_read(d: &mut Deployment, report: &ScanReport, now: DateTime<Utc>) {
    let Some(gate) = d.gates.scan.clone() else {
        return;
    };
    if d.status() != Status::Pending || d.gates.scan_cleared || d.starting() {
        return;
    }
    match report {
        ScanReport::Pending { .. } => {}
        ScanReport::Unavailable { status, reason } => {
            let why = format!("ECR has no scan result for the image ({status}: {reason})");
            if scan_missing(d, gate.missing, &why, now) {
                release(d, now);
            }
        }
        ScanReport::Complete { counts, findings } => {
            let (total, worst) = gate.blocking(counts, findings);
            if total > 0 {
                let reason = format!(
                    "vulnerability scan: {total} findings at or above {} ({}): {}; nothing was changed",
                    gate.block_at.as_str(),
                    counts_text(counts),
                    findings_text(&worst)
                );
                d.gates.findings = worst;
                let ended = State::Failed {
                    finished_at: now,
                    rollback: None,
                };
                finish(d, ended, reason, "aws.ecr", now);
                alert(d, EventType::Failed, now);
            } else {
                d.gates.scan_cleared = true;
                let text = format!(
                    "vulnerability scan passed: nothing at or above {} ({})",
                    gate.block_at.as_str(),
                    counts_text(counts)
                );
                note(d, text, "aws.ecr", now);
                release(d, now);
            }
        }
    }
}

/// The scan no longer holds the deployment: it is started again by the caller (`start`).
fn release(d: &mut Deployment, now: DateTime<Utc>) {
    if let State::Pending { hold, .. } = &mut d.state
        && matches!(hold, Some(Hold::Scan { .. }))
    {
        *hold = None;
        d.updated_at = now;
    }
}

/// The canary judge's verdict on the current step: a fail rolls back at once; anything else is
/// kept for the end of the step's bake (`alb_weights::bake_passed`), and noted when it changes.
fn judged(d: &mut Deployment, judgement: &Judgement, step: usize, now: DateTime<Utc>) {
    if d.status() != Status::Shifting || d.gates.analysis.is_none() {
        return;
    }
    if judge_window(d).map(|(current, ..)| current) != Some(step) {
        return;
    }
    let changed = d
        .gates
        .verdict
        .as_ref()
        .is_none_or(|v| v.step != step || v.judgement.verdict != judgement.verdict);
    d.gates.verdict = Some(crate::deployment::StepVerdict {
        step,
        percent: d.traffic_percent,
        at: now,
        judgement: judgement.clone(),
    });
    if changed {
        push_effect(
            d,
            Effect::Measure {
                metrics: vec![Metric {
                    verdict: Some(judgement.verdict.as_str().to_string()),
                    ..Metric::count(MetricName::CanaryVerdicts)
                }],
            },
        );
    }
    if judgement.verdict == Verdict::Fail {
        roll_back(d, judgement.summary.clone(), "flightdeck", now);
    } else if changed {
        note(d, judgement.summary.clone(), "flightdeck", now);
    }
}

/// The step the canary judge looks at while the new revision takes part of the traffic: its
/// identity (alb-weights: the weight step's index; ecs-native: ECS's production percent, each
/// step's being larger than the one before), when it started and when its bake ends.
pub(crate) fn judge_window(d: &Deployment) -> Option<(usize, DateTime<Utc>, DateTime<Utc>)> {
    if d.traffic_percent == 0 || d.traffic_percent >= 100 {
        return None;
    }
    let bake = Duration::minutes(i64::from(d.bake_minutes));
    if let Some(native) = &d.native {
        let since = native.percent_since?;
        return Some((usize::from(d.traffic_percent), since, since + bake));
    }
    let until = d.progress()?.bake_until?;
    Some((d.traffic.as_ref()?.step, until - bake, until))
}

/// What the canary judge says of the step whose bake is over: `Ok` to go on, `Err` with the
/// reason to roll back, `None` while there is no verdict taken after the bake yet.
fn judge_at_bake_end(d: &Deployment) -> Option<Result<(), String>> {
    let Some(analysis) = &d.gates.analysis else {
        return Some(Ok(()));
    };
    // With all traffic on the new revision the stable one has none to compare with.
    let Some((step, _, until)) = judge_window(d) else {
        return Some(Ok(()));
    };
    let v = d
        .gates
        .verdict
        .as_ref()
        .filter(|v| v.step == step && v.at >= until)?;
    match (v.judgement.verdict, analysis.no_data) {
        (Verdict::Pass, _) | (Verdict::NoData, NoData::Pass) => Some(Ok(())),
        (Verdict::NoData, NoData::Fail) => Some(Err(format!(
            "{} (gates.analysis.no_data is `fail`)",
            v.judgement.summary
        ))),
        (Verdict::Fail, _) => Some(Err(v.judgement.summary.clone())),
    }
}

/// The outbox entries a caller still has to carry out, oldest first.
pub fn pending_effects(d: &Deployment) -> &[PendingEffect] {
    &d.outbox
}

/// A failed task of the new revision counts once (by task ARN), however often its event comes.
fn observe_task(d: &mut Deployment, task: &TaskObservation, now: DateTime<Utc>) {
    if !matches!(d.status(), Status::Deploying | Status::Shifting) && !watching(d, now) {
        return;
    }
    // Only the new revision's tasks say anything about the new revision.
    if d.rollout.new_task_definition.as_deref() != Some(task.task_definition_arn.as_str()) {
        return;
    }
    let Some(stop) = task.stop.as_ref().filter(|s| s.is_failure()) else {
        return;
    };
    let task_id = short_task(&task.task_arn).to_string();
    if d.failed_task_ids.contains(&task_id) || d.failed_count >= d.max_failed_tasks {
        return;
    }
    d.failed_task_ids.push(task_id);
    d.failed_count += 1;
    d.failed_tasks.push(FailedTask {
        task_arn: task.task_arn.clone(),
        stop: stop.clone(),
        at: now,
    });
    let excess = d.failed_tasks.len().saturating_sub(RECENT_FAILURES);
    d.failed_tasks.drain(..excess);
    match d
        .failure_reasons
        .iter_mut()
        .find(|t| t.label == stop.label())
    {
        Some(tally) => tally.count += 1,
        None => d.failure_reasons.push(FailureTally {
            label: stop.label().to_string(),
            count: 1,
            example: bounded(stop.explain()),
        }),
    }
    let failed = d.failed_count;
    note(
        d,
        format!(
            "task {} of the new revision failed ({failed} of {} allowed): {}",
            short_task(&task.task_arn),
            d.max_failed_tasks,
            stop.explain()
        ),
        "aws.ecs",
        now,
    );
    if failed >= d.max_failed_tasks {
        let mut reason = crash_loop_reason(d);
        if d.status() == Status::Succeeded {
            reason = format!("post-deployment watch: {reason}");
        }
        roll_back(d, reason, "flightdeck", now);
    }
}

fn observe_ecs_deployment(
    d: &mut Deployment,
    ecs_deployment_id: &str,
    event_name: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    match event_name {
        "SERVICE_DEPLOYMENT_COMPLETED" => settled(d, at, Some(ecs_deployment_id), now),
        "SERVICE_DEPLOYMENT_FAILED" => {
            let ours = matches!(d.status(), Status::Deploying | Status::Shifting)
                && concerns(
                    d.rollout.ecs_deployment_id.as_deref(),
                    d.rollout.started_at,
                    ecs_deployment_id,
                    at,
                );
            if ours {
                let why = reason.unwrap_or("no reason given");
                let reason =
                    format!("ECS reported the deployment {ecs_deployment_id} failed: {why}");
                roll_back(d, reason, "aws.ecs", now);
            }
        }
        _ => {}
    }
}

/// Whether an ECS deployment event is about the deployment we started: by id when ECS told us
/// the id, else by time (an event from before our UpdateService is about an earlier one).
fn concerns(
    known_id: Option<&str>,
    since: Option<DateTime<Utc>>,
    event_id: &str,
    event_at: DateTime<Utc>,
) -> bool {
    match known_id {
        Some(id) => id == event_id,
        None => since.is_some_and(|since| event_at >= since),
    }
}

/// ECS says the service is settled; what that means is the engine's to say.
fn settled(
    d: &mut Deployment,
    at: DateTime<Utc>,
    ecs_deployment_id: Option<&str>,
    now: DateTime<Utc>,
) {
    engine(d).settled(d, at, ecs_deployment_id, now);
}

/// The new revision is ready: the engine takes it from there (the first weight step, or the
/// bake).
fn ready(d: &mut Deployment, why: String, actor: &str, now: DateTime<Utc>) {
    if d.status() == Status::Deploying {
        engine(d).ready(d, why, actor, now);
    }
}

/// The reconcile loop's view of the engine's ECS service.
fn observe_service(d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>) {
    if seen.service == d.rollout.ecs_service {
        engine(d).observe(d, seen, now);
    }
}

/// A DEPLOYING rollout observed: why it is ready when the intended revision runs at `desired`
/// and the engine's readiness condition holds (`healthy`); else the observation is kept.
fn note_or_ready(
    d: &mut Deployment,
    seen: &ServiceObservation,
    desired: u32,
    healthy: bool,
    now: DateTime<Utc>,
) -> Option<String> {
    let observed = seen.observed(desired, now);
    let ours = d.rollout.new_task_definition.as_deref() == Some(seen.task_definition.as_str());
    if !(ours && seen.running >= desired && healthy) {
        record_observed(d, observed);
        return None;
    }
    d.rollout.observed = Some(observed);
    let mut why = format!("{} of {desired} new-revision tasks running", seen.running);
    match seen.healthy_targets {
        Some(h) => why.push_str(&format!(", {h} healthy in the target group")),
        None => why.push_str(" and ECS reports the rollout steady"),
    }
    Some(why)
}

impl ServiceObservation {
    /// What the record keeps of it, counted against `desired`.
    fn observed(&self, desired: u32, now: DateTime<Utc>) -> Observed {
        Observed {
            running: self.running,
            desired,
            healthy: self.healthy_targets,
            at: now,
        }
    }
}

/// A rollback that put the previous revision back by UpdateService, confirmed by the service
/// itself (whether the call's answer came back or not): steady on the previous revision at its
/// desired count, with no call of the phase left still able to land. Else the observation is
/// kept.
fn rolled_back_if_serving(d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>) {
    let Some(rollback) = d.rollback().cloned() else {
        return;
    };
    if rollback.to_task_definition == seen.task_definition
        && seen.running >= seen.desired
        && seen.steady
        && !d.stale_call_in_flight()
    {
        let why = format!(
            "ECS service {} runs the previous revision {} at its desired count ({} running)",
            seen.service,
            short_task_definition(&rollback.to_task_definition),
            seen.running
        );
        rolled_back(d, why, "aws.ecs", now);
    } else {
        record_observed(d, seen.observed(seen.desired, now));
    }
}

/// Keeps what was observed when it differs from the last observation: only a change is worth
/// a write, and a missed deadline names the last one.
fn record_observed(d: &mut Deployment, observed: Observed) {
    let counts = |o: &Observed| (o.running, o.desired, o.healthy);
    if d.rollout.observed.as_ref().map(counts) != Some(counts(&observed)) {
        d.rollout.observed = Some(observed);
    }
}

fn succeed(d: &mut Deployment, now: DateTime<Utc>) {
    let mut reason = engine(d).succeeded(d, now);
    d.traffic_percent = 100;
    let watch = d.gates.watch_minutes;
    let watch_until = (watch > 0).then(|| now + Duration::minutes(i64::from(watch)));
    if watch > 0 {
        reason.push_str(&format!(
            "; watched for {watch} min more (alarms, crash loops){}",
            match &d.promote_to {
                Some(next) => format!(", then promoted to {next}"),
                None => String::new(),
            }
        ));
        // alb-weights: the old colour stays up while the new revision is watched.
        if let Some(t) = d.traffic.as_mut()
            && let (Some(at), Some(until)) = (t.scale_down_at, watch_until)
        {
            t.scale_down_at = Some(at.max(until));
        }
    }
    finish(
        d,
        State::Succeeded {
            finished_at: now,
            watch_until,
        },
        reason,
        "flightdeck",
        now,
    );
    alert(d, EventType::Succeeded, now);
    if watch_until.is_none() {
        promote_after_watch(d);
    }
}

/// A success is counted in Flightdeck's metrics once its watch window is over (or cut short by
/// a newer deployment): one ending per deployment, never a success and then a rollback.
fn watch_over(d: &mut Deployment) {
    push_effect(
        d,
        Effect::Measure {
            metrics: vec![Metric::count(MetricName::DeploymentsSucceeded)],
        },
    );
}

/// The promotion success owes, once the watch window (if any) is over.
fn promote_after_watch(d: &mut Deployment) {
    if let Some(environment) = d.promote_to.clone()
        && !has_pending(d, |e| matches!(e, Effect::Promote { .. }))
    {
        push_effect(d, Effect::Promote { environment });
    }
}

/// A SUCCEEDED deployment still inside its watch window.
fn watching(d: &Deployment, now: DateTime<Utc>) -> bool {
    d.watch_until().is_some_and(|until| now < until)
}

fn rolled_back(d: &mut Deployment, why: String, actor: &str, now: DateTime<Utc>) {
    let State::RollingBack { rollback } = &d.state else {
        return;
    };
    let ended = State::RolledBack {
        finished_at: now,
        rollback: rollback.clone(),
    };
    // The record keeps the classified reason of the rollback; the entry says what ended it.
    let reason = d.reason.clone();
    finish(d, ended, why, actor, now);
    d.reason = reason;
    d.traffic_percent = 0;
    alert(d, EventType::RolledBack, now);
    engine(d).rolled_back(d);
}

fn has_pending(d: &Deployment, what: impl Fn(&Effect) -> bool) -> bool {
    d.outbox.iter().any(|e| !e.cancelled && what(&e.effect))
}

fn colour_name(colour: Colour) -> &'static str {
    match colour {
        Colour::Blue => "blue",
        Colour::Green => "green",
    }
}

/// Decides a rollback: the record says ROLLING_BACK and the call that puts the previous revision
/// back goes in the outbox. Pending calls of the phase left are cancelled by the transition.
fn roll_back(d: &mut Deployment, reason: String, actor: &str, now: DateTime<Utc>) {
    let Some(previous) = d.rollout.previous_task_definition.clone() else {
        // Stopped before a revision was registered: nothing of it reached ECS. The pending
        // start is cancelled by the transition.
        let pending = d.status() == Status::Pending;
        let ended = if pending {
            State::Aborted { finished_at: now }
        } else {
            State::Failed {
                finished_at: now,
                rollback: None,
            }
        };
        let why = format!("{reason}; nothing had been put on ECS yet");
        finish(d, ended, why, actor, now);
        if !pending {
            alert(d, EventType::Failed, now);
        }
        return;
    };
    let rollback = Rollback {
        to_task_definition: previous.clone(),
        requested_at: now,
        issued_at: None,
        ecs_deployment_id: None,
        deadline: Some(now + deadline(d)),
    };
    transition(d, State::RollingBack { rollback }, reason, actor, now);
    let effect = engine(d).roll_back(d, previous);
    push_effect(d, effect);
}

fn crash_loop_reason(d: &Deployment) -> String {
    let mut counts: Vec<&FailureTally> = d.failure_reasons.iter().collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.count));
    let summary: Vec<String> = counts
        .iter()
        .map(|c| format!("{} ×{}", c.label, c.count))
        .collect();
    let detail = counts
        .first()
        .map(|c| c.example.clone())
        .unwrap_or_default();
    format!(
        "crash loop: {} tasks of the new revision failed (limit {}): {}. {detail}",
        d.failed_count,
        d.max_failed_tasks,
        summary.join(", ")
    )
}

/// A status change: a new phase, which cancels the AWS calls decided in the phase left.
/// Reason text from outside (ECS stop reasons, alarm reasons) can be long; what enters the
/// record is bounded so that the record stays small whatever happens.
pub const REASON_LIMIT: usize = 240;

fn bounded(mut text: String) -> String {
    crate::alerts::truncate_chars(&mut text, REASON_LIMIT);
    text
}

fn transition(d: &mut Deployment, state: State, reason: String, actor: &str, now: DateTime<Utc>) {
    let reason = bounded(reason);
    let status = state.status();
    let was = d.status();
    d.state = state;
    d.phase += 1;
    outbox::cancel_stale(d);
    d.reason = Some(reason.clone());
    d.updated_at = now;
    d.record(AuditEvent {
        at: now,
        status: Some(status),
        reason: Some(reason),
        actor: Some(actor.to_string()),
    });
    // Every ending is counted in the service's summary (the last one wins).
    if !status.is_active() {
        push_effect(d, Effect::Tally);
    }
    let metrics = transition_metrics(d, was, status, now);
    if !metrics.is_empty() {
        push_effect(d, Effect::Measure { metrics });
    }
}

/// Flightdeck's own metrics of a status change: a rollout started (and how long from the push),
/// an ending by kind, and for a rollback the time from the failure signal to the previous
/// revision serving again.
fn transition_metrics(
    d: &Deployment,
    was: Status,
    status: Status,
    now: DateTime<Utc>,
) -> Vec<Metric> {
    let mut metrics = Vec::new();
    match status {
        Status::Deploying if matches!(was, Status::Pending | Status::AwaitingApproval) => {
            metrics.push(Metric::count(MetricName::DeploymentsStarted));
            metrics.push(Metric::seconds(
                MetricName::PushToDeployingSeconds,
                d.created_at,
                now,
            ));
        }
        // With a watch window, counted when the watch is over (a rollback inside it is the
        // one ending counted): see `watch_over`.
        Status::Succeeded if was != Status::Succeeded && d.watch_until().is_none() => {
            metrics.push(Metric::count(MetricName::DeploymentsSucceeded));
        }
        Status::RolledBack if was != Status::RolledBack => {
            metrics.push(Metric::count(MetricName::DeploymentsRolledBack));
            if let Some(rollback) = d.rollback() {
                metrics.push(Metric::seconds(
                    MetricName::SignalToRestoredSeconds,
                    rollback.requested_at,
                    now,
                ));
            }
        }
        Status::Failed if was != Status::Failed => {
            metrics.push(Metric::count(MetricName::DeploymentsFailed));
        }
        _ => {}
    }
    metrics
}

/// An ending: `ended` carries its time.
fn finish(d: &mut Deployment, ended: State, reason: String, actor: &str, now: DateTime<Utc>) {
    transition(d, ended, reason, actor, now);
}

/// An audit entry stamped with the time its source gave (ECS, CloudWatch), added only once: a
/// redelivery of the same event carries the same time and text, and adds nothing.
fn note_once(d: &mut Deployment, text: String, actor: &str, at: DateTime<Utc>, now: DateTime<Utc>) {
    let text = bounded(text);
    let seen = d
        .events
        .iter()
        .any(|e| e.at == at && e.reason.as_deref() == Some(text.as_str()));
    if !seen {
        note(d, text, actor, at);
        d.updated_at = now;
    }
}

/// An audit entry that is not a status change.
fn note(d: &mut Deployment, reason: String, actor: &str, now: DateTime<Utc>) {
    let reason = bounded(reason);
    d.updated_at = now;
    d.record(AuditEvent {
        at: now,
        status: None,
        reason: Some(reason),
        actor: Some(actor.to_string()),
    });
}

fn alert(d: &mut Deployment, event_type: EventType, now: DateTime<Utc>) {
    let alert = Alert::for_deployment(event_type, d, now);
    push_effect(d, Effect::Alert(Box::new(alert)));
}

fn push_effect(d: &mut Deployment, effect: Effect) {
    d.outbox.push(PendingEffect {
        seq: d.next_effect_seq,
        phase: d.phase,
        claim: None,
        cancelled: false,
        attempts: 0,
        last_error: None,
        retry_at: None,
        effect,
    });
    d.next_effect_seq += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::ImagePush;
    use crate::registration::Registration;
    use chrono::TimeZone;

    const OLD_TD: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/checkout-api:41";
    const NEW_TD: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/checkout-api:42";

    fn t(sec: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::seconds(sec)
    }

    fn registration(bake: u32) -> Registration {
        let json = format!(
            r#"{{"cluster":"prod","repository":"checkout-api","container":"app",
                "engine":{{"type":"rolling","service":"checkout-api"}},
                "strategy":{{"type":"all-at-once","bake_minutes":{bake}}}}}"#
        );
        Registration::parse("checkout-api", "staging", &json).unwrap()
    }

    fn pending(bake: u32) -> Deployment {
        let push = ImagePush {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: "checkout-api".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            tag: Some("v1.3.0".into()),
            event_id: "evt-1".into(),
        };
        Deployment::from_push(&registration(bake), &push, t(0))
    }

    /// Carries a deployment through registering its revision, as `handlers::carry_out` would:
    /// the `Deploy` effect is next.
    fn registered(d: Deployment, desired: u32, stable: Option<Colour>) -> Deployment {
        let mut d = decide(&d, &Fact::SlotTaken, t(1)).deployment;
        let register = start_effect(&d, |e| matches!(e, Effect::RegisterRevision));
        outbox::done(&mut d, register);
        let registered = Fact::RevisionRegistered {
            previous_task_definition: OLD_TD.into(),
            new_task_definition: NEW_TD.into(),
            desired_count: desired,
            stable,
            stable_owner: None,
        };
        decide(&d, &registered, t(1)).deployment
    }

    /// Carries a deployment through the start effects, as `handlers::carry_out` would.
    fn started(
        d: Deployment,
        desired: u32,
        stable: Option<Colour>,
        ecs_deployment_id: Option<&str>,
    ) -> Deployment {
        let mut d = registered(d, desired, stable);
        let deploy = start_effect(&d, |e| matches!(e, Effect::Deploy { .. }));
        outbox::done(&mut d, deploy);
        let rollout = Fact::RolloutStarted {
            ecs_deployment_id: ecs_deployment_id.map(str::to_string),
        };
        decide(&d, &rollout, t(1)).deployment
    }

    fn start_effect(d: &Deployment, what: impl Fn(&Effect) -> bool) -> u32 {
        let found: Vec<u32> = d
            .outbox
            .iter()
            .filter(|e| what(&e.effect))
            .map(|e| e.seq)
            .collect();
        assert_eq!(found.len(), 1, "exactly one such effect: {:?}", d.outbox);
        found[0]
    }

    fn deploying(bake: u32, desired: u32) -> Deployment {
        started(pending(bake), desired, None, Some("ecs-svc/2"))
    }

    fn task(n: u32, td: &str, status: &str, version: i64, stop: Option<StopReason>) -> Fact {
        Fact::Task(TaskObservation {
            task_arn: format!("arn:aws:ecs:eu-west-1:123456789012:task/prod/task{n}"),
            task_definition_arn: td.into(),
            last_status: status.into(),
            version,
            stop,
        })
    }

    fn exec_format() -> Option<StopReason> {
        Some(StopReason::ExecFormatError {
            container: Some("app".into()),
        })
    }

    fn run(mut d: Deployment, facts: &[Fact]) -> Deployment {
        for (i, f) in facts.iter().enumerate() {
            d = decide(&d, f, t(10 + i as i64)).deployment;
        }
        d
    }

    fn alerts(d: &Deployment) -> Vec<EventType> {
        d.outbox
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::Alert(a) => Some(a.document.event_type),
                _ => None,
            })
            .collect()
    }

    fn completed(id: &str, at: i64) -> Fact {
        Fact::EcsDeployment {
            ecs_deployment_id: id.into(),
            event_name: "SERVICE_DEPLOYMENT_COMPLETED".into(),
            reason: None,
            at: t(at),
        }
    }

    #[test]
    fn starting_the_rollout_records_both_revisions_and_announces_it() {
        let d = deploying(0, 2);
        assert_eq!(d.status(), Status::Deploying);
        assert_eq!(d.rollout.previous_task_definition.as_deref(), Some(OLD_TD));
        assert_eq!(alerts(&d), vec![EventType::Started]);
        assert_eq!(d.events.len(), 2);
    }

    #[test]
    fn deciding_the_same_start_twice_changes_nothing() {
        let d = deploying(0, 2);
        let again = Fact::RolloutStarted {
            ecs_deployment_id: None,
        };
        assert!(!decide(&d, &again, t(5)).changed);
        assert!(!decide(&d, &Fact::SlotTaken, t(5)).changed);
    }

    #[test]
    fn a_start_is_decided_once_however_many_invocations_take_the_slot() {
        let once = decide(&pending(0), &Fact::SlotTaken, t(1)).deployment;
        let twice = decide(&once, &Fact::SlotTaken, t(2));
        assert!(!twice.changed, "the second start attempt finds it decided");
        assert_eq!(
            once.outbox
                .iter()
                .filter(|e| e.effect == Effect::RegisterRevision)
                .count(),
            1
        );
        // The revision is recorded before ECS is told to run it, so a retried start never
        // takes the new revision for the previous one.
        let registered = Fact::RevisionRegistered {
            previous_task_definition: OLD_TD.into(),
            new_task_definition: NEW_TD.into(),
            desired_count: 2,
            stable: None,
            stable_owner: None,
        };
        let d = decide(&once, &registered, t(3)).deployment;
        let again = Fact::RevisionRegistered {
            previous_task_definition: NEW_TD.into(),
            new_task_definition: "arn:other:43".into(),
            desired_count: 2,
            stable: None,
            stable_owner: None,
        };
        let d2 = decide(&d, &again, t(4)).deployment;
        assert_eq!(d2.rollout.previous_task_definition.as_deref(), Some(OLD_TD));
        assert_eq!(d2.rollout.new_task_definition.as_deref(), Some(NEW_TD));
    }

    #[test]
    fn desired_count_running_and_ecs_completed_means_succeeded() {
        let d = run(
            deploying(0, 2),
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                completed("ecs-svc/2", 12),
                task(2, NEW_TD, "RUNNING", 2, None),
            ],
        );
        assert_eq!(d.status(), Status::Succeeded);
        assert_eq!(d.traffic_percent, 100);
        assert!(d.finished_at().is_some());
        assert_eq!(alerts(&d), vec![EventType::Started, EventType::Succeeded]);
    }

    #[test]
    fn a_completed_event_of_another_ecs_deployment_proves_nothing() {
        let d = run(
            deploying(0, 1),
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                completed("ecs-svc/1", 12),
            ],
        );
        assert_eq!(d.status(), Status::Deploying);
    }

    #[test]
    fn without_a_known_ecs_deployment_id_only_events_after_the_start_count() {
        let mut d = deploying(0, 1);
        d.rollout.ecs_deployment_id = None;
        let early = run(
            d.clone(),
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                completed("ecs-svc/x", -100),
            ],
        );
        assert_eq!(early.status(), Status::Deploying);
        let late = run(
            d,
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                completed("ecs-svc/x", 30),
            ],
        );
        assert_eq!(late.status(), Status::Succeeded);
    }

    #[test]
    fn a_bake_holds_success_until_the_bake_time_has_passed() {
        let d = run(
            deploying(5, 1),
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                completed("ecs-svc/2", 11),
            ],
        );
        assert_eq!(d.status(), Status::Shifting);
        let until = d.progress().and_then(|p| p.bake_until).unwrap();
        assert!(!decide(&d, &Fact::Tick, until - Duration::seconds(1)).changed);
        let done = decide(&d, &Fact::Tick, until).deployment;
        assert_eq!(done.status(), Status::Succeeded);
    }

    #[test]
    fn crash_loop_of_the_new_revision_rolls_back_with_the_classified_reason() {
        let d = run(
            deploying(0, 2),
            &[
                task(1, NEW_TD, "STOPPED", 3, exec_format()),
                task(2, NEW_TD, "STOPPED", 3, exec_format()),
                task(3, NEW_TD, "STOPPED", 3, exec_format()),
            ],
        );
        assert_eq!(d.status(), Status::RollingBack);
        let reason = d.reason.clone().unwrap();
        assert!(reason.contains("exec format error ×3"), "{reason}");
        assert!(d.outbox.iter().any(|e| e.effect
            == Effect::RollBack {
                to_task_definition: OLD_TD.into()
            }));
        // The rolled_back alert waits until ECS confirms the previous revision serves again.
        assert_eq!(alerts(&d), vec![EventType::Started]);

        let issued = decide(
            &d,
            &Fact::RollbackIssued {
                ecs_deployment_id: Some("ecs-svc/3".into()),
            },
            t(20),
        )
        .deployment;
        let back = decide(&issued, &completed("ecs-svc/3", 30), t(30)).deployment;
        assert_eq!(back.status(), Status::RolledBack);
        assert!(back.reason.clone().unwrap().contains("exec format error"));
        assert_eq!(
            alerts(&back),
            vec![EventType::Started, EventType::RolledBack]
        );
        // A second confirmation changes nothing and alerts nobody.
        assert!(!decide(&back, &completed("ecs-svc/3", 31), t(31)).changed);
    }

    fn measures(d: &Deployment) -> Vec<(crate::emf::MetricName, f64)> {
        d.outbox
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::Measure { metrics } => Some(metrics.iter().map(|m| (m.name, m.value))),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn a_rollback_is_measured_from_its_failure_signal_to_the_call_and_to_traffic_restored() {
        use crate::emf::MetricName::*;
        let d = run(
            deploying(0, 2),
            &[
                task(1, NEW_TD, "STOPPED", 3, exec_format()),
                task(2, NEW_TD, "STOPPED", 3, exec_format()),
                task(3, NEW_TD, "STOPPED", 3, exec_format()),
            ],
        );
        let requested = d.rollback().unwrap().requested_at;
        let issued = decide(
            &d,
            &Fact::RollbackIssued {
                ecs_deployment_id: Some("ecs-svc/3".into()),
            },
            t(20),
        )
        .deployment;
        let back = decide(&issued, &completed("ecs-svc/3", 30), t(30)).deployment;
        let seconds = |to: DateTime<Utc>| (to - requested).num_milliseconds() as f64 / 1000.0;
        let measured = measures(&back);
        assert!(
            measured.contains(&(SignalToRollbackSeconds, seconds(t(20)))),
            "{measured:?}"
        );
        assert!(
            measured.contains(&(DeploymentsRolledBack, 1.0)),
            "{measured:?}"
        );
        assert!(
            measured.contains(&(SignalToRestoredSeconds, seconds(t(30)))),
            "{measured:?}"
        );
        // Said again, nothing is measured twice.
        let again = decide(&back, &completed("ecs-svc/3", 31), t(31)).deployment;
        assert_eq!(measures(&again).len(), measured.len());
        let reissued = decide(
            &issued,
            &Fact::RollbackIssued {
                ecs_deployment_id: Some("ecs-svc/3".into()),
            },
            t(25),
        )
        .deployment;
        assert_eq!(measures(&reissued).len(), measures(&issued).len());
    }

    #[test]
    fn rollback_is_not_confirmed_before_it_was_issued() {
        let d = run(
            deploying(0, 1),
            &[
                task(1, NEW_TD, "STOPPED", 3, exec_format()),
                task(2, NEW_TD, "STOPPED", 3, exec_format()),
                task(3, NEW_TD, "STOPPED", 3, exec_format()),
            ],
        );
        let steady = Fact::ServiceAction {
            event_name: "SERVICE_STEADY_STATE".into(),
            event_type: "INFO".into(),
            reason: None,
            at: t(40),
        };
        assert_eq!(
            decide(&d, &steady, t(40)).deployment.status(),
            Status::RollingBack
        );
    }

    #[test]
    fn old_revision_and_scale_in_stops_never_count() {
        let scaled_in = Some(StopReason::ScaledIn {
            message: "Scaling activity initiated by (deployment ecs-svc/2)".into(),
        });
        let d = run(
            deploying(0, 2),
            &[
                task(1, OLD_TD, "STOPPED", 5, exec_format()),
                task(2, OLD_TD, "STOPPED", 5, exec_format()),
                task(3, OLD_TD, "STOPPED", 5, exec_format()),
                task(4, NEW_TD, "STOPPED", 5, scaled_in.clone()),
                task(5, NEW_TD, "STOPPED", 5, scaled_in.clone()),
                task(6, NEW_TD, "STOPPED", 5, scaled_in),
            ],
        );
        assert_eq!(d.status(), Status::Deploying);
        assert_eq!(d.failed_count, 0);
    }

    #[test]
    fn replayed_and_late_task_events_do_not_count_twice() {
        let stop = task(1, NEW_TD, "STOPPED", 4, exec_format());
        let d = run(deploying(0, 1), &[stop.clone(), stop.clone(), stop]);
        assert_eq!(d.failed_count, 1);
        assert_eq!(d.status(), Status::Deploying);
        // RUNNING with an older version arriving after STOPPED changes nothing.
        let late = decide(&d, &task(1, NEW_TD, "RUNNING", 2, None), t(50));
        assert!(!late.changed);
    }

    #[test]
    fn a_record_stays_small_however_many_tasks_a_rollout_runs() {
        // A 5,000-task rollout: 5,000 tasks reach RUNNING, then 5,000 stop — 99 of them failing
        // (one short of the limit), the rest scaled in — and a final failure rolls it back.
        let mut d = deploying(0, 5000);
        d.max_failed_tasks = 100;
        let scaled_in = Some(StopReason::ScaledIn {
            message: "Scaling activity initiated by (deployment ecs-svc/2)".into(),
        });
        let mut largest = 0;
        for n in 0..10_001u32 {
            let fact = match n {
                0..5000 => task(n, NEW_TD, "RUNNING", 2, None),
                5000..5099 | 10_000 => task(n, NEW_TD, "STOPPED", 3, exec_format()),
                _ => task(n, NEW_TD, "STOPPED", 3, scaled_in.clone()),
            };
            d = decide(&d, &fact, t(10)).deployment;
            // What the store keeps after each save.
            d.events_written();
            largest = largest.max(serde_json::to_vec(&d).unwrap().len());
        }
        assert_eq!(d.status(), Status::RollingBack);
        assert_eq!(
            d.failed_count, 100,
            "failures are counted up to the limit only"
        );
        assert_eq!(d.failed_tasks.len(), RECENT_FAILURES);
        assert_eq!(
            d.events_total, 103,
            "one entry per failure, the rollout and the rollback"
        );
        eprintln!("largest record over 10,001 task events: {largest} bytes");
        assert!(largest < 16 * 1024, "record grew to {largest} bytes");
    }

    fn ecs_reports_failed(reason: &str) -> Fact {
        Fact::EcsDeployment {
            ecs_deployment_id: "ecs-svc/2".into(),
            event_name: "SERVICE_DEPLOYMENT_FAILED".into(),
            reason: Some(reason.into()),
            at: t(20),
        }
    }

    #[test]
    fn ecs_reporting_our_deployment_failed_rolls_back_truthfully() {
        let fact = ecs_reports_failed("ECS deployment circuit breaker: task failed to start.");
        let d = decide(&deploying(0, 1), &fact, t(20)).deployment;
        assert_eq!(d.status(), Status::RollingBack);
        assert!(d.reason.unwrap().contains("circuit breaker"));
        assert_eq!(d.events.last().unwrap().actor.as_deref(), Some("aws.ecs"));
    }

    #[test]
    fn a_start_call_that_keeps_failing_ends_failed_naming_the_call() {
        let mut d = decide(&pending(0), &Fact::SlotTaken, t(1)).deployment;
        let seq = start_effect(&d, |e| matches!(e, Effect::RegisterRevision));
        for n in 1..outbox::MAX_ATTEMPTS {
            assert_eq!(
                outbox::failed(&mut d, seq, "ThrottlingException", t(n.into())),
                None
            );
            assert!(d.outbox.iter().any(|e| e.seq == seq && e.claim.is_none()));
        }
        let attempts = outbox::failed(&mut d, seq, "ThrottlingException", t(9));
        assert_eq!(attempts, Some(outbox::MAX_ATTEMPTS));
        let fact = Fact::EffectGaveUp {
            seq,
            error: "ThrottlingException".into(),
        };
        let failed = decide(&d, &fact, t(9)).deployment;
        assert_eq!(failed.status(), Status::Failed);
        let reason = failed.reason.clone().unwrap();
        assert!(
            reason.contains("registering the new revision") && reason.contains("Throttling"),
            "{reason}"
        );
        assert_eq!(alerts(&failed), vec![EventType::Failed]);
    }

    /// Fails effect `seq` until the outbox gives up on it, then decides what that means.
    fn give_up(mut d: Deployment, seq: u32) -> Deployment {
        for n in 1..=outbox::MAX_ATTEMPTS {
            outbox::failed(&mut d, seq, "ThrottlingException", t(n.into()));
        }
        let fact = Fact::EffectGaveUp {
            seq,
            error: "ThrottlingException".into(),
        };
        decide(&d, &fact, t(9)).deployment
    }

    #[test]
    fn a_rollout_call_given_up_rolls_back_since_it_may_have_taken_effect() {
        let d = registered(pending(0), 2, None);
        let deploy = start_effect(&d, |e| matches!(e, Effect::Deploy { .. }));
        let d = give_up(d, deploy);
        assert_eq!(d.status(), Status::RollingBack, "{:?}", d.reason);
        let reason = d.reason.clone().unwrap();
        assert!(
            reason.contains("UpdateService") && reason.contains("rolling back"),
            "{reason}"
        );
        let back = start_effect(&d, |e| matches!(e, Effect::RollBack { .. }));
        assert!(d.outbox.iter().any(|e| e.seq == back
            && e.effect
                == Effect::RollBack {
                    to_task_definition: OLD_TD.into()
                }));
    }

    #[test]
    fn a_weight_step_given_up_mid_shift_puts_all_traffic_back() {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,50,100],"bake_minutes":5}"#);
        let d = settle_effects(decide(&d, &green_ready(), t(2)).deployment, t(2));
        let d = decide(&d, &green_ready(), t(2) + Duration::minutes(5)).deployment;
        assert_eq!(d.traffic_percent, 10);
        let step = start_effect(&d, |e| matches!(e, Effect::SetWeights { percent: 50 }));
        let d = give_up(d, step);
        assert_eq!(d.status(), Status::RollingBack, "{:?}", d.reason);
        assert_eq!(weights_asked(&d), vec![0]);
    }

    #[test]
    fn a_rollback_call_that_keeps_failing_ends_failed_at_its_deadline_with_the_urgent_alert() {
        let d = decide(
            &deploying(0, 1),
            &ecs_reports_failed("circuit breaker"),
            t(20),
        )
        .deployment;
        let back = start_effect(&d, |e| matches!(e, Effect::RollBack { .. }));
        let d = give_up(d, back);
        assert_eq!(
            d.status(),
            Status::RollingBack,
            "it may have landed: kept and retried"
        );
        assert_eq!(
            start_effect(&d, |e| matches!(e, Effect::RollBack { .. })),
            back
        );
        let deadline = d.rollback().and_then(|r| r.deadline).unwrap();
        let d = decide(&d, &Fact::Tick, deadline).deployment;
        assert_eq!(d.status(), Status::Failed);
        assert!(alerts(&d).contains(&EventType::Failed));
        let reason = d.reason.clone().unwrap();
        assert!(reason.contains("UpdateService back to"), "{reason}");
    }

    #[test]
    fn an_alert_that_cannot_be_published_never_changes_the_outcome() {
        let d = deploying(0, 1);
        let started = start_effect(&d, |e| matches!(e, Effect::Alert(_)));
        let d = give_up(d, started);
        assert_eq!(d.status(), Status::Deploying);
        let last = d.events.last().unwrap().reason.clone().unwrap();
        assert!(last.contains("gave up on"), "{last}");
    }

    #[test]
    fn a_newer_push_supersedes_only_what_is_still_waiting() {
        let queued = decide(
            &pending(0),
            &Fact::Queued {
                behind: "d-old".into(),
            },
            t(2),
        )
        .deployment;
        let waiting = decide(&queued, &Fact::Superseded { by: "d-new".into() }, t(3)).deployment;
        assert_eq!(waiting.status(), Status::Superseded);
        // A PENDING deployment whose start is not decided yet never starts after a newer one;
        // once its start is decided (the slot taken, the revision being registered), it is left
        // alone.
        let not_started = decide(&pending(0), &Fact::Superseded { by: "d-new".into() }, t(3));
        assert_eq!(not_started.deployment.status(), Status::Superseded);
        let starting = decide(&pending(0), &Fact::SlotTaken, t(2)).deployment;
        assert!(!decide(&starting, &Fact::Superseded { by: "d-new".into() }, t(3)).changed);
        assert!(
            !decide(
                &deploying(0, 1),
                &Fact::Superseded { by: "d-new".into() },
                t(3)
            )
            .changed
        );
        let mut rolling_back = deploying(0, 1);
        rolling_back.state = State::RollingBack {
            rollback: Rollback {
                to_task_definition: OLD_TD.into(),
                requested_at: t(2),
                issued_at: None,
                ecs_deployment_id: None,
                deadline: Some(t(600)),
            },
        };
        assert!(
            !decide(
                &rolling_back,
                &Fact::Superseded { by: "d-new".into() },
                t(3)
            )
            .changed
        );
    }

    // --- alb-weights, gates, approval, promotion ---

    const TG_BLUE: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/blue/1";
    const TG_GREEN: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/green/2";

    fn alb_registration(strategy: &str, extra: &str) -> Registration {
        let json = format!(
            r#"{{"cluster":"prod","repository":"web","container":"app",
                "engine":{{"type":"alb-weights",
                    "listener_rule_arn":"arn:aws:elasticloadbalancing:eu-west-1:1:listener-rule/app/x/y/z",
                    "blue":{{"service":"web-blue","target_group_arn":"{TG_BLUE}"}},
                    "green":{{"service":"web-green","target_group_arn":"{TG_GREEN}"}},
                    "scale_down_after_minutes":5}},
                "strategy":{strategy},
                "gates":{{"alarms":["web-5xx"]{extra}}},
                "promote_to":"production"}}"#
        );
        Registration::parse("web", "staging", &json).unwrap()
    }

    fn alb_deploying(strategy: &str) -> Deployment {
        let push = ImagePush {
            registry: "1.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: "web".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            tag: Some("v2".into()),
            event_id: "evt-2".into(),
        };
        let d = Deployment::from_push(&alb_registration(strategy, ""), &push, t(0));
        started(d, 2, Some(Colour::Blue), None)
    }

    /// The reconcile loop's DescribeServices of the rolling service `checkout-api` on the new
    /// revision.
    fn rolling_seen(running: u32, desired: u32, steady: bool) -> Fact {
        Fact::ServiceObserved(ServiceObservation {
            service: "checkout-api".into(),
            task_definition: NEW_TD.into(),
            running,
            desired,
            steady,
            healthy_targets: None,
        })
    }

    fn green_ready() -> Fact {
        Fact::ServiceObserved(ServiceObservation {
            service: "web-green".into(),
            task_definition: NEW_TD.into(),
            running: 2,
            desired: 2,
            steady: true,
            healthy_targets: Some(2),
        })
    }

    /// Carries out every pending effect but alerts the way the handler would, recording results.
    fn settle_effects(mut d: Deployment, now: DateTime<Utc>) -> Deployment {
        while let Some(e) = d
            .outbox
            .iter()
            .find(|e| !matches!(e.effect, Effect::Alert(_)))
            .cloned()
        {
            outbox::done(&mut d, e.seq);
            let follow_up = match e.effect {
                Effect::SetWeights { percent } => Some(Fact::WeightsSet { percent }),
                Effect::Scale { service, .. } => Some(Fact::ScaledDown {
                    service,
                    done: true,
                }),
                _ => None,
            };
            if let Some(f) = follow_up {
                d = decide(&d, &f, now).deployment;
            }
        }
        d
    }

    fn weights_asked(d: &Deployment) -> Vec<u8> {
        d.outbox
            .iter()
            .filter_map(|e| match e.effect {
                Effect::SetWeights { percent } => Some(percent),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_new_colour_takes_traffic_only_once_it_runs_at_the_desired_count() {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
        assert_eq!(d.rollout.ecs_service, "web-green");
        let not_yet = Fact::ServiceObserved(ServiceObservation {
            running: 1,
            ..match green_ready() {
                Fact::ServiceObserved(s) => s,
                _ => unreachable!(),
            }
        });
        assert_eq!(
            decide(&d, &not_yet, t(2)).deployment.status(),
            Status::Deploying
        );
        let empty = Fact::ServiceObserved(ServiceObservation {
            healthy_targets: Some(0),
            ..match green_ready() {
                Fact::ServiceObserved(s) => s,
                _ => unreachable!(),
            }
        });
        assert_eq!(
            decide(&d, &empty, t(2)).deployment.status(),
            Status::Deploying,
            "an empty target group is not ready"
        );
        // Task events alone never move traffic: running is not healthy.
        let running = run(
            d.clone(),
            &[
                task(1, NEW_TD, "RUNNING", 2, None),
                task(2, NEW_TD, "RUNNING", 2, None),
            ],
        );
        assert_eq!(running.status(), Status::Deploying);
        let unhealthy = Fact::ServiceObserved(ServiceObservation {
            healthy_targets: Some(1),
            ..match green_ready() {
                Fact::ServiceObserved(s) => s,
                _ => unreachable!(),
            }
        });
        assert_eq!(
            decide(&d, &unhealthy, t(2)).deployment.status(),
            Status::Deploying
        );
        let ready = decide(&d, &green_ready(), t(2)).deployment;
        assert_eq!(ready.status(), Status::Shifting);
        assert_eq!(weights_asked(&ready), vec![10]);
    }

    #[test]
    fn a_canary_holds_each_step_for_its_bake_then_succeeds_and_scales_the_old_colour_down() {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
        let d = settle_effects(decide(&d, &green_ready(), t(2)).deployment, t(2));
        assert_eq!(d.traffic_percent, 10);
        assert!(
            !decide(&d, &Fact::Tick, t(2) + Duration::minutes(4)).changed,
            "still baking"
        );
        // A Tick alone passes no bake: the reconcile loop's look at the new colour after it does.
        assert!(!decide(&d, &Fact::Tick, t(2) + Duration::minutes(5)).changed);
        let d = decide(&d, &green_ready(), t(2) + Duration::minutes(5)).deployment;
        assert_eq!(weights_asked(&d), vec![100]);
        // A second look before the weights are set asks for nothing more.
        assert!(!decide(&d, &green_ready(), t(2) + Duration::minutes(5)).changed);
        let d = settle_effects(d, t(400));
        assert_eq!(d.traffic_percent, 100);
        assert_eq!(d.status(), Status::Shifting);
        let done = decide(&d, &green_ready(), t(400) + Duration::minutes(5)).deployment;
        assert_eq!(done.status(), Status::Succeeded);
        assert!(done.outbox.iter().any(|e| e.effect
            == Effect::Promote {
                environment: "production".into()
            }));
        assert!(
            done.needs_reconcile(),
            "the old colour still has to be scaled down"
        );
        let later = decide(&done, &Fact::Tick, t(400) + Duration::minutes(10)).deployment;
        assert!(later.outbox.iter().any(|e| matches!(&e.effect, Effect::Scale { service, desired_count: 0, .. } if service == "web-blue")));
        let mut finished = settle_effects(later, t(1100));
        assert!(finished.traffic.as_ref().unwrap().scaled_down);
        finished.outbox.clear(); // the alerts, sent
        assert!(!finished.needs_reconcile());
    }

    #[test]
    fn linear_steps_climb_by_the_step_percent() {
        let r = alb_registration(
            r#"{"type":"linear","step_percent":30,"interval_minutes":2}"#,
            "",
        );
        assert_eq!(r.traffic_steps(), vec![30, 60, 90, 100]);
    }

    #[test]
    fn a_gating_alarm_puts_all_traffic_back_on_the_stable_colour_in_one_step() {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
        let d = settle_effects(decide(&d, &green_ready(), t(2)).deployment, t(2));
        let fired = Fact::AlarmFired {
            alarm: "web-5xx".into(),
            reason: "Threshold Crossed: 7 > 5".into(),
            gating: false,
            since: None,
        };
        let d = decide(&d, &fired, t(60)).deployment;
        assert_eq!(d.status(), Status::RollingBack);
        assert_eq!(weights_asked(&d), vec![0]);
        let d = settle_effects(d, t(61));
        assert_eq!(d.status(), Status::RolledBack);
        assert_eq!(d.traffic_percent, 0);
        assert!(d.reason.clone().unwrap().contains("web-5xx"));
        assert_eq!(alerts(&d), vec![EventType::Started, EventType::RolledBack]);
        // The same alarm again changes nothing.
        assert!(!decide(&d, &fired, t(62)).changed);
    }

    #[test]
    fn an_alb_weights_rollback_is_measured_from_its_failure_signal_to_the_weights_call() {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,100],"bake_minutes":5}"#);
        let d = settle_effects(decide(&d, &green_ready(), t(2)).deployment, t(2));
        let fired = Fact::AlarmFired {
            alarm: "web-5xx".into(),
            reason: "Threshold Crossed: 7 > 5".into(),
            gating: false,
            since: None,
        };
        let d = decide(&d, &fired, t(60)).deployment;
        let requested = d.rollback().unwrap().requested_at;
        let back = decide(&d, &Fact::WeightsSet { percent: 0 }, t(61)).deployment;
        assert_eq!(back.status(), Status::RolledBack);
        let seconds = (t(61) - requested).num_milliseconds() as f64 / 1000.0;
        let measured = measures(&back);
        assert!(
            measured.contains(&(crate::emf::MetricName::SignalToRollbackSeconds, seconds)),
            "{measured:?}"
        );
        assert!(measured.contains(&(crate::emf::MetricName::DeploymentsRolledBack, 1.0)));
    }

    #[test]
    fn an_alarm_that_does_not_gate_the_deployment_is_ignored() {
        let d = alb_deploying(r#"{"type":"all-at-once","bake_minutes":0}"#);
        let other = Fact::AlarmFired {
            alarm: "someone-elses".into(),
            reason: "x".into(),
            gating: false,
            since: None,
        };
        assert!(!decide(&d, &other, t(5)).changed);
    }

    #[test]
    fn approval_is_required_and_self_approval_refused() {
        let reg = alb_registration(
            r#"{"type":"all-at-once","bake_minutes":0}"#,
            r#","approval":true"#,
        );
        let push = ImagePush {
            registry: "r".into(),
            repository: "web".into(),
            digest: format!("sha256:{}", "d".repeat(64)),
            tag: None,
            event_id: "e".into(),
        };
        let mut d = Deployment::from_push(&reg, &push, t(0));
        d.started_by = Some("arn:aws:iam::1:role/ci".into());
        d.starters = vec!["arn:aws:iam::1:role/ci".into()];
        let waiting = decide(&d, &Fact::ApprovalNeeded, t(1)).deployment;
        assert_eq!(waiting.status(), Status::AwaitingApproval);
        assert_eq!(alerts(&waiting), vec![EventType::ApprovalRequired]);
        let own = decide(
            &waiting,
            &Fact::Approved {
                by: "arn:aws:iam::1:role/ci".into(),
            },
            t(2),
        );
        assert!(
            matches!(own.refusal, Some(Refusal::NotAllowed(m)) if m.contains("cannot approve"))
        );
        let approved = decide(
            &waiting,
            &Fact::Approved {
                by: "arn:aws:iam::1:role/approver".into(),
            },
            t(2),
        )
        .deployment;
        assert_eq!(approved.status(), Status::Pending);
        assert_eq!(
            approved.approved_by.as_deref(),
            Some("arn:aws:iam::1:role/approver")
        );
        assert_eq!(
            approved.events.last().unwrap().actor.as_deref(),
            Some("arn:aws:iam::1:role/approver")
        );
        // Approving twice is refused: it is no longer waiting.
        assert!(
            decide(&approved, &Fact::Approved { by: "x".into() }, t(3))
                .refusal
                .is_some()
        );
    }

    #[test]
    fn a_queued_deployment_waits_without_a_deadline() {
        let d = decide(
            &pending(0),
            &Fact::Queued {
                behind: "d-old".into(),
            },
            t(1),
        )
        .deployment;
        assert!(!decide(&d, &Fact::Tick, t(1) + Duration::days(3)).changed);
        let d = decide(&d, &Fact::Unblocked, t(2)).deployment;
        assert!(d.queued_behind().is_none());
    }

    #[test]
    fn done_effects_leave_the_outbox() {
        let mut d = deploying(0, 1);
        let seqs: Vec<u32> = d.outbox.iter().map(|e| e.seq).collect();
        for seq in seqs {
            assert_eq!(outbox::done(&mut d, seq), outbox::Finished::Done);
        }
        assert!(pending_effects(&d).is_empty());
    }

    // --- the failures the correctness review reproduced, pinned at the core ---

    fn shifting_at_10() -> Deployment {
        let d = alb_deploying(r#"{"type":"canary","steps":[10,50,100],"bake_minutes":5}"#);
        settle_effects(decide(&d, &green_ready(), t(2)).deployment, t(2))
    }

    #[test]
    fn a_rollback_cancels_a_weight_step_decided_before_it() {
        let d = shifting_at_10();
        let d = decide(&d, &green_ready(), t(2) + Duration::minutes(5)).deployment;
        assert_eq!(weights_asked(&d), vec![50]);
        // The step's ModifyRule is throttled: its claim is released and it backs off.
        let mut d = d;
        let step = d
            .outbox
            .iter()
            .find(|e| e.effect == Effect::SetWeights { percent: 50 })
            .unwrap()
            .seq;
        outbox::claim(&mut d, step, "inv-1", t(400));
        assert_eq!(outbox::failed(&mut d, step, "Throttling", t(400)), None);
        let fired = Fact::AlarmFired {
            alarm: "web-5xx".into(),
            reason: "Threshold Crossed".into(),
            gating: false,
            since: None,
        };
        let d = decide(&d, &fired, t(410)).deployment;
        assert_eq!(
            weights_asked(&d),
            vec![0],
            "the 50% step is gone, only the rollback's 0%"
        );
        let d = settle_effects(d, t(411));
        assert_eq!(d.status(), Status::RolledBack);
        // Long after the claim lease nothing is left that could shift traffic again.
        assert!(
            d.outbox
                .iter()
                .all(|e| !matches!(e.effect, Effect::SetWeights { .. }))
        );
        let later = decide(&d, &Fact::Tick, t(410) + Duration::minutes(10)).deployment;
        assert_eq!(later.traffic_percent, 0);
        assert!(weights_asked(&later).is_empty());
    }

    #[test]
    fn a_weight_step_in_flight_during_a_rollback_is_stale_and_holds_the_lane() {
        let d = shifting_at_10();
        let mut d = decide(&d, &green_ready(), t(2) + Duration::minutes(5)).deployment;
        let step = d
            .outbox
            .iter()
            .find(|e| e.effect == Effect::SetWeights { percent: 50 })
            .unwrap()
            .seq;
        outbox::claim(&mut d, step, "inv-1", t(400));
        let fired = Fact::AlarmFired {
            alarm: "web-5xx".into(),
            reason: "Threshold Crossed".into(),
            gating: false,
            since: None,
        };
        let mut d = decide(&d, &fired, t(401)).deployment;
        assert_eq!(d.status(), Status::RollingBack);
        // The 50% call is still in flight: the rollback's 0% waits behind it, never before it.
        let next_aws = outbox::next(&d, "inv-2", t(402))
            .and_then(|seq| d.outbox.iter().find(|e| e.seq == seq))
            .map(|e| e.effect.clone());
        assert!(
            matches!(next_aws, None | Some(Effect::Alert(_))),
            "only alerts may go while the 50% call is in flight: {next_aws:?}"
        );
        // Its result comes back: stale, not applied.
        assert_eq!(outbox::done(&mut d, step), outbox::Finished::Stale);
        let after = decide(&d, &Fact::WeightsSet { percent: 50 }, t(403)).deployment;
        assert_eq!(after.traffic_percent, d.traffic_percent);
        assert_eq!(weights_asked(&d), vec![0]);
    }

    #[test]
    fn the_same_role_under_another_session_name_cannot_approve_its_own_deployment() {
        let reg = alb_registration(
            r#"{"type":"all-at-once","bake_minutes":0}"#,
            r#","approval":true"#,
        );
        let mut d = Deployment::from_api(
            &reg,
            "d-x".into(),
            "img".into(),
            format!("sha256:{}", "e".repeat(64)),
            None,
            "arn:aws:sts::1:assumed-role/release/ci-run-7",
            t(0),
        );
        d = decide(&d, &Fact::ApprovalNeeded, t(1)).deployment;
        let own = decide(
            &d,
            &Fact::Approved {
                by: "arn:aws:sts::1:assumed-role/release/laptop".into(),
            },
            t(2),
        );
        assert!(
            matches!(own.refusal, Some(Refusal::NotAllowed(_))),
            "{:?}",
            own.refusal
        );
    }

    #[test]
    fn whoever_started_staging_cannot_approve_its_promotion_to_production() {
        let staging = alb_registration(r#"{"type":"all-at-once","bake_minutes":0}"#, "");
        let starter = "arn:aws:sts::1:assumed-role/ci/run-1";
        let from = Deployment::from_api(
            &staging,
            "d-s".into(),
            "img".into(),
            format!("sha256:{}", "f".repeat(64)),
            None,
            starter,
            t(0),
        );
        let mut production = staging.clone();
        production.environment = "production".into();
        production.spec.gates.approval = true;
        production.spec.promote_to = None;
        let promoted = Deployment::promotion_of(&from, &production, t(5));
        let waiting = decide(&promoted, &Fact::ApprovalNeeded, t(6)).deployment;
        let refused = decide(
            &waiting,
            &Fact::Approved {
                by: "arn:aws:sts::1:assumed-role/ci/run-2".into(),
            },
            t(7),
        );
        assert!(
            matches!(refused.refusal, Some(Refusal::NotAllowed(m)) if m.contains("promotion chain"))
        );
        let other = decide(
            &waiting,
            &Fact::Approved {
                by: "arn:aws:sts::1:assumed-role/release-approver/x".into(),
            },
            t(7),
        );
        assert!(other.refusal.is_none());
    }

    #[test]
    fn a_rollout_that_never_becomes_ready_is_rolled_back_at_its_progress_deadline() {
        let d = deploying(0, 3);
        let seen = rolling_seen(2, 3, false);
        let d = decide(&d, &seen, t(60)).deployment;
        assert!(!decide(&d, &Fact::Tick, t(1) + Duration::minutes(9)).changed);
        let late = decide(&d, &Fact::Tick, t(1) + Duration::minutes(10)).deployment;
        assert_eq!(late.status(), Status::RollingBack);
        let reason = late.reason.clone().unwrap();
        assert!(
            reason.contains("progress deadline") && reason.contains("2 of 3"),
            "{reason}"
        );
        // A rollback that does not complete in time ends FAILED with an urgent alert.
        let stuck = decide(&late, &Fact::Tick, t(1) + Duration::minutes(21)).deployment;
        assert_eq!(stuck.status(), Status::Failed);
        assert!(
            stuck
                .reason
                .clone()
                .unwrap()
                .contains("rollback did not complete")
        );
        assert_eq!(alerts(&stuck).last(), Some(&EventType::Failed));
    }

    #[test]
    fn a_rolling_rollout_is_confirmed_by_describe_services_alone() {
        let d = deploying(0, 2);
        let steady = rolling_seen(2, 2, true);
        assert_eq!(
            decide(&d, &steady, t(30)).deployment.status(),
            Status::Succeeded
        );
    }

    #[test]
    fn a_redelivered_ecs_service_action_adds_nothing() {
        let impaired = Fact::ServiceAction {
            event_name: "SERVICE_TASK_START_IMPAIRED".into(),
            event_type: "WARN".into(),
            reason: Some("unable to place a task".into()),
            at: t(20),
        };
        let once = decide(&deploying(0, 2), &impaired, t(21)).deployment;
        assert_eq!(once.events.last().map(|e| e.at), Some(t(20)));
        assert!(!decide(&once, &impaired, t(90)).changed);
    }

    #[test]
    fn an_alarm_added_to_the_registration_mid_deployment_gates_it() {
        let d = deploying(0, 2);
        let fired = Fact::AlarmFired {
            alarm: "added-later".into(),
            reason: "Threshold Crossed".into(),
            gating: true,
            since: None,
        };
        assert_eq!(
            decide(&d, &fired, t(30)).deployment.status(),
            Status::RollingBack
        );
    }

    /// Reconcile alone (every ECS event lost): a rolling rollout whose service was scaled in by
    /// Application Auto Scaling while it deployed (desired 4 at the start, 2 now) is ready once
    /// ECS reports the new revision steady at the service's desired count. It must not wait for
    /// the desired count read at the start and be rolled back at the progress deadline.
    #[test]
    fn a_rolling_rollout_scaled_in_while_deploying_is_ready_at_the_services_desired_count() {
        let d = deploying(0, 4);
        let seen = rolling_seen(2, 2, true);
        let deadline = d.progress().map(|p| p.progress_deadline).unwrap();
        let d = decide(&d, &seen, t(30)).deployment;
        let later = decide(&d, &Fact::Tick, deadline).deployment;
        assert_eq!(
            later.status(),
            Status::Succeeded,
            "ECS reported the new revision steady at the service's desired count (2 of 2), yet \
             the deployment is {} at its progress deadline: {:?}",
            later.status(),
            later.reason
        );
    }

    /// "A record under 16 KB whatever happens": a crash loop whose tasks stop with the long
    /// reasons ECS really gives (a secret the execution role may not read), with the limit at
    /// its allowed maximum of 100.
    #[test]
    fn a_record_stays_under_16_kb_through_a_crash_loop_with_long_stop_reasons() {
        let mut d = deploying(0, 100);
        d.max_failed_tasks = 100;
        let reason = "ResourceInitializationError: unable to pull secrets or registry auth: \
            execution resource retrieval failed: unable to retrieve secret from asm: service call \
            has been retried 5 time(s): failed to fetch secret \
            arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/checkout-api/database-AbCdEf \
            from secrets manager: AccessDeniedException: User: \
            arn:aws:sts::123456789012:assumed-role/checkout-api-task-execution/5f0c1e2d3b4a4c5d9e8f \
            is not authorized to perform: secretsmanager:GetSecretValue on resource: \
            arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/checkout-api/database-AbCdEf \
            because no identity-based policy allows the secretsmanager:GetSecretValue action \
            status code: 400, request id: 0e6f5a1b-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
        let containers = [("app", None, None)];
        let stop = StopReason::classify(&crate::stop_reason::StoppedTask {
            stop_code: Some("TaskFailedToStart"),
            stopped_reason: Some(reason),
            containers: &containers,
        });
        assert!(stop.is_failure());
        let mut largest = 0;
        for n in 0..100u32 {
            d = decide(
                &d,
                &task(n, NEW_TD, "STOPPED", 3, Some(stop.clone())),
                t(10),
            )
            .deployment;
            d.events_written();
            largest = largest.max(serde_json::to_vec(&d).unwrap().len());
        }
        assert_eq!(d.status(), Status::RollingBack);
        assert!(
            largest < 16 * 1024,
            "the record grew to {largest} bytes of JSON (bound 16384)"
        );
    }

    // --- ecs-native ---

    const SD: &str =
        "arn:aws:ecs:eu-west-1:123456789012:service-deployment/prod/checkout-api/abc123";

    fn native_registration(strategy: &str, approval: bool) -> Registration {
        let json = format!(
            r#"{{"cluster":"prod","repository":"checkout-api","container":"app",
                "engine":{{"type":"ecs-native","service":"checkout-api"}},
                "strategy":{strategy},
                "gates":{{"alarms":["checkout-api-5xx"],"max_failed_tasks":2,"approval":{approval}}}}}"#
        );
        Registration::parse("checkout-api", "production", &json).unwrap()
    }

    fn native_pending(approval: bool) -> Deployment {
        let reg = native_registration(
            r#"{"type":"canary","steps":[10,100],"bake_minutes":3}"#,
            approval,
        );
        let push = ImagePush {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: "checkout-api".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            tag: Some("v2.0.0".into()),
            event_id: "evt-native".into(),
        };
        let mut d = Deployment::from_push(&reg, &push, t(0));
        d.starters = vec!["arn:aws:sts::123456789012:assumed-role/ci-deployer/build-1".into()];
        d
    }

    fn native_deploying(approval: bool, answered: Option<&str>) -> Deployment {
        started(native_pending(approval), 2, None, answered)
    }

    /// The service deployment as the reconcile loop reads it: an outcome (SUCCESSFUL,
    /// ROLLBACK_SUCCESSFUL) comes with the service running that revision at its desired count.
    fn sd_view(status: &str, stage: &str, percent: Option<u8>) -> Fact {
        let ended = matches!(status, "SUCCESSFUL" | "ROLLBACK_SUCCESSFUL");
        sd_view_serving(status, stage, percent, ended.then_some((2, 2)))
    }

    /// As `sd_view`, with the service read running `running` of `desired` tasks of the
    /// revision the outcome names.
    fn sd_view_serving(
        status: &str,
        stage: &str,
        percent: Option<u8>,
        serving: Option<(u32, u32)>,
    ) -> Fact {
        Fact::NativeObserved(NativeView {
            arn: SD.into(),
            status: status.into(),
            stage: Some(stage.into()),
            target_task_definition: None,
            production_percent: percent,
            status_reason: None,
            rollback_reason: None,
            serving: serving.map(|(running, desired)| ServiceObservation {
                service: "checkout-api".into(),
                task_definition:
                    "arn:aws:ecs:eu-west-1:123456789012:task-definition/checkout-api:7".into(),
                running,
                desired,
                steady: running >= desired,
                healthy_targets: None,
            }),
        })
    }

    fn hook(stage: &str, percent: Option<u8>) -> Fact {
        Fact::HookInvoked(HookCall {
            service_deployment_arn: SD.into(),
            stage: stage.into(),
            target_task_definition: None,
            test_percent: None,
            production_percent: percent,
        })
    }

    fn aws_effects(d: &Deployment) -> Vec<&Effect> {
        d.outbox
            .iter()
            .filter(|e| !e.cancelled && e.effect.lane() == crate::deployment::Lane::Aws)
            .map(|e| &e.effect)
            .collect()
    }

    fn trail(d: &Deployment) -> String {
        d.events
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_native_rollout_is_update_service_with_ecs_own_strategy_bound_to_its_service_deployment() {
        let d = registered(native_pending(false), 2, None);
        let deploy = d
            .outbox
            .iter()
            .find_map(|e| match &e.effect {
                Effect::Deploy { strategy, .. } => Some(strategy.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            deploy,
            Some(crate::native::NativeStrategy::Canary {
                canary_percent: 10,
                canary_bake_minutes: 3
            })
        );
        let d = native_deploying(false, Some(SD));
        assert_eq!(d.status(), Status::Deploying);
        assert_eq!(
            d.native.as_ref().unwrap().service_deployment_arn.as_deref(),
            Some(SD)
        );
    }

    #[test]
    fn native_stages_and_weights_go_on_the_audit_trail_and_ecs_success_is_success() {
        let d = native_deploying(false, Some(SD));
        let d = run(
            d,
            &[
                sd_view("IN_PROGRESS", "SCALE_UP", Some(0)),
                sd_view("IN_PROGRESS", "SCALE_UP", Some(0)),
                sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            ],
        );
        assert_eq!(d.status(), Status::Shifting);
        assert_eq!(d.traffic_percent, 10);
        let again = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(30),
        );
        assert!(!again.changed, "the same view twice adds nothing");
        let d = run(
            d,
            &[
                sd_view("IN_PROGRESS", "BAKE_TIME", Some(100)),
                sd_view("SUCCESSFUL", "CLEAN_UP", Some(100)),
            ],
        );
        assert_eq!(d.status(), Status::Succeeded);
        let text = trail(&d);
        for needle in [
            "SCALE_UP",
            "PRODUCTION_TRAFFIC_SHIFT, 10%",
            "BAKE_TIME",
            "SUCCESSFUL",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(text.matches("at SCALE_UP").count(), 1, "{text}");
    }

    #[test]
    fn another_service_deployment_never_moves_a_native_record() {
        let d = native_deploying(false, Some(SD));
        let other = Fact::NativeObserved(NativeView {
            arn: format!("{SD}-other"),
            status: "SUCCESSFUL".into(),
            stage: Some("CLEAN_UP".into()),
            target_task_definition: Some(NEW_TD.into()),
            production_percent: Some(100),
            status_reason: None,
            rollback_reason: None,
            serving: None,
        });
        assert!(!decide(&d, &other, t(20)).changed);
    }

    #[test]
    fn a_lost_update_service_answer_binds_the_service_deployment_by_its_target_revision() {
        let d = native_deploying(false, None);
        assert!(d.native.as_ref().unwrap().service_deployment_arn.is_none());
        let view = |td: &str| {
            Fact::NativeObserved(NativeView {
                arn: SD.into(),
                status: "IN_PROGRESS".into(),
                stage: Some("SCALE_UP".into()),
                target_task_definition: Some(td.into()),
                production_percent: None,
                status_reason: None,
                rollback_reason: None,
                serving: None,
            })
        };
        assert!(!decide(&d, &view(OLD_TD), t(20)).changed, "not ours");
        let d = decide(&d, &view(NEW_TD), t(20)).deployment;
        assert_eq!(
            d.native.as_ref().unwrap().service_deployment_arn.as_deref(),
            Some(SD)
        );
    }

    #[test]
    fn a_native_crash_loop_stops_the_service_deployment_and_ends_rolled_back_on_ecs_word() {
        let d = native_deploying(false, Some(SD));
        let d = run(
            d,
            &[
                task(1, NEW_TD, "STOPPED", 3, exec_format()),
                task(2, NEW_TD, "STOPPED", 3, exec_format()),
            ],
        );
        assert_eq!(d.status(), Status::RollingBack);
        assert!(matches!(
            aws_effects(&d).as_slice(),
            [Effect::StopRollout { to_task_definition }] if to_task_definition == OLD_TD
        ));
        let (status, _) = hook_answer(&d);
        assert_eq!(
            status,
            crate::native::HookStatus::Failed,
            "ECS is told to roll back too"
        );
        let mut d = d;
        let stop = start_effect(&d, |e| matches!(e, Effect::StopRollout { .. }));
        outbox::done(&mut d, stop);
        let d = decide(
            &d,
            &Fact::RollbackIssued {
                ecs_deployment_id: Some(SD.into()),
            },
            t(30),
        )
        .deployment;
        let rolling_back = sd_view("ROLLBACK_IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(0));
        let d = decide(&d, &rolling_back, t(40)).deployment;
        assert_eq!(
            d.status(),
            Status::RollingBack,
            "not confirmed before ECS says so"
        );
        let d = decide(
            &d,
            &sd_view("ROLLBACK_SUCCESSFUL", "CLEAN_UP", Some(0)),
            t(50),
        )
        .deployment;
        assert_eq!(d.status(), Status::RolledBack);
        assert!(
            d.reason.as_deref().unwrap().starts_with("crash loop"),
            "{:?}",
            d.reason
        );
        assert!(trail(&d).contains("rollback of service deployment abc123 successful"));
    }

    #[test]
    fn a_rollback_ecs_starts_itself_is_followed_and_a_failed_one_ends_failed_urgently() {
        let d = native_deploying(false, Some(SD));
        let own = Fact::NativeObserved(NativeView {
            arn: SD.into(),
            status: "ROLLBACK_IN_PROGRESS".into(),
            stage: Some("PRODUCTION_TRAFFIC_SHIFT".into()),
            target_task_definition: None,
            production_percent: Some(0),
            status_reason: None,
            rollback_reason: Some("deployment circuit breaker: tasks failed to start".into()),
            serving: None,
        });
        let d = decide(&d, &own, t(20)).deployment;
        assert_eq!(d.status(), Status::RollingBack);
        assert!(
            aws_effects(&d).is_empty(),
            "ECS rolls back already: nothing to call"
        );
        assert!(d.reason.as_deref().unwrap().contains("circuit breaker"));
        let (status, _) = hook_answer(&d);
        assert_eq!(
            status,
            crate::native::HookStatus::Succeeded,
            "the hook lets ECS's rollback go on"
        );
        let d = decide(
            &d,
            &sd_view("ROLLBACK_FAILED", "PRODUCTION_TRAFFIC_SHIFT", None),
            t(30),
        )
        .deployment;
        assert_eq!(d.status(), Status::Failed);
        assert!(alerts(&d).contains(&EventType::Failed));
        assert!(d.reason.as_deref().unwrap().contains("failed to roll back"));
    }

    #[test]
    fn ecs_success_is_success_only_once_the_new_revision_runs_at_its_desired_count() {
        let d = native_deploying(false, Some(SD));
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(20),
        )
        .deployment;
        assert_eq!(d.status(), Status::Shifting);
        // ECS is done, but the new revision's tasks die as fast as they start.
        let done_but_crashing = sd_view_serving("SUCCESSFUL", "CLEAN_UP", Some(100), Some((0, 2)));
        let d = decide(&d, &done_but_crashing, t(30)).deployment;
        assert_eq!(d.status(), Status::Shifting, "{:?}", d.reason);
        assert!(
            trail(&d).contains("runs 0 of its 2 tasks"),
            "the wait is on the trail:\n{}",
            trail(&d)
        );
        assert!(
            !decide(&d, &done_but_crashing, t(40)).changed,
            "said once, not per read"
        );
        let unread = sd_view_serving("SUCCESSFUL", "CLEAN_UP", Some(100), None);
        assert_eq!(
            decide(&d, &unread, t(45)).deployment.status(),
            Status::Shifting
        );
        let d = decide(&d, &sd_view("SUCCESSFUL", "CLEAN_UP", Some(100)), t(50)).deployment;
        assert_eq!(d.status(), Status::Succeeded);
    }

    #[test]
    fn ecs_rollback_success_onto_a_revision_that_does_not_run_is_not_rolled_back() {
        let d = native_deploying(false, Some(SD));
        let d = decide(
            &d,
            &sd_view("ROLLBACK_IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(0)),
            t(20),
        )
        .deployment;
        assert_eq!(d.status(), Status::RollingBack);
        // The revision rolled back to crashes too (an earlier failed rollout left it there).
        let back_but_down =
            sd_view_serving("ROLLBACK_SUCCESSFUL", "CLEAN_UP", Some(0), Some((0, 1)));
        let d = decide(&d, &back_but_down, t(30)).deployment;
        assert_eq!(d.status(), Status::RollingBack, "{:?}", d.reason);
        assert!(
            trail(&d).contains("ROLLED_BACK waits for them"),
            "{}",
            trail(&d)
        );
        let deadline = d.rollback().and_then(|r| r.deadline).unwrap();
        let d = decide(&d, &Fact::Tick, deadline).deployment;
        assert_eq!(d.status(), Status::Failed, "{:?}", d.reason);
        assert!(alerts(&d).contains(&EventType::Failed));
        let reason = d.reason.clone().unwrap_or_default();
        assert!(
            reason.contains("last observed 0 of 1 tasks running"),
            "{reason}"
        );
    }

    #[test]
    fn a_native_approval_holds_the_stage_before_production_traffic_until_another_principal_approves()
     {
        let pending = native_pending(true);
        assert!(
            !approval_before_start(&pending),
            "asked at the hook, not before the start"
        );
        let d = native_deploying(true, Some(SD));
        assert_eq!(d.status(), Status::Deploying);
        // Scale-up and test traffic go on: an approver may look at the new revision first.
        let d = decide(&d, &hook("POST_SCALE_UP", Some(0)), t(15)).deployment;
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Succeeded);
        assert!(!alerts(&d).contains(&EventType::ApprovalRequired));
        let d = decide(&d, &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(0)), t(20)).deployment;
        let (status, why) = hook_answer(&d);
        assert_eq!(status, crate::native::HookStatus::InProgress, "{why}");
        assert_eq!(
            alerts(&d)
                .iter()
                .filter(|a| **a == EventType::ApprovalRequired)
                .count(),
            1
        );
        let again = decide(&d, &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(0)), t(50));
        let a = &again.deployment;
        assert_eq!(
            a.events.len(),
            d.events.len(),
            "a re-invocation adds nothing to the trail"
        );
        assert_eq!(
            alerts(a)
                .iter()
                .filter(|x| **x == EventType::ApprovalRequired)
                .count(),
            1
        );
        // The hold is on purpose: no progress deadline while it lasts.
        let late = decide(&d, &Fact::Tick, t(6 * 3600)).deployment;
        assert_eq!(late.status(), Status::Deploying);
        let own = decide(
            &d,
            &Fact::Approved {
                by: "arn:aws:iam::123456789012:role/ci-deployer".into(),
            },
            t(60),
        );
        assert!(
            matches!(own.refusal, Some(Refusal::NotAllowed(_))),
            "four eyes"
        );
        let approved = decide(
            &d,
            &Fact::Approved {
                by: "arn:aws:sts::123456789012:assumed-role/release-approver/alice".into(),
            },
            t(60),
        )
        .deployment;
        assert_eq!(approved.status(), Status::Deploying);
        let d = decide(
            &approved,
            &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(0)),
            t(90),
        )
        .deployment;
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Succeeded);
        assert!(
            trail(&d).contains(
                "PRE_PRODUCTION_TRAFFIC_SHIFT, production traffic 0%: answered SUCCEEDED"
            )
        );
    }

    #[test]
    fn production_traffic_moving_before_an_approval_rolls_back_naming_the_missing_hook() {
        let d = native_deploying(true, Some(SD));
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(20),
        )
        .deployment;
        assert_eq!(d.status(), Status::RollingBack);
        assert!(
            d.reason.as_deref().unwrap().contains("lifecycleHooks"),
            "{:?}",
            d.reason
        );
    }

    #[test]
    fn a_native_rollout_without_progress_past_its_bakes_is_rolled_back() {
        let d = native_deploying(false, Some(SD));
        let d = decide(&d, &sd_view("IN_PROGRESS", "SCALE_UP", Some(0)), t(20)).deployment;
        // Progress deadline 10 min plus the canary bake of 3 min.
        assert_eq!(
            decide(&d, &Fact::Tick, t(20 + 12 * 60)).deployment.status(),
            Status::Deploying
        );
        let d = decide(&d, &Fact::Tick, t(20 + 13 * 60)).deployment;
        assert_eq!(d.status(), Status::RollingBack);
        assert!(
            d.reason.as_deref().unwrap().contains("showed no progress"),
            "{:?}",
            d.reason
        );
    }

    #[test]
    fn a_rollout_started_outside_flightdeck_is_recorded_in_flight_and_announced() {
        let reg = native_registration(r#"{"type":"all-at-once","bake_minutes":0}"#, false);
        let rollout = ExternalRollout {
            service_deployment_arn: SD.into(),
            previous_task_definition: OLD_TD.into(),
            new_task_definition: NEW_TD.into(),
            image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/checkout-api:v9".into(),
            desired_count: 2,
        };
        let d = external(&reg, &rollout, "PRE_SCALE_UP", t(0));
        assert_eq!(d.id, external_deployment_id(SD));
        assert_eq!(d.trigger, crate::deployment::Trigger::External);
        assert_eq!(d.status(), Status::Deploying);
        assert_eq!(d.tag.as_deref(), Some("v9"));
        assert_eq!(alerts(&d), vec![EventType::Started]);
        assert!(trail(&d).contains("started outside Flightdeck"));
        let d = decide(&d, &sd_view("SUCCESSFUL", "CLEAN_UP", Some(100)), t(60)).deployment;
        assert_eq!(d.status(), Status::Succeeded);
    }

    // --- ecs-native under timing and misconfiguration (found in review) ---

    /// An approval that is pending but was never asked at the hook (ECS has not reached a hooked
    /// stage: its service deployment is stuck in SCALE_UP, tasks that cannot be placed) is not a
    /// hold on purpose: the progress deadline must still roll the rollout back.
    #[test]
    fn a_native_rollout_stuck_before_its_hook_is_rolled_back_even_when_approval_is_required() {
        let d = native_deploying(true, Some(SD));
        let d = decide(&d, &sd_view("IN_PROGRESS", "SCALE_UP", Some(0)), t(20)).deployment;
        assert!(
            !d.native.as_ref().unwrap().approval_asked,
            "harness: the hook was never invoked"
        );
        // Far past the progress deadline (10 min + the 3 min canary bake).
        let late = decide(&d, &Fact::Tick, t(20 + 6 * 3600)).deployment;
        assert_eq!(
            late.status(),
            Status::RollingBack,
            "6 h stuck in SCALE_UP and still {} ({:?}); nobody was alerted",
            late.status(),
            late.reason
        );
    }

    /// ECS reports the service deployment SUCCESSFUL (no stage or weight in between was seen:
    /// the hook is not in the service's lifecycleHooks and the rollout was quicker than the
    /// reconcile loop). The environment requires approval and nobody approved: the record must
    /// not say SUCCEEDED (nor promote).
    #[test]
    fn ecs_success_never_makes_an_unapproved_native_rollout_succeeded() {
        let d = native_deploying(true, Some(SD));
        assert!(d.approved_by.is_none());
        let done = sd_view_serving("SUCCESSFUL", "CLEAN_UP", None, Some((2, 2)));
        let d = decide(&d, &done, t(30)).deployment;
        assert_ne!(
            d.status(),
            Status::Succeeded,
            "an unapproved rollout is recorded SUCCEEDED: {:?}",
            d.reason
        );
    }

    /// `POST /deployments/{id}/promote` on a native rollout that ECS is shifting: nothing tells
    /// ECS to skip its bake, yet the trail says the bake was skipped, and from then on the
    /// reconcile loop's Tick takes the "bake over" branch (a no-op for ecs-native) before the
    /// progress deadline: a service deployment that stalls afterwards is never rolled back.
    #[test]
    fn promoting_a_native_rollout_does_not_switch_off_its_progress_deadline() {
        let d = native_deploying(false, Some(SD));
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(20),
        )
        .deployment;
        assert_eq!(d.status(), Status::Shifting, "harness");
        // Without the promote, the stall is caught (10 min + 3 min bake).
        assert_eq!(
            decide(&d, &Fact::Tick, t(20 + 6 * 3600))
                .deployment
                .status(),
            Status::RollingBack,
            "harness"
        );
        let promoted = decide(
            &d,
            &Fact::BakeSkipped {
                by: "arn:aws:iam::123456789012:role/ci-deployer".into(),
            },
            t(30),
        );
        let d = match promoted.refusal {
            // Refusing the promote of an engine whose bakes ECS holds is a fine answer too.
            Some(_) => return,
            None => promoted.deployment,
        };
        let d = decide(&d, &Fact::Tick, t(31)).deployment;
        let late = decide(&d, &Fact::Tick, t(20 + 6 * 3600)).deployment;
        assert_eq!(
            late.status(),
            Status::RollingBack,
            "promoted, then stalled for 6 h: still {} at {}%; trail:\n{}",
            late.status(),
            late.traffic_percent,
            trail(&late)
        );
    }

    // --- ecs-native: the canary judge on ECS's production steps ---

    const TG_A: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-a/1";
    const TG_B: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-b/2";
    const PROD_RULE: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener-rule/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee";

    /// A CANARY rollout of 10% with a 5 minute bake, judged, bound to its service deployment;
    /// its production rule read before ECS moved any traffic (A stable, B idle).
    fn native_judged(no_data: &str) -> Deployment {
        let json = format!(
            r#"{{"cluster":"prod","repository":"checkout-api","container":"app",
                "engine":{{"type":"ecs-native","service":"checkout-api"}},
                "strategy":{{"type":"canary","steps":[10,100],"bake_minutes":5}},
                "gates":{{"alarms":["checkout-api-5xx"],"analysis":{{"min_requests":100,
                    "no_data":"{no_data}"}}}}}}"#
        );
        let reg = Registration::parse("checkout-api", "production", &json).unwrap();
        let push = ImagePush {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: "checkout-api".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            tag: Some("v2.0.0".into()),
            event_id: "evt-native-judged".into(),
        };
        let d = started(Deployment::from_push(&reg, &push, t(0)), 2, None, Some(SD));
        let d = decide(&d, &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(0)), t(10)).deployment;
        decide(&d, &rule_read(100, 0), t(10)).deployment
    }

    fn rule_read(a: u32, b: u32) -> Fact {
        Fact::ProductionRuleRead {
            rule: Some(PROD_RULE.into()),
            weights: vec![(TG_A.into(), a), (TG_B.into(), b)],
        }
    }

    /// Per-minute samples: the new revision answering `rate` errors, the stable one hardly any.
    fn judgement(d: &Deployment, rate: f64, look: crate::judge::Look) -> Judgement {
        let minute = |requests: f64, rate: f64| crate::judge::Minute {
            requests,
            errors: Some((requests * rate).round()),
            p99: Some(0.2),
        };
        let samples = crate::judge::Samples {
            canary: (0..5)
                .map(|i| minute(100.0, rate + 0.001 * f64::from(i)))
                .collect(),
            stable: (0..5)
                .map(|i| minute(900.0, 0.001 * f64::from(i)))
                .collect(),
        };
        crate::judge::judge_look(d.gates.analysis.as_ref().unwrap(), &samples, look)
    }

    fn judged_at(
        d: &Deployment,
        rate: f64,
        look: crate::judge::Look,
        now: DateTime<Utc>,
    ) -> Deployment {
        let judgement = judgement(d, rate, look);
        decide(
            d,
            &Fact::Judged {
                judgement,
                step: 10,
            },
            now,
        )
        .deployment
    }

    const DURING: crate::judge::Look = crate::judge::Look::During { bake_minutes: 5 };

    #[test]
    fn a_native_canary_step_passes_the_hook_before_the_next_shift_only_on_a_verdict_after_its_bake()
    {
        let d = native_judged("fail");
        let groups = d.native.as_ref().unwrap().judged_groups.clone().unwrap();
        assert_eq!(
            (groups.canary.as_str(), groups.stable.as_str()),
            (TG_B, TG_A)
        );
        assert_eq!(groups.load_balancer, "app/web/50dc6c495c0c9188");
        // ECS shifts 10% and calls the hook at that step: the judge holds nothing there.
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60)).deployment;
        assert_eq!(d.status(), Status::Shifting);
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Succeeded);
        // A pass during the bake (reconcile loop) does not carry over its end.
        let d = judged_at(&d, 0.0, DURING, t(60 + 180));
        let d = decide(
            &d,
            &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60 + 200),
        )
        .deployment;
        let (status, why) = hook_answer(&d);
        assert_eq!(status, crate::native::HookStatus::InProgress, "{why}");
        assert!(why.contains("no verdict on the 10% step"), "{why}");
        // Asked again after the bake, with the verdict taken then: the next shift goes.
        let d = judged_at(&d, 0.0, crate::judge::Look::End, t(60 + 301));
        let d = decide(
            &d,
            &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60 + 301),
        )
        .deployment;
        let (status, why) = hook_answer(&d);
        assert_eq!(status, crate::native::HookStatus::Succeeded, "{why}");
        assert!(trail(&d).contains("canary judge pass"), "{}", trail(&d));
        // ECS moves on to 100%: no judging there, and no rollback for moving on.
        let d = decide(
            &d,
            &hook("PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(60 + 330),
        )
        .deployment;
        assert_eq!(d.status(), Status::Shifting);
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Succeeded);
    }

    #[test]
    fn a_failing_verdict_on_a_native_step_stops_the_service_deployment_and_fails_the_hook() {
        let d = native_judged("fail");
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60)).deployment;
        let d = judged_at(&d, 0.08, DURING, t(60 + 120));
        assert_eq!(d.status(), Status::RollingBack);
        assert!(
            d.reason
                .as_deref()
                .unwrap_or("")
                .starts_with("canary judge fail")
        );
        assert!(
            aws_effects(&d)
                .iter()
                .any(|e| matches!(e, Effect::StopRollout { .. }))
        );
        let d = decide(
            &d,
            &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60 + 130),
        )
        .deployment;
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Failed);
    }

    #[test]
    fn no_data_after_a_native_step_bake_is_decided_by_the_no_data_policy_at_the_hook() {
        let few = |d: &Deployment| {
            let samples = crate::judge::Samples {
                canary: vec![crate::judge::Minute {
                    requests: 3.0,
                    errors: Some(0.0),
                    p99: Some(0.2),
                }],
                stable: vec![crate::judge::Minute {
                    requests: 900.0,
                    errors: Some(0.0),
                    p99: Some(0.2),
                }],
            };
            crate::judge::judge_look(
                d.gates.analysis.as_ref().unwrap(),
                &samples,
                crate::judge::Look::End,
            )
        };
        for (policy, status) in [("fail", Status::RollingBack), ("pass", Status::Shifting)] {
            let d = native_judged(policy);
            let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60)).deployment;
            let judgement = few(&d);
            let d = decide(
                &d,
                &Fact::Judged {
                    judgement,
                    step: 10,
                },
                t(60 + 360),
            )
            .deployment;
            let d = decide(
                &d,
                &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(10)),
                t(60 + 360),
            )
            .deployment;
            assert_eq!(d.status(), status, "no_data {policy}: {}", trail(&d));
        }
    }

    #[test]
    fn ecs_moving_past_a_step_the_judge_has_not_passed_rolls_back_naming_the_missing_hook() {
        let d = native_judged("fail");
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60),
        )
        .deployment;
        // The hook is not called before the next shift: ECS goes on to 100% after its bake.
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(60 + 310),
        )
        .deployment;
        assert_eq!(d.status(), Status::RollingBack);
        let reason = d.reason.clone().unwrap_or_default();
        assert!(reason.contains("PRE_PRODUCTION_TRAFFIC_SHIFT"), "{reason}");
        assert!(
            aws_effects(&d)
                .iter()
                .any(|e| matches!(e, Effect::StopRollout { .. }))
        );
        // With a passing verdict taken after the bake (the reconcile loop's look), ECS moving on
        // is the rollout going on.
        let d = native_judged("fail");
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60),
        )
        .deployment;
        let d = judged_at(&d, 0.0, crate::judge::Look::End, t(60 + 301));
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(60 + 310),
        )
        .deployment;
        assert_eq!(d.status(), Status::Shifting, "{}", trail(&d));
    }

    #[test]
    fn target_groups_that_cannot_be_told_apart_are_no_data_for_the_step_with_the_reason() {
        // First read mid-shift at 50%: which group runs the new revision cannot be told.
        let d = native_judged("fail");
        let mut d = d;
        d.native.as_mut().unwrap().judged_groups = None;
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(50)), t(60)).deployment;
        let d = decide(&d, &rule_read(50, 50), t(120)).deployment;
        assert!(d.native.as_ref().unwrap().judged_groups.is_none());
        let v = d.gates.verdict.clone().expect("a no-data verdict");
        assert_eq!(v.judgement.verdict, crate::judge::Verdict::NoData);
        assert!(
            v.judgement.summary.contains("PRE_PRODUCTION_TRAFFIC_SHIFT"),
            "{}",
            v.judgement.summary
        );
        // Mid-shift at 10% the weights tell them apart.
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(50)), t(130)).deployment;
        let mut d2 = native_judged("fail");
        d2.native.as_mut().unwrap().judged_groups = None;
        let d2 = decide(&d2, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60)).deployment;
        let d2 = decide(&d2, &rule_read(90, 10), t(120)).deployment;
        let groups = d2.native.as_ref().unwrap().judged_groups.clone().unwrap();
        assert_eq!(groups.canary, TG_B);
        assert_eq!(d.status(), Status::Shifting);
    }

    // --- review of the canary judge on ECS's steps ---

    /// A late (or duplicated) hook invocation, or a DescribeServiceDeployments read taken before
    /// a concurrent hook invocation and applied after it, reports an older production percent:
    /// the record goes back to the passed 10% step with a fresh window, and ECS's next report of
    /// its real share rolls back a rollout whose step the judge had passed.
    #[test]
    fn a_stale_production_percent_does_not_roll_back_a_step_the_judge_passed() {
        let d = native_judged("fail");
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60)).deployment;
        // The step's bake is over and the judge passed it; the hook lets ECS shift on.
        let d = judged_at(&d, 0.0, crate::judge::Look::End, t(60 + 301));
        let d = decide(
            &d,
            &hook("PRE_PRODUCTION_TRAFFIC_SHIFT", Some(10)),
            t(60 + 301),
        )
        .deployment;
        assert_eq!(hook_answer(&d).0, crate::native::HookStatus::Succeeded);
        let d = decide(
            &d,
            &hook("PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(60 + 320),
        )
        .deployment;
        assert_eq!(d.status(), Status::Shifting);
        // The 10% step's PRODUCTION_TRAFFIC_SHIFT invocation comes again, late (or a read of
        // ECS taken before the shift is applied now).
        let d = decide(&d, &hook("PRODUCTION_TRAFFIC_SHIFT", Some(10)), t(60 + 330)).deployment;
        // ECS, still at 100%, is read again by the reconcile loop.
        let d = decide(
            &d,
            &sd_view("IN_PROGRESS", "POST_PRODUCTION_TRAFFIC_SHIFT", Some(100)),
            t(60 + 360),
        )
        .deployment;
        assert_eq!(
            d.status(),
            Status::Shifting,
            "a step the judge passed is rolled back by a stale percent: {:?}\n{}",
            d.reason,
            trail(&d)
        );
    }
}
