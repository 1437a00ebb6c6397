//! Simulated ECS: task-definition revisions, services with their ECS deployments, and a scheduler
//! that starts tasks of the primary deployment up to the desired count (PROVISIONING -> PENDING ->
//! RUNNING over time), stops surplus and replaced tasks (`ServiceSchedulerInitiated`), crashes
//! tasks of bad images, trips the deployment circuit breaker, and emits the events ECS emits.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use flightdeck::native::NativeStrategy;
use flightdeck::ports::{EcsService, ServiceDeploymentView};

use super::events::{self, TaskEvent, TaskStop};
use super::world::{ACCOUNT, REGION, Target, World};

/// What an image does when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    Good,
    /// Never starts: exec format error.
    CrashExec,
    /// Starts, then is killed for memory after a while.
    CrashOom,
    /// Runs and passes health checks, but its traffic trips the alarm.
    Alarming,
}

impl Quality {
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::CrashExec => "exec-format",
            Quality::CrashOom => "oom",
            Quality::Alarming => "alarming",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TaskDefinition {
    pub family: String,
    pub container: String,
    pub image: String,
    /// The `flightdeck:deployment` tag it was registered with.
    pub deployment_tag: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    InProgress,
    Completed,
    Failed,
}

#[derive(Clone, Debug)]
pub struct EcsDeployment {
    pub id: String,
    pub task_definition: String,
    pub rollout: Rollout,
    pub failed_tasks: u32,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub cluster: String,
    pub name: String,
    pub desired: u32,
    /// Oldest first; the last one is PRIMARY.
    pub deployments: Vec<EcsDeployment>,
    pub target_group: Option<String>,
    pub steady_reported: bool,
    /// ecs-native: the service deployment ECS runs or ran last.
    pub current_sd: Option<String>,
    /// ecs-native: the source revision's ECS deployment, kept running (blue/green) while a
    /// service deployment is in progress.
    pub keep: Option<String>,
    /// ecs-native behind a load balancer: the production listener rule whose weights ECS moves.
    pub production_rule: Option<String>,
}

impl Service {
    pub fn primary(&self) -> Option<&EcsDeployment> {
        self.deployments.last()
    }

    pub fn task_definition(&self) -> &str {
        self.primary()
            .map(|d| d.task_definition.as_str())
            .unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Provisioning,
    Pending,
    Running,
    Stopped,
}

impl TaskStatus {
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Provisioning => "PROVISIONING",
            TaskStatus::Pending => "PENDING",
            TaskStatus::Running => "RUNNING",
            TaskStatus::Stopped => "STOPPED",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub arn: String,
    pub service: String,
    pub task_definition: String,
    pub deployment: String,
    pub status: TaskStatus,
    pub version: i64,
    pub next_at: DateTime<Utc>,
    pub quality: Quality,
    pub healthy_at: Option<DateTime<Utc>>,
}

impl Task {
    pub fn live(&self) -> bool {
        self.status != TaskStatus::Stopped
    }
}

#[derive(Default)]
pub struct Ecs {
    pub task_definitions: BTreeMap<String, TaskDefinition>,
    pub families: BTreeMap<String, u32>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    /// Image digest -> what it does.
    pub quality: BTreeMap<String, Quality>,
    /// The last stopped tasks of each service, as the task-state-change detail ECS would give
    /// (what ListTasks STOPPED and DescribeTasks answer; ECS keeps them for about an hour).
    pub stopped: BTreeMap<String, std::collections::VecDeque<serde_json::Value>>,
    /// ecs-native: service deployments by ARN, and service revisions (service, task definition).
    pub service_deployments: BTreeMap<String, NativeSd>,
    pub revisions: BTreeMap<String, (String, String)>,
    next_task: u64,
    next_deployment: u64,
}

/// The lifecycle hook of a service deployment: due at a time, asked (the execution id of the
/// invocation that runs: only its answer counts).
#[derive(Clone, Debug, PartialEq)]
pub struct HookWait {
    pub due: DateTime<Utc>,
    pub asked: Option<String>,
}

/// An ECS service deployment of ECS's own BLUE_GREEN / LINEAR / CANARY strategy, walking its
/// lifecycle stages and calling the hook at the stages the service's hook is registered for.
#[derive(Clone, Debug)]
pub struct NativeSd {
    pub arn: String,
    pub service: String,
    pub source_revision: String,
    pub source_td: String,
    pub source_deployment: String,
    pub target_revision: String,
    pub target_td: String,
    pub target_deployment: String,
    pub strategy: NativeStrategy,
    pub status: String,
    pub stage: String,
    pub percent: u8,
    pub steps: Vec<u8>,
    pub step: usize,
    /// Holding the current production step for its bake before the hook is asked about the
    /// next shift.
    pub baking: bool,
    /// Behind a production listener rule: the target group the target revision takes (the one
    /// idle when production traffic first moved).
    pub new_tg: Option<String>,
    pub next_at: DateTime<Utc>,
    pub hook: Option<HookWait>,
    pub rollback_reason: Option<String>,
}

/// The stages the simulated services register `ecs-hook` for (the traffic stages come again
/// for every production step, and during a rollback).
pub const HOOKED: [&str; 5] = [
    "POST_SCALE_UP",
    "TEST_TRAFFIC_SHIFT",
    "PRE_PRODUCTION_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
];

impl NativeSd {
    pub fn in_progress(&self) -> bool {
        matches!(
            self.status.as_str(),
            "PENDING" | "IN_PROGRESS" | "ROLLBACK_REQUESTED" | "ROLLBACK_IN_PROGRESS"
        )
    }

