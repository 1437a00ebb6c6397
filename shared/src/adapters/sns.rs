//! Alerts to the alert topic, with the attributes subscribers filter on, and, where a chat
//! topic is set, to it in AWS Chatbot's custom-notification format.

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::alerts::Alert;
use crate::ports::{Notifier, PortError, PortResult};

#[derive(Clone, Debug)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
    chat_topic_arn: Option<String>,
    dashboard_url: Option<String>,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
            chat_topic_arn: None,
            dashboard_url: None,
        }
    }

    /// Also to a chat topic (AWS Chatbot subscribes it), linking to the dashboard where known.
    pub fn with_chat(
        mut self,
        chat_topic_arn: Option<String>,
        dashboard_url: Option<String>,
    ) -> Self {
        self.chat_topic_arn = chat_topic_arn;
        self.dashboard_url = dashboard_url;
        self
    }
}

fn attribute(value: &str) -> PortResult<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| PortError::remote("SNS Publish", e))
}

impl Notifier for SnsNotifier {
    async fn publish(&self, alert: &Alert) -> PortResult<()> {
        let doc = &alert.document;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message(alert.sns_message())
            .message_structure("json")
            .message_attributes("event_type", attribute(doc.event_type.as_str())?)
            .message_attributes("severity", attribute(&doc.severity)?)
            .message_attributes("service", attribute(&doc.service)?)
            .message_attributes("environment", attribute(&doc.environment)?)
            .send()
            .await
            .map_err(|e| {
                PortError::remote("SNS Publish", aws_sdk_sns::error::DisplayErrorContext(e))
            })?;
        // The chat copy after the alert went out: a chat outage never holds up the alert, and
        // a retry of this effect never repeats an alert that was sent. Not retried: logged.
        if let Some(chat) = &self.chat_topic_arn {
            let message = alert
                .chat_notification(self.dashboard_url.as_deref())
                .to_string();
            if let Err(e) = self
                .client
                .publish()
                .topic_arn(chat)
                .message(message)
                .send()
                .await
            {
                tracing::warn!(
                    deployment_id = doc.deployment_id.as_deref().unwrap_or(""),
                    error = %aws_sdk_sns::error::DisplayErrorContext(e),
                    "the chat copy of an alert was not published"
                );
            }
        }
        Ok(())
    }
}
