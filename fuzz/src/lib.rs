//! Checks shared by the fuzz targets: each states a property the parsers promise, and panics
//! (which libFuzzer reports as a crash) when an input breaks it.

use flightdeck::events::{self, Envelope, EventError};
use flightdeck::stop_reason::{StopReason, StoppedTask};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;

/// The input as JSON, or `None` when it is not JSON (the parsers under test take parsed JSON).
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// The id the parsers promise to put into every error: the event's `id` string, else `unknown`.
pub fn expected_id(value: &Value) -> &str {
    value.get("id").and_then(Value::as_str).unwrap_or("unknown")
}

/// Every `EventError` names its event first.
pub fn assert_names_event(error: &EventError, id: &str) {
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("event {id}: ")),
        "error does not name event {id:?}: {text}"
    );
    let carried = match error {
        EventError::NotEventBridge { id, .. } | EventError::Malformed { id, .. } => id,
    };
    assert_eq!(carried, id, "error carries another id than the event's");
}

/// Serializes `value` and reads it back: the result must be equal (what is stored can be read).
pub fn assert_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value).expect("a parsed value serializes");
    let back: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("serialized value does not parse back: {e}\n{text}"));
    assert_eq!(&back, value, "round trip through {text}");
    let tree = serde_json::to_value(value).expect("a parsed value serializes to a tree");
    let back: T = serde_json::from_value(tree.clone())
        .unwrap_or_else(|e| panic!("serialized tree does not parse back: {e}\n{tree}"));
    assert_eq!(&back, value, "round trip through the tree {tree}");
}

/// `events::envelope` on `value`: errors carry the id; a parsed envelope keeps it, serializes,
/// and parses back equal.
pub fn check_envelope(value: &Value) -> Option<Envelope> {
    let id = expected_id(value).to_string();
    match events::envelope(value.clone()) {
        Err(e) => {
            assert!(matches!(e, EventError::NotEventBridge { .. }), "{e:?}");
            assert_names_event(&e, &id);
            None
        }
        Ok(envelope) => {
            assert_eq!(events::event_id(&envelope), id);
            let again = serde_json::to_value(&envelope).expect("an envelope serializes");
            let back = events::envelope(again.clone())
                .unwrap_or_else(|e| panic!("a serialized envelope does not parse: {e}\n{again}"));
            assert_eq!(back, envelope, "envelope round trip through {again}");
            for arn in envelope.resources.iter().flatten() {
                check_service_arn(arn);
            }
            Some(envelope)
        }
    }
}

/// `events::detail::<T>`: a malformed detail is reported with the event's id and detail type.
pub fn check_detail<T: DeserializeOwned>(envelope: &Envelope) -> Option<T> {
    match events::detail::<T>(envelope) {
        Ok(detail) => Some(detail),
        Err(e) => {
            match &e {
                EventError::Malformed { detail_type, .. } => {
                    assert_eq!(detail_type, &envelope.detail_type)
                }
                other => panic!("a detail error must be Malformed: {other:?}"),
            }
            assert_names_event(&e, events::event_id(envelope));
            None
        }
    }
}

/// Parses the input as an envelope (if it is one) and types its detail as `T`.
pub fn envelope_and_detail<T: DeserializeOwned>(data: &[u8]) -> Option<(Envelope, T)> {
    let value = json(data)?;
    let envelope = check_envelope(&value)?;
    let detail = check_detail::<T>(&envelope)?;
    Some((envelope, detail))
}

/// `events::service_from_arn`: the names it returns are non-empty, hold no `/` or `:`, and are
/// the ones the ARN's resource part spells.
pub fn check_service_arn(arn: &str) {
    let Some((cluster, name)) = events::service_from_arn(arn) else {
        return;
    };
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains(':');
    assert!(plain(name), "service name {name:?} from {arn:?}");
    let resource = arn
        .split(':')
        .nth(5)
        .expect("a parsed ARN has a resource part");
    match cluster {
        Some(cluster) => {
            assert!(plain(cluster), "cluster {cluster:?} from {arn:?}");
            assert!(
                resource.starts_with(&format!("service/{cluster}/{name}")),
                "{arn:?} -> ({cluster:?}, {name:?})"
            );
        }
        None => assert_eq!(resource, format!("service/{name}"), "{arn:?}"),
    }
    assert!(arn.contains(name));
}

/// `events::last_segment`: the text after the last `/` (all of it when there is none).
pub fn check_last_segment(arn: &str) {
    let last = events::last_segment(arn);
    assert!(arn.ends_with(last));
    assert!(!last.contains('/'));
    if let Some(i) = arn.rfind('/') {
        assert_eq!(last, &arn[i + 1..]);
    } else {
        assert_eq!(last, arn);
    }
}