    pub fn view(&self) -> ServiceDeploymentView {
        ServiceDeploymentView {
            arn: self.arn.clone(),
            status: self.status.clone(),
            stage: Some(self.stage.clone()),
            target_revision_arn: Some(self.target_revision.clone()),
            source_revision_arns: vec![self.source_revision.clone()],
            target_desired: 1,
            production_percent: Some(self.percent),
            status_reason: None,
            rollback_reason: self.rollback_reason.clone(),
        }
    }

    fn enter(&mut self, stage: &str, now: DateTime<Utc>) {
        self.stage = stage.to_string();
        self.next_at = now;
        self.hook = HOOKED.contains(&stage).then_some(HookWait {
            due: now,
            asked: None,
        });
    }

    fn roll_back(&mut self, why: &str, now: DateTime<Utc>) {
        self.baking = false;
        self.status = "ROLLBACK_IN_PROGRESS".to_string();
        self.rollback_reason = Some(why.to_string());
        self.percent = 0;
        self.enter("PRODUCTION_TRAFFIC_SHIFT", now);
    }

    /// The answer of hook execution `execution` (`None`: the invocation failed or never
    /// answered). ECS takes only the answer of the execution it waits for: one that comes back
    /// after the service deployment moved on (a stop made it roll back meanwhile) changes nothing.
    pub fn answered(&mut self, execution: &str, answer: Option<(&str, u32)>, now: DateTime<Utc>) {
        if self.hook.as_ref().and_then(|h| h.asked.as_deref()) != Some(execution) {
            return;
        }
        let rolling_back = self.status.starts_with("ROLLBACK");
        match answer {
            Some(("SUCCEEDED", _)) => {
                self.hook = None;
                self.next_at = now;
            }
            Some(("IN_PROGRESS", delay)) => {
                self.hook = Some(HookWait {
                    due: now + Duration::seconds(i64::from(delay.max(1))),
                    asked: None,
                });
            }
            Some((_, _)) if rolling_back => {
                self.hook = None;
                self.status = "ROLLBACK_FAILED".to_string();
            }
            Some((status, _)) => {
                self.roll_back(
                    &format!("lifecycle hook at {} answered {status}", self.stage),
                    now,
                );
            }
            // A hook that fails makes ECS roll the rollout back; rolling back, it asks again.
            None if rolling_back => {
                self.hook = Some(HookWait {
                    due: now + Duration::seconds(30),
                    asked: None,
                });
            }
            None => {
                self.roll_back(&format!("lifecycle hook at {} failed", self.stage), now);
            }
        }
    }
}

/// The ECS circuit breaker's threshold: half the desired count, at least 3.
fn breaker_threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

impl Ecs {
    pub fn register(
        &mut self,
        family: &str,
        container: &str,
        image: &str,
        deployment_tag: Option<&str>,
    ) -> String {
        let revision = self.families.entry(family.to_string()).or_insert(0);
        *revision += 1;
        let arn = format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}");
        self.task_definitions.insert(
            arn.clone(),
            TaskDefinition {
                family: family.to_string(),
                container: container.to_string(),
                image: image.to_string(),
                deployment_tag: deployment_tag.map(str::to_string),
            },
        );
        arn
    }

    /// The family's newest revision (what DescribeTaskDefinition of a family name answers).
    /// As the adapter looks after a lost answer: among the family's newest `look_back`
    /// revisions, the newest one after `base` that carries `tag`.
    pub fn tagged_since(&self, base: &str, tag: &str, look_back: u32) -> Option<String> {
        let (rest, base_revision) = base.rsplit_once(':')?;
        let base_revision: u32 = base_revision.parse().ok()?;
        let family = rest.rsplit_once('/').map_or(rest, |(_, f)| f);
        let newest = *self.families.get(family)?;
        (base_revision + 1..=newest)
            .rev()
            .take(look_back as usize)
            .map(|r| format!("arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{r}"))
            .find(|arn| {
                self.task_definitions
                    .get(arn)
                    .is_some_and(|td| td.deployment_tag.as_deref() == Some(tag))
            })
    }

