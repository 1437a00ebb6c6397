//! Why a task stopped, told apart into failures of the revision and benign stops.
//!
//! ECS puts the useful text in different places depending on the failure: the task's
//! `stoppedReason`, a container's `reason`, or only a `stopCode` and an exit code. The most
//! specific evidence wins, so the container and reason texts are read before the stop code.

use serde::{Deserialize, Serialize};

/// The parts of a stopped task the classifier reads: (name, exit code, reason) per container.
pub struct StoppedTask<'a> {
    pub stop_code: Option<&'a str>,
    pub stopped_reason: Option<&'a str>,
    pub containers: &'a [(&'a str, Option<i32>, Option<&'a str>)],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StopReason {
    // Failures of the new revision.
    ExitedWithCode {
        container: String,
        exit_code: Option<i32>,
    },
    OutOfMemory {
        container: Option<String>,
    },
    ExecFormatError {
        container: Option<String>,
    },
    CannotPullImage {
        message: String,
    },
    ResourceInitialization {
        message: String,
    },
    ElbHealthCheck {
        message: String,
    },
    ContainerHealthCheck {
        message: String,
    },
    FailedToStart {
        message: String,
    },
    Unexplained {
        stop_code: Option<String>,
        message: Option<String>,
    },
    // Benign stops: not the revision's fault.
    ScaledIn {
        message: String,
    },
    StoppedByUser {
        message: Option<String>,
    },
    SpotInterruption,
    InfrastructureMaintenance {
        message: String,
    },
}

impl StopReason {
    pub fn classify(task: &StoppedTask<'_>) -> StopReason {
        let reason = task.stopped_reason.unwrap_or("");
        // Container reasons first: they name the container. A task-level reason of a task with
        // one container is that container's.
        let only_container = match task.containers {
            [(name, _, _)] => Some(*name),
            _ => None,
        };
        let texts: Vec<(Option<&str>, &str)> = task
            .containers
            .iter()
            .filter_map(|(name, _, r)| r.map(|r| (Some(*name), r)))
            .chain(std::iter::once((only_container, reason)))
            .collect();
        let find = |needle: &str| {
            let needle = needle.to_ascii_lowercase();
            texts
                .iter()
                .find(|(_, t)| t.to_ascii_lowercase().contains(&needle))
                .map(|(container, text)| (container.map(str::to_string), text.to_string()))
        };
        // A container named in a reason text, else the first container that exited non-zero.
        let failing_container = |named: Option<String>| {
            named.or_else(|| {
                task.containers
                    .iter()
                    .find(|(_, code, _)| code.is_some_and(|c| c != 0))
                    .map(|(n, _, _)| n.to_string())
            })
        };

        if let Some((container, _)) = find("exec format error") {
            return StopReason::ExecFormatError {
                container: failing_container(container),
            };
        }
        if let Some((container, _)) = find("OutOfMemory") {
            return StopReason::OutOfMemory {
                container: failing_container(container),
            };
        }
        if let Some((_, message)) = find("CannotPullContainerError") {
            return StopReason::CannotPullImage { message };
        }
        if let Some((_, message)) = find("ResourceInitializationError") {
            return StopReason::ResourceInitialization { message };
        }
        if let Some((_, message)) = find("failed ELB health checks") {
            return StopReason::ElbHealthCheck { message };
        }
        if let Some((_, message)) = find("failed container health checks") {
            return StopReason::ContainerHealthCheck { message };
        }
        let failed_start =
            find("CannotStartContainerError").or_else(|| find("CannotCreateContainerError"));
        if let Some((_, message)) = failed_start {
            return StopReason::FailedToStart { message };
        }
        match task.stop_code {
            Some("TaskFailedToStart") => StopReason::FailedToStart {
                message: non_empty(reason).unwrap_or_else(|| "task failed to start".to_string()),
            },
            Some("EssentialContainerExited") => exited(task),
            _ if reason.starts_with("Essential container in task exited") => exited(task),
            Some("UserInitiated") => StopReason::StoppedByUser {
                message: non_empty(reason),
            },
            Some("SpotInterruption") | Some("TerminationNotice") => StopReason::SpotInterruption,
            Some("ServiceSchedulerInitiated") => {
                let lower = reason.to_ascii_lowercase();
                if lower.contains("maintenance") || lower.contains("retire") {
                    StopReason::InfrastructureMaintenance {
                        message: reason.to_string(),
                    }
                } else {
                    StopReason::ScaledIn {
                        message: reason.to_string(),
                    }
                }
            }
            _ if reason.starts_with("Scaling activity initiated by") => StopReason::ScaledIn {
                message: reason.to_string(),
            },
            _ if reason.starts_with("Task stopped by user") => StopReason::StoppedByUser {
                message: Some(reason.to_string()),
            },
            other => StopReason::Unexplained {
                stop_code: other.map(str::to_string),
                message: non_empty(reason),
            },
        }
    }

