//! The deployment record: what is being rolled out where, its lifecycle status, what was observed,
//! and the audit trail. This is exactly what is stored in DynamoDB (see `adapters::dynamodb`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alerts::Alert;
use crate::freeze::Freeze;
use crate::judge::{Analysis, Judgement};
use crate::native::NativeStrategy;
use crate::registration::{Engine, Registration};
use crate::scan::{Finding, ScanGate};
use crate::stop_reason::StopReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    AwaitingApproval,
    Deploying,
    Shifting,
    Succeeded,
    RollingBack,
    RolledBack,
    Failed,
    Superseded,
    Aborted,
}

impl Status {
    /// Active deployments are the ones the reconcile loop and event handlers still act on.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Pending
                | Status::AwaitingApproval
                | Status::Deploying
                | Status::Shifting
                | Status::RollingBack
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::AwaitingApproval => "AWAITING_APPROVAL",
            Status::Deploying => "DEPLOYING",
            Status::Shifting => "SHIFTING",
            Status::Succeeded => "SUCCEEDED",
            Status::RollingBack => "ROLLING_BACK",
            Status::RolledBack => "ROLLED_BACK",
            Status::Failed => "FAILED",
            Status::Superseded => "SUPERSEDED",
            Status::Aborted => "ABORTED",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    EcrPush,
    Api,
    Promotion,
    /// A rollout ECS ran that Flightdeck did not start (a console or Terraform change of an
    /// `ecs-native` service), recorded when ECS called the lifecycle hook for it.
    External,
    /// The API's rollback of a SUCCEEDED deployment: the last revision that succeeded before it,
    /// deployed again (never frozen; approval only where the registration asks it for reverts).
    Revert,
}

/// One entry of the audit trail: who or what caused it, why, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub status: Option<Status>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

/// A task of the new revision that failed (the record keeps the last few in full).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedTask {
    pub task_arn: String,
    pub stop: StopReason,
    pub at: DateTime<Utc>,
}

/// How many failed tasks had one kind of stop reason, with one reason in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureTally {
    pub label: String,
    pub count: u32,
    pub example: String,
}

/// Failed tasks of the new revision kept in full in the record.
pub const RECENT_FAILURES: usize = 3;

/// Audit events kept in the record itself; the whole trail is stored as items of its own
/// (`DeploymentStore::audit_trail`), so a record stays small however long its trail grows.
pub const RECENT_EVENTS: usize = 20;

/// What the reconcile loop (or an event that prompted a read) last saw of the service taking
/// the new revision; named in the reason when a progress deadline passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub running: u32,
    pub desired: u32,
    /// Healthy targets of the new revision's target group, where there is one.
    pub healthy: Option<u32>,
    pub at: DateTime<Utc>,
}

/// Where the deployment goes in ECS and what it replaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub cluster: String,
    pub ecs_service: String,
    pub container: String,
    pub previous_task_definition: Option<String>,
    pub new_task_definition: Option<String>,
    /// The ECS deployment created by our UpdateService, when ECS reports it.
    pub ecs_deployment_id: Option<String>,
    pub desired_count: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    /// When the rollout call (the Deploy effect) was decided: the last moment a change freeze
    /// is checked before ECS is told to run the new revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_decided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub observed: Option<Observed>,
    /// Where records stored before the phase-typed state kept the rollout's progress; read
    /// once (see `Deployment::upgrade`), never written.
    #[serde(flatten, skip_serializing)]
    pub legacy: LegacyProgress,
}

/// `rollout.progress_deadline`, `rollout.settled_at`, `rollout.bake_until` of a record stored
/// before the phase carried its own data.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct LegacyProgress {
    #[serde(default)]
    pub progress_deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub settled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub bake_until: Option<DateTime<Utc>>,
}

/// ecs-native: ECS runs the rollout (its own BLUE_GREEN, LINEAR or CANARY strategy) and calls
/// `ecs-hook` at each lifecycle stage; Flightdeck follows its service deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NativeRollout {
    #[serde(flatten)]
    pub strategy: NativeStrategy,
    /// The service deployment that runs this rollout (`arn:aws:ecs:…:service-deployment/…`),
    /// once ECS named it: UpdateService's answer, the reconcile loop, or the hook.
    #[serde(default)]
    pub service_deployment_arn: Option<String>,
    /// ECS's status and lifecycle stage of it, as last seen.
    #[serde(default)]
    pub ecs_status: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
    /// The last hook answer recorded (`STAGE SUCCEEDED`): ECS asks again every
    /// `callBackDelay`, and only a change is worth an audit entry.
    #[serde(default)]
    pub last_hook: Option<String>,
    /// `deployment.approval_required` went out (once).
    #[serde(default)]
    pub approval_asked: bool,
    /// A rollout started outside Flightdeck inside a change freeze: its hook answers IN_PROGRESS
    /// before production traffic until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_until: Option<DateTime<Utc>>,
    /// When the approval was asked at the hook, and the reminders sent since (1, then 2
    /// escalated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_asked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reminded: u8,
    /// When ECS's production weight on the new revision last changed: the canary judge's
    /// window for the step at that weight starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_since: Option<DateTime<Utc>>,
    /// The target groups the canary judge compares (`gates.analysis`), once told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_groups: Option<Box<JudgedGroups>>,
    /// The hook holds the production step before the next shift until the canary judge has a
    /// verdict taken after the step's bake.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verdict_hold: bool,
}