    fn new_deployment_id(&mut self) -> String {
        self.next_deployment += 1;
        format!(
            "ecs-svc/{}",
            4_893_021_575_843_917_411u64.wrapping_add(self.next_deployment * 7_919_000_003)
        )
    }

    pub fn create_service(
        &mut self,
        cluster: &str,
        name: &str,
        task_definition: &str,
        desired: u32,
        target_group: Option<String>,
    ) {
        let id = self.new_deployment_id();
        self.services.insert(
            name.to_string(),
            Service {
                cluster: cluster.to_string(),
                name: name.to_string(),
                desired,
                deployments: vec![EcsDeployment {
                    id,
                    task_definition: task_definition.to_string(),
                    rollout: Rollout::Completed,
                    failed_tasks: 0,
                }],
                target_group,
                steady_reported: true,
                current_sd: None,
                keep: None,
                production_rule: None,
            },
        );
    }

    /// Starts the service's tasks as already running and healthy (the world before the test).
    pub fn settle_initial(&mut self, now: DateTime<Utc>) {
        let services: Vec<(String, String, String, u32)> = self
            .services
            .values()
            .filter_map(|s| {
                s.primary().map(|p| {
                    (
                        s.name.clone(),
                        p.task_definition.clone(),
                        p.id.clone(),
                        s.desired,
                    )
                })
            })
            .collect();
        for (service, td, deployment, desired) in services {
            for _ in 0..desired {
                let arn = self.new_task_arn();
                self.tasks.insert(
                    arn.clone(),
                    Task {
                        arn,
                        service: service.clone(),
                        task_definition: td.clone(),
                        deployment: deployment.clone(),
                        status: TaskStatus::Running,
                        version: 3,
                        next_at: far_future(now),
                        quality: Quality::Good,
                        healthy_at: Some(now),
                    },
                );
            }
        }
    }

    fn new_task_arn(&mut self) -> String {
        self.next_task += 1;
        let n = self.next_task.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:task/sim/{n:016x}{:016x}",
            self.next_task
        )
    }

    pub fn quality_of_td(&self, task_definition: &str) -> Quality {
        self.task_definitions
            .get(task_definition)
            .and_then(|td| td.image.rsplit_once('@'))
            .and_then(|(_, digest)| self.quality.get(digest))
            .copied()
            .unwrap_or(Quality::Good)
    }

    /// UpdateService: a new task definition starts a new PRIMARY deployment. Returns the id of
    /// the PRIMARY deployment when it runs `task_definition` (what the adapter reports).
    pub fn update_service(
        &mut self,
        service: &str,
        task_definition: &str,
        desired: Option<u32>,
    ) -> Result<Option<String>, String> {
        if !self.task_definitions.contains_key(task_definition) {
            return Err(format!(
                "ClientException: TaskDefinition not found: {task_definition}"
            ));
        }
        let new_id = self.new_deployment_id();
        let s = self
            .services
            .get_mut(service)
            .ok_or_else(|| format!("ServiceNotFoundException: {service}"))?;
        if let Some(n) = desired {
            s.desired = n;
        }
        s.steady_reported = false;
        if s.task_definition() != task_definition {
            s.deployments.push(EcsDeployment {
                id: new_id,
                task_definition: task_definition.to_string(),
                rollout: Rollout::InProgress,
                failed_tasks: 0,
            });
        }
        Ok(s.primary()
            .filter(|p| p.task_definition == task_definition)
            .map(|p| p.id.clone()))
    }

