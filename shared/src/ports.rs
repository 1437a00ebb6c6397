//! The small interfaces the handlers need from the outside world. Adapters implement them with
//! the AWS SDK (`crate::adapters`); tests implement them in memory.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alerts::Alert;
use crate::deployment::{Deployment, Listener, Stage};
use crate::registration::{LookupKey, Registration};

/// Failures of a port, in the terms the handlers act on.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A conditional write lost a race; reload and decide again.
    #[error("the record changed since it was read")]
    Conflict,
    /// Something the write would claim belongs to another owner (e.g. an ECS service managed by
    /// another registration); the message names both.
    #[error("{0}")]
    Taken(String),
    /// A pagination token that is not one of ours.
    #[error("invalid pagination token")]
    BadCursor,
    /// The remote service refused or failed the call.
    #[error("{operation}: {message}")]
    Remote {
        operation: &'static str,
        message: String,
    },
    /// A stored item could not be read as what it should be.
    #[error("stored item {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

impl PortError {
    pub fn remote(operation: &'static str, error: impl std::fmt::Display) -> PortError {
        PortError::Remote {
            operation,
            message: error.to_string(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    pub deployments: Vec<Deployment>,
    /// The token of the next page, if there is one.
    pub next: Option<String>,
}

/// Created, or already there (the conditional create found an earlier one).
#[derive(Debug, PartialEq)]
pub enum Created {
    New,
    AlreadyExists,
}

pub trait DeploymentStore: Send + Sync {
    /// Every registration (the API's listing and registration checks; never on an event's path).
    fn registrations(&self) -> impl Future<Output = PortResult<Vec<Registration>>> + Send;
    /// The registration of a service in an environment: one read.
    fn registration(
        &self,
        service: &str,
        environment: &str,
    ) -> impl Future<Output = PortResult<Option<Registration>>> + Send;
    /// The registrations an event's key leads to: one query, whatever the number of
    /// registrations (see `Registration::lookup_keys`).
    fn registrations_by(
        &self,
        key: &LookupKey,
    ) -> impl Future<Output = PortResult<Vec<Registration>>> + Send;
    /// Stores a registration and its lookup keys (stale keys of the earlier version removed), in
    /// one transaction, which also claims each of its ECS services: `PortError::Taken` when
    /// another registration holds one, however many admins write at once.
    fn put_registration(
        &self,
        registration: &Registration,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes a new deployment unless one with its id exists.
    fn create(&self, deployment: &Deployment) -> impl Future<Output = PortResult<Created>> + Send;
    /// A strongly consistent read (the record carries its most recent audit events).
    fn get(&self, id: &str) -> impl Future<Output = PortResult<Option<Deployment>>> + Send;
    /// Saves `deployment` if the stored copy is still at `deployment.record_version`, then bumps it.
    /// Its unsaved audit events are written as items of their own in the same transaction
    /// (`Deployment::unsaved_events`), and the record keeps the recent ones only.
    fn save(&self, deployment: &mut Deployment) -> impl Future<Output = PortResult<()>> + Send;
    /// The whole audit trail of a deployment, oldest first.
    fn audit_trail(
        &self,
        id: &str,
    ) -> impl Future<Output = PortResult<Vec<crate::deployment::AuditEvent>>> + Send;
    /// Ids of the active deployments of a service and environment, oldest first.
    fn active(
        &self,
        service: &str,
        environment: &str,
    ) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// Ids of every deployment the reconcile loop still has work on (a sparse index, never a Scan).
    fn all_active(&self) -> impl Future<Output = PortResult<Vec<String>>> + Send;
    /// The most recent deployment of a service and environment.
    fn latest(
        &self,
        service: &str,
        environment: &str,
    ) -> impl Future<Output = PortResult<Option<Deployment>>> + Send;
    /// Records that `key` was handled (for events without a record of their own);
    /// `AlreadyExists` means an earlier delivery handled it. Markers expire after a week.
    fn remember(&self, key: &str) -> impl Future<Output = PortResult<Created>> + Send;
    /// Drops a marker again (the work it stood for failed and must be retried).
    fn forget(&self, key: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// The stage item of a service and environment (consistent read); a default one (version 0)
    /// when there is none yet.
    fn stage(
        &self,
        service: &str,
        environment: &str,
    ) -> impl Future<Output = PortResult<Stage>> + Send;
    /// Saves the stage item if the stored one is still at `stage.version` (absent for 0), then
    /// bumps it; `Conflict` when another invocation changed it first.
    fn save_stage(
        &self,
        service: &str,
        environment: &str,
        stage: &mut Stage,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Binds an `Idempotency-Key` to a request fingerprint and a deployment id, once. Returns
    /// the earlier binding (fingerprint, deployment id) when the key was used before.
    fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        deployment_id: &str,
    ) -> impl Future<Output = PortResult<Option<(String, String)>>> + Send;
    /// A page of the deployments of a service and environment, newest first, optionally of one
    /// status; `cursor` is the opaque token of the previous page.
    fn page(
        &self,
        service: &str,
        environment: &str,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = PortResult<Page>> + Send;
    /// Counts a deployment that ended in its service and environment's summary, under the day
    /// it was created: one write, idempotent, the last word for one deployment wins (a watch
    /// rollback after success).
    fn tally(&self, tally: &Tally) -> impl Future<Output = PortResult<()>> + Send;
    /// The summary of a service and environment: the ended deployments created on `since` or
    /// later (one item read per day with any, never the records).
    fn tallies(
        &self,
        service: &str,
        environment: &str,
        since: chrono::NaiveDate,
    ) -> impl Future<Output = PortResult<Vec<Tally>>> + Send;
}

/// An ended deployment as `/metrics` counts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub id: String,
    pub service: String,
    pub environment: String,
    pub created_at: DateTime<Utc>,
    pub status: crate::deployment::Status,
    /// Push (or request) to SUCCEEDED, for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_seconds: Option<i64>,
    /// The bad revision's rollout start to ROLLED_BACK, for a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<i64>,
    /// A revert: an unplanned deployment to undo a release (DORA's rework).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert: bool,
}

impl Tally {
    /// Whether `tallies(service, environment, since)` returns this one.
    pub fn in_summary(&self, service: &str, environment: &str, since: chrono::NaiveDate) -> bool {
        self.service == service
            && self.environment == environment
            && self.created_at.date_naive() >= since
    }

    /// What `d` counts as, once it has ended; `None` while it is active.
    pub fn of(d: &Deployment) -> Option<Tally> {
        let status = d.status();
        if status.is_active() {
            return None;
        }
        let finished = d.finished_at();
        let lead_seconds = (status == crate::deployment::Status::Succeeded)
            .then(|| finished.map(|f| (f - d.created_at).num_seconds()))
            .flatten();
        let restore_seconds = (status == crate::deployment::Status::RolledBack)
            .then(|| {
                let from = d.rollout.started_at.unwrap_or(d.created_at);
                finished.map(|f| (f - from).num_seconds())
            })
            .flatten();
        Some(Tally {
            id: d.id.clone(),
            service: d.service.clone(),
            environment: d.environment.clone(),
            created_at: d.created_at,
            status,
            lead_seconds,
            restore_seconds,
            revert: d.trigger == crate::deployment::Trigger::Revert,
        })
    }
}

/// The tag that marks an ECS service, listener or listener rule as one Flightdeck may change:
/// the template's IAM policy allows the mutating calls only on resources that carry it, and
/// registration refuses a resource without it.
pub const MANAGED_TAG: (&str, &str) = ("flightdeck:managed", "true");

/// A resource's tags, or `None` when the resource does not exist.
pub type Tags = Option<Vec<(String, String)>>;

/// What the rolling engine needs from ECS.
pub trait EcsControl: Send + Sync {
    /// The service's tags (DescribeServices with TAGS); `None` when the cluster has no such
    /// active service.
    fn service_tags(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = PortResult<Tags>> + Send;
    fn service(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = PortResult<EcsService>> + Send;
    /// Registers a copy of `task_definition` whose `container` runs `image`, tagged with the
    /// deployment's id; returns the new ARN. Idempotent on `retry` (an earlier attempt may
    /// have registered it and lost the answer): a revision of the family newer than
    /// `task_definition` that carries `deployment_id`'s tag is returned and nothing is
    /// registered, however many other revisions (another environment's, say) came after it.
    /// The registration itself is sent once: no retry inside the call may register a second.
    fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
        deployment_id: &str,
        retry: bool,
    ) -> impl Future<Output = PortResult<String>> + Send;
    /// Points the service at `task_definition` (and sets its desired count, if given); returns
    /// the id of the ECS deployment that runs it, when ECS says so.
    fn update_service(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        desired_count: Option<u32>,
    ) -> impl Future<Output = PortResult<Option<String>>> + Send;
    fn scale(
        &self,
        cluster: &str,
        service: &str,
        desired_count: u32,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// ecs-native: UpdateService to `task_definition`, rolled out by ECS's own `strategy` (the
    /// rest of the service's deployment configuration — its lifecycle hooks above all — kept as
    /// it is); returns the service deployment ECS started (`currentServiceDeployment`).
    fn update_service_native(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        strategy: &crate::native::NativeStrategy,
    ) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// ecs-native: a service deployment (DescribeServiceDeployments); `None` when ECS does not
    /// know it.
    fn service_deployment(
        &self,
        arn: &str,
    ) -> impl Future<Output = PortResult<Option<ServiceDeploymentView>>> + Send;
    /// The task definition of each service revision (DescribeServiceRevisions), by revision ARN.
    fn revision_task_definitions(
        &self,
        revision_arns: &[String],
    ) -> impl Future<Output = PortResult<Vec<(String, String)>>> + Send;
    /// ecs-native: StopServiceDeployment with stopType ROLLBACK.
    fn stop_service_deployment(&self, arn: &str) -> impl Future<Output = PortResult<()>> + Send;
    /// The image `container` runs in `task_definition` (DescribeTaskDefinition).
    fn image_of(
        &self,
        task_definition: &str,
        container: &str,
    ) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// The service's recently stopped tasks (one page: ListTasks STOPPED, then DescribeTasks),
    /// each with its task definition and classified stop, so the reconcile loop sees crash loops
    /// when task events are lost.
    fn stopped_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = PortResult<Vec<StoppedTaskView>>> + Send;
}

/// A stopped task as DescribeTasks reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoppedTaskView {
    pub task_arn: String,
    pub task_definition_arn: String,
    pub stop: crate::stop_reason::StopReason,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EcsService {
    pub task_definition: String,
    pub desired_count: u32,
    pub running_count: u32,
    /// ECS's deployments of the service (`deployments[]`), primary first.
    pub deployments: Vec<ServiceDeployment>,
    /// The service deployment ECS runs or ran last (`currentServiceDeployment`).
    pub current_service_deployment: Option<String>,
    /// ECS's blue/green, linear and canary strategies: the production listener rule (or NLB
    /// listener) whose weights ECS moves (`loadBalancers[].advancedConfiguration`).
    pub production_listener_rule: Option<String>,
}

/// A service deployment as DescribeServiceDeployments reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDeploymentView {
    pub arn: String,
    pub status: String,
    pub stage: Option<String>,
    pub target_revision_arn: Option<String>,
    pub source_revision_arns: Vec<String>,
    /// Tasks the target revision asks for.
    pub target_desired: u32,
    /// Production traffic on the target revision, in percent.
    pub production_percent: Option<u8>,
    pub status_reason: Option<String>,
    pub rollback_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDeployment {
    pub task_definition: String,
    pub running: u32,
    /// `rolloutState` COMPLETED (or no rollout state reported).
    pub completed: bool,
}

impl EcsService {
    /// Tasks of `task_definition` running: from its ECS deployment when listed, else the
    /// service's count when the service runs that revision.
    pub fn running_of(&self, task_definition: &str) -> u32 {
        match self
            .deployments
            .iter()
            .find(|d| d.task_definition == task_definition)
        {
            Some(d) => d.running,
            None if self.task_definition == task_definition => self.running_count,
            None => 0,
        }
    }

    /// ECS has finished rolling out `task_definition`: it is the one deployment left, completed,
    /// with the desired count running. Where ECS lists no deployment of the service's own task
    /// definition (emulators that do not keep `deployments[]`), the service's counts decide.
    pub fn steady_on(&self, task_definition: &str) -> bool {
        let listed = self
            .deployments
            .iter()
            .any(|d| d.task_definition == self.task_definition);
        if !listed {
            return self.task_definition == task_definition
                && self.running_count >= self.desired_count;
        }
        match self.deployments.as_slice() {
            [only] => {
                only.task_definition == task_definition
                    && only.completed
                    && only.running >= self.desired_count
            }
            _ => false,
        }
    }
}

/// The listener's weighted forward action (ELBv2).
pub trait TrafficControl: Send + Sync {
    /// (target group ARN, weight) of the forward action.
    fn weights(
        &self,
        listener: &Listener,
    ) -> impl Future<Output = PortResult<Vec<(String, u32)>>> + Send;
    /// Sets the forward action's weights in one call: a read-modify-write of the forward action
    /// only. Every other action of the rule (authenticate-oidc, authenticate-cognito,
    /// fixed-response, their order) and the forward action's target-group stickiness are kept.
    fn set_weights(
        &self,
        listener: &Listener,
        weights: &[(String, u32)],
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Healthy targets in a target group (0 when it has none).
    fn healthy_targets(
        &self,
        target_group_arn: &str,
    ) -> impl Future<Output = PortResult<u32>> + Send;
    /// The tags of a listener or listener rule (ELBv2 DescribeTags); `None` when it does not
    /// exist.
    fn resource_tags(&self, arn: &str) -> impl Future<Output = PortResult<Tags>> + Send;
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmState {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
}

/// CloudWatch alarm states (the reconcile loop's gate check).
pub trait AlarmReader: Send + Sync {
    fn states(&self, names: &[String]) -> impl Future<Output = PortResult<Vec<AlarmState>>> + Send;
}

pub trait Notifier: Send + Sync {
    fn publish(&self, alert: &Alert) -> impl Future<Output = PortResult<()>> + Send;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// ECR: tags to digests (the API's deployments by tag) and the images' scan results (the
/// vulnerability gate).
pub trait ImageResolver: Send + Sync {
    /// The digest `repository:tag` points at now; `None` if there is no such image.
    fn digest_of(
        &self,
        repository: &str,
        tag: &str,
    ) -> impl Future<Output = PortResult<Option<String>>> + Send;
    /// The image's scan (DescribeImageScanFindings, basic or enhanced): complete with its
    /// counts and one page of findings, still pending, or unavailable.
    fn scan_findings(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = PortResult<crate::scan::ScanReport>> + Send;
}

/// CloudWatch metrics (the canary judge).
pub trait MetricsReader: Send + Sync {
    /// Per-minute `AWS/ApplicationELB` samples (RequestCount, HTTPCode_Target_5XX_Count,
    /// TargetResponseTime p99) of two target groups of `load_balancer` (`app/NAME/ID`) over
    /// `[from, to)`, in one GetMetricData call.
    fn alb_minutes(
        &self,
        load_balancer: &str,
        canary_target_group: &str,
        stable_target_group: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Future<Output = PortResult<crate::judge::Samples>> + Send;
}

/// Everything the event handlers talk to, built once per cold start (see `handlers::Ports`).
pub trait Adapters: Send + Sync {
    type Store: DeploymentStore;
    type Ecs: EcsControl;
    type Traffic: TrafficControl;
    type Notifier: Notifier;
    type Clock: Clock;
    type Images: ImageResolver;
    fn store(&self) -> &Self::Store;
    fn ecs(&self) -> &Self::Ecs;
    fn traffic(&self) -> &Self::Traffic;
    fn notifier(&self) -> &Self::Notifier;
    fn clock(&self) -> &Self::Clock;
    fn images(&self) -> &Self::Images;
}