impl NativeRollout {
    /// A rollout by ECS's `strategy` that ECS has said nothing of yet.
    pub fn new(strategy: NativeStrategy) -> NativeRollout {
        NativeRollout {
            strategy,
            service_deployment_arn: None,
            ecs_status: None,
            stage: None,
            last_hook: None,
            approval_asked: false,
            frozen_until: None,
            approval_asked_at: None,
            reminded: 0,
            percent_since: None,
            judged_groups: None,
            verdict_hold: false,
        }
    }
}

/// ecs-native with `gates.analysis`: the two target groups behind the service's production
/// listener rule, told apart by which one took all production traffic before ECS moved any
/// (or, first seen mid-shift, by which weight matches the new revision's share).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgedGroups {
    /// The `LoadBalancer` dimension of AWS/ApplicationELB (`app/NAME/ID`).
    pub load_balancer: String,
    pub canary: String,
    pub stable: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }
}

/// The stage item of a service and environment (the one that holds the one-in-flight slot).
/// For `alb-weights` the colours belong to the service and environment, not to one deployment:
/// the item names the deployment that last put its revision on each colour, and a scale-down
/// being carried out now. Saved with a conditional write on `version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The deployment holding the one-in-flight slot.
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub blue_owner: Option<String>,
    #[serde(default)]
    pub green_owner: Option<String>,
    #[serde(default)]
    pub scaling: Option<ScaleLock>,
    /// 0: never written.
    #[serde(default)]
    pub version: u64,
}

/// A colour being scaled down by the invocation holding `token`, since `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleLock {
    pub colour: Colour,
    pub token: String,
    pub at: DateTime<Utc>,
}

impl Stage {
    pub fn owner(&self, colour: Colour) -> Option<&str> {
        match colour {
            Colour::Blue => self.blue_owner.as_deref(),
            Colour::Green => self.green_owner.as_deref(),
        }
    }

    pub fn set_owner(&mut self, colour: Colour, id: &str) {
        let slot = match colour {
            Colour::Blue => &mut self.blue_owner,
            Colour::Green => &mut self.green_owner,
        };
        *slot = Some(id.to_string());
    }
}

/// One colour of an `alb-weights` pair: an ECS service and the target group it registers with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColourTarget {
    pub service: String,
    pub target_group_arn: String,
}

/// Where the forward weights live: a listener rule, or a listener's default action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "arn", rename_all = "kebab-case")]
pub enum Listener {
    Rule(String),
    Default(String),
}

impl Listener {
    /// The load balancer as CloudWatch's `LoadBalancer` dimension names it (`app/NAME/ID`),
    /// from the listener's or rule's ARN.
    /// The listener an ARN names: a listener rule (`…:listener-rule/…`) or a listener's default
    /// action.
    pub fn of_arn(arn: &str) -> Listener {
        if arn.contains(":listener-rule/") {
            Listener::Rule(arn.to_string())
        } else {
            Listener::Default(arn.to_string())
        }
    }

    pub fn load_balancer_dimension(&self) -> Option<&str> {
        let arn = match self {
            Listener::Rule(a) | Listener::Default(a) => a.as_str(),
        };
        let (_, rest) = arn
            .split_once(":listener-rule/")
            .or_else(|| arn.split_once(":listener/"))?;
        let end = rest.match_indices('/').nth(2).map(|(i, _)| i)?;
        Some(&rest[..end])
    }
}

/// The `alb-weights` plan: which colour serves, which takes the new revision, and the steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub listener: Listener,
    pub blue: ColourTarget,
    pub green: ColourTarget,
    /// The colour serving before the deployment, read from the listener's weights at start.
    pub stable: Option<Colour>,
    /// Percentages of traffic on the new colour, step by step, ending at 100.
    pub steps: Vec<u8>,
    /// Index into `steps` of the step being set or held.
    pub step: usize,
    pub scale_down_after_minutes: u32,
    /// When the old colour is scaled to zero after success.
    pub scale_down_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub scaled_down: bool,
    /// Which deployment had put its revision on the stable colour when this one started (the
    /// stage item's owner of that colour). The delayed scale-down of the old colour is carried
    /// out only while the colour still has that owner: a newer deployment that took the idle
    /// colour owns it, and the scale-down is moot.
    #[serde(default)]
    pub stable_owner: Option<String>,
}

impl Traffic {
    pub fn target(&self, colour: Colour) -> &ColourTarget {
        match colour {
            Colour::Blue => &self.blue,
            Colour::Green => &self.green,
        }
    }

    /// The weight the listener's forward action gives `colour`'s target group.
    pub fn weight_of(&self, weights: &[(String, u32)], colour: Colour) -> u32 {
        let tg = &self.target(colour).target_group_arn;
        weights
            .iter()
            .filter(|(arn, _)| arn == tg)
            .map(|(_, w)| *w)
            .sum()
    }

    /// The colour taking the new revision.
    pub fn canary(&self) -> Option<Colour> {
        self.stable.map(Colour::other)
    }

    /// The forward weights with `percent` on the new colour, as (target group, weight) pairs.
    pub fn weights(&self, percent: u8) -> Option<Vec<(String, u32)>> {
        let stable = self.stable?;
        Some(vec![
            (
                self.target(stable).target_group_arn.clone(),
                u32::from(100 - percent.min(100)),
            ),
            (
                self.target(stable.other()).target_group_arn.clone(),
                u32::from(percent.min(100)),
            ),
        ])
    }
}