    /// UpdateService of an ecs-native service: a service deployment of ECS's own strategy.
    pub fn update_service_native(
        &mut self,
        service: &str,
        task_definition: &str,
        strategy: &NativeStrategy,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, String> {
        if !self.task_definitions.contains_key(task_definition) {
            return Err(format!(
                "ClientException: TaskDefinition not found: {task_definition}"
            ));
        }
        let s = self
            .services
            .get(service)
            .ok_or_else(|| format!("ServiceNotFoundException: {service}"))?;
        if let Some(sd) = s
            .current_sd
            .as_ref()
            .and_then(|a| self.service_deployments.get(a))
            && sd.in_progress()
        {
            return Err(format!(
                "InvalidParameterException: service deployment {} is in progress",
                sd.arn
            ));
        }
        let Some(source) = s.primary().cloned() else {
            return Err(format!(
                "ServiceNotFoundException: {service} has no deployment"
            ));
        };
        if source.task_definition == task_definition {
            return Ok(s.current_sd.clone());
        }
        let cluster = s.cluster.clone();
        let n = self.service_deployments.len() + 1;
        let arn = format!(
            "arn:aws:ecs:{REGION}:{ACCOUNT}:service-deployment/{cluster}/{service}/sd{n:04}"
        );
        let revision = |k: usize| {
            format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service-revision/{cluster}/{service}/{k}")
        };
        let (source_revision, target_revision) = (revision(2 * n), revision(2 * n + 1));
        self.revisions.insert(
            source_revision.clone(),
            (service.to_string(), source.task_definition.clone()),
        );
        self.revisions.insert(
            target_revision.clone(),
            (service.to_string(), task_definition.to_string()),
        );
        let steps = match strategy {
            NativeStrategy::BlueGreen { .. } => vec![100],
            NativeStrategy::Canary { canary_percent, .. } => vec![*canary_percent, 100],
            NativeStrategy::Linear { step_percent, .. } => (1..=100u16
                .div_ceil(u16::from(*step_percent)))
                .map(|k| (k * u16::from(*step_percent)).min(100) as u8)
                .collect(),
        };
        let target_deployment = self.new_deployment_id();
        let mut sd = NativeSd {
            arn: arn.clone(),
            service: service.to_string(),
            source_revision,
            source_td: source.task_definition.clone(),
            source_deployment: source.id.clone(),
            target_revision,
            target_td: task_definition.to_string(),
            target_deployment,
            strategy: strategy.clone(),
            status: "IN_PROGRESS".to_string(),
            stage: String::new(),
            percent: 0,
            steps,
            step: 0,
            baking: false,
            new_tg: None,
            next_at: now,
            hook: None,
            rollback_reason: None,
        };
        sd.enter("PRE_SCALE_UP", now);
        self.service_deployments.insert(arn.clone(), sd);
        if let Some(s) = self.services.get_mut(service) {
            s.current_sd = Some(arn.clone());
        }
        Ok(Some(arn))
    }

    /// StopServiceDeployment(ROLLBACK).
    pub fn stop_service_deployment(&mut self, arn: &str) -> Result<(), String> {
        let sd = self
            .service_deployments
            .get_mut(arn)
            .ok_or_else(|| format!("ServiceDeploymentNotFoundException: {arn}"))?;
        if sd.status != "IN_PROGRESS" && sd.status != "PENDING" {
            return Err(format!(
                "InvalidParameterException: service deployment {arn} is {}",
                sd.status
            ));
        }
        sd.status = "ROLLBACK_REQUESTED".to_string();
        sd.rollback_reason = Some("StopServiceDeployment with stopType ROLLBACK".to_string());
        sd.hook = None;
        Ok(())
    }

    pub fn scale(&mut self, service: &str, desired: u32) -> Result<(), String> {
        let s = self
            .services
            .get_mut(service)
            .ok_or_else(|| format!("ServiceNotFoundException: {service}"))?;
        s.desired = desired;
        s.steady_reported = false;
        Ok(())
    }

    /// DescribeServices as the port reports it.
    pub fn describe(&self, service: &str) -> Option<EcsService> {
        let s = self.services.get(service)?;
        let running_of = |deployment: &str| {
            self.tasks
                .values()
                .filter(|t| {
                    t.service == service
                        && t.deployment == deployment
                        && t.status == TaskStatus::Running
                })
                .count() as u32
        };
        Some(EcsService {
            current_service_deployment: s.current_sd.clone(),
            production_listener_rule: s.production_rule.clone(),
            task_definition: s.task_definition().to_string(),
            desired_count: s.desired,
            running_count: self
                .tasks
                .values()
                .filter(|t| t.service == service && t.status == TaskStatus::Running)
                .count() as u32,
            deployments: s
                .deployments
                .iter()
                .rev()
                .map(|d| flightdeck::ports::ServiceDeployment {
                    task_definition: d.task_definition.clone(),
                    running: running_of(&d.id),
                    completed: d.rollout == Rollout::Completed,
                })
                .collect(),
        })
    }

    /// Running tasks of `task_definition` in `service` that pass health checks at `now`.
    pub fn healthy(&self, service: &str, task_definition: &str, now: DateTime<Utc>) -> u32 {
        self.tasks
            .values()
            .filter(|t| {
                t.service == service
                    && t.task_definition == task_definition
                    && t.status == TaskStatus::Running
                    && t.healthy_at.is_some_and(|h| h <= now)
            })
            .count() as u32
    }

    /// Running tasks of `task_definition` in `service`.
    pub fn running(&self, service: &str, task_definition: &str) -> u32 {
        self.tasks
            .values()
            .filter(|t| {
                t.service == service
                    && t.task_definition == task_definition
                    && t.status == TaskStatus::Running
            })
            .count() as u32
    }

    /// DescribeTargetHealth: (registered targets, healthy targets) of the group's service.
    pub fn target_health(&self, service: &str, now: DateTime<Utc>) -> (u32, u32) {
        let registered: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.service == service && t.status == TaskStatus::Running)
            .collect();
        let healthy = registered
            .iter()
            .filter(|t| t.healthy_at.is_some_and(|h| h <= now))
            .count();
        (registered.len() as u32, healthy as u32)
    }
}

