//! The deployment record: what is being rolled out where, its lifecycle status, what was observed,
//! and the audit trail. This is exactly what is stored in DynamoDB (see `adapters::dynamodb`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alerts::Alert;
use crate::registration::Registration;
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
}

/// One entry of the audit trail: who or what caused it, why, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub status: Option<Status>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

/// What Flightdeck knows of one task of the new revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedTask {
    pub last_status: String,
    /// ECS's `detail.version` of the newest event applied; older events are ignored.
    pub version: i64,
    pub stop: Option<StopReason>,
    pub updated_at: DateTime<Utc>,
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
    /// When ECS reported the new revision settled (deployment completed or steady state).
    pub settled_at: Option<DateTime<Utc>>,
    pub bake_until: Option<DateTime<Utc>>,
}

/// A rollback Flightdeck decided on: requested first, issued once the ECS call went through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub to_task_definition: String,
    pub requested_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
    pub ecs_deployment_id: Option<String>,
}

/// Side effects decided together with a state change. They are saved with the record first
/// and removed once carried out, so a crash between the two repeats them instead of losing them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    RollBack { to_task_definition: String },
    Alert(Box<Alert>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingEffect {
    pub seq: u32,
    /// Set by the invocation carrying it out; see `handlers::Ports::carry_out`.
    #[serde(default)]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub effect: Effect,
}

impl PendingEffect {
    pub fn claimable(&self, now: DateTime<Utc>, lease: chrono::Duration) -> bool {
        self.claimed_at.is_none_or(|at| now - at >= lease)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub service: String,
    pub environment: String,
    /// The image reference the new revision runs, always by digest.
    pub image: String,
    pub digest: String,
    pub tag: Option<String>,
    pub trigger: Trigger,
    pub status: Status,
    pub traffic_percent: u8,
    pub started_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub events: Vec<AuditEvent>,
    pub rollout: Rollout,
    pub max_failed_tasks: u32,
    pub bake_minutes: u32,
    /// Tasks of the new revision by task ARN.
    #[serde(default)]
    pub tasks: BTreeMap<String, TrackedTask>,
    pub rollback: Option<Rollback>,
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

/// The deployment id of a push: the same push to the same service and environment always gets the
/// same id, which is what makes a redelivered ECR event create nothing new.
pub fn push_deployment_id(service: &str, environment: &str, digest: &str) -> String {
    let hash = Sha256::digest(format!("ecr-push\n{service}\n{environment}\n{digest}").as_bytes());
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
        Deployment {
            id: push_deployment_id(
                &registration.service,
                &registration.environment,
                &push.digest,
            ),
            service: registration.service.clone(),
            environment: registration.environment.clone(),
            image: push.image(),
            digest: push.digest.clone(),
            tag: push.tag.clone(),
            trigger: Trigger::EcrPush,
            status: Status::Pending,
            traffic_percent: 0,
            started_by: Some("ecr-push".to_string()),
            created_at: now,
            updated_at: now,
            finished_at: None,
            reason: None,
            events: vec![AuditEvent {
                at: now,
                status: Some(Status::Pending),
                reason: Some(format!(
                    "image {}:{tag_text} ({}) pushed; ECR event {}",
                    push.repository,
                    short_digest(&push.digest),
                    push.event_id
                )),
                actor: Some("aws.ecr".to_string()),
            }],
            rollout: Rollout {
                cluster: registration.spec.cluster.clone(),
                ecs_service: registration.ecs_service().to_string(),
                container: registration.spec.container.clone(),
                previous_task_definition: None,
                new_task_definition: None,
                ecs_deployment_id: None,
                desired_count: None,
                started_at: None,
                settled_at: None,
                bake_until: None,
            },
            max_failed_tasks: registration.spec.gates.max_failed_tasks,
            bake_minutes: registration.bake_minutes(),
            tasks: BTreeMap::new(),
            rollback: None,
            outbox: Vec::new(),
            next_effect_seq: 0,
            record_version: 0,
        }
    }

    pub fn failed_tasks(&self) -> impl Iterator<Item = (&String, &StopReason)> {
        self.tasks
            .iter()
            .filter_map(|(arn, t)| t.stop.as_ref().filter(|s| s.is_failure()).map(|s| (arn, s)))
    }

    pub fn running_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.last_status == "RUNNING")
            .count()
    }
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

    #[test]
    fn push_ids_are_stable_per_service_environment_and_digest() {
        let a = push_deployment_id("api", "staging", "sha256:aa");
        assert_eq!(a, push_deployment_id("api", "staging", "sha256:aa"));
        assert_ne!(a, push_deployment_id("api", "production", "sha256:aa"));
        assert_ne!(a, push_deployment_id("api", "staging", "sha256:bb"));
        assert!(a.starts_with("d-") && a.len() == 22);
    }
}
