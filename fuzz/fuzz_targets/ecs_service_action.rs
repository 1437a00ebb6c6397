//! `ECS Service Action` events: the envelope, its service ARNs and the typed detail.
#![no_main]

use flightdeck::events::EcsServiceAction;
use flightdeck_fuzz::{check_last_segment, check_service_arn, envelope_and_detail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((_, detail)) = envelope_and_detail::<EcsServiceAction>(data) else {
        return;
    };
    let again = envelope_and_detail::<EcsServiceAction>(data).map(|(_, d)| d);
    assert_eq!(again.as_ref(), Some(&detail));
    if let Some(cluster) = &detail.cluster_arn {
        check_last_segment(cluster);
        check_service_arn(cluster);
    }
});