fn far_future(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::days(365)
}

struct Emitted {
    label: String,
    body: serde_json::Value,
}

/// Moves every task and service forward to `world.now`, emitting ECS's events.
pub fn advance(w: &mut World) {
    let now = w.now;
    let mut out: Vec<Emitted> = Vec::new();

    // Task life cycles.
    let due: Vec<String> = w
        .ecs
        .tasks
        .values()
        .filter(|t| t.live() && t.next_at <= now)
        .map(|t| t.arn.clone())
        .collect();
    for arn in due {
        let (status, quality) = match w.ecs.tasks.get(&arn) {
            Some(t) => (t.status, t.quality),
            None => continue,
        };
        let (next, stop, next_at, healthy_at) = match (status, quality) {
            (TaskStatus::Provisioning, _) => (
                TaskStatus::Pending,
                None,
                now + Duration::seconds(w.rng.i64(5..=15)),
                None,
            ),
            (TaskStatus::Pending, Quality::CrashExec) => {
                (TaskStatus::Stopped, Some(TaskStop::ExecFormat), now, None)
            }
            (TaskStatus::Pending, q) => {
                let until = if q == Quality::CrashOom {
                    now + Duration::seconds(w.rng.i64(20..=70))
                } else {
                    far_future(now)
                };
                let healthy = now + Duration::seconds(w.rng.i64(8..=25));
                (TaskStatus::Running, None, until, Some(healthy))
            }
            (TaskStatus::Running, Quality::CrashOom) => {
                (TaskStatus::Stopped, Some(TaskStop::OutOfMemory), now, None)
            }
            _ => continue,
        };
        if let Some(e) = transition(w, &arn, next, stop, next_at, healthy_at, "") {
            out.push(e);
        }
    }

    native_advance(w, now);

    // The service scheduler.
    let names: Vec<String> = w.ecs.services.keys().cloned().collect();
    for name in names {
        schedule(w, &name, now, &mut out);
    }
    for e in out {
        w.emit(Target::Ecs, e.label, e.body);
    }
}

#[allow(clippy::too_many_arguments)]
fn transition(
    w: &mut World,
    arn: &str,
    status: TaskStatus,
    stop: Option<TaskStop>,
    next_at: DateTime<Utc>,
    healthy_at: Option<DateTime<Utc>>,
    scaling_deployment: &str,
) -> Option<Emitted> {
    let now = w.now;
    let t = w.ecs.tasks.get_mut(arn)?;
    t.status = status;
    t.version += 1;
    t.next_at = next_at;
    if status == TaskStatus::Stopped {
        t.healthy_at = None;
    } else if healthy_at.is_some() {
        t.healthy_at = healthy_at;
    }
    let t = t.clone();
    if matches!(stop, Some(TaskStop::ExecFormat | TaskStop::OutOfMemory))
        && let Some(s) = w.ecs.services.get_mut(&t.service)
        && let Some(d) = s.deployments.iter_mut().find(|d| d.id == t.deployment)
    {
        d.failed_tasks += 1;
    }
    let cluster = w
        .ecs
        .services
        .get(&t.service)
        .map(|s| s.cluster.clone())
        .unwrap_or_default();
    let image = w
        .ecs
        .task_definitions
        .get(&t.task_definition)
        .map(|td| td.image.clone())
        .unwrap_or_default();
    let id = w.next_id("ecs-task");
    let body = events::task_state_change(&TaskEvent {
        id,
        at: now,
        cluster: &cluster,
        service: &t.service,
        task_arn: &t.arn,
        task_definition: &t.task_definition,
        image: &image,
        started_by: &t.deployment,
        last_status: status.name(),
        version: t.version,
        stop,
        scaling_deployment,
    });
    let short = &t.arn[t.arn.len() - 6..];
    let label = format!(
        "task {short} {} {} v{}{}",
        t.service,
        status.name(),
        t.version,
        match stop {
            Some(s) => format!(" ({s:?})"),
            None => String::new(),
        }
    );
    w.log(format!("ecs: {label} [{}]", short_td(&t.task_definition)));
    if status == TaskStatus::Stopped {
        // Only the stopped task's description is kept (a bounded list per service); keeping
        // the tasks themselves would slow every tick.
        w.ecs.tasks.remove(arn);
        let kept = w.ecs.stopped.entry(t.service.clone()).or_default();
        kept.push_front(body.clone());
        kept.truncate(STOPPED_KEPT);
    }
    Some(Emitted { label, body })
}

