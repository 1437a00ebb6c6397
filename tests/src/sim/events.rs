//! EventBridge events as the simulated AWS emits them: the samples in `events/` with ids, ARNs,
//! times and versions filled in, so the handlers parse exactly the shapes they parse in AWS.

use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::world::{ACCOUNT, REGION};

struct Samples {
    task_running: Value,
    task_exec_format: Value,
    task_oom: Value,
    task_scale_in: Value,
    deployment_completed: Value,
    deployment_failed: Value,
    steady_state: Value,
    alarm: Value,
    push: Value,
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| Samples {
        task_running: parse(include_str!("../../../events/ecs-task-running.json")),
        task_exec_format: parse(include_str!(
            "../../../events/ecs-task-stopped-exec-format-error.json"
        )),
        task_oom: parse(include_str!("../../../events/ecs-task-stopped-oom.json")),
        task_scale_in: parse(include_str!(
            "../../../events/ecs-task-stopped-scale-in.json"
        )),
        deployment_completed: parse(include_str!(
            "../../../events/ecs-deployment-completed.json"
        )),
        deployment_failed: parse(include_str!(
            "../../../events/ecs-deployment-failed-circuit-breaker.json"
        )),
        steady_state: parse(include_str!(
            "../../../events/ecs-service-steady-state.json"
        )),
        alarm: parse(include_str!(
            "../../../events/cloudwatch-alarm-state-change.json"
        )),
        push: parse(include_str!("../../../events/ecr-image-push.json")),
    })
}

pub fn time(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub fn cluster_arn(cluster: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}")
}

pub fn service_arn(cluster: &str, service: &str) -> String {
    format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{service}")
}

/// How a task stopped, in the terms of the sample it is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStop {
    /// Scale-in or replacement by the scheduler (`ServiceSchedulerInitiated`).
    ScaledIn,
    /// `TaskFailedToStart`: exec format error.
    ExecFormat,
    /// `EssentialContainerExited`: out of memory, exit 137.
    OutOfMemory,
}

pub struct TaskEvent<'a> {
    pub id: String,
    pub at: DateTime<Utc>,
    pub cluster: &'a str,
    pub service: &'a str,
    pub task_arn: &'a str,
    pub task_definition: &'a str,
    pub image: &'a str,
    pub started_by: &'a str,
    pub last_status: &'a str,
    pub version: i64,
    pub stop: Option<TaskStop>,
    /// For scale-in: the ECS deployment whose scaling stopped the task.
    pub scaling_deployment: &'a str,
}

pub fn task_state_change(e: &TaskEvent<'_>) -> Value {
    let s = samples();
    let mut v = match e.stop {
        None => s.task_running.clone(),
        Some(TaskStop::ScaledIn) => s.task_scale_in.clone(),
        Some(TaskStop::ExecFormat) => s.task_exec_format.clone(),
        Some(TaskStop::OutOfMemory) => s.task_oom.clone(),
    };
    v["id"] = Value::String(e.id.clone());
    v["time"] = time(e.at);
    v["resources"] = json!([e.task_arn]);
    let d = &mut v["detail"];
    d["clusterArn"] = Value::String(cluster_arn(e.cluster));
    d["taskArn"] = Value::String(e.task_arn.to_string());
    d["group"] = Value::String(format!("service:{}", e.service));
    d["taskDefinitionArn"] = Value::String(e.task_definition.to_string());
    d["startedBy"] = Value::String(e.started_by.to_string());
    d["lastStatus"] = Value::String(e.last_status.to_string());
    d["desiredStatus"] = Value::String(
        if e.stop.is_some() {
            "STOPPED"
        } else {
            "RUNNING"
        }
        .to_string(),
    );
    d["updatedAt"] = time(e.at);
    d["version"] = Value::from(e.version);
    if e.stop.is_some() {
        d["stoppedAt"] = time(e.at);
    }
    if e.stop == Some(TaskStop::ScaledIn) {
        d["stoppedReason"] = Value::String(format!(
            "Scaling activity initiated by (deployment {})",
            e.scaling_deployment
        ));
    }
    if let Some(containers) = d["containers"].as_array_mut() {
        for c in containers {
            c["taskArn"] = Value::String(e.task_arn.to_string());
            if e.stop.is_none() {
                c["lastStatus"] = Value::String(e.last_status.to_string());
                c["image"] = Value::String(e.image.to_string());
            }
        }
    }
    v
}

pub fn deployment_state_change(
    id: String,
    at: DateTime<Utc>,
    cluster: &str,
    service: &str,
    ecs_deployment_id: &str,
    failed: bool,
) -> Value {
    let s = samples();
    let mut v = if failed {
        s.deployment_failed.clone()
    } else {
        s.deployment_completed.clone()
    };
    v["id"] = Value::String(id);
    v["time"] = time(at);
    v["resources"] = json!([service_arn(cluster, service)]);
    v["detail"]["deploymentId"] = Value::String(ecs_deployment_id.to_string());
    v["detail"]["updatedAt"] = time(at);
    if !failed {
        v["detail"]["reason"] =
            Value::String(format!("ECS deployment {ecs_deployment_id} completed."));
    }
    v
}

pub fn steady_state(id: String, at: DateTime<Utc>, cluster: &str, service: &str) -> Value {
    let mut v = samples().steady_state.clone();
    v["id"] = Value::String(id);
    v["time"] = time(at);
    v["resources"] = json!([service_arn(cluster, service)]);
    v["detail"]["clusterArn"] = Value::String(cluster_arn(cluster));
    v["detail"]["createdAt"] = time(at);
    v
}

pub struct AlarmEvent<'a> {
    pub id: String,
    pub at: DateTime<Utc>,
    pub alarm: &'a str,
    pub state: &'a str,
    pub previous: &'a str,
    pub reason: &'a str,
    pub cluster: &'a str,
    pub service: &'a str,
}

pub fn alarm_state_change(e: &AlarmEvent<'_>) -> Value {
    let mut v = samples().alarm.clone();
    v["id"] = Value::String(e.id.clone());
    v["time"] = time(e.at);
    v["resources"] = json!([format!(
        "arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{}",
        e.alarm
    )]);
    let d = &mut v["detail"];
    d["alarmName"] = Value::String(e.alarm.to_string());
    d["state"]["value"] = Value::String(e.state.to_string());
    d["state"]["reason"] = Value::String(e.reason.to_string());
    d["state"]["timestamp"] = time(e.at);
    d["previousState"]["value"] = Value::String(e.previous.to_string());
    d["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"] =
        json!({ "ClusterName": e.cluster, "ServiceName": e.service });
    v
}

pub fn image_push(
    id: String,
    at: DateTime<Utc>,
    repository: &str,
    digest: &str,
    tag: &str,
) -> Value {
    let mut v = samples().push.clone();
    v["id"] = Value::String(id);
    v["time"] = time(at);
    v["account"] = Value::String(ACCOUNT.to_string());
    v["region"] = Value::String(REGION.to_string());
    v["detail"]["repository-name"] = Value::String(repository.to_string());
    v["detail"]["image-digest"] = Value::String(digest.to_string());
    v["detail"]["image-tag"] = Value::String(tag.to_string());
    v
}
