//! `ECR Image Action` events: the envelope, the typed detail and what on-image-push reads of it.
#![no_main]

use flightdeck::events::{self, EcrImageAction};
use flightdeck_fuzz::envelope_and_detail;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((_, detail)) = envelope_and_detail::<EcrImageAction>(data) else {
        return;
    };
    // An empty tag is no tag; any other tag is the pushed one.
    match detail.tag() {
        Some(tag) => {
            assert!(!tag.is_empty());
            assert_eq!(detail.image_tag.as_deref(), Some(tag));
        }
        None => assert!(detail.image_tag.as_deref().is_none_or(str::is_empty)),
    }
    assert_eq!(
        detail.is_successful_push(),
        detail.action_type == "PUSH" && detail.result == "SUCCESS"
    );
    // A valid digest is exactly `sha256:` and 64 lowercase hex characters.
    let digest = &detail.image_digest;
    let expected = digest.len() == 71
        && digest.starts_with("sha256:")
        && digest
            .bytes()
            .skip(7)
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert_eq!(detail.valid_digest(), expected, "digest {digest:?}");
    assert_eq!(events::valid_digest(digest), expected);
});
