//! `ECS Deployment State Change` events: the envelope, its service ARNs and the typed detail.
#![no_main]

use flightdeck::events::EcsDeploymentStateChange;
use flightdeck_fuzz::{check_service_arn, envelope_and_detail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((_, detail)) = envelope_and_detail::<EcsDeploymentStateChange>(data) else {
        return;
    };
    // Parsing is a pure function of the input.
    let again = envelope_and_detail::<EcsDeploymentStateChange>(data).map(|(_, d)| d);
    assert_eq!(again.as_ref(), Some(&detail));
    check_service_arn(&detail.deployment_id);
});