/// Stopped tasks ListTasks returns per service (one page).
pub const STOPPED_KEPT: usize = 100;

pub fn short_td(arn: &str) -> &str {
    arn.rsplit_once('/').map(|(_, r)| r).unwrap_or(arn)
}

fn schedule(w: &mut World, name: &str, now: DateTime<Utc>, out: &mut Vec<Emitted>) {
    // A steady service with all its tasks running has nothing to schedule.
    if let Some(s) = w.ecs.services.get(name)
        && s.steady_reported
        && s.deployments.len() == 1
        && s.deployments[0].rollout != Rollout::InProgress
    {
        let (mut live, mut running) = (0u32, 0u32);
        for t in w.ecs.tasks.values().filter(|t| t.service == name) {
            live += 1;
            running += u32::from(t.status == TaskStatus::Running);
        }
        if live == s.desired && running == live {
            return;
        }
    }
    let Some(service) = w.ecs.services.get(name).cloned() else {
        return;
    };
    let Some(primary) = service.primary().cloned() else {
        return;
    };
    let tasks_of = |w: &World, deployment: &str| -> Vec<Task> {
        w.ecs
            .tasks
            .values()
            .filter(|t| t.service == name && t.deployment == deployment && t.live())
            .cloned()
            .collect()
    };

    // The circuit breaker.
    if primary.rollout == Rollout::InProgress
        && primary.failed_tasks >= breaker_threshold(service.desired)
    {
        if let Some(s) = w.ecs.services.get_mut(name)
            && let Some(p) = s.deployments.last_mut()
        {
            p.rollout = Rollout::Failed;
        }
        let id = w.next_id("ecs-deployment");
        let body =
            events::deployment_state_change(id, now, &service.cluster, name, &primary.id, true);
        w.log(format!("ecs: {name} deployment {} FAILED", primary.id));
        out.push(Emitted {
            label: format!("{name} SERVICE_DEPLOYMENT_FAILED {}", primary.id),
            body,
        });
        return;
    }

    let primary_tasks = tasks_of(w, &primary.id);
    let primary_running = primary_tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .count() as u32;

    // Start tasks of the primary deployment up to the desired count.
    if primary.rollout != Rollout::Failed {
        let missing = service.desired.saturating_sub(primary_tasks.len() as u32);
        let quality = w.ecs.quality_of_td(&primary.task_definition);
        for _ in 0..missing {
            let arn = w.ecs.new_task_arn();
            let at = now + Duration::seconds(w.rng.i64(3..=10));
            w.ecs.tasks.insert(
                arn.clone(),
                Task {
                    arn: arn.clone(),
                    service: name.to_string(),
                    task_definition: primary.task_definition.clone(),
                    deployment: primary.id.clone(),
                    status: TaskStatus::Provisioning,
                    version: 0,
                    next_at: at,
                    quality,
                    healthy_at: None,
                },
            );
            if let Some(e) = transition(w, &arn, TaskStatus::Provisioning, None, at, None, "") {
                out.push(e);
            }
        }
    }

    // Surplus of the primary (scale-in), not-yet-running ones first.
    let mut surplus: Vec<Task> = primary_tasks;
    surplus.sort_by_key(|t| (t.status == TaskStatus::Running, t.arn.clone()));
    let excess = surplus.len().saturating_sub(service.desired as usize);
    for t in surplus.iter().take(excess) {
        if let Some(e) = transition(
            w,
            &t.arn,
            TaskStatus::Stopped,
            Some(TaskStop::ScaledIn),
            now,
            None,
            &primary.id,
        ) {
            out.push(e);
        }
    }

    // Older deployments give way as the primary's tasks run (minimum healthy 100%).
    let allowed = service.desired.saturating_sub(primary_running) as usize;
    let mut others: Vec<Task> = service
        .deployments
        .iter()
        .filter(|d| d.id != primary.id && service.keep.as_deref() != Some(d.id.as_str()))
        .flat_map(|d| tasks_of(w, &d.id))
        .collect();
    others.sort_by_key(|t| (t.status == TaskStatus::Running, t.arn.clone()));
    let excess = others.len().saturating_sub(allowed);
    for t in others.iter().take(excess) {
        if let Some(e) = transition(
            w,
            &t.arn,
            TaskStatus::Stopped,
            Some(TaskStop::ScaledIn),
            now,
            None,
            &primary.id,
        ) {
            out.push(e);
        }
    }

    // Deployments without tasks left go INACTIVE.
    let live_deployments: Vec<String> = w
        .ecs
        .tasks
        .values()
        .filter(|t| t.service == name && t.live())
        .map(|t| t.deployment.clone())
        .collect();
    let cluster = service.cluster.clone();
    let Some(s) = w.ecs.services.get_mut(name) else {
        return;
    };
    let primary_id = primary.id.clone();
    let keep = s.keep.clone();
    s.deployments.retain(|d| {
        d.id == primary_id || live_deployments.contains(&d.id) || keep.as_deref() == Some(&d.id)
    });

    // Completed, and steady.
    let live: Vec<&Task> = w
        .ecs
        .tasks
        .values()
        .filter(|t| t.service == name && t.live())
        .collect();
    let all_primary_running = live
        .iter()
        .all(|t| t.deployment == primary_id && t.status == TaskStatus::Running);
    let settled = all_primary_running && live.len() as u32 == service.desired;
    let Some(s) = w.ecs.services.get_mut(name) else {
        return;
    };
    if settled && s.deployments.len() == 1 {
        let completed = s
            .deployments
            .last_mut()
            .filter(|p| p.rollout == Rollout::InProgress)
            .map(|p| {
                p.rollout = Rollout::Completed;
                p.id.clone()
            });
        let steady = !s.steady_reported;
        s.steady_reported = true;
        if let Some(id) = completed {
            let event_id = w.next_id("ecs-deployment");
            let body = events::deployment_state_change(event_id, now, &cluster, name, &id, false);
            w.log(format!("ecs: {name} deployment {id} COMPLETED"));
            out.push(Emitted {
                label: format!("{name} SERVICE_DEPLOYMENT_COMPLETED {id}"),
                body,
            });
        }
        if steady {
            let event_id = w.next_id("ecs-service");
            let body = events::steady_state(event_id, now, &cluster, name);
            out.push(Emitted {
                label: format!("{name} SERVICE_STEADY_STATE"),
                body,
            });
        }
    }
}

