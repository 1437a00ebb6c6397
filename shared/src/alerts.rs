//! Alerts as subscribers receive them: a readable text for people (email, chat, default) and a
//! versioned JSON document for machines (sqs, lambda, https). Composed at the moment of the
//! transition so that what is sent says what was true then.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::deployment::{Deployment, short_digest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "deployment.started")]
    Started,
    #[serde(rename = "deployment.succeeded")]
    Succeeded,
    #[serde(rename = "deployment.failed")]
    Failed,
    #[serde(rename = "deployment.rolled_back")]
    RolledBack,
    #[serde(rename = "deployment.approval_required")]
    ApprovalRequired,
    /// Still awaiting approval after the reminder (or, at higher severity, the escalation)
    /// interval.
    #[serde(rename = "deployment.approval_reminder")]
    ApprovalReminder,
    /// Held before anything changes: a change freeze, or waiting for the image's scan.
    #[serde(rename = "deployment.waiting")]
    Waiting,
    #[serde(rename = "alarm.fired")]
    AlarmFired,
    /// A call made after the deployment ended (the promotion to the next environment, the old
    /// colour's scale-down) was given up on; the deployment's own status stands.
    #[serde(rename = "deployment.follow_up_failed")]
    FollowUpFailed,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Started => "deployment.started",
            EventType::Succeeded => "deployment.succeeded",
            EventType::Failed => "deployment.failed",
            EventType::RolledBack => "deployment.rolled_back",
            EventType::ApprovalRequired => "deployment.approval_required",
            EventType::ApprovalReminder => "deployment.approval_reminder",
            EventType::Waiting => "deployment.waiting",
            EventType::AlarmFired => "alarm.fired",
            EventType::FollowUpFailed => "deployment.follow_up_failed",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            EventType::Started
            | EventType::Succeeded
            | EventType::ApprovalRequired
            | EventType::Waiting => "info",
            EventType::ApprovalReminder => "warning",
            EventType::RolledBack | EventType::AlarmFired | EventType::FollowUpFailed => "warning",
            EventType::Failed => "critical",
        }
    }

    fn headline(self) -> &'static str {
        match self {
            EventType::Started => "deployment started",
            EventType::Succeeded => "deployment succeeded",
            EventType::Failed => "deployment failed",
            EventType::RolledBack => "rolled back",
            EventType::ApprovalRequired => "approval required",
            EventType::ApprovalReminder => "still awaiting approval",
            EventType::Waiting => "waiting",
            EventType::AlarmFired => "alarm fired",
            EventType::FollowUpFailed => "follow-up call failed",
        }
    }
}

/// The machine-readable body (`version` 1), the same for every JSON protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDocument {
    pub version: String,
    pub event_type: EventType,
    pub severity: String,
    pub service: String,
    pub environment: String,
    pub deployment_id: Option<String>,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub digest: Option<String>,
    pub tag: Option<String>,
    pub traffic_percent: Option<u8>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub subject: String,
    pub text: String,
    pub document: AlertDocument,
}

/// SNS subjects must stay under 100 characters.
const SUBJECT_LIMIT: usize = 99;

impl Alert {
    pub fn for_deployment(event_type: EventType, d: &Deployment, at: DateTime<Utc>) -> Alert {
        Alert::about_deployment(event_type, d, d.reason.clone(), at)
    }

    /// A call made after `d` ended was given up on: `why` names the call and its error, and the
    /// deployment's own status and reason stay as they are.
    pub fn follow_up_failed(d: &Deployment, why: &str, at: DateTime<Utc>) -> Alert {
        let reason = match &d.reason {
            Some(own) => format!("{why} (the deployment itself ended {}: {own})", d.status()),
            None => format!("{why} (the deployment itself ended {})", d.status()),
        };
        Alert::about_deployment(EventType::FollowUpFailed, d, Some(reason), at)
    }

    /// Still awaiting approval after `minutes`: the reminder (warning), or the escalation
    /// (critical).
    pub fn approval_reminder(
        d: &Deployment,
        escalated: bool,
        minutes: i64,
        at: DateTime<Utc>,
    ) -> Alert {
        let reason = format!(
            "deployment {} has been awaiting approval for {minutes} min{}; an approver of {} in {} \
             approves it with POST /deployments/{}/approve (or aborts it with /abort)",
            d.id,
            if escalated { " (escalated)" } else { "" },
            d.service,
            d.environment,
            d.id
        );
        let mut alert = Alert::about_deployment(EventType::ApprovalReminder, d, Some(reason), at);
        if escalated {
            alert.document.severity = "critical".to_string();
            alert.subject =
                alert
                    .subject
                    .replacen("still awaiting approval", "approval overdue", 1);
        }
        alert
    }

