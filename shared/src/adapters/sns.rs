//! Alerts to the one SNS topic, with the attributes subscribers filter on.

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use crate::alerts::Alert;
use crate::ports::{Notifier, PortError, PortResult};

#[derive(Clone, Debug)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
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
        Ok(())
    }
}
