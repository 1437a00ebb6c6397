//! The port traits of `flightdeck::ports`, each a thin wrapper over the shared `World`. Every call
//! is an await point (it yields once, so the executor can interleave invocations there), then
//! suffers the fault the plan picks for it: none, a failure before the effect, or the effect with
//! its answer lost (for DynamoDB conditional writes also: the SDK's retry finds its own write and
//! reports the condition failed).
//!
//! Assumptions about the traits are marked `ASSUMES:`; they are what to revisit when the traits
//! change.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use flightdeck::alerts::Alert;
use flightdeck::deployment::{AuditEvent, Deployment, Listener, Stage};
use flightdeck::ports::{
    AlarmReader, AlarmState, Clock, Created, DeploymentStore, EcsControl, EcsService,
    ImageResolver, MANAGED_TAG, Notifier, Page, PortError, PortResult, StoppedTaskView, Tags,
    TrafficControl,
};
use flightdeck::registration::{LookupKey, Registration};

use super::ecs::short_td;
use super::world::{Fault, Kind, MutationKind, Published, RuleAction, World};

/// The world, shared by every port and the scheduler (single-threaded; the mutex only makes
/// the ports `Send + Sync` as the traits require).
#[derive(Clone)]
pub struct Sim(pub Arc<Mutex<World>>);

impl Sim {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One port call: an await point, then the effect under the fault plan.
    async fn call<T: Send + Brief>(
        &self,
        op: &'static str,
        kind: Kind,
        what: String,
        mut effect: impl FnMut(&mut World) -> PortResult<T> + Send,
    ) -> PortResult<T> {
        YieldOnce(false).await;
        let mut w = self.lock();
        w.port_calls += 1;
        let fault = if w.failing.contains(&op) {
            Fault::Before
        } else {
            w.pick_fault(kind)
        };
        if fault != Fault::None {
            w.faults_injected += 1;
        }
        let result = match fault {
            Fault::None => effect(&mut w),
            Fault::Before => Err(PortError::remote(
                op,
                if w.rng.bool() {
                    "ThrottlingException: Rate exceeded"
                } else {
                    "ServiceUnavailable: please retry (simulated)"
                },
            )),
            Fault::Lost => {
                let _ = effect(&mut w);
                Err(PortError::remote(
                    op,
                    "dispatch failure: the connection was reset after the request was sent (simulated)",
                ))
            }
            Fault::RetrySeesOwnWrite => {
                let _ = effect(&mut w);
                effect(&mut w)
            }
        };
        w.settle_publish(result.is_err());
        if result.is_err()
            && let Some(task) = w.current
        {
            w.last_failure.insert(task, (op, fault));
            if fault == Fault::Before
                && op.starts_with("DynamoDB")
                && w.claims.get(&task).is_some_and(|c| !c.is_empty())
            {
                w.store_refused_after_claim.insert(task);
            }
        }
        let task = w.current.map(|t| t.to_string()).unwrap_or_default();
        let outcome = match (&result, fault) {
            (Ok(v), Fault::None) => v.brief(),
            (Ok(v), f) => format!("{} [{f:?}]", v.brief()),
            (Err(e), f) => format!("ERR {} [{f:?}]", short_error(e)),
        };
        w.log(format!("  #{task} {op} {what} -> {outcome}"));
        result
    }
}

/// A few words for the trace about what a port call answered.
pub trait Brief {
    fn brief(&self) -> String;
}

impl Brief for flightdeck::scan::ScanReport {
    fn brief(&self) -> String {
        match self {
            flightdeck::scan::ScanReport::Complete { counts, .. } => {
                format!("complete: {}", flightdeck::scan::counts_text(counts))
            }
            flightdeck::scan::ScanReport::Pending { status } => format!("pending ({status})"),
            flightdeck::scan::ScanReport::Unavailable { status, .. } => {
                format!("unavailable ({status})")
            }
        }
    }
}

impl Brief for flightdeck::judge::Samples {
    fn brief(&self) -> String {
        format!("{} / {} minutes", self.canary.len(), self.stable.len())
    }
}

