//! Any JSON as an EventBridge envelope (`events::envelope`), then its detail as every kind
//! Flightdeck reads: errors name the event; parsed envelopes round-trip.
#![no_main]

use flightdeck::events::{
    EcrImageAction, EcsDeploymentStateChange, EcsServiceAction, EcsTaskStateChange,
};
use flightdeck_fuzz::{check_detail, check_envelope, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let Some(envelope) = check_envelope(&value) else {
        return;
    };
    check_detail::<EcrImageAction>(&envelope);
    check_detail::<EcsTaskStateChange>(&envelope);
    check_detail::<EcsDeploymentStateChange>(&envelope);
    check_detail::<EcsServiceAction>(&envelope);
});
