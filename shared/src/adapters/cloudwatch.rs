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
            // DescribeAlarms pages its answer (NextToken) even for a list of names.
            let pages: Vec<_> = self
                .client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .into_paginator()
                .send()
                .collect::<Vec<_>>()
                .await;
            for page in pages {
                let out = page.map_err(|e| {
                    PortError::remote("CloudWatch DescribeAlarms", DisplayErrorContext(e))
                })?;
                let metric = out
                    .metric_alarms
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| (a.alarm_name, a.state_value, a.state_reason));
                let composite = out
                    .composite_alarms
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| (a.alarm_name, a.state_value, a.state_reason));
                for (name, state, reason) in metric.chain(composite) {
                    states.push(AlarmState {
                        name: name.unwrap_or_default(),
                        state: state.map(|s| s.as_str().to_string()).unwrap_or_default(),
                        reason: reason.unwrap_or_default(),
                    });
                }
            }
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
    use aws_sdk_cloudwatch::types::{MetricAlarm, StateValue};
    use aws_smithy_mocks::{mock, mock_client};

    fn alarm(name: &str, state: StateValue) -> MetricAlarm {
        MetricAlarm::builder()
            .alarm_name(name)
            .state_value(state)
            .state_reason("r")
            .build()
    }

    #[tokio::test]
    async fn every_page_of_describe_alarms_is_read() {
        let first = mock!(Client::describe_alarms)
            .match_requests(|r| r.next_token().is_none())
            .then_output(|| {
                DescribeAlarmsOutput::builder()
                    .metric_alarms(alarm("a", StateValue::Ok))
                    .next_token("page-2")
                    .build()
            });
        let second = mock!(Client::describe_alarms)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(|| {
                DescribeAlarmsOutput::builder()
                    .metric_alarms(alarm("b", StateValue::Alarm))
                    .build()
            });
        let alarms = CloudWatchAlarms::new(mock_client!(
            aws_sdk_cloudwatch,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&first, &second]
        ));
        let states = alarms
            .states(&["a".to_string(), "b".to_string()])
            .await
            .unwrap();
        let firing: Vec<&str> = states
            .iter()
            .filter(|s| s.state == "ALARM")
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(firing, vec!["b"], "the alarm on the second page is seen");
    }
}