/// A rollback Flightdeck decided on: requested first, issued once the ECS call went through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub to_task_definition: String,
    pub requested_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
    pub ecs_deployment_id: Option<String>,
    /// The rollback must complete by then, or the deployment ends FAILED (urgent).
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

/// Where a deployment is, with the data only that phase has: a queue position only while
/// pending, a progress deadline only while the rollout runs, a rollback only once one was
/// decided, an end time only once it ended. Stored flattened into the record, `status` naming
/// the variant, so the record reads as before: `"status": "ROLLING_BACK", "rollback": {…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Pending {
        /// Waiting for this in-flight deployment of the same service and environment to end.
        #[serde(default)]
        queued_behind: Option<String>,
        /// Held by a gate before anything changes (a change freeze, the image's scan).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold: Option<Hold>,
    },
    AwaitingApproval {
        /// Since when (missing in a record stored before reminders: its `updated_at`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<DateTime<Utc>>,
        /// Reminders sent: 1 after the reminder interval, 2 after the escalation interval.
        #[serde(default)]
        reminded: u8,
    },
    Deploying(Progress),
    /// Traffic on the new revision (alb-weights: a weight step; rolling: all of it) and baking.
    Shifting(Progress),
    RollingBack {
        rollback: Rollback,
    },
    Succeeded {
        finished_at: DateTime<Utc>,
        /// The watch window (`gates.watch_minutes`): until then, a gating alarm or a crash loop
        /// of the revision still rolls it back. Cleared when it ends, or when a newer deployment
        /// of the service and environment takes over.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watch_until: Option<DateTime<Utc>>,
    },
    RolledBack {
        finished_at: DateTime<Utc>,
        rollback: Rollback,
    },
    Failed {
        finished_at: DateTime<Utc>,
        /// The rollback that did not complete, when the deployment failed rolling back.
        #[serde(default)]
        rollback: Option<Rollback>,
    },
    Superseded {
        finished_at: DateTime<Utc>,
    },
    Aborted {
        finished_at: DateTime<Utc>,
    },
}

/// What holds a PENDING deployment before anything of it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "kebab-case")]
pub enum Hold {
    /// A change freeze, until its window ends.
    Freeze {
        until: DateTime<Utc>,
        window: String,
    },
    /// The image's vulnerability scan, for at most until `deadline`.
    Scan { deadline: DateTime<Utc> },
}

/// The gates a deployment was registered with besides its alarms and crash count (copied at
/// creation, as the alarms are), and what they found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    pub watch_minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanGate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze: Option<Freeze>,
    pub reminder_minutes: u32,
    pub escalation_minutes: u32,
    /// The scan gate was passed (clean, or let through by `missing: allow`).
    pub scan_cleared: bool,
    /// The findings that failed the scan gate, worst first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// An admin let the rollout start inside a change freeze.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_override: Option<FreezeOverride>,
    /// The canary judge's latest verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<StepVerdict>,
    /// A revert waits for approval too (where approval is required).
    pub approval_for_reverts: bool,
}

impl Default for GateState {
    fn default() -> Self {
        GateState {
            analysis: None,
            watch_minutes: 0,
            scan: None,
            freeze: None,
            reminder_minutes: crate::registration::DEFAULT_REMINDER_MINUTES,
            escalation_minutes: crate::registration::DEFAULT_ESCALATION_MINUTES,
            scan_cleared: false,
            findings: Vec::new(),
            freeze_override: None,
            verdict: None,
            approval_for_reverts: false,
        }
    }
}

/// The canary judge's verdict on one weight step, and when it was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepVerdict {
    pub step: usize,
    pub percent: u8,
    pub at: DateTime<Utc>,
    pub judgement: Judgement,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreezeOverride {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A rollout under way: it must become ready by `progress_deadline`; ECS's word that it settled
/// and the end of the current bake, once known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Missing only in a record stored before the phase-typed state: `Deployment::upgrade`
    /// takes it from where that record kept it.
    #[serde(default = "unknown_deadline")]
    pub progress_deadline: DateTime<Utc>,
    #[serde(default)]
    pub settled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub bake_until: Option<DateTime<Utc>>,
}

impl State {
    pub fn status(&self) -> Status {
        match self {
            State::Pending { .. } => Status::Pending,
            State::AwaitingApproval { .. } => Status::AwaitingApproval,
            State::Deploying(_) => Status::Deploying,
            State::Shifting(_) => Status::Shifting,
            State::RollingBack { .. } => Status::RollingBack,
            State::Succeeded { .. } => Status::Succeeded,
            State::RolledBack { .. } => Status::RolledBack,
            State::Failed { .. } => Status::Failed,
            State::Superseded { .. } => Status::Superseded,
            State::Aborted { .. } => Status::Aborted,
        }
    }
}

