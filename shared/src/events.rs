//! Typed `detail` payloads of the EventBridge events Flightdeck reacts to, and their parsing into
//! domain facts. Real AWS payloads vary: optional fields go missing, pushes come untagged, failed
//! starts carry no exit code, timestamps have fractional seconds. Everything optional here is
//! optional in what AWS sends.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::stop_reason::{StopReason, StoppedTask};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event {id}: not an EventBridge event: {message}")]
    NotEventBridge { id: String, message: String },
    #[error("event {id}: malformed `{detail_type}` detail: {message}")]
    Malformed {
        id: String,
        detail_type: String,
        message: String,
    },
}

/// The envelope every trigger arrives in, with its detail still untyped.
pub type Envelope = EventBridgeEvent<Value>;

/// Parses the envelope; the event id (or `unknown`) goes into every error.
pub fn envelope(value: Value) -> Result<Envelope, EventError> {
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    serde_json::from_value(value).map_err(|e| EventError::NotEventBridge {
        id,
        message: e.to_string(),
    })
}

pub fn event_id(envelope: &Envelope) -> &str {
    envelope.id.as_deref().unwrap_or("unknown")
}

/// Types the detail of an already parsed envelope.
pub fn detail<T: serde::de::DeserializeOwned>(envelope: &Envelope) -> Result<T, EventError> {
    T::deserialize(&envelope.detail).map_err(|e| EventError::Malformed {
        id: event_id(envelope).to_string(),
        detail_type: envelope.detail_type.clone(),
        message: e.to_string(),
    })
}

pub const ECR_IMAGE_ACTION: &str = "ECR Image Action";
pub const ECR_IMAGE_SCAN: &str = "ECR Image Scan";
pub const INSPECTOR2_SCAN: &str = "Inspector2 Scan";
pub const ECS_TASK_STATE_CHANGE: &str = "ECS Task State Change";
pub const ECS_DEPLOYMENT_STATE_CHANGE: &str = "ECS Deployment State Change";
pub const ECS_SERVICE_ACTION: &str = "ECS Service Action";

/// `ECR Image Action` detail.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct EcrImageAction {
    pub action_type: String,
    pub result: String,
    pub repository_name: String,
    pub image_digest: String,
    #[serde(default)]
    pub image_tag: Option<String>,
}

/// `ECR Image Scan` (basic scanning) and `Inspector2 Scan` (enhanced) details: an image's scan
/// finished. Enhanced scanning names the repository by its ARN.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct ImageScanned {
    pub scan_status: String,
    pub repository_name: String,
    pub image_digest: String,
}

impl ImageScanned {
    /// The repository's name, from a name or a repository ARN.
    pub fn repository(&self) -> &str {
        self.repository_name
            .split_once(":repository/")
            .map(|(_, name)| name)
            .unwrap_or(&self.repository_name)
    }
}

impl EcrImageAction {
    pub fn is_successful_push(&self) -> bool {
        self.action_type == "PUSH" && self.result == "SUCCESS"
    }

    /// The pushed tag, if any: an empty tag is no tag.
    pub fn tag(&self) -> Option<&str> {
        self.image_tag.as_deref().filter(|t| !t.is_empty())
    }

    /// Digests are `sha256:` and 64 lowercase hex characters.
    pub fn valid_digest(&self) -> bool {
        valid_digest(&self.image_digest)
    }
}

pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// `ECS Task State Change` detail.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskStateChange {
    pub cluster_arn: String,
    pub task_arn: String,
    pub task_definition_arn: String,
    pub last_status: String,
    #[serde(default)]
    pub desired_status: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub stop_code: Option<String>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub containers: Vec<EcsContainer>,
    /// Increases with every change of the task; orders events of one task.
    pub version: i64,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EcsContainer {
    pub name: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_status: Option<String>,
}

impl EcsTaskStateChange {
    /// The ECS service this task belongs to (`group` is `service:NAME` for service tasks).
    pub fn service_name(&self) -> Option<&str> {
        self.group.as_deref()?.strip_prefix("service:")
    }

