//! `ECS Task State Change` events: the typed detail, the service and cluster it names, and the
//! classified stop (`stop()`), checked against the classifier's promises.
#![no_main]

use flightdeck::events::{self, EcsTaskStateChange};
use flightdeck::stop_reason::StoppedTask;
use flightdeck_fuzz::{
    check_classification, check_last_segment, check_service_arn, envelope_and_detail,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((_, task)) = envelope_and_detail::<EcsTaskStateChange>(data) else {
        return;
    };
    match task.service_name() {
        Some(name) => assert_eq!(
            task.group.as_deref(),
            Some(format!("service:{name}").as_str())
        ),
        None => assert!(
            task.group
                .as_deref()
                .is_none_or(|g| !g.starts_with("service:"))
        ),
    }
    assert_eq!(task.cluster_name(), events::last_segment(&task.cluster_arn));
    for arn in [&task.cluster_arn, &task.task_arn, &task.task_definition_arn] {
        check_last_segment(arn);
        check_service_arn(arn);
    }
    match task.stop() {
        None => assert_ne!(task.last_status, "STOPPED"),
        Some(reason) => {
            assert_eq!(task.last_status, "STOPPED");
            let containers: Vec<(&str, Option<i32>, Option<&str>)> = task
                .containers
                .iter()
                .map(|c| (c.name.as_str(), c.exit_code, c.reason.as_deref()))
                .collect();
            let stopped = StoppedTask {
                stop_code: task.stop_code.as_deref(),
                stopped_reason: task.stopped_reason.as_deref(),
                containers: &containers,
            };
            check_classification(&stopped, &reason);
        }
    }
});
