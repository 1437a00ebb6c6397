//! Whole event handlers (on-image-push, on-ecs-event, on-alarm) on any JSON, over in-memory ports
//! holding the local stack's registrations and deployments in flight. This reaches the parsing
//! that is private to the handlers (the ECS event's service and fact in on_ecs_event.rs) and the
//! decision core behind it.
//!
//! Properties: no panic; a refused event names its id; no error but the input's (the ports
//! never fail); a second delivery of the same event changes nothing.
#![no_main]

use flightdeck::deployment::Deployment;
use flightdeck::handlers::{HandlerError, Outcome, on_alarm, on_ecs_event, on_image_push};
use flightdeck_fuzz::memory::{MemoryPorts, block_on, ports};
use flightdeck_fuzz::{alarm_event_id, assert_names_event, expected_id, json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(handler: &str, id: &str, result: Result<Outcome, HandlerError>) {
    match result {
        Ok(_) => {}
        Err(HandlerError::Event(e)) => assert_names_event(&e, id),
        Err(e @ HandlerError::Port(_)) => panic!("{handler}: the in-memory ports never fail: {e}"),
        Err(e @ HandlerError::Contended(_)) => {
            panic!("{handler}: nothing else writes to the in-memory store: {e}")
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The top-level fields in which two records differ, as JSON (kept short for the report).
fn differences(a: &Deployment, b: &Deployment) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    ) else {
        unreachable!("records serialize to objects")
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            let mut text = match (v, &b[k]) {
                (Value::Array(x), Value::Array(y)) if y.starts_with(x) => {
                    format!(
                        "{k}: {} entries, then {} more: {:?}",
                        x.len(),
                        y.len() - x.len(),
                        &y[x.len()..]
                    )
                }
                (v, w) => format!("{k}: {v} -> {w}"),
            };
            text.truncate(800);
            text
        })
        .collect()
}

fn twice(
    handler: &str,
    id: &str,
    value: &Value,
    run: impl Fn(&MemoryPorts, Value) -> Result<Outcome, HandlerError>,
) {
    let ports = ports();
    check(handler, id, run(&ports, value.clone()));
    let once = ports.store.snapshot();
    let alerts = ports.notifier.0.lock().unwrap().len();
    check(handler, id, run(&ports, value.clone()));
    let again = ports.store.snapshot();
    assert_eq!(
        once.iter().map(|d| &d.id).collect::<Vec<_>>(),
        again.iter().map(|d| &d.id).collect::<Vec<_>>(),
        "{handler}: a second delivery created deployments"
    );
    for (a, b) in once.iter().zip(&again) {
        if a == b {
            continue;
        }
        panic!(
            "{handler}: a second delivery changed deployment {}:\n{}",
            a.id,
            differences(a, b).join("\n")
        );
    }
    assert_eq!(
        ports.notifier.0.lock().unwrap().len(),
        alerts,
        "{handler}: a second delivery sent alerts again"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let id = expected_id(&value).to_string();
    twice("on-image-push", &id, &value, |p, v| {
        block_on(on_image_push::handle(p, v))
    });
    twice("on-ecs-event", &id, &value, |p, v| {
        block_on(on_ecs_event::handle(p, v))
    });
    twice("on-alarm", &alarm_event_id(&value), &value, |p, v| {
        block_on(on_alarm::handle(p, v))
    });
});
