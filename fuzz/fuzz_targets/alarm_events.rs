//! CloudWatch alarm events (`alarm_events::parse`), in both shapes: the EventBridge
//! `CloudWatch Alarm State Change` event and the direct alarm-action payload.
#![no_main]

use flightdeck::alarm_events::{self, ALARM_STATE_CHANGE};
use flightdeck::events::EventError;
use flightdeck_fuzz::{assert_names_event, expected_id, json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let parsed = alarm_events::parse(&value);

    // Which shape the input is, by the rules the parser documents, and the id it must report.
    let detail_type = value.get("detail-type").and_then(Value::as_str);
    let (id, alarm_data) = match (detail_type, value.get("alarmData")) {
        (Some(_), _) => (expected_id(&value).to_string(), value.get("detail")),
        (None, Some(data)) => {
            let arn = value
                .get("alarmArn")
                .and_then(Value::as_str)
                .unwrap_or("unknown-alarm");
            let time = value.get("time").and_then(Value::as_str).unwrap_or("");
            (format!("{arn}@{time}"), Some(data))
        }
        (None, None) => {
            let e = parsed.expect_err("neither shape must be refused");
            assert!(matches!(e, EventError::NotEventBridge { .. }), "{e:?}");
            assert_names_event(&e, expected_id(&value));
            return;
        }
    };

    let change = match parsed {
        Err(e) => {
            assert_names_event(&e, &id);
            return;
        }
        Ok(change) => change,
    };
    if let Some(detail_type) = detail_type {
        assert_eq!(
            detail_type, ALARM_STATE_CHANGE,
            "other detail types are refused"
        );
    }
    assert_eq!(change.event_id, id);
    assert_eq!(
        alarm_events::parse(&value).ok(),
        Some(change.clone()),
        "parse is pure"
    );

    let data = alarm_data.expect("a parsed alarm has its data");
    assert_eq!(
        data.get("alarmName").and_then(Value::as_str),
        Some(change.alarm.as_str())
    );
    let state = data.get("state").expect("a parsed alarm has a state");
    assert_eq!(
        state.get("value").and_then(Value::as_str),
        Some(change.state.as_str())
    );
    assert_eq!(
        change.reason,
        state.get("reason").and_then(Value::as_str).unwrap_or("")
    );
    // A time is read only from the state's timestamp.
    if change.at.is_some() {
        assert!(state.get("timestamp").and_then(Value::as_str).is_some());
    }

    // The key names the alarm, the state and the transition's time (else the event id).
    let key = change.key();
    let at = change
        .at
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| change.event_id.clone());
    assert_eq!(key, format!("alarm#{}#{}#{at}", change.alarm, change.state));

    // Every string dimension of every metric, and nothing else.
    let expected: Vec<(String, String)> = data
        .get("configuration")
        .and_then(|c| c.get("metrics"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.pointer("/metricStat/metric/dimensions")?.as_object())
        .flat_map(|d| d.iter())
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    assert_eq!(change.dimensions, expected);
});