/// Side effects decided together with a state change: every call that changes AWS, and every
/// alert. They are saved with the record first and removed once carried out, so a crash between
/// the two repeats them instead of losing them (see `handlers::carry_out`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    /// Read what serves now and register the new revision (idempotent: a revision already
    /// registered for this deployment is found by its tag and reused).
    RegisterRevision,
    /// UpdateService to the new revision (rolling: the service; alb-weights: the idle colour,
    /// scaled to the live colour's desired count).
    Deploy {
        service: String,
        task_definition: String,
        #[serde(default)]
        desired_count: Option<u32>,
        /// ecs-native: the deployment configuration ECS rolls out with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strategy: Option<NativeStrategy>,
    },
    /// rolling: UpdateService back to the previous task definition.
    RollBack {
        to_task_definition: String,
    },
    /// ecs-native: StopServiceDeployment(ROLLBACK) of the service deployment ECS is running
    /// (nothing when ECS is rolling it back already; UpdateService back to the previous task
    /// definition when it had already completed).
    StopRollout {
        to_task_definition: String,
    },
    /// alb-weights: set the listener's forward weights, `percent` on the new colour.
    SetWeights {
        percent: u8,
    },
    /// Scale an ECS service. For a colour of an `alb-weights` pair (`colour` set) only while the
    /// stage item still names `owner` as the deployment that last put a revision on it.
    Scale {
        service: String,
        desired_count: u32,
        #[serde(default)]
        colour: Option<Colour>,
        #[serde(default)]
        owner: Option<String>,
    },
    /// Start the same digest in the next environment.
    Promote {
        environment: String,
    },
    Alert(Box<Alert>),
    /// Write Flightdeck's own metrics of this change as EMF log lines (`emf`). In the alerts'
    /// lane: it tells of something that happened and is never cancelled.
    Measure {
        metrics: Vec<crate::emf::Metric>,
    },
    /// Count the deployment, ended, in its service and environment's summary (`/metrics`).
    /// In the alerts' lane: it tells of something that happened and is never cancelled.
    Tally,
}

impl Effect {
    /// Alerts have their own lane: a failing SNS publish never holds up a rollback, and a
    /// failing AWS call never holds up an alert. Within a lane effects run in the order decided.
    pub fn lane(&self) -> Lane {
        match self {
            Effect::Alert(_) | Effect::Tally | Effect::Measure { .. } => Lane::Alerts,
            _ => Lane::Aws,
        }
    }

