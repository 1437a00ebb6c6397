//! CloudWatch: alarm states for the reconcile loop's gate check, and ALB metrics for the canary
//! judge.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::types::{AlarmType, Dimension, Metric, MetricDataQuery, MetricStat};
use chrono::{DateTime, Utc};

use crate::judge::{Minute, Samples};
use crate::ports::{AlarmReader, AlarmState, MetricsReader, PortError, PortResult};

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

/// The three per-minute series the judge reads of each target group: (query id suffix, metric,
/// statistic).
const SERIES: [(&str, &str, &str); 3] = [
    ("requests", "RequestCount", "Sum"),
    ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
    ("p99", "TargetResponseTime", "p99"),
];

impl MetricsReader for CloudWatchAlarms {
    async fn alb_minutes(
        &self,
        load_balancer: &str,
        canary_target_group: &str,
        stable_target_group: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> PortResult<Samples> {
        let mut request = self
            .client
            .get_metric_data()
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                from.timestamp(),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                to.timestamp(),
            ));
        for (colour, target_group) in [
            ("canary", canary_target_group),
            ("stable", stable_target_group),
        ] {
            for (id, metric, stat) in SERIES {
                let metric = Metric::builder()
                    .namespace("AWS/ApplicationELB")
                    .metric_name(metric)
                    .dimensions(
                        Dimension::builder()
                            .name("LoadBalancer")
                            .value(load_balancer)
                            .build(),
                    )
                    .dimensions(
                        Dimension::builder()
                            .name("TargetGroup")
                            .value(target_group)
                            .build(),
                    )
                    .build();
                request = request.metric_data_queries(
                    MetricDataQuery::builder()
                        .id(format!("{colour}_{id}"))
                        .metric_stat(
                            MetricStat::builder()
                                .metric(metric)
                                .period(60)
                                .stat(stat)
                                .build(),
                        )
                        .return_data(true)
                        .build(),
                );
            }
        }
        // One call; a second page only if CloudWatch splits the answer.
        let pages: Vec<_> = request.into_paginator().send().collect::<Vec<_>>().await;
        // minute -> (requests, errors, p99), per colour.
        let mut series: BTreeMap<(String, i64), [Option<f64>; 3]> = BTreeMap::new();
        for page in pages {
            let out = page.map_err(|e| {
                PortError::remote("CloudWatch GetMetricData", DisplayErrorContext(e))
            })?;
            for result in out.metric_data_results() {
                let Some((colour, id)) = result.id().and_then(|i| i.split_once('_')) else {
                    continue;
                };
                let Some(slot) = SERIES.iter().position(|(s, _, _)| *s == id) else {
                    continue;
                };
                for (at, value) in result.timestamps().iter().zip(result.values()) {
                    let entry = series
                        .entry((colour.to_string(), at.secs() / 60))
                        .or_insert([None; 3]);
                    entry[slot] = Some(*value);
                }
            }
        }
        let minutes = |colour: &str| -> Vec<Minute> {
            series
                .iter()
                .filter(|((c, _), _)| c == colour)
                .filter_map(|(_, [requests, errors, p99])| {
                    Some(Minute {
                        requests: (*requests)?,
                        errors: *errors,
                        p99: *p99,
                    })
                })
                .collect()
        };
        Ok(Samples {
            canary: minutes("canary"),
            stable: minutes("stable"),
        })
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

    #[tokio::test]
    async fn one_get_metric_data_call_reads_both_colours_minute_by_minute() {
        use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
        use aws_sdk_cloudwatch::types::MetricDataResult;
        let t =
            |m: i64| aws_sdk_cloudwatch::primitives::DateTime::from_secs(1_800_000_000 + m * 60);
        let result = move |id: &str, values: &[(i64, f64)]| {
            let mut r = MetricDataResult::builder().id(id);
            for (m, v) in values {
                r = r.timestamps(t(*m)).values(*v);
            }
            r.build()
        };
        let rule = mock!(Client::get_metric_data)
            .match_requests(|r| {
                r.metric_data_queries().len() == 6
                    && r.metric_data_queries().iter().all(|q| {
                        q.metric_stat().and_then(|s| s.period()) == Some(60)
                            && q.metric_stat()
                                .and_then(|s| s.metric())
                                .is_some_and(|m| m.dimensions().len() == 2)
                    })
            })
            .then_output(move || {
                GetMetricDataOutput::builder()
                    .metric_data_results(result("canary_requests", &[(0, 100.0), (1, 120.0)]))
                    .metric_data_results(result("canary_errors", &[(1, 3.0)]))
                    .metric_data_results(result("canary_p99", &[(0, 0.2), (1, 0.25)]))
                    .metric_data_results(result("stable_requests", &[(0, 900.0), (1, 880.0)]))
                    .metric_data_results(result("stable_p99", &[(0, 0.19)]))
                    .build()
            });
        let cw = CloudWatchAlarms::new(mock_client!(aws_sdk_cloudwatch, [&rule]));
        let from = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let samples = cw
            .alb_minutes(
                "app/lb/1",
                "targetgroup/green/2",
                "targetgroup/blue/3",
                from,
                from + chrono::Duration::minutes(2),
            )
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 1);
        assert_eq!(
            samples.canary,
            vec![
                Minute {
                    requests: 100.0,
                    errors: None,
                    p99: Some(0.2)
                },
                Minute {
                    requests: 120.0,
                    errors: Some(3.0),
                    p99: Some(0.25)
                },
            ]
        );
        assert_eq!(samples.stable.len(), 2);
        assert_eq!(samples.stable[1].p99, None);
    }
}