impl Brief for () {
    fn brief(&self) -> String {
        "ok".into()
    }
}

impl Brief for bool {
    fn brief(&self) -> String {
        self.to_string()
    }
}

impl Brief for u64 {
    fn brief(&self) -> String {
        format!("ok v{self}")
    }
}

impl Brief for Created {
    fn brief(&self) -> String {
        format!("{self:?}")
    }
}

impl Brief for String {
    fn brief(&self) -> String {
        short_td(self).to_string()
    }
}

impl Brief for Option<String> {
    fn brief(&self) -> String {
        match self.as_deref() {
            Some(s) => {
                let tail = s.rsplit('/').next().unwrap_or(s);
                tail.get(..12).unwrap_or(tail).to_string()
            }
            None => "none".into(),
        }
    }
}

impl Brief for Option<flightdeck::ports::ServiceDeploymentView> {
    fn brief(&self) -> String {
        match self {
            Some(v) => format!(
                "{} at {} ({}%)",
                v.status,
                v.stage.as_deref().unwrap_or("-"),
                v.production_percent.unwrap_or(0)
            ),
            None => "none".into(),
        }
    }
}

impl Brief for Vec<(String, String)> {
    fn brief(&self) -> String {
        let tds: Vec<&str> = self.iter().map(|(_, td)| short_td(td)).collect();
        tds.join(", ")
    }
}

impl Brief for Stage {
    fn brief(&self) -> String {
        format!(
            "holder {} v{}",
            self.holder.as_deref().map(short).unwrap_or("-"),
            self.version
        )
    }
}

impl Brief for Deployment {
    fn brief(&self) -> String {
        format!("v{} {}", self.record_version, self.status())
    }
}

impl Brief for Vec<AuditEvent> {
    fn brief(&self) -> String {
        format!("{} events", self.len())
    }
}

impl Brief for Vec<flightdeck::ports::Tally> {
    fn brief(&self) -> String {
        format!("{} ended", self.len())
    }
}

impl Brief for Vec<StoppedTaskView> {
    fn brief(&self) -> String {
        let failed = self.iter().filter(|t| t.stop.is_failure()).count();
        format!("{} stopped, {failed} failed", self.len())
    }
}

impl Brief for u32 {
    fn brief(&self) -> String {
        self.to_string()
    }
}

impl Brief for Option<Registration> {
    fn brief(&self) -> String {
        match self {
            Some(r) => format!("{}/{}", r.service, r.environment),
            None => "none".into(),
        }
    }
}

impl Brief for Option<u32> {
    fn brief(&self) -> String {
        format!("{self:?}")
    }
}

impl Brief for Tags {
    fn brief(&self) -> String {
        match self {
            Some(tags) => tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            None => "not found".into(),
        }
    }
}

impl Brief for Option<(String, String)> {
    fn brief(&self) -> String {
        match self {
            Some((_, id)) => format!("bound to {}", short(id)),
            None => "new".into(),
        }
    }
}

impl Brief for Option<Deployment> {
    fn brief(&self) -> String {
        match self {
            Some(d) => format!("v{} {}", d.record_version, d.status()),
            None => "none".into(),
        }
    }
}

impl Brief for Vec<String> {
    fn brief(&self) -> String {
        format!(
            "[{}]",
            self.iter().map(|s| short(s)).collect::<Vec<_>>().join(" ")
        )
    }
}

impl Brief for Vec<Registration> {
    fn brief(&self) -> String {
        format!("{} registrations", self.len())
    }
}

impl Brief for Vec<Deployment> {
    fn brief(&self) -> String {
        format!("{} deployments", self.len())
    }
}

impl Brief for Page {
    fn brief(&self) -> String {
        format!("{} deployments", self.deployments.len())
    }
}

impl Brief for EcsService {
    fn brief(&self) -> String {
        let deployments: Vec<String> = self
            .deployments
            .iter()
            .map(|d| format!("{}:{}", short_td(&d.task_definition), d.running))
            .collect();
        format!(
            "{} desired {} running {} [{}]",
            short_td(&self.task_definition),
            self.desired_count,
            self.running_count,
            deployments.join(" ")
        )
    }
}

