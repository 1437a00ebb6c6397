//! Stored deployment records (`deployment::Deployment` as JSON, what the store keeps): whatever
//! parses serializes and parses back equal, and what the handlers and the API read of it holds.
#![no_main]

use flightdeck::api::deployment_json;
use flightdeck::deployment::{
    Colour, Deployment, Status, short_digest, short_task, short_task_definition,
};
use flightdeck_fuzz::assert_round_trip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = serde_json::from_slice::<Deployment>(data) else {
        return;
    };
    assert_round_trip(&d);

    assert_eq!(
        serde_json::to_value(d.status()).unwrap().as_str(),
        Some(d.status().as_str()),
        "a status is stored as its name"
    );
    assert_eq!(d.status().to_string(), d.status().as_str());
    if d.in_flight() {
        assert!(d.status().is_active());
    }
    if d.waiting() {
        assert!(d.status().is_active() && !d.in_flight());
    }
    if d.status().is_active() {
        assert!(d.needs_reconcile());
    }
    // The phase carries its own data: an end time exactly when it ended, a rollout's progress
    // only while it runs, a queue position only while pending.
    assert_eq!(d.finished_at().is_some(), !d.status().is_active());
    assert_eq!(
        d.progress().is_some(),
        matches!(d.status(), Status::Deploying | Status::Shifting)
    );
    if d.queued_behind().is_some() {
        assert!(d.waiting() && d.status() == Status::Pending);
    }
    if matches!(d.status(), Status::RollingBack | Status::RolledBack) {
        assert!(d.rollback().is_some());
    }
    // Whatever a stored record says, the audit bookkeeping never claims more saved than exist,
    // and a save keeps the recent events only.
    let mut stored = d.clone();
    let unsaved = stored.unsaved_events().len();
    assert!(unsaved <= stored.events.len());
    stored.events_written();
    assert!(stored.events.len() <= flightdeck::deployment::RECENT_EVENTS);
    assert!(stored.unsaved_events().is_empty());

    let view = deployment_json(&d);
    assert_eq!(view["id"].as_str(), Some(d.id.as_str()));
    assert_eq!(view["status"].as_str(), Some(d.status().as_str()));

    assert!(d.digest.starts_with(short_digest(&d.digest)));
    for failed in &d.failed_tasks {
        assert!(failed.task_arn.ends_with(short_task(&failed.task_arn)));
    }
    for td in [
        &d.rollout.previous_task_definition,
        &d.rollout.new_task_definition,
    ]
    .into_iter()
    .flatten()
    {
        assert!(td.ends_with(short_task_definition(td)));
    }

    if let Some(traffic) = &d.traffic {
        assert_eq!(traffic.canary(), traffic.stable.map(Colour::other));
        for percent in [0u8, 1, 50, 99, 100, 101, 255] {
            match traffic.weights(percent) {
                None => assert!(traffic.stable.is_none()),
                Some(weights) => {
                    assert_eq!(weights.len(), 2);
                    let total: u32 = weights.iter().map(|(_, w)| w).sum();
                    assert_eq!(total, 100, "weights {weights:?} for {percent}%");
                    let canary = traffic.target(traffic.canary().unwrap());
                    assert_eq!(
                        weights[1],
                        (canary.target_group_arn.clone(), u32::from(percent.min(100)))
                    );
                }
            }
        }
    }
});