    /// Whether this stop counts against the revision (toward a crash loop).
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            StopReason::ScaledIn { .. }
                | StopReason::StoppedByUser { .. }
                | StopReason::SpotInterruption
                | StopReason::InfrastructureMaintenance { .. }
        )
    }

    /// A short name for summaries ("exec format error").
    pub fn label(&self) -> &'static str {
        match self {
            StopReason::ExitedWithCode { .. } => "essential container exited",
            StopReason::OutOfMemory { .. } => "out of memory",
            StopReason::ExecFormatError { .. } => "exec format error",
            StopReason::CannotPullImage { .. } => "cannot pull image",
            StopReason::ResourceInitialization { .. } => "resource initialization failed",
            StopReason::ElbHealthCheck { .. } => "failed ELB health checks",
            StopReason::ContainerHealthCheck { .. } => "failed container health checks",
            StopReason::FailedToStart { .. } => "failed to start",
            StopReason::Unexplained { .. } => "stopped without a known reason",
            StopReason::ScaledIn { .. } => "scaled in",
            StopReason::StoppedByUser { .. } => "stopped by a user",
            StopReason::SpotInterruption => "spot interruption",
            StopReason::InfrastructureMaintenance { .. } => "infrastructure maintenance",
        }
    }

    /// What happened, in plain words, for records and alerts.
    pub fn explain(&self) -> String {
        let container = |c: &Option<String>| {
            c.as_deref()
                .map(|c| format!("container `{c}`"))
                .unwrap_or_else(|| "a container".to_string())
        };
        match self {
            StopReason::ExitedWithCode {
                container,
                exit_code,
            } => match exit_code {
                Some(code) => format!("essential container `{container}` exited with code {code}"),
                None => format!("essential container `{container}` exited"),
            },
            StopReason::OutOfMemory { container: c } => {
                format!(
                    "{} ran out of memory and was killed (OutOfMemoryError)",
                    container(c)
                )
            }
            StopReason::ExecFormatError { container: c } => format!(
                "{} could not start: exec format error, the image was built for another CPU \
                 architecture than the task runs on (for example arm64 on x86_64)",
                container(c)
            ),
            StopReason::CannotPullImage { message } => {
                format!("the image could not be pulled: {message}")
            }
            StopReason::ResourceInitialization { message } => format!(
                "the task's resources (secrets, registry credentials or volumes) could not be set up: {message}"
            ),
            StopReason::ElbHealthCheck { message } => {
                format!("the load balancer health checks failed: {message}")
            }
            StopReason::ContainerHealthCheck { message } => {
                format!("the container health checks failed: {message}")
            }
            StopReason::FailedToStart { message } => format!("the task failed to start: {message}"),
            StopReason::Unexplained { stop_code, message } => format!(
                "the task stopped (stop code {}, {})",
                stop_code.as_deref().unwrap_or("none"),
                message.as_deref().unwrap_or("no reason given")
            ),
            StopReason::ScaledIn { message } => format!("stopped by the ECS scheduler: {message}"),
            StopReason::StoppedByUser { message } => {
                format!(
                    "stopped by a user: {}",
                    message.as_deref().unwrap_or("StopTask")
                )
            }
            StopReason::SpotInterruption => "stopped by a Spot interruption".to_string(),
            StopReason::InfrastructureMaintenance { message } => {
                format!("stopped for infrastructure maintenance: {message}")
            }
        }
    }
}