    fn about_deployment(
        event_type: EventType,
        d: &Deployment,
        reason: Option<String>,
        at: DateTime<Utc>,
    ) -> Alert {
        let tag = d.tag.as_deref().unwrap_or("untagged");
        let mut subject = format!(
            "[Flightdeck] {} {}: {} ({tag})",
            d.service,
            d.environment,
            event_type.headline()
        );
        truncate_chars(&mut subject, SUBJECT_LIMIT);

        let mut text = format!(
            "{} in {}: {}.\n",
            d.service,
            d.environment,
            event_type.headline()
        );
        if let Some(reason) = &reason {
            text.push_str(&format!("\nWhy: {reason}\n"));
        }
        text.push_str(&format!(
            "\nImage:      {} (tag {tag}, {})\nDeployment: {} (status {}, {}% of traffic on the new revision)\n",
            d.image,
            short_digest(&d.digest),
            d.id,
            d.status(),
            d.traffic_percent
        ));
        match event_type {
            EventType::RolledBack | EventType::Failed => {
                if let Some(previous) = &d.rollout.previous_task_definition {
                    text.push_str(&format!("Serving:    {previous} (the previous revision)\n"));
                }
            }
            _ => {
                if let Some(new) = &d.rollout.new_task_definition {
                    text.push_str(&format!("Revision:   {new}\n"));
                }
            }
        }
        text.push_str(&format!(
            "Service:    ECS service {} in cluster {}\nAt:         {}\n",
            d.rollout.ecs_service,
            d.rollout.cluster,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));

        Alert {
            subject,
            text,
            document: AlertDocument {
                version: "1".to_string(),
                event_type,
                severity: event_type.severity().to_string(),
                service: d.service.clone(),
                environment: d.environment.clone(),
                deployment_id: Some(d.id.clone()),
                status: Some(d.status().as_str().to_string()),
                reason,
                digest: Some(d.digest.clone()),
                tag: d.tag.clone(),
                traffic_percent: Some(d.traffic_percent),
                at,
            },
        }
    }

    /// An alarm on a managed service that gates nothing in flight: name the most recent
    /// deployment as the suspect, with how long ago it happened.
    pub fn for_alarm(
        alarm: &str,
        reason: &str,
        service: &str,
        environment: &str,
        suspect: Option<&Deployment>,
        at: DateTime<Utc>,
    ) -> Alert {
        let event_type = EventType::AlarmFired;
        let mut subject = format!("[Flightdeck] {service} {environment}: alarm {alarm}");
        truncate_chars(&mut subject, SUBJECT_LIMIT);
        let suspect_text = match suspect {
            Some(d) => {
                let when = d.finished_at().unwrap_or(d.updated_at);
                format!(
                    "the most recent deployment, {} of {} ({}), {} {} ago",
                    d.id,
                    d.tag.as_deref().unwrap_or("an untagged image"),
                    short_digest(&d.digest),
                    d.status(),
                    ago(at - when)
                )
            }
            None => "no deployment of this service and environment is on record".to_string(),
        };
        // A suspect that succeeded can be reverted in one call.
        let revert = suspect
            .filter(|d| d.status() == crate::deployment::Status::Succeeded)
            .map(|d| {
                format!(
                    "To revert it: POST /deployments/{}/rollback deploys the last revision that \
                     succeeded before it.",
                    d.id
                )
            });
        let full_reason = match &revert {
            Some(how) => {
                format!("alarm `{alarm}` is in ALARM: {reason}. Suspect: {suspect_text}. {how}")
            }
            None => format!("alarm `{alarm}` is in ALARM: {reason}. Suspect: {suspect_text}"),
        };
        let text = format!(
            "Alarm {alarm} fired on {service} in {environment}.\n\nWhy: {reason}\n\nSuspect: {suspect_text}.\n{}\
             Nothing was rolled back: no deployment in flight is gated by this alarm.\nAt: {}\n",
            revert.map(|how| format!("{how}\n")).unwrap_or_default(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        Alert {
            subject,
            text,
            document: AlertDocument {
                version: "1".to_string(),
                event_type,
                severity: event_type.severity().to_string(),
                service: service.to_string(),
                environment: environment.to_string(),
                deployment_id: suspect.map(|d| d.id.clone()),
                status: suspect.map(|d| d.status().as_str().to_string()),
                reason: Some(full_reason),
                digest: suspect.map(|d| d.digest.clone()),
                tag: suspect.and_then(|d| d.tag.clone()),
                traffic_percent: suspect.map(|d| d.traffic_percent),
                at,
            },
        }
    }

    /// The SNS `MessageStructure=json` message: text for people, the document for machines.
    pub fn sns_message(&self) -> String {
        let document = serde_json::to_string(&self.document).unwrap_or_default();
        serde_json::json!({
            "default": self.text,
            "email": self.text,
            "email-json": document,
            "sqs": document,
            "lambda": document,
            "http": document,
            "https": document,
        })
        .to_string()
    }
}

/// "12 minutes", "3 hours", "2 days".
fn ago(elapsed: chrono::Duration) -> String {
    let minutes = elapsed.num_minutes().max(0);
    match minutes {
        0 => format!("{} seconds", elapsed.num_seconds().max(0)),
        1..=119 => format!("{minutes} minutes"),
        120..=2879 => format!("{} hours", minutes / 60),
        _ => format!("{} days", minutes / 1440),
    }
}

/// Cuts `s` to at most `max` characters, the last one an ellipsis.
pub(crate) fn truncate_chars(s: &mut String, max: usize) {
    if s.chars().count() > max {
        let cut: String = s.chars().take(max - 1).collect();
        *s = format!("{cut}…");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_subjects_are_cut_below_one_hundred_characters() {
        let mut s = "x".repeat(300);
        truncate_chars(&mut s, SUBJECT_LIMIT);
        assert_eq!(s.chars().count(), SUBJECT_LIMIT);
        let mut short = "short".to_string();
        truncate_chars(&mut short, SUBJECT_LIMIT);
        assert_eq!(short, "short");
    }

    #[test]
    fn event_types_serialize_to_their_contract_names() {
        assert_eq!(
            serde_json::to_string(&EventType::RolledBack).unwrap(),
            "\"deployment.rolled_back\""
        );
        assert_eq!(EventType::AlarmFired.as_str(), "alarm.fired");
    }
}
