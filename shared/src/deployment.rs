//! The deployment record: what is being rolled out where, its lifecycle status, what was observed,
//! and the audit trail. This is exactly what is stored in DynamoDB (see `adapters::dynamodb`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alerts::Alert;
use crate::registration::{Engine, Registration};
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
}

impl Traffic {
    pub fn target(&self, colour: Colour) -> &ColourTarget {
        match colour {
            Colour::Blue => &self.blue,
            Colour::Green => &self.green,
        }
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
}

/// Side effects decided together with a state change. They are saved with the record first
/// and removed once carried out, so a crash between the two repeats them instead of losing them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    /// rolling: UpdateService back to the previous task definition.
    RollBack {
        to_task_definition: String,
    },
    /// alb-weights: set the listener's forward weights, `percent` on the new colour.
    SetWeights {
        percent: u8,
    },
    /// Scale an ECS service (the old colour after success, the new one after a rollback).
    Scale {
        service: String,
        desired_count: u32,
    },
    /// Start the same digest in the next environment.
    Promote {
        environment: String,
    },
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
    /// alb-weights only.
    #[serde(default)]
    pub traffic: Option<Traffic>,
    /// CloudWatch alarms that gate the deployment: any in ALARM rolls it back.
    #[serde(default)]
    pub alarms: Vec<String>,
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
    /// Waiting for this in-flight deployment of the same service and environment to end.
    #[serde(default)]
    pub queued_behind: Option<String>,
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
                &push.digest,
            ),
            push.image(),
            push.digest.clone(),
            push.tag.clone(),
            Trigger::EcrPush,
            now,
        );
        d.started_by = Some("ecr-push".to_string());
        d.events.push(AuditEvent {
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
        d.events.push(AuditEvent {
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
        d.promoted_from = Some(from.id.clone());
        d.events.push(AuditEvent {
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

    fn new(
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
            }),
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
            status: Status::Pending,
            traffic_percent: 0,
            started_by: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            reason: None,
            events: Vec::new(),
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
            traffic,
            alarms: registration.spec.gates.alarms.clone(),
            approval_required: registration.spec.gates.approval,
            approved_by: None,
            approved_at: None,
            promote_to: registration.spec.promote_to.clone(),
            promoted_from: None,
            queued_behind: None,
            outbox: Vec::new(),
            next_effect_seq: 0,
            record_version: 0,
        }
    }

    /// Whether the reconcile loop still has work on it: an active status, or the old colour
    /// still to scale down after success.
    pub fn needs_reconcile(&self) -> bool {
        self.status.is_active()
            || !self.outbox.is_empty()
            || self
                .traffic
                .as_ref()
                .is_some_and(|t| t.scale_down_at.is_some() && !t.scaled_down)
    }

    /// In flight: ECS or the listener already carries (or is getting) the new revision.
    pub fn in_flight(&self) -> bool {
        matches!(
            self.status,
            Status::Deploying | Status::Shifting | Status::RollingBack
        )
    }

    /// Waiting: queued behind another deployment or awaiting approval, so nothing of it runs yet
    /// and a newer push may replace it. A PENDING deployment that is not queued is being started
    /// right now and is left alone.
    pub fn waiting(&self) -> bool {
        match self.status {
            Status::AwaitingApproval => true,
            Status::Pending => self.queued_behind.is_some(),
            _ => false,
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