impl Brief for Vec<(String, u32)> {
    fn brief(&self) -> String {
        self.iter()
            .map(|(tg, w)| format!("{}={w}", tg_name(tg)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Brief for Vec<AlarmState> {
    fn brief(&self) -> String {
        self.iter()
            .map(|a| format!("{}={}", a.name, a.state))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn short_error(e: &PortError) -> String {
    match e {
        PortError::Conflict => "Conflict".to_string(),
        PortError::Remote { message, .. } => message.chars().take(40).collect(),
        other => other.to_string(),
    }
}

/// Returns `Pending` once (waking itself), then `Ready`: the executor's interleaving point.
#[derive(Default)]
pub struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub struct Store(pub Sim);
pub struct Ecs(pub Sim);
pub struct Traffic(pub Sim);
pub struct Sns(pub Sim);
pub struct SimClock(pub Sim);
pub struct Alarms(pub Sim);
pub struct Images(pub Sim);

impl DeploymentStore for Store {
    async fn registrations(&self) -> PortResult<Vec<Registration>> {
        self.0
            .call(
                "DynamoDB Query registrations",
                Kind::Read,
                String::new(),
                |w| Ok(w.store.registrations.values().cloned().collect()),
            )
            .await
    }

    async fn registration(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<Option<Registration>> {
        let key = (service.to_string(), environment.to_string());
        self.0
            .call(
                "DynamoDB GetItem registration",
                Kind::Read,
                format!("{service}/{environment}"),
                |w| Ok(w.store.registrations.get(&key).cloned()),
            )
            .await
    }

    async fn registrations_by(&self, key: &LookupKey) -> PortResult<Vec<Registration>> {
        self.0
            .call("DynamoDB Query lookup", Kind::Read, key.as_key(), |w| {
                Ok(w.store.registrations_by(key))
            })
            .await
    }

    async fn audit_trail(&self, id: &str) -> PortResult<Vec<AuditEvent>> {
        self.0
            .call(
                "DynamoDB Query audit",
                Kind::Read,
                short(id).to_string(),
                |w| Ok(w.store.audit.get(id).cloned().unwrap_or_default()),
            )
            .await
    }

    async fn put_registration(&self, registration: &Registration) -> PortResult<()> {
        let key = (
            registration.service.clone(),
            registration.environment.clone(),
        );
        self.0
            .call(
                "DynamoDB PutItem registration",
                Kind::Write,
                String::new(),
                |w| {
                    let stored: Vec<Registration> =
                        w.store.registrations.values().cloned().collect();
                    if let Some(taken) = registration.ecs_service_taken(&stored) {
                        return Err(PortError::Taken(taken));
                    }
                    w.store
                        .registrations
                        .insert(key.clone(), registration.clone());
                    Ok(())
                },
            )
            .await
    }

    async fn create(&self, deployment: &Deployment) -> PortResult<Created> {
        let what = short(&deployment.id).to_string();
        self.0
            .call("DynamoDB PutItem create", Kind::CondWrite, what, |w| {
                w.set_context(&deployment.id);
                w.store.create(deployment)
            })
            .await
    }

    async fn get(&self, id: &str) -> PortResult<Option<Deployment>> {
        self.0
            .call("DynamoDB GetItem", Kind::Read, short(id).to_string(), |w| {
                w.set_context(id);
                Ok(w.store.deployments.get(id).cloned())
            })
            .await
    }

    async fn save(&self, deployment: &mut Deployment) -> PortResult<()> {
        let copy = deployment.clone();
        let what = format!(
            "{} v{} {} out={}",
            short(&copy.id),
            copy.record_version,
            copy.status(),
            copy.outbox.len()
        );
        let stored = self
            .0
            .call(
                "DynamoDB TransactWriteItems save",
                Kind::CondWrite,
                what,
                |w| {
                    w.set_context(&copy.id);
                    w.save_deployment(&copy)
                },
            )
            .await?;
        *deployment = stored;
        Ok(())
    }

    async fn active(&self, service: &str, environment: &str) -> PortResult<Vec<String>> {
        // ASSUMES: the active index answers consistently (a GSI is eventually consistent).
        let prefix = format!("{service}#{environment}#");
        self.0
            .call("DynamoDB Query active", Kind::Read, prefix.clone(), |w| {
                Ok(w.store
                    .active_index()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, id)| id)
                    .collect())
            })
            .await
    }

    async fn all_active(&self) -> PortResult<Vec<String>> {
        self.0
            .call(
                "DynamoDB Query all_active",
                Kind::Read,
                String::new(),
                |w| {
                    Ok(w.store
                        .active_index()
                        .into_iter()
                        .map(|(_, id)| id)
                        .collect())
                },
            )
            .await
    }

    async fn latest(&self, service: &str, environment: &str) -> PortResult<Option<Deployment>> {
        self.0
            .call(
                "DynamoDB Query latest",
                Kind::Read,
                service.to_string(),
                |w| {
                    Ok(w.store
                        .by_service(service, environment)
                        .first()
                        .map(|d| (*d).clone()))
                },
            )
            .await
    }

    async fn remember(&self, key: &str) -> PortResult<Created> {
        self.0
            .call(
                "DynamoDB PutItem marker",
                Kind::CondWrite,
                key.to_string(),
                |w| {
                    Ok(if w.store.markers.insert(key.to_string()) {
                        Created::New
                    } else {
                        Created::AlreadyExists
                    })
                },
            )
            .await
    }

    async fn forget(&self, key: &str) -> PortResult<()> {
        self.0
            .call(
                "DynamoDB DeleteItem marker",
                Kind::Write,
                key.to_string(),
                |w| {
                    w.store.markers.remove(key);
                    Ok(())
                },
            )
            .await
    }

    async fn stage(&self, service: &str, environment: &str) -> PortResult<Stage> {
        let key = (service.to_string(), environment.to_string());
        self.0
            .call(
                "DynamoDB GetItem stage",
                Kind::Read,
                service.to_string(),
                |w| {
                    let stage = w.store.stages.get(&key).cloned().unwrap_or_default();
                    if let Some(h) = &stage.holder {
                        w.set_context(h);
                    }
                    Ok(stage)
                },
            )
            .await
    }

    async fn save_stage(
        &self,
        service: &str,
        environment: &str,
        stage: &mut Stage,
    ) -> PortResult<()> {
        let what = format!(
            "{service} holder {} v{}",
            stage.holder.as_deref().map(short).unwrap_or("-"),
            stage.version
        );
        let copy = stage.clone();
        let version = self
            .0
            .call("DynamoDB PutItem stage", Kind::CondWrite, what, |w| {
                if let Some(h) = &copy.holder {
                    w.set_context(h);
                }
                w.store.save_stage(service, environment, &copy)
            })
            .await?;
        stage.version = version;
        Ok(())
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        deployment_id: &str,
    ) -> PortResult<Option<(String, String)>> {
        self.0
            .call(
                "DynamoDB PutItem idempotency",
                Kind::CondWrite,
                key.to_string(),
                |w| {
                    if let Some(earlier) = w.store.idempotency.get(key) {
                        return Ok(Some(earlier.clone()));
                    }
                    w.store.idempotency.insert(
                        key.to_string(),
                        (fingerprint.to_string(), deployment_id.to_string()),
                    );
                    Ok(None)
                },
            )
            .await
    }

    async fn page(
        &self,
        service: &str,
        environment: &str,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<Page> {
        // ASSUMES: the cursor is opaque; here it is the offset into the newest-first listing.
        let start = match cursor {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| PortError::BadCursor)?,
        };
        self.0
            .call(
                "DynamoDB Query page",
                Kind::Read,
                service.to_string(),
                |w| {
                    let all: Vec<Deployment> = w
                        .store
                        .by_service(service, environment)
                        .into_iter()
                        .filter(|d| status.is_none_or(|s| d.status().as_str() == s))
                        .cloned()
                        .collect();
                    let end = (start + limit as usize).min(all.len());
                    Ok(Page {
                        deployments: all.get(start..end).map(<[_]>::to_vec).unwrap_or_default(),
                        next: (end < all.len()).then(|| end.to_string()),
                    })
                },
            )
            .await
    }

    async fn tally(&self, tally: &flightdeck::ports::Tally) -> PortResult<()> {
        let tally = tally.clone();
        self.0
            .call(
                "DynamoDB UpdateItem tally",
                Kind::Write,
                format!("{} {}", short(&tally.id), tally.status),
                |w| {
                    let key = (
                        tally.service.clone(),
                        tally.environment.clone(),
                        tally.id.clone(),
                    );
                    w.store.tallies.insert(key, tally.clone());
                    Ok(())
                },
            )
            .await
    }

    async fn tallies(
        &self,
        service: &str,
        environment: &str,
        since: chrono::NaiveDate,
    ) -> PortResult<Vec<flightdeck::ports::Tally>> {
        self.0
            .call(
                "DynamoDB Query summary",
                Kind::Read,
                service.to_string(),
                |w| {
                    Ok(w.store
                        .tallies
                        .values()
                        .filter(|t| t.in_summary(service, environment, since))
                        .cloned()
                        .collect())
                },
            )
            .await
    }
}

/// The simulated account tags every service and rule it has `flightdeck:managed=true`.
fn managed(exists: bool) -> Tags {
    let (key, value) = MANAGED_TAG;
    exists.then(|| vec![(key.to_string(), value.to_string())])
}

impl EcsControl for Ecs {
    async fn service_tags(&self, _cluster: &str, service: &str) -> PortResult<Tags> {
        self.0
            .call(
                "ECS DescribeServices",
                Kind::Read,
                service.to_string(),
                |w| Ok(managed(w.ecs.describe(service).is_some())),
            )
            .await
    }

    async fn service(&self, _cluster: &str, service: &str) -> PortResult<EcsService> {
        // ASSUMES: one cluster; services are named uniquely in it.
        self.0
            .call(
                "ECS DescribeServices",
                Kind::Read,
                service.to_string(),
                |w| {
                    w.ecs.describe(service).ok_or_else(|| {
                        PortError::remote("ECS DescribeServices", format!("{service} not found"))
                    })
                },
            )
            .await
    }

    async fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
        deployment_id: &str,
        retry: bool,
    ) -> PortResult<String> {
        // As the adapter does: the copy differs only in `container`'s image and carries the
        // deployment's tag; on a retry, a revision after `task_definition` that carries it (an
        // earlier attempt whose answer was lost) is returned.
        let what = format!("{} {}", short_td(task_definition), image_tail(image));
        self.0
            .call("ECS RegisterTaskDefinition", Kind::Write, what, |w| {
                if let Some(arn) = retry
                    .then(|| w.ecs.tagged_since(task_definition, deployment_id, 20))
                    .flatten()
                {
                    w.log(format!("  found {} registered already", short_td(&arn)));
                    return Ok(arn);
                }
                let family = w
                    .ecs
                    .task_definitions
                    .get(task_definition)
                    .filter(|td| td.container == container)
                    .map(|td| td.family.clone())
                    .ok_or_else(|| {
                        PortError::remote(
                            "ECS RegisterTaskDefinition",
                            format!("container `{container}` is not in {task_definition}"),
                        )
                    })?;
                let arn = w
                    .ecs
                    .register(&family, container, image, Some(deployment_id));
                w.log(format!("  registered {}", short_td(&arn)));
                w.mutation(MutationKind::Register {
                    task_definition: arn.clone(),
                    image: image.to_string(),
                });
                Ok(arn)
            })
            .await
    }

    async fn update_service(
        &self,
        _cluster: &str,
        service: &str,
        task_definition: &str,
        desired_count: Option<u32>,
    ) -> PortResult<Option<String>> {
        let what = format!("{service} {} {desired_count:?}", short_td(task_definition));
        self.0
            .call("ECS UpdateService", Kind::Write, what, |w| {
                let id = w
                    .ecs
                    .update_service(service, task_definition, desired_count)
                    .map_err(|e| PortError::remote("ECS UpdateService", e))?;
                w.mutation(MutationKind::UpdateService {
                    service: service.to_string(),
                    task_definition: task_definition.to_string(),
                });
                Ok(id)
            })
            .await
    }

    async fn update_service_native(
        &self,
        _cluster: &str,
        service: &str,
        task_definition: &str,
        strategy: &flightdeck::native::NativeStrategy,
    ) -> PortResult<Option<String>> {
        let what = format!(
            "{service} {} {}",
            short_td(task_definition),
            strategy.name()
        );
        self.0
            .call("ECS UpdateService", Kind::Write, what, |w| {
                let now = w.now;
                let arn = w
                    .ecs
                    .update_service_native(service, task_definition, strategy, now)
                    .map_err(|e| PortError::remote("ECS UpdateService", e))?;
                w.mutation(MutationKind::UpdateService {
                    service: service.to_string(),
                    task_definition: task_definition.to_string(),
                });
                Ok(arn)
            })
            .await
    }

    async fn service_deployment(
        &self,
        arn: &str,
    ) -> PortResult<Option<flightdeck::ports::ServiceDeploymentView>> {
        self.0
            .call(
                "ECS DescribeServiceDeployments",
                Kind::Read,
                super::ecs::short_sd(arn).to_string(),
                |w| Ok(w.ecs.service_deployments.get(arn).map(|sd| sd.view())),
            )
            .await
    }

    async fn revision_task_definitions(
        &self,
        revision_arns: &[String],
    ) -> PortResult<Vec<(String, String)>> {
        self.0
            .call(
                "ECS DescribeServiceRevisions",
                Kind::Read,
                format!("{} revisions", revision_arns.len()),
                |w| {
                    Ok(revision_arns
                        .iter()
                        .filter_map(|r| {
                            w.ecs
                                .revisions
                                .get(r)
                                .map(|(_, td)| (r.clone(), td.clone()))
                        })
                        .collect())
                },
            )
            .await
    }

    async fn stop_service_deployment(&self, arn: &str) -> PortResult<()> {
        self.0
            .call(
                "ECS StopServiceDeployment",
                Kind::Write,
                super::ecs::short_sd(arn).to_string(),
                |w| {
                    w.ecs
                        .stop_service_deployment(arn)
                        .map_err(|e| PortError::remote("ECS StopServiceDeployment", e))?;
                    let target = w
                        .ecs
                        .service_deployments
                        .get(arn)
                        .map(|sd| (sd.service.clone(), sd.source_td.clone()));
                    if let Some((service, task_definition)) = target {
                        w.mutation(MutationKind::UpdateService {
                            service,
                            task_definition,
                        });
                    }
                    Ok(())
                },
            )
            .await
    }

    async fn image_of(&self, task_definition: &str, container: &str) -> PortResult<Option<String>> {
        self.0
            .call(
                "ECS DescribeTaskDefinition",
                Kind::Read,
                short_td(task_definition).to_string(),
                |w| {
                    Ok(w.ecs
                        .task_definitions
                        .get(task_definition)
                        .filter(|td| td.container == container)
                        .map(|td| td.image.clone()))
                },
            )
            .await
    }

    async fn stopped_tasks(
        &self,
        _cluster: &str,
        service: &str,
    ) -> PortResult<Vec<StoppedTaskView>> {
        self.0
            .call(
                "ECS ListTasks+DescribeTasks stopped",
                Kind::Read,
                service.to_string(),
                |w| {
                    // Parsed with the same code as the events, so the stops are classified
                    // exactly as a task event's would be.
                    Ok(w.ecs
                        .stopped
                        .get(service)
                        .into_iter()
                        .flatten()
                        .filter_map(|body| {
                            let envelope = flightdeck::events::envelope(body.clone()).ok()?;
                            let task: flightdeck::events::EcsTaskStateChange =
                                flightdeck::events::detail(&envelope).ok()?;
                            let stop = task.stop()?;
                            Some(StoppedTaskView {
                                task_arn: task.task_arn,
                                task_definition_arn: task.task_definition_arn,
                                stop,
                            })
                        })
                        .collect())
                },
            )
            .await
    }

    async fn scale(&self, _cluster: &str, service: &str, desired_count: u32) -> PortResult<()> {
        let what = format!("{service} -> {desired_count}");
        self.0
            .call("ECS UpdateService scale", Kind::Write, what, |w| {
                w.ecs
                    .scale(service, desired_count)
                    .map_err(|e| PortError::remote("ECS UpdateService", e))?;
                w.mutation(MutationKind::Scale {
                    service: service.to_string(),
                    desired: desired_count,
                });
                Ok(())
            })
            .await
    }
}

fn image_tail(image: &str) -> &str {
    image
        .rsplit_once('@')
        .map(|(_, d)| d.get(..15).unwrap_or(d))
        .unwrap_or(image)
}

fn listener_arn(listener: &Listener) -> &str {
    match listener {
        Listener::Rule(arn) | Listener::Default(arn) => arn,
    }
}

impl TrafficControl for Traffic {
    async fn weights(&self, listener: &Listener) -> PortResult<Vec<(String, u32)>> {
        let arn = listener_arn(listener).to_string();
        self.0
            .call("ELBv2 DescribeRules", Kind::Read, String::new(), |w| {
                // ASSUMES (as the adapter does): the first forward action carries the weights.
                let actions = w.elb.rules.get(&arn).ok_or_else(|| {
                    PortError::remote("ELBv2 DescribeRules", format!("RuleNotFound: {arn}"))
                })?;
                actions
                    .iter()
                    .find_map(|a| match a {
                        RuleAction::Forward { groups, .. } => Some(groups.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        PortError::remote("ELBv2 DescribeRules", "the rule has no forward action")
                    })
            })
            .await
    }

    async fn set_weights(&self, listener: &Listener, weights: &[(String, u32)]) -> PortResult<()> {
        let arn = listener_arn(listener).to_string();
        let what = weights
            .iter()
            .map(|(tg, w)| format!("{}={w}", tg_name(tg)))
            .collect::<Vec<_>>()
            .join(" ");
        self.0
            .call("ELBv2 ModifyRule", Kind::Write, what, |w| {
                if !w.elb.rules.contains_key(&arn) {
                    return Err(PortError::remote(
                        "ELBv2 ModifyRule",
                        format!("RuleNotFound: {arn}"),
                    ));
                }
                // As the adapter does: the forward action's weights change, every other action
                // and the stickiness stay. (The adapter reads and writes in two calls; here it is
                // one, so a rule edited by someone else in between is not modelled.)
                let mut actions = w.elb.rules.get(&arn).cloned().unwrap_or_default();
                let mut found = false;
                for action in actions.iter_mut() {
                    if let RuleAction::Forward { groups, .. } = action
                        && !found
                    {
                        *groups = weights.to_vec();
                        found = true;
                    }
                }
                if !found {
                    return Err(PortError::remote(
                        "ELBv2 weights",
                        "the rule has no forward action",
                    ));
                }
                w.elb.rules.insert(arn.clone(), actions.clone());
                let now = w.now;
                w.elb.writes.push((now, arn.clone(), actions));
                w.mutation(MutationKind::SetWeights { rule: arn.clone() });
                Ok(())
            })
            .await
    }

    async fn resource_tags(&self, arn: &str) -> PortResult<Tags> {
        let arn = arn.to_string();
        self.0
            .call("ELBv2 DescribeTags", Kind::Read, arn.clone(), |w| {
                Ok(managed(w.elb.rules.contains_key(&arn)))
            })
            .await
    }

    async fn healthy_targets(&self, target_group_arn: &str) -> PortResult<u32> {
        let tg = target_group_arn.to_string();
        self.0
            .call(
                "ELBv2 DescribeTargetHealth",
                Kind::Read,
                tg_name(&tg).to_string(),
                |w| {
                    let service = w.elb.target_groups.get(&tg).cloned().ok_or_else(|| {
                        PortError::remote("ELBv2 DescribeTargetHealth", "TargetGroupNotFound")
                    })?;
                    let (_registered, healthy) = w.ecs.target_health(&service, w.now);
                    if let Some(task) = w.current {
                        let now = w.now;
                        w.health_reads.insert(task, (tg.clone(), healthy, now));
                    }
                    Ok(healthy)
                },
            )
            .await
    }
}

pub fn tg_name(arn: &str) -> &str {
    arn.split('/').nth(1).unwrap_or(arn)
}

impl Notifier for Sns {
    async fn publish(&self, alert: &Alert) -> PortResult<()> {
        let event_type = alert.document.event_type.as_str().to_string();
        let deployment_id = alert.document.deployment_id.clone();
        let what = format!(
            "{event_type} {}",
            deployment_id.as_deref().map(short).unwrap_or("-")
        );
        let mut published = None;
        let result = self
            .0
            .call("SNS Publish", Kind::Write, what, |w| {
                let task = w.current.unwrap_or(usize::MAX);
                let now = w.now;
                w.sns.push(Published {
                    at: now,
                    event_type: event_type.clone(),
                    deployment_id: deployment_id.clone(),
                    task,
                    excused: false,
                });
                published = Some(w.sns.len() - 1);
                Ok(())
            })
            .await;
        if let Some(index) = published {
            let mut w = self.0.lock();
            match (&result, w.current) {
                // Published, but the publisher was told it failed: it will send it again.
                (Err(_), _) => {
                    if let Some(p) = w.sns.get_mut(index) {
                        p.excused = true;
                    }
                }
                (Ok(()), Some(task)) => {
                    w.unconfirmed_publish.insert(task, index);
                }
                (Ok(()), None) => {}
            }
        }
        result
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().now
    }
}

impl AlarmReader for Alarms {
    async fn states(&self, names: &[String]) -> PortResult<Vec<AlarmState>> {
        self.0
            .call(
                "CloudWatch DescribeAlarms",
                Kind::Read,
                names.join(","),
                |w| {
                    Ok(names
                        .iter()
                        .filter_map(|n| w.alarms.get(n))
                        .map(|a| AlarmState {
                            name: a.name.clone(),
                            state: a.state.clone(),
                            reason: a.reason.clone(),
                        })
                        .collect())
                },
            )
            .await
    }
}

impl ImageResolver for Images {
    async fn digest_of(&self, repository: &str, tag: &str) -> PortResult<Option<String>> {
        let key = (repository.to_string(), tag.to_string());
        self.0
            .call("ECR DescribeImages", Kind::Read, tag.to_string(), |w| {
                Ok(w.images.get(&key).cloned())
            })
            .await
    }

    async fn scan_findings(
        &self,
        _repository: &str,
        digest: &str,
    ) -> PortResult<flightdeck::scan::ScanReport> {
        self.0
            .call(
                "ECR DescribeImageScanFindings",
                Kind::Read,
                digest.to_string(),
                |w| {
                    Ok(w.scans.get(digest).cloned().unwrap_or(
                        flightdeck::scan::ScanReport::Pending {
                            status: "NOT_STARTED".to_string(),
                        },
                    ))
                },
            )
            .await
    }
}

impl flightdeck::ports::MetricsReader for Alarms {
    async fn alb_minutes(
        &self,
        _load_balancer: &str,
        canary_target_group: &str,
        stable_target_group: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> PortResult<flightdeck::judge::Samples> {
        self.0
            .call(
                "CloudWatch GetMetricData",
                Kind::Read,
                canary_target_group.to_string(),
                |w| {
                    let minutes = |tg: &str| {
                        w.alb_metrics
                            .get(tg)
                            .map(|m| {
                                m.iter()
                                    .filter(|(at, _)| *at >= from && *at < to)
                                    .map(|(_, minute)| *minute)
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    Ok(flightdeck::judge::Samples {
                        canary: minutes(canary_target_group),
                        stable: minutes(stable_target_group),
                    })
                },
            )
            .await
    }
}
