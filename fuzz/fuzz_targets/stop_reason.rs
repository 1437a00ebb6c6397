//! The stop-reason classifier (`StopReason::classify`) on any stop code, stopped reason and
//! containers. Input: JSON shaped like an `ECS Task State Change` detail (or a whole event),
//! read leniently so that every combination of strings and exit codes is reachable.
#![no_main]

use flightdeck::stop_reason::{StopReason, StoppedTask};
use flightdeck_fuzz::{check_classification, json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let detail = value.get("detail").unwrap_or(&value);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let stop_code = text(detail, "stopCode");
    let stopped_reason = text(detail, "stoppedReason");
    let containers: Vec<(String, Option<i32>, Option<String>)> = detail
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            (
                text(c, "name").unwrap_or_default(),
                c.get("exitCode")
                    .and_then(Value::as_i64)
                    .and_then(|n| i32::try_from(n).ok()),
                text(c, "reason"),
            )
        })
        .collect();
    let containers: Vec<(&str, Option<i32>, Option<&str>)> = containers
        .iter()
        .map(|(n, code, r)| (n.as_str(), *code, r.as_deref()))
        .collect();
    let task = StoppedTask {
        stop_code: stop_code.as_deref(),
        stopped_reason: stopped_reason.as_deref(),
        containers: &containers,
    };
    let reason = StopReason::classify(&task);
    check_classification(&task, &reason);
});
