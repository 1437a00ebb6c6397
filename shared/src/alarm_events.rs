//! CloudWatch alarm state changes, from EventBridge (`CloudWatch Alarm State Change`) or from an
//! alarm action that invokes the function directly. Single-metric, metric-math and composite
//! alarms all arrive in these two shapes; what differs is `configuration`, which is read only for
//! the metric dimensions that tie an alarm to an ECS service or target group.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::events::EventError;

pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";

#[derive(Clone, Debug, PartialEq)]
pub struct AlarmChange {
    pub event_id: String,
    pub alarm: String,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub previous_state: Option<String>,
    pub reason: String,
    pub at: Option<DateTime<Utc>>,
    /// Metric dimensions of every metric the alarm watches (none for composite alarms).
    pub dimensions: Vec<(String, String)>,
}

impl AlarmChange {
    /// Identifies this transition of this alarm, however many times and ways it is delivered.
    pub fn key(&self) -> String {
        let at = self
            .at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| self.event_id.clone());
        format!("alarm#{}#{}#{at}", self.alarm, self.state)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmData {
    alarm_name: String,
    state: StateData,
    #[serde(default)]
    previous_state: Option<StateData>,
    #[serde(default)]
    configuration: Value,
}

#[derive(Deserialize)]
struct StateData {
    value: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// Parses either shape; anything else is refused naming what it is.
pub fn parse(value: &Value) -> Result<AlarmChange, EventError> {
    let (event_id, data) = if let Some(detail_type) =
        value.get("detail-type").and_then(Value::as_str)
    {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        if detail_type != ALARM_STATE_CHANGE {
            return Err(EventError::Malformed {
                id,
                detail_type: detail_type.to_string(),
                message: format!("on-alarm handles `{ALARM_STATE_CHANGE}` only"),
            });
        }
        (id, value.get("detail").cloned().unwrap_or(Value::Null))
    } else if let Some(data) = value.get("alarmData") {
        // The direct alarm-action payload has no event id; the alarm ARN and time name it.
        let arn = value
            .get("alarmArn")
            .and_then(Value::as_str)
            .unwrap_or("unknown-alarm");
        let time = value.get("time").and_then(Value::as_str).unwrap_or("");
        (format!("{arn}@{time}"), data.clone())
    } else {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        return Err(EventError::NotEventBridge {
            id,
            message: "neither a `CloudWatch Alarm State Change` event nor an alarm-action payload"
                .to_string(),
        });
    };
    let data: AlarmData = serde_json::from_value(data).map_err(|e| EventError::Malformed {
        id: event_id.clone(),
        detail_type: ALARM_STATE_CHANGE.to_string(),
        message: e.to_string(),
    })?;
    let at = data.state.timestamp.as_deref().and_then(parse_time);
    Ok(AlarmChange {
        event_id,
        alarm: data.alarm_name,
        state: data.state.value,
        previous_state: data.previous_state.map(|p| p.value),
        reason: data.state.reason.unwrap_or_default(),
        at,
        dimensions: dimensions(&data.configuration),
    })
}

/// CloudWatch writes `2026-11-20T10:12:31.123+0000` (no colon in the offset) as well as RFC 3339.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Dimensions of every metric in `configuration.metrics[].metricStat.metric.dimensions`.
fn dimensions(configuration: &Value) -> Vec<(String, String)> {
    configuration
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            m.pointer("/metricStat/metric/dimensions")
                .and_then(Value::as_object)
        })
        .flat_map(|dims| {
            dims.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cloudwatch_offsets_without_colons_parse() {
        assert!(parse_time("2026-11-20T10:12:31.123+0000").is_some());
        assert!(parse_time("2026-11-20T10:12:31Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn a_metric_math_alarm_yields_the_dimensions_of_each_metric() {
        let change = parse(&json!({
            "id": "e1", "detail-type": ALARM_STATE_CHANGE, "source": "aws.cloudwatch",
            "detail": {
                "alarmName": "api-error-rate",
                "state": { "value": "ALARM", "reason": "Threshold Crossed", "timestamp": "2026-11-20T10:12:31.123+0000" },
                "configuration": { "metrics": [
                    { "id": "e1", "expression": "m1/m2*100", "returnData": true },
                    { "id": "m1", "metricStat": { "metric": { "namespace": "AWS/ApplicationELB",
                        "name": "HTTPCode_Target_5XX_Count",
                        "dimensions": { "TargetGroup": "targetgroup/green/abc" } } } },
                    { "id": "m2", "metricStat": { "metric": { "namespace": "AWS/ApplicationELB",
                        "name": "RequestCount", "dimensions": { "TargetGroup": "targetgroup/green/abc" } } } }
                ] }
            }
        }))
        .unwrap();
        assert_eq!(change.state, "ALARM");
        assert_eq!(change.dimensions.len(), 2);
        assert!(change.at.is_some());
    }

    #[test]
    fn other_events_are_refused_with_their_id() {
        let err = parse(&json!({"id": "x1", "detail-type": "ECS Task State Change", "detail": {}}))
            .unwrap_err();
        assert!(err.to_string().contains("x1"));
        let err = parse(&json!({"hello": 1})).unwrap_err();
        assert!(err.to_string().contains("alarm-action"));
    }
}
