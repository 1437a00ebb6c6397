//! Alarm states for the reconcile loop's gate check.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::types::AlarmType;

use crate::ports::{AlarmReader, AlarmState, PortError, PortResult};

#[derive(Clone, Debug)]
pub struct CloudWatchAlarms {
    client: Client,
}

impl CloudWatchAlarms {
    pub fn new(client: Client) -> Self {
        CloudWatchAlarms { client }
    }
}

/// DescribeAlarms takes at most 100 names a call.
const NAMES_PER_CALL: usize = 100;

impl AlarmReader for CloudWatchAlarms {
    async fn states(&self, names: &[String]) -> PortResult<Vec<AlarmState>> {
        let mut states = Vec::new();
        for chunk in names.chunks(NAMES_PER_CALL) {
            let out = self
                .client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .send()
                .await
                .map_err(|e| {
                    PortError::remote("CloudWatch DescribeAlarms", DisplayErrorContext(e))
                })?;
            for a in out.metric_alarms.unwrap_or_default() {
                states.push(AlarmState {
                    name: a.alarm_name.unwrap_or_default(),
                    state: a
                        .state_value
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: a.state_reason.unwrap_or_default(),
                });
            }
            for a in out.composite_alarms.unwrap_or_default() {
                states.push(AlarmState {
                    name: a.alarm_name.unwrap_or_default(),
                    state: a
                        .state_value
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: a.state_reason.unwrap_or_default(),
                });
            }
        }
        Ok(states)
    }
}