    /// What the effect does, in words, for reasons and alerts.
    pub fn describe(&self) -> String {
        match self {
            Effect::RegisterRevision => "registering the new revision".to_string(),
            Effect::Deploy {
                service,
                task_definition,
                ..
            } => format!(
                "UpdateService of {service} to {}",
                short_task_definition(task_definition)
            ),
            Effect::RollBack { to_task_definition } => format!(
                "UpdateService back to {}",
                short_task_definition(to_task_definition)
            ),
            Effect::StopRollout { to_task_definition } => format!(
                "StopServiceDeployment (ROLLBACK to {})",
                short_task_definition(to_task_definition)
            ),
            Effect::SetWeights { percent } => format!("setting the listener weights to {percent}%"),
            Effect::Scale {
                service,
                desired_count,
                ..
            } => format!("scaling ECS service {service} to {desired_count}"),
            Effect::Promote { environment } => format!("promoting to {environment}"),
            Effect::Alert(a) => format!("publishing {}", a.document.event_type.as_str()),
            Effect::Tally => "counting it in the service's summary".to_string(),
            Effect::Measure { metrics } => format!(
                "writing metrics {}",
                metrics
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Aws,
    Alerts,
}

/// Who is carrying an effect out: the token of one handler invocation, and since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub token: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingEffect {
    pub seq: u32,
    /// The phase (`Deployment::phase`) it was decided in. Entering a new phase cancels the
    /// effects of the phase left: a weight step decided before a rollback never runs after it.
    #[serde(default)]
    pub phase: u32,
    #[serde(default)]
    pub claim: Option<Claim>,
    /// Cancelled while an invocation was carrying it out: it is not run again, and its result,
    /// when it comes, is not applied. It holds its lane until then (or until the claim lease
    /// passes), so nothing decided later overtakes the call still in flight.
    #[serde(default)]
    pub cancelled: bool,
    /// Failed attempts so far, the last error, and when the next attempt may run.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub effect: Effect,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Deployment {
    pub id: String,
    pub service: String,
    pub environment: String,
    /// The image reference the new revision runs, always by digest.
    pub image: String,
    pub digest: String,
    pub tag: Option<String>,
    pub trigger: Trigger,
    #[serde(flatten)]
    pub state: State,
    pub traffic_percent: u8,
    pub started_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reason: Option<String>,
    /// The most recent audit events (at most `RECENT_EVENTS` once saved).
    pub events: Vec<AuditEvent>,
    /// Audit events ever appended, and how many of them are stored as items already.
    #[serde(default)]
    pub events_total: u32,
    #[serde(default)]
    pub events_saved: u32,
    /// Principals that started this deployment and, for a promotion, every deployment of the
    /// chain it came from (four eyes: none of them may approve it).
    #[serde(default)]
    pub starters: Vec<String>,
    /// Counts up with every status change; effects are stamped with it (see `PendingEffect`).
    #[serde(default)]
    pub phase: u32,
    pub rollout: Rollout,
    pub max_failed_tasks: u32,
    pub bake_minutes: u32,
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_minutes: u32,
    /// New-revision tasks that failed, counted once each; the short ids are kept (at most
    /// `max_failed_tasks`, which is at most 100) to tell a redelivery from a new failure, the
    /// last `RECENT_FAILURES` in full, and a tally by kind of stop reason.
    #[serde(default)]
    pub failed_count: u32,
    #[serde(default)]
    pub failed_task_ids: Vec<String>,
    #[serde(default)]
    pub failed_tasks: Vec<FailedTask>,
    #[serde(default)]
    pub failure_reasons: Vec<FailureTally>,
    /// alb-weights only.
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// ecs-native only: ECS's own rollout, as Flightdeck follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeRollout>,
    /// CloudWatch alarms that gate the deployment: any in ALARM rolls it back.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// The other gates: canary judge, watch window, scan, freeze, reminders. Boxed: a record is
    /// held by value across the handlers' await points, and their futures stay small.
    #[serde(default)]
    pub gates: Box<GateState>,
    /// The SUCCEEDED deployment a revert undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<String>,
    #[serde(default)]
    pub approval_required: bool,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub approved_at: Option<DateTime<Utc>>,
    /// The environment success promotes to.
    #[serde(default)]
    pub promote_to: Option<String>,
    /// The deployment whose success created this one (promotions).
    #[serde(default)]
    pub promoted_from: Option<String>,
    #[serde(default)]
    pub outbox: Vec<PendingEffect>,
    #[serde(default)]
    pub next_effect_seq: u32,
    /// Optimistic-lock counter: every save is conditional on the version it was read at.
    #[serde(default)]
    pub record_version: u64,
}

/// An image push as the decision core sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePush {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub tag: Option<String>,
    pub event_id: String,
}

impl ImagePush {
    /// `registry/repository@sha256:…`: the new revision never references a tag.
    pub fn image(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

/// The deployment id of a push: one push (one EventBridge event id) to one service and
/// environment always gets the same id, so a redelivered ECR event creates nothing new, while a
/// new push of a digest deployed before (a revert by re-tagging) is a new deployment.
pub fn push_deployment_id(service: &str, environment: &str, event_id: &str) -> String {
    let hash = Sha256::digest(format!("ecr-push\n{service}\n{environment}\n{event_id}").as_bytes());
    let hex: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("d-{hex}")
}

impl Deployment {
    pub fn from_push(
        registration: &Registration,
        push: &ImagePush,
        now: DateTime<Utc>,
    ) -> Deployment {
        let tag_text = push.tag.as_deref().unwrap_or("(untagged)");
        let reason = format!(
            "image {}:{tag_text} ({}) pushed; ECR event {}",
            push.repository,
            short_digest(&push.digest),
            push.event_id
        );
        let mut d = Deployment::new(
            registration,
            push_deployment_id(
                &registration.service,
                &registration.environment,
                &push.event_id,
            ),
            push.image(),
            push.digest.clone(),
            push.tag.clone(),
            Trigger::EcrPush,
            now,
        );
        d.started_by = Some("ecr-push".to_string());
        d.record(AuditEvent {
            at: now,
            status: Some(Status::Pending),
            reason: Some(reason),
            actor: Some("aws.ecr".to_string()),
        });
        d
    }

    /// A deployment started through the API by `caller`.
    pub fn from_api(
        registration: &Registration,
        id: String,
        image: String,
        digest: String,
        tag: Option<String>,
        caller: &str,
        now: DateTime<Utc>,
    ) -> Deployment {
        let what = match &tag {
            Some(tag) => format!("{tag} ({})", short_digest(&digest)),
            None => short_digest(&digest).to_string(),
        };
        let mut d = Deployment::new(registration, id, image, digest, tag, Trigger::Api, now);
        d.started_by = Some(caller.to_string());
        d.starters = vec![caller.to_string()];
        d.record(AuditEvent {
            at: now,
            status: Some(Status::Pending),
            reason: Some(format!("deployment of {what} requested through the API")),
            actor: Some(caller.to_string()),
        });
        d
    }

    /// The deployment of `from`'s image that `from`'s success creates in `registration`'s environment.
    pub fn promotion_of(
        from: &Deployment,
        registration: &Registration,
        now: DateTime<Utc>,
    ) -> Deployment {
        let hash = Sha256::digest(
            format!(
                "promotion\n{}\n{}\n{}",
                from.id, registration.service, registration.environment
            )
            .as_bytes(),
        );
        let hex: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
        let mut d = Deployment::new(
            registration,
            format!("d-{hex}"),
            from.image.clone(),
            from.digest.clone(),
            from.tag.clone(),
            Trigger::Promotion,
            now,
        );
        d.started_by = Some(format!("promotion:{}", from.id));
        d.starters = from.starters.clone();
        d.promoted_from = Some(from.id.clone());
        d.record(AuditEvent {
            at: now,
            status: Some(Status::Pending),
            reason: Some(format!(
                "promoted from {} in {}, which succeeded",
                from.id, from.environment
            )),
            actor: Some("flightdeck".to_string()),
        });
        d
    }

    /// The revert of `reverted` (the newest SUCCEEDED deployment of its service and
    /// environment): `target`'s revision, the last that succeeded before it, deployed again.
    /// Its id says which deployment it reverts and which attempt it is: asked again, the same
    /// revert; asked after one that ended without success, the next attempt.
    pub fn revert_of(
        reverted: &Deployment,
        target: &Deployment,
        registration: &Registration,
        caller: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Deployment {
        let mut d = Deployment::new(
            registration,
            Deployment::revert_id(
                reverted,
                &registration.service,
                &registration.environment,
                attempt,
            ),
            target.image.clone(),
            target.digest.clone(),
            target.tag.clone(),
            Trigger::Revert,
            now,
        );
        d.started_by = Some(caller.to_string());
        d.starters = vec![caller.to_string()];
        d.reverts = Some(reverted.id.clone());
        // A revert puts an environment back; it does not carry the older revision onward.
        d.promote_to = None;
        d.approval_required =
            registration.spec.gates.approval && registration.spec.gates.approval_for_reverts;
        let what = |x: &Deployment| match &x.tag {
            Some(tag) => format!("{tag} ({})", short_digest(&x.digest)),
            None => short_digest(&x.digest).to_string(),
        };
        d.record(AuditEvent {
            at: now,
            status: Some(Status::Pending),
            reason: Some(format!(
                "revert of deployment {} ({}) requested through the API: {} again, which \
                 succeeded as {}",
                reverted.id,
                what(reverted),
                what(target),
                target.id
            )),
            actor: Some(caller.to_string()),
        });
        d
    }

    /// The id of the `attempt`-th revert of `reverted` (see `revert_of`).
    pub fn revert_id(
        reverted: &Deployment,
        service: &str,
        environment: &str,
        attempt: u32,
    ) -> String {
        let hash = Sha256::digest(
            format!(
                "revert\n{}\n{service}\n{environment}\n{attempt}",
                reverted.id
            )
            .as_bytes(),
        );
        let hex: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("d-{hex}")
    }

    pub(crate) fn new(
        registration: &Registration,
        id: String,
        image: String,
        digest: String,
        tag: Option<String>,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> Deployment {
        let traffic = match &registration.spec.engine {
            Engine::AlbWeights {
                listener_rule_arn,
                listener_arn,
                blue,
                green,
                scale_down_after_minutes,
            } => Some(Traffic {
                listener: match (listener_rule_arn, listener_arn) {
                    (Some(rule), _) => Listener::Rule(rule.clone()),
                    (None, Some(listener)) => Listener::Default(listener.clone()),
                    (None, None) => Listener::Default(String::new()),
                },
                blue: ColourTarget {
                    service: blue.service.clone(),
                    target_group_arn: blue.target_group_arn.clone(),
                },
                green: ColourTarget {
                    service: green.service.clone(),
                    target_group_arn: green.target_group_arn.clone(),
                },
                stable: None,
                steps: registration.traffic_steps(),
                step: 0,
                scale_down_after_minutes: *scale_down_after_minutes,
                scale_down_at: None,
                scaled_down: false,
                stable_owner: None,
            }),
            _ => None,
        };
        let native = match &registration.spec.engine {
            Engine::EcsNative { .. } => Some(NativeRollout::new(
                // Registration refuses a strategy ECS cannot express.
                NativeStrategy::of(&registration.spec.strategy).unwrap_or(
                    NativeStrategy::BlueGreen {
                        bake_minutes: registration.bake_minutes(),
                    },
                ),
            )),
            _ => None,
        };
        Deployment {
            id,
            service: registration.service.clone(),
            environment: registration.environment.clone(),
            image,
            digest,
            tag,
            trigger,
            state: State::Pending {
                queued_behind: None,
                hold: None,
            },
            traffic_percent: 0,
            started_by: None,
            created_at: now,
            updated_at: now,
            reason: None,
            events: Vec::new(),
            events_total: 0,
            events_saved: 0,
            starters: Vec::new(),
            phase: 0,
            rollout: Rollout {
                cluster: registration.spec.cluster.clone(),
                ecs_service: registration.ecs_service().to_string(),
                container: registration.spec.container.clone(),
                previous_task_definition: None,
                new_task_definition: None,
                ecs_deployment_id: None,
                desired_count: None,
                started_at: None,
                deploy_decided_at: None,
                observed: None,
                legacy: LegacyProgress::default(),
            },
            max_failed_tasks: registration.spec.gates.max_failed_tasks,
            bake_minutes: registration.bake_minutes(),
            progress_deadline_minutes: registration.spec.progress_deadline_minutes,
            failed_count: 0,
            failed_task_ids: Vec::new(),
            failed_tasks: Vec::new(),
            failure_reasons: Vec::new(),
            traffic,
            native,
            alarms: registration.spec.gates.alarms.clone(),
            gates: Box::new(GateState {
                analysis: registration.spec.gates.analysis.clone(),
                watch_minutes: registration.spec.gates.watch_minutes,
                scan: registration.spec.gates.scan.clone(),
                freeze: registration.spec.freeze.clone(),
                reminder_minutes: registration.spec.gates.approval_reminder_minutes,
                escalation_minutes: registration.spec.gates.approval_escalation_minutes,
                approval_for_reverts: registration.spec.gates.approval_for_reverts,
                ..GateState::default()
            }),
            reverts: None,
            approval_required: registration.spec.gates.approval,
            approved_by: None,
            approved_at: None,
            promote_to: registration.spec.promote_to.clone(),
            promoted_from: None,
            outbox: Vec::new(),
            next_effect_seq: 0,
            record_version: 0,
        }
    }

    pub fn status(&self) -> Status {
        self.state.status()
    }

    /// When it ended, once it has.
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            State::Succeeded { finished_at, .. }
            | State::RolledBack { finished_at, .. }
            | State::Failed { finished_at, .. }
            | State::Superseded { finished_at }
            | State::Aborted { finished_at } => Some(*finished_at),
            _ => None,
        }
    }

    /// The rollback decided, from ROLLING_BACK on.
    pub fn rollback(&self) -> Option<&Rollback> {
        match &self.state {
            State::RollingBack { rollback } | State::RolledBack { rollback, .. } => Some(rollback),
            State::Failed { rollback, .. } => rollback.as_ref(),
            _ => None,
        }
    }

    /// The rollback in progress (ROLLING_BACK).
    pub fn rollback_mut(&mut self) -> Option<&mut Rollback> {
        match &mut self.state {
            State::RollingBack { rollback } => Some(rollback),
            _ => None,
        }
    }

    /// The rollout under way (DEPLOYING, SHIFTING).
    pub fn progress(&self) -> Option<&Progress> {
        match &self.state {
            State::Deploying(p) | State::Shifting(p) => Some(p),
            _ => None,
        }
    }

    pub fn progress_mut(&mut self) -> Option<&mut Progress> {
        match &mut self.state {
            State::Deploying(p) | State::Shifting(p) => Some(p),
            _ => None,
        }
    }

    /// The in-flight deployment a PENDING one waits for.
    pub fn queued_behind(&self) -> Option<&str> {
        match &self.state {
            State::Pending { queued_behind, .. } => queued_behind.as_deref(),
            _ => None,
        }
    }

    /// The gate holding a PENDING deployment (a freeze, the scan).
    pub fn hold(&self) -> Option<&Hold> {
        match &self.state {
            State::Pending { hold, .. } => hold.as_ref(),
            _ => None,
        }
    }

    /// Until when a SUCCEEDED deployment is still watched.
    pub fn watch_until(&self) -> Option<DateTime<Utc>> {
        match &self.state {
            State::Succeeded { watch_until, .. } => *watch_until,
            _ => None,
        }
    }

    /// A call decided in a phase the deployment has left is still in flight: cancelled, its
    /// result will be ignored, but it may yet change ECS or the listener.
    pub fn stale_call_in_flight(&self) -> bool {
        self.outbox
            .iter()
            .any(|e| e.cancelled && e.effect.lane() == Lane::Aws)
    }

    /// Whether the reconcile loop still has work on it: an active status, or the old colour
    /// still to scale down after success.
    pub fn needs_reconcile(&self) -> bool {
        self.status().is_active()
            || !self.outbox.is_empty()
            || self.watch_until().is_some()
            || self
                .traffic
                .as_ref()
                .is_some_and(|t| t.scale_down_at.is_some() && !t.scaled_down)
    }

    /// In flight: ECS or the listener already carries (or is getting) the new revision.
    pub fn in_flight(&self) -> bool {
        matches!(
            self.state,
            State::Deploying(_) | State::Shifting(_) | State::RollingBack { .. }
        )
    }

    /// Waiting: queued behind another deployment or awaiting approval, so nothing of it runs yet
    /// and a newer push may replace it. A PENDING deployment that is not queued is being started
    /// right now and is left alone.
    pub fn waiting(&self) -> bool {
        match &self.state {
            State::AwaitingApproval { .. } => true,
            State::Pending {
                queued_behind,
                hold,
            } => queued_behind.is_some() || hold.is_some(),
            _ => false,
        }
    }

    /// Appends an audit event.
    pub fn record(&mut self, event: AuditEvent) {
        self.events.push(event);
        self.events_total = self.events_total.saturating_add(1);
    }

    /// Audit events appended since the last save, with their place in the trail.
    pub fn unsaved_events(&self) -> Vec<(u32, &AuditEvent)> {
        let unsaved = self.events_total.saturating_sub(self.events_saved) as usize;
        let start = self.events.len().saturating_sub(unsaved);
        self.events[start..]
            .iter()
            .enumerate()
            .map(|(i, e)| (self.events_saved + i as u32, e))
            .collect()
    }

    /// The unsaved audit events were written as items: the record keeps the recent ones only.
    pub fn events_written(&mut self) {
        self.events_saved = self.events_total;
        let excess = self.events.len().saturating_sub(RECENT_EVENTS);
        self.events.drain(..excess);
    }

    /// Whether the deployment's start has been decided (the slot is held and the outbox carries
    /// it), so another start attempt has nothing to do.
    pub fn starting(&self) -> bool {
        matches!(
            self.state,
            State::Pending {
                queued_behind: None,
                hold: None,
            }
        ) && (self.rollout.new_task_definition.is_some()
            || self
                .outbox
                .iter()
                .any(|e| matches!(e.effect, Effect::RegisterRevision | Effect::Deploy { .. })))
    }
}

/// Stored and read as its fields; a record stored by an earlier version is upgraded as it is
/// read, so that a deployment in flight across an upgrade of Flightdeck goes on.
impl Serialize for Deployment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Deployment::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for Deployment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut d = Deployment::deserialize(deserializer)?;
        d.upgrade();
        Ok(d)
    }
}

fn unknown_deadline() -> DateTime<Utc> {
    DateTime::<Utc>::MIN_UTC
}

impl Deployment {
    /// A record stored before the phase-typed state kept its rollout's progress under
    /// `rollout`: it moves into the phase (a missing deadline counts from the rollout's start).
    fn upgrade(&mut self) {
        let legacy = std::mem::take(&mut self.rollout.legacy);
        let minutes = i64::from(self.progress_deadline_minutes.max(1));
        let since = self.rollout.started_at.unwrap_or(self.updated_at);
        if let State::Deploying(p) | State::Shifting(p) = &mut self.state {
            if p.progress_deadline == unknown_deadline() {
                p.progress_deadline = legacy
                    .progress_deadline
                    .unwrap_or(since + chrono::Duration::minutes(minutes));
            }
            p.settled_at = p.settled_at.or(legacy.settled_at);
            p.bake_until = p.bake_until.or(legacy.bake_until);
        }
    }
}

fn default_progress_deadline() -> u32 {
    crate::registration::DEFAULT_PROGRESS_DEADLINE_MINUTES
}

/// `sha256:0123456789ab` — enough to recognise a digest in text.
pub fn short_digest(digest: &str) -> &str {
    let end = digest.len().min("sha256:".len() + 12);
    digest.get(..end).unwrap_or(digest)
}

/// `family:revision` from a task-definition ARN, for text meant to be read.
pub fn short_task_definition(arn: &str) -> &str {
    arn.rsplit_once("task-definition/")
        .map(|(_, rest)| rest)
        .unwrap_or(arn)
}

/// The task id at the end of a task ARN.
pub fn short_task(arn: &str) -> &str {
    crate::events::last_segment(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(state: State) -> serde_json::Value {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let json =
            include_str!("../../fuzz/seeds/deployment_record/checkout-api.staging.1-pending.json");
        let mut d: Deployment = serde_json::from_str(json).unwrap();
        d.updated_at = at;
        d.state = state;
        serde_json::to_value(&d).unwrap()
    }

    #[test]
    fn a_stored_record_names_its_status_and_keeps_only_its_phases_data() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let rollback = Rollback {
            to_task_definition: "arn:aws:ecs:eu-west-1:123456789012:task-definition/app:6".into(),
            requested_at: at,
            issued_at: None,
            ecs_deployment_id: None,
            deadline: Some(at),
        };
        let v = stored(State::RollingBack {
            rollback: rollback.clone(),
        });
        assert_eq!(v["status"], "ROLLING_BACK");
        assert_eq!(
            v["rollback"]["to_task_definition"],
            rollback.to_task_definition
        );
        assert!(v.get("finished_at").is_none() && v.get("progress_deadline").is_none());
        let back: Deployment = serde_json::from_value(v).unwrap();
        assert_eq!(back.rollback(), Some(&rollback));
        assert_eq!(back.finished_at(), None);

        let v = stored(State::Succeeded {
            finished_at: at,
            watch_until: None,
        });
        assert_eq!(v["status"], "SUCCEEDED");
        assert!(v.get("rollback").is_none());
        let back: Deployment = serde_json::from_value(v).unwrap();
        assert_eq!(back.finished_at(), Some(at));
    }

    #[test]
    fn a_record_in_a_phase_without_its_data_is_refused() {
        let mut v = stored(State::Pending {
            queued_behind: None,
            hold: None,
        });
        v["status"] = "ROLLED_BACK".into();
        v["finished_at"] = "2026-11-20T10:05:00Z".into();
        assert!(
            serde_json::from_value::<Deployment>(v).is_err(),
            "no rollback"
        );
    }

    /// A deployment in flight across an upgrade: the version before the phase-typed state kept
    /// the rollout's progress under `rollout`; it is read into the phase, and written the new
    /// way.
    #[test]
    fn a_rollout_stored_by_the_previous_version_is_read_into_its_phase() {
        let mut v = stored(State::Pending {
            queued_behind: None,
            hold: None,
        });
        v["status"] = "SHIFTING".into();
        v["finished_at"] = serde_json::Value::Null;
        v["rollback"] = serde_json::Value::Null;
        v["rollout"]["started_at"] = "2026-11-20T10:00:30Z".into();
        v["rollout"]["progress_deadline"] = "2026-11-20T10:10:30Z".into();
        v["rollout"]["settled_at"] = "2026-11-20T10:02:00Z".into();
        v["rollout"]["bake_until"] = "2026-11-20T10:07:00Z".into();
        let d: Deployment = serde_json::from_value(v).unwrap();
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
        };
        assert_eq!(
            d.progress(),
            Some(&Progress {
                progress_deadline: at("2026-11-20T10:10:30Z"),
                settled_at: Some(at("2026-11-20T10:02:00Z")),
                bake_until: Some(at("2026-11-20T10:07:00Z")),
            })
        );
        let again = serde_json::to_value(&d).unwrap();
        assert!(
            again["rollout"].get("bake_until").is_none(),
            "written the new way"
        );
        assert_eq!(serde_json::from_value::<Deployment>(again).unwrap(), d);

        // Without a deadline stored anywhere, it counts from the rollout's start.
        let mut v = serde_json::to_value(&d).unwrap();
        v.as_object_mut().unwrap().remove("progress_deadline");
        let d: Deployment = serde_json::from_value(v).unwrap();
        assert_eq!(
            d.progress().map(|p| p.progress_deadline),
            Some(at("2026-11-20T10:00:30Z") + chrono::Duration::minutes(10))
        );
    }

    /// A record is held by value across the handlers' await points, several times over in the
    /// nested futures of a promotion (promote, start, apply, carry out); in a debug build those
    /// futures live on a 2 MiB test thread's stack, which overflowed when the gates' state was
    /// added inline (1,608 bytes). What only some deployments have is boxed.
    #[test]
    fn a_record_stays_small_enough_to_hold_across_await_points() {
        let size = std::mem::size_of::<Deployment>();
        assert!(size <= 1280, "Deployment is {size} bytes");
    }

    #[test]
    fn push_ids_are_stable_per_service_environment_and_event() {
        let a = push_deployment_id("api", "staging", "evt-1");
        assert_eq!(a, push_deployment_id("api", "staging", "evt-1"));
        assert_ne!(a, push_deployment_id("api", "production", "evt-1"));
        assert_ne!(a, push_deployment_id("api", "staging", "evt-2"));
        assert!(a.starts_with("d-") && a.len() == 22);
    }
}