/// ECS moves the production listener rule's weights (a service behind one) with the service
/// deployment's share: the target revision's target group (the idle one when traffic first
/// moves) gets its percent, the other the rest.
fn move_production_weights(w: &mut World, sd: &mut NativeSd) {
    let Some(rule) = w
        .ecs
        .services
        .get(&sd.service)
        .and_then(|s| s.production_rule.clone())
    else {
        return;
    };
    let Some(groups) = w.elb.rules.get_mut(&rule).and_then(|actions| {
        actions.iter_mut().find_map(|a| match a {
            crate::sim::world::RuleAction::Forward { groups, .. } => Some(groups),
            _ => None,
        })
    }) else {
        return;
    };
    if sd.new_tg.is_none() {
        sd.new_tg = groups
            .iter()
            .min_by_key(|(_, weight)| *weight)
            .map(|(tg, _)| tg.clone());
    }
    let Some(new_tg) = sd.new_tg.clone() else {
        return;
    };
    for (tg, weight) in groups.iter_mut() {
        *weight = if *tg == new_tg {
            u32::from(sd.percent)
        } else {
            100 - u32::from(sd.percent)
        };
    }
    let text = format!("ecs: {} production weights {:?}", sd.service, groups);
    w.log(text);
}

/// Moves every ecs-native service deployment on: its stages, bakes and traffic steps, and the
/// service's ECS deployments under it (the target revision's scaled up beside the source's,
/// the source's retired at CLEAN_UP, the target's on a rollback). A stage whose hook is due or
/// asked waits for the answer (`NativeSd::answered`).
fn native_advance(w: &mut World, now: DateTime<Utc>) {
    let arns: Vec<String> = w
        .ecs
        .service_deployments
        .values()
        .filter(|sd| sd.in_progress() && sd.next_at <= now && sd.hook.is_none())
        .map(|sd| sd.arn.clone())
        .collect();
    for arn in arns {
        let Some(mut sd) = w.ecs.service_deployments.get(&arn).cloned() else {
            continue;
        };
        let before = (sd.status.clone(), sd.stage.clone(), sd.percent);
        let desired = w.ecs.services.get(&sd.service).map_or(1, |s| s.desired);
        match (sd.status.as_str(), sd.stage.as_str()) {
            ("IN_PROGRESS", "PRE_SCALE_UP") => {
                if let Some(s) = w.ecs.services.get_mut(&sd.service) {
                    s.keep = Some(sd.source_deployment.clone());
                    s.steady_reported = false;
                    s.deployments.push(EcsDeployment {
                        id: sd.target_deployment.clone(),
                        task_definition: sd.target_td.clone(),
                        rollout: Rollout::InProgress,
                        failed_tasks: 0,
                    });
                }
                sd.enter("SCALE_UP", now);
            }
            ("IN_PROGRESS", "SCALE_UP") => {
                let failed = w
                    .ecs
                    .services
                    .get(&sd.service)
                    .and_then(|s| s.deployments.iter().find(|d| d.id == sd.target_deployment))
                    .is_some_and(|d| {
                        d.rollout == Rollout::Failed || d.failed_tasks >= breaker_threshold(desired)
                    });
                if failed {
                    sd.roll_back(
                        "deployment circuit breaker: tasks of the target revision failed to start",
                        now,
                    );
                } else if w.ecs.running(&sd.service, &sd.target_td) >= desired {
                    sd.enter("POST_SCALE_UP", now);
                }
            }
            ("IN_PROGRESS", "POST_SCALE_UP") => sd.enter("TEST_TRAFFIC_SHIFT", now),
            ("IN_PROGRESS", "TEST_TRAFFIC_SHIFT") => sd.enter("POST_TEST_TRAFFIC_SHIFT", now),
            ("IN_PROGRESS", "POST_TEST_TRAFFIC_SHIFT") => {
                sd.enter("PRE_PRODUCTION_TRAFFIC_SHIFT", now)
            }
            // ECS asks the hook before every shift of production traffic (the first, and each
            // further step of CANARY and LINEAR), then shifts and asks again at the step.
            ("IN_PROGRESS", "PRE_PRODUCTION_TRAFFIC_SHIFT") => {
                sd.percent = sd.steps.get(sd.step).copied().unwrap_or(100);
                sd.enter("PRODUCTION_TRAFFIC_SHIFT", now);
            }
            // The step baked at its share: the hook is asked before the next shift.
            ("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT") if sd.baking => {
                sd.baking = false;
                sd.step += 1;
                sd.enter("PRE_PRODUCTION_TRAFFIC_SHIFT", now);
            }
            ("IN_PROGRESS", "PRODUCTION_TRAFFIC_SHIFT") => {
                // The step's hook answered: the step bakes at its share.
                let bake = match &sd.strategy {
                    NativeStrategy::Linear {
                        step_bake_minutes, ..
                    } => *step_bake_minutes,
                    NativeStrategy::Canary {
                        canary_bake_minutes,
                        ..
                    } => *canary_bake_minutes,
                    NativeStrategy::BlueGreen { .. } => 0,
                };
                if sd.percent >= 100 {
                    sd.enter("POST_PRODUCTION_TRAFFIC_SHIFT", now);
                } else {
                    sd.baking = true;
                    sd.next_at = now + Duration::minutes(i64::from(bake));
                }
            }
            ("IN_PROGRESS", "POST_PRODUCTION_TRAFFIC_SHIFT") => {
                let bake = match &sd.strategy {
                    NativeStrategy::BlueGreen { bake_minutes } => *bake_minutes,
                    _ => 0,
                };
                sd.enter("BAKE_TIME", now);
                sd.next_at = now + Duration::minutes(i64::from(bake));
            }
            ("IN_PROGRESS", "BAKE_TIME") => {
                if let Some(s) = w.ecs.services.get_mut(&sd.service) {
                    s.keep = None;
                    s.steady_reported = false;
                }
                sd.enter("CLEAN_UP", now);
                sd.status = "SUCCESSFUL".to_string();
            }
            ("ROLLBACK_REQUESTED", _) => sd.roll_back(
                sd.rollback_reason
                    .clone()
                    .as_deref()
                    .unwrap_or("rollback requested"),
                now,
            ),
            ("ROLLBACK_IN_PROGRESS", _) => {
                // The rollback's traffic stage answered: the source serves again; the target's
                // tasks give way.
                if let Some(s) = w.ecs.services.get_mut(&sd.service) {
                    s.keep = None;
                    s.steady_reported = false;
                    if let Some(i) = s
                        .deployments
                        .iter()
                        .position(|d| d.id == sd.target_deployment)
                    {
                        let mut target = s.deployments.remove(i);
                        target.rollout = Rollout::Failed;
                        s.deployments.insert(0, target);
                    }
                    if let Some(i) = s
                        .deployments
                        .iter()
                        .position(|d| d.id == sd.source_deployment)
                    {
                        let source = s.deployments.remove(i);
                        s.deployments.push(source);
                    }
                }
                sd.stage = "CLEAN_UP".to_string();
                sd.status = "ROLLBACK_SUCCESSFUL".to_string();
            }
            _ => {}
        }
        if sd.percent != before.2 {
            move_production_weights(w, &mut sd);
        }
        if (sd.status.clone(), sd.stage.clone(), sd.percent) != before {
            w.log(format!(
                "ecs: {} {} {} at {} ({}%)",
                sd.service,
                short_sd(&sd.arn),
                sd.status,
                sd.stage,
                sd.percent
            ));
        }
        w.ecs.service_deployments.insert(arn, sd);
    }
}

pub fn short_sd(arn: &str) -> &str {
    arn.rsplit_once('/').map(|(_, r)| r).unwrap_or(arn)
}