fn exited(task: &StoppedTask<'_>) -> StopReason {
    let with_code = task
        .containers
        .iter()
        .find(|(_, code, _)| code.is_some_and(|c| c != 0))
        .or_else(|| task.containers.iter().find(|(_, code, _)| code.is_some()))
        .or(task.containers.first());
    match with_code {
        Some((name, code, _)) => StopReason::ExitedWithCode {
            container: name.to_string(),
            exit_code: *code,
        },
        None => StopReason::ExitedWithCode {
            container: "unknown".to_string(),
            exit_code: None,
        },
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(
        stop_code: Option<&str>,
        reason: Option<&str>,
        containers: &[(&str, Option<i32>, Option<&str>)],
    ) -> StopReason {
        StopReason::classify(&StoppedTask {
            stop_code,
            stopped_reason: reason,
            containers,
        })
    }

    #[test]
    fn essential_container_exit_keeps_its_code() {
        let r = classify(
            Some("EssentialContainerExited"),
            Some("Essential container in task exited"),
            &[("sidecar", Some(0), None), ("app", Some(3), None)],
        );
        assert_eq!(
            r,
            StopReason::ExitedWithCode {
                container: "app".into(),
                exit_code: Some(3)
            }
        );
        assert!(r.is_failure());
        assert_eq!(r.explain(), "essential container `app` exited with code 3");
    }

    #[test]
    fn out_of_memory_is_read_from_the_container_reason() {
        let r = classify(
            Some("EssentialContainerExited"),
            Some("Essential container in task exited"),
            &[(
                "app",
                Some(137),
                Some("OutOfMemoryError: Container killed due to memory usage"),
            )],
        );
        assert_eq!(
            r,
            StopReason::OutOfMemory {
                container: Some("app".into())
            }
        );
    }

    #[test]
    fn exec_format_error_without_exit_code() {
        let r = classify(
            Some("TaskFailedToStart"),
            Some(
                "CannotStartContainerError: Error response from daemon: failed to create shim task: \
                  OCI runtime create failed: runc create failed: unable to start container process: \
                  exec: \"/app/server\": exec format error: unknown",
            ),
            &[("app", None, None)],
        );
        assert!(matches!(r, StopReason::ExecFormatError { .. }));
        assert!(r.explain().contains("architecture"));
    }

    #[test]
    fn pull_and_secret_failures_are_named() {
        let r = classify(
            Some("TaskFailedToStart"),
            Some(
                "CannotPullContainerError: pull image manifest has been retried 1 time(s): not found",
            ),
            &[],
        );
        assert!(matches!(r, StopReason::CannotPullImage { .. }));
        let r = classify(
            Some("TaskFailedToStart"),
            Some(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution resource \
                  retrieval failed: unable to retrieve secret from asm",
            ),
            &[],
        );
        assert!(matches!(r, StopReason::ResourceInitialization { .. }));
        let r = classify(Some("TaskFailedToStart"), None, &[]);
        assert_eq!(
            r,
            StopReason::FailedToStart {
                message: "task failed to start".into()
            }
        );
    }

    #[test]
    fn health_check_failures_come_from_the_scheduler_but_are_failures() {
        let r = classify(
            Some("ServiceSchedulerInitiated"),
            Some(
                "Task failed ELB health checks in (target-group arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/blue/abc)",
            ),
            &[],
        );
        assert!(matches!(r, StopReason::ElbHealthCheck { .. }));
        assert!(r.is_failure());
        let r = classify(
            Some("ServiceSchedulerInitiated"),
            Some("Task failed container health checks"),
            &[],
        );
        assert!(matches!(r, StopReason::ContainerHealthCheck { .. }));
    }

    #[test]
    fn scale_in_replacement_and_user_stops_are_benign() {
        for (code, reason) in [
            (
                Some("ServiceSchedulerInitiated"),
                Some("Scaling activity initiated by (deployment ecs-svc/1234)"),
            ),
            (
                None,
                Some("Scaling activity initiated by (deployment ecs-svc/1234)"),
            ),
            (Some("UserInitiated"), Some("Task stopped by user")),
            (
                Some("SpotInterruption"),
                Some("Your Spot Task was interrupted."),
            ),
            (
                Some("ServiceSchedulerInitiated"),
                Some(
                    "ECS is performing maintenance on the underlying infrastructure hosting the task",
                ),
            ),
        ] {
            let r = classify(code, reason, &[("app", Some(143), None)]);
            assert!(!r.is_failure(), "{code:?} {reason:?} -> {r:?}");
        }
    }

    #[test]
    fn an_unknown_stop_counts_as_a_failure() {
        let r = classify(Some("SomethingNew"), None, &[]);
        assert!(r.is_failure());
        assert!(r.explain().contains("SomethingNew"));
    }
}
