//! Registration documents (`Registration::parse(service, environment, json)`, what
//! `PUT /services/{service}/{environment}` runs). Input: the service on the first line, the
//! environment on the second, the document after; without two lines, all of it is the document.
//!
//! A registration that parses validates, round-trips (as stored and as a document), and its
//! derived plan is sound.
#![no_main]

use flightdeck::registration::{Registration, RegistrationError, check_name, glob_match};
use flightdeck_fuzz::assert_round_trip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (service, environment, document) = match (lines.next(), lines.next(), lines.next()) {
        (Some(s), Some(e), Some(doc)) => (s, e, doc),
        _ => ("checkout-api", "staging", text),
    };
    let registration = match Registration::parse(service, environment, document) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Names are checked before anything else in the document.
            if check_name("service", service).is_err()
                || check_name("environment", environment).is_err()
            {
                assert!(
                    matches!(
                        e,
                        RegistrationError::Document(_)
                            | RegistrationError::Invalid {
                                field: "service" | "environment",
                                ..
                            }
                    ),
                    "bad names reported as {e:?}"
                );
            }
            return;
        }
    };
    assert_eq!(registration.service, service);
    assert_eq!(registration.environment, environment);
    assert_eq!(registration.validate(), Ok(()));
    assert!(
        check_name("service", service).is_ok() && check_name("environment", environment).is_ok()
    );

    // As stored (the whole registration) and as a document (the spec, parsed again).
    assert_round_trip(&registration);
    let document = serde_json::to_string(&registration.spec).expect("a spec serializes");
    let again = Registration::parse(service, environment, &document)
        .unwrap_or_else(|e| panic!("the serialized spec is refused: {e}\n{document}"));
    assert_eq!(again, registration);

    // Traffic steps: strictly increasing percentages, ending at 100.
    let steps = registration.traffic_steps();
    assert_eq!(steps.last(), Some(&100), "{steps:?}");
    assert!(steps.iter().all(|&p| (1..=100).contains(&p)), "{steps:?}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");

    let services = registration.ecs_services();
    assert!(!services.is_empty());
    assert!(services.contains(&registration.ecs_service()));
    for s in &services {
        assert!(check_name("engine service", s).is_ok(), "{s:?}");
    }
    let _ = registration.bake_minutes();

    // Tag patterns: untagged pushes match nothing; a pattern matches itself and its instances.
    let repository = registration.spec.repository.as_str();
    let pattern = registration.spec.tag_pattern.as_str();
    assert!(!registration.matches_push(repository, None));
    assert!(!registration.matches_push(repository, Some("")));
    assert!(
        glob_match(pattern, pattern),
        "{pattern:?} does not match itself"
    );
    let instance: String = pattern
        .chars()
        .filter(|&c| c != '*')
        .map(|c| if c == '?' { 'x' } else { c })
        .collect();
    if !instance.is_empty() {
        assert!(
            registration.matches_push(repository, Some(&instance)),
            "{pattern:?} vs {instance:?}"
        );
        assert!(!registration.matches_push(&format!("{repository}-other"), Some(&instance)));
    }
    assert_eq!(glob_match(pattern, ""), pattern.chars().all(|c| c == '*'));
});