/// Failure evidence in the order the classifier promises to weigh it (case-insensitive).
const FAILURE_TEXTS: &[&str] = &[
    "exec format error",
    "outofmemory",
    "cannotpullcontainererror",
    "resourceinitializationerror",
    "failed elb health checks",
    "failed container health checks",
    "cannotstartcontainererror",
    "cannotcreatecontainererror",
];

/// The stop-reason classifier on `task` (whose answer is `reason`): deterministic, storable, and
/// consistent with the evidence it was given.
pub fn check_classification(task: &StoppedTask<'_>, reason: &StopReason) {
    assert_eq!(
        &StopReason::classify(task),
        reason,
        "classify is deterministic"
    );
    assert_round_trip(reason);
    assert!(!reason.label().is_empty());
    assert!(!reason.explain().is_empty());

    let task_reason = task.stopped_reason.unwrap_or("");
    let texts: Vec<&str> = task
        .containers
        .iter()
        .filter_map(|(_, _, r)| *r)
        .chain(std::iter::once(task_reason))
        .collect();
    let names: Vec<&str> = task.containers.iter().map(|(n, _, _)| *n).collect();
    let first_evidence = FAILURE_TEXTS.iter().position(|needle| {
        texts
            .iter()
            .any(|t| t.to_ascii_lowercase().contains(needle))
    });
    let with_evidence = |needle: &str| {
        texts
            .iter()
            .find(|t| t.to_ascii_lowercase().contains(needle))
            .map(|t| t.to_string())
    };

    // Failure evidence in any text wins over any stop code: such a stop is never benign.
    match first_evidence {
        Some(0) => assert!(
            matches!(reason, StopReason::ExecFormatError { .. }),
            "{reason:?}"
        ),
        Some(1) => assert!(
            matches!(reason, StopReason::OutOfMemory { .. }),
            "{reason:?}"
        ),
        Some(2) => assert_eq!(
            reason,
            &StopReason::CannotPullImage {
                message: with_evidence(FAILURE_TEXTS[2]).unwrap()
            }
        ),
        Some(3) => assert_eq!(
            reason,
            &StopReason::ResourceInitialization {
                message: with_evidence(FAILURE_TEXTS[3]).unwrap()
            }
        ),
        Some(4) => assert_eq!(
            reason,
            &StopReason::ElbHealthCheck {
                message: with_evidence(FAILURE_TEXTS[4]).unwrap()
            }
        ),
        Some(5) => assert_eq!(
            reason,
            &StopReason::ContainerHealthCheck {
                message: with_evidence(FAILURE_TEXTS[5]).unwrap()
            }
        ),
        Some(_) => assert!(
            matches!(reason, StopReason::FailedToStart { .. }),
            "{reason:?}"
        ),
        None => {}
    }
    if first_evidence.is_some() {
        assert!(
            reason.is_failure(),
            "failure evidence classified benign: {reason:?}"
        );
    }

    // Benign stops come only from the stop codes and texts that say so.
    if !reason.is_failure() {
        let benign_code = matches!(
            task.stop_code,
            Some("ServiceSchedulerInitiated")
                | Some("UserInitiated")
                | Some("SpotInterruption")
                | Some("TerminationNotice")
        );
        let benign_text = task_reason.starts_with("Scaling activity initiated by")
            || task_reason.starts_with("Task stopped by user");
        assert!(
            benign_code || benign_text,
            "benign without cause: {reason:?}"
        );
    }

    // A container the classification names is one of the task's.
    match reason {
        StopReason::OutOfMemory { container: Some(c) }
        | StopReason::ExecFormatError { container: Some(c) } => {
            assert!(names.contains(&c.as_str()), "{c:?} not in {names:?}")
        }
        StopReason::ExitedWithCode {
            container,
            exit_code,
        } => {
            if task.containers.is_empty() {
                assert_eq!(container, "unknown");
                assert_eq!(*exit_code, None);
            } else {
                assert!(
                    task.containers
                        .iter()
                        .any(|(n, code, _)| n == container && code == exit_code),
                    "{container:?}/{exit_code:?} is not a container of the task"
                );
            }
        }
        _ => {}
    }
}

pub mod memory;

/// The id `alarm_events::parse` reports for `value`: the event's id for EventBridge events, the
/// alarm ARN and time for the direct alarm-action payload.
pub fn alarm_event_id(value: &Value) -> String {
    if value.get("detail-type").and_then(Value::as_str).is_some()
        || value.get("alarmData").is_none()
    {
        return expected_id(value).to_string();
    }
    let arn = value
        .get("alarmArn")
        .and_then(Value::as_str)
        .unwrap_or("unknown-alarm");
    let time = value.get("time").and_then(Value::as_str).unwrap_or("");
    format!("{arn}@{time}")
}
