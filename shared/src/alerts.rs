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
    /// The alert in AWS Chatbot's custom-notification format (the only one it shows for a topic
    /// it does not know; anything else is "unsupported event"): a title with the severity, the
    /// why, the image and traffic, and next steps with the deployment's link on the dashboard.
    pub fn chat_notification(&self, dashboard: Option<&str>) -> serde_json::Value {
        let doc = &self.document;
        let icon = match doc.severity.as_str() {
            "critical" => ":red_circle:",
            "warning" => ":warning:",
            _ => ":large_blue_circle:",
        };
        let mut title = format!(
            "{icon} {} {}: {}",
            doc.service,
            doc.environment,
            doc.event_type.headline()
        );
        truncate_chars(&mut title, 250);
        let mut description = String::new();
        if let Some(reason) = &doc.reason {
            description.push_str(&format!("*Why:* {reason}\n"));
        }
        if let Some(digest) = &doc.digest {
            description.push_str(&format!(
                "*Image:* `{}` ({})\n",
                doc.tag.as_deref().unwrap_or("untagged"),
                short_digest(digest)
            ));
        }
        if let (Some(status), Some(percent)) = (&doc.status, doc.traffic_percent) {
            description.push_str(&format!(
                "*Status:* {status}, {percent}% of traffic on the new revision\n"
            ));
        }
        truncate_chars(&mut description, 8000);
        let link = match (dashboard, &doc.deployment_id) {
            (Some(base), Some(id)) => Some(format!("{}/#d={id}", base.trim_end_matches('/'))),
            (Some(base), None) => Some(base.trim_end_matches('/').to_string()),
            _ => None,
        };
        let mut next_steps = Vec::new();
        if let Some(link) = &link {
            next_steps.push(format!("Open the timeline on the dashboard: {link}"));
        }
        match (doc.event_type, &doc.deployment_id) {
            (EventType::ApprovalRequired | EventType::ApprovalReminder, Some(id)) => next_steps
                .push(format!(
                    "An approver other than the one who started it approves it: POST /deployments/{id}/approve"
                )),
            (EventType::Started | EventType::Waiting, Some(id)) => next_steps.push(format!(
                "To stop it: POST /deployments/{id}/rollback (or /abort)"
            )),
            (EventType::RolledBack | EventType::Failed, Some(id)) => next_steps.push(format!(
                "The previous revision serves; GET /deployments/{id} has the whole audit trail"
            )),
            _ => {}
        }
        let mut notification = serde_json::json!({
            "version": "1.0",
            "source": "custom",
            "content": {
                "textType": "client-markdown",
                "title": title,
                "description": description,
                "nextSteps": next_steps,
            },
            "metadata": {
                "threadId": doc.deployment_id.clone().unwrap_or_else(|| format!("{}-{}", doc.service, doc.environment)),
                "summary": self.subject,
                "eventType": doc.event_type.as_str(),
                "additionalContext": { "service": doc.service, "environment": doc.environment, "severity": doc.severity },
            },
        });
        // `id` is a string when present; an alert about no deployment has none.
        if let Some(id) = &doc.deployment_id {
            notification["id"] = serde_json::json!(id);
        }
        notification
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

    fn alert(event_type: EventType) -> Alert {
        Alert {
            subject: "[Flightdeck] checkout production: rolled back (v2)".into(),
            text: "text".into(),
            document: AlertDocument {
                version: "1".into(),
                event_type,
                severity: event_type.severity().into(),
                service: "checkout".into(),
                environment: "production".into(),
                deployment_id: Some("d-0123456789abcdef0123".into()),
                status: Some("ROLLED_BACK".into()),
                reason: Some("crash loop: exec format error ×3".into()),
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                tag: Some("v2".into()),
                traffic_percent: Some(0),
                at: chrono::Utc::now(),
            },
        }
    }

    #[test]
    fn chat_notifications_have_every_key_chatbots_custom_format_requires() {
        let all = [
            EventType::Started,
            EventType::Succeeded,
            EventType::Failed,
            EventType::RolledBack,
            EventType::ApprovalRequired,
            EventType::ApprovalReminder,
            EventType::Waiting,
            EventType::AlarmFired,
            EventType::FollowUpFailed,
        ];
        for event_type in all {
            for dashboard in [
                Some("https://abc.execute-api.eu-west-1.amazonaws.com/"),
                None,
            ] {
                let n = alert(event_type).chat_notification(dashboard);
                assert_eq!(n["version"], "1.0");
                assert_eq!(n["source"], "custom");
                let content = &n["content"];
                assert!(
                    ["plain", "client-markdown"].contains(&content["textType"].as_str().unwrap()),
                    "{n}"
                );
                assert!(!content["title"].as_str().unwrap().is_empty(), "{n}");
                assert!(!content["description"].as_str().unwrap().is_empty(), "{n}");
                assert!(
                    content["nextSteps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| s.is_string())
                );
                if dashboard.is_some() {
                    assert!(
                        content["nextSteps"][0]
                            .as_str()
                            .unwrap()
                            .ends_with("amazonaws.com/#d=d-0123456789abcdef0123"),
                        "the deployment's link on the dashboard: {n}"
                    );
                }
            }
        }
        let mut no_deployment = alert(EventType::AlarmFired);
        no_deployment.document.deployment_id = None;
        let n = no_deployment.chat_notification(None);
        assert!(n.get("id").is_none_or(serde_json::Value::is_string), "{n}");
        let rolled_back = alert(EventType::RolledBack).chat_notification(None);
        let description = rolled_back["content"]["description"].as_str().unwrap();
        assert!(description.contains("exec format error"), "{description}");
        assert!(
            rolled_back["content"]["title"]
                .as_str()
                .unwrap()
                .starts_with(":warning: checkout production: rolled back")
        );
    }
}