    pub fn cluster_name(&self) -> &str {
        last_segment(&self.cluster_arn)
    }

    /// The classified stop, once the task has stopped.
    pub fn stop(&self) -> Option<StopReason> {
        if self.last_status != "STOPPED" {
            return None;
        }
        let containers: Vec<(&str, Option<i32>, Option<&str>)> = self
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.exit_code, c.reason.as_deref()))
            .collect();
        Some(StopReason::classify(&StoppedTask {
            stop_code: self.stop_code.as_deref(),
            stopped_reason: self.stopped_reason.as_deref(),
            containers: &containers,
        }))
    }
}

/// `ECS Deployment State Change` detail.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EcsDeploymentStateChange {
    pub event_type: String,
    pub event_name: String,
    pub deployment_id: String,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `ECS Service Action` detail.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EcsServiceAction {
    pub event_type: String,
    pub event_name: String,
    #[serde(default)]
    pub cluster_arn: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cluster and service names from a service ARN, in the long
/// (`service/CLUSTER/NAME`) or the old short (`service/NAME`) format.
pub fn service_from_arn(arn: &str) -> Option<(Option<&str>, &str)> {
    let resource = arn.split(':').nth(5)?;
    let mut parts = resource.split('/');
    if parts.next()? != "service" {
        return None;
    }
    match (parts.next(), parts.next()) {
        (Some(cluster), Some(name)) if !cluster.is_empty() && !name.is_empty() => {
            Some((Some(cluster), name))
        }
        (Some(name), None) if !name.is_empty() => Some((None, name)),
        _ => None,
    }
}

/// The name at the end of an ARN (`.../flightdeck-prod` -> `flightdeck-prod`).
pub fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untagged_pushes_have_no_tag() {
        let d: EcrImageAction = serde_json::from_value(json!({
            "action-type": "PUSH", "result": "SUCCESS", "repository-name": "r",
            "image-digest": format!("sha256:{}", "a".repeat(64))
        }))
        .unwrap();
        assert_eq!(d.tag(), None);
        assert!(d.valid_digest());
        let d = EcrImageAction {
            image_tag: Some(String::new()),
            ..d
        };
        assert_eq!(d.tag(), None);
    }

    #[test]
    fn digests_are_checked() {
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest(&format!("md5:{}", "a".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "G".repeat(64))));
    }

    #[test]
    fn service_arns_in_both_formats() {
        assert_eq!(
            service_from_arn("arn:aws:ecs:eu-west-1:123456789012:service/prod/checkout-api"),
            Some((Some("prod"), "checkout-api"))
        );
        assert_eq!(
            service_from_arn("arn:aws:ecs:eu-west-1:123456789012:service/checkout-api"),
            Some((None, "checkout-api"))
        );
        assert_eq!(
            service_from_arn("arn:aws:ecs:eu-west-1:1:task/prod/abc"),
            None
        );
        assert_eq!(service_from_arn("nonsense"), None);
    }

    #[test]
    fn failed_start_without_exit_code_and_fractional_timestamps_parse() {
        let d: EcsTaskStateChange = serde_json::from_value(json!({
            "clusterArn": "arn:aws:ecs:eu-west-1:1:cluster/prod",
            "taskArn": "arn:aws:ecs:eu-west-1:1:task/prod/abc",
            "taskDefinitionArn": "arn:aws:ecs:eu-west-1:1:task-definition/api:7",
            "lastStatus": "STOPPED", "group": "service:api", "version": 4,
            "stopCode": "TaskFailedToStart",
            "stoppedReason": "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
            "updatedAt": "2026-11-20T10:00:01.123456Z",
            "containers": [{ "name": "app", "lastStatus": "STOPPED" }]
        }))
        .unwrap();
        assert_eq!(d.service_name(), Some("api"));
        assert_eq!(d.cluster_name(), "prod");
        assert!(matches!(d.stop(), Some(StopReason::CannotPullImage { .. })));
    }
}
