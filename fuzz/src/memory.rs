//! In-memory ports, so that the handlers and the API (which take their input through public
//! async functions generic over the ports) can be fuzzed whole, private parsing included. They
//! never fail and never wait: any 5xx or handler error other than a refusal of the input is the
//! code's, not the fakes'.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, TimeZone, Utc};
use flightdeck::alerts::Alert;
use flightdeck::deployment::{AuditEvent, Deployment, Listener, Stage};
use flightdeck::handlers::Ports;
use flightdeck::ports::{
    Clock, Created, DeploymentStore, EcsControl, EcsService, ImageResolver, Notifier, Page,
    MANAGED_TAG, PortError, PortResult, ServiceDeployment, StoppedTaskView, Tags, TrafficControl,
};
use flightdeck::registration::{LookupKey, Registration};

/// Runs a future of the in-memory ports to completion: they are always ready.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a handler waited on something the in-memory ports never wake");
}

/// The registrations of the local stack (infra/local/registrations).
const REGISTRATIONS: &[(&str, &str, &str)] = &[
    (
        "checkout-api",
        "staging",
        include_str!("../../infra/local/registrations/checkout-api.staging.json"),
    ),
    (
        "checkout-web",
        "production",
        include_str!("../../infra/local/registrations/checkout-web.production.json"),
    ),
    (
        "checkout-web",
        "staging",
        include_str!("../../infra/local/registrations/checkout-web.staging.json"),
    ),
];

/// Deployment records in several states (fuzz/seeds/deployment_record).
const RECORDS: &[&str] = &[
    include_str!("../seeds/deployment_record/checkout-api.staging.1-pending.json"),
    include_str!("../seeds/deployment_record/checkout-api.staging.4-after-2.json"),
    include_str!("../seeds/deployment_record/checkout-web.production.7-after-5.json"),
    include_str!("../seeds/deployment_record/checkout-web.staging.7-after-5.json"),
];

fn world() -> &'static (Vec<Registration>, Vec<Deployment>) {
    static WORLD: OnceLock<(Vec<Registration>, Vec<Deployment>)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let registrations = REGISTRATIONS
            .iter()
            .map(|(s, e, json)| Registration::parse(s, e, json).expect("a sample registration"))
            .collect();
        let deployments = RECORDS
            .iter()
            .map(|json| serde_json::from_str(json).expect("a sample record"))
            .collect();
        (registrations, deployments)
    })
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 5, 0).unwrap()
}

/// The ids of the sample records, for inputs that act on them.
pub fn sample_ids() -> Vec<String> {
    world().1.iter().map(|d| d.id.clone()).collect()
}

#[derive(Default)]
pub struct Store {
    registrations: Mutex<Vec<Registration>>,
    deployments: Mutex<BTreeMap<String, Deployment>>,
    markers: Mutex<BTreeSet<String>>,
    stages: Mutex<BTreeMap<(String, String), Stage>>,
    audit: Mutex<BTreeMap<String, Vec<AuditEvent>>>,
    keys: Mutex<BTreeMap<String, (String, String)>>,
    tallies: Mutex<BTreeMap<String, flightdeck::ports::Tally>>,
}

impl Store {
    /// The local stack's registrations and the sample records, each holding its slot if in flight.
    pub fn sample() -> Store {
        let (registrations, deployments) = world();
        let store = Store::default();
        *store.registrations.lock().unwrap() = registrations.clone();
        for d in deployments {
            if d.status().is_active() && d.queued_behind().is_none() {
                let stage = Stage {
                    holder: Some(d.id.clone()),
                    version: 1,
                    ..Stage::default()
                };
                store
                    .stages
                    .lock()
                    .unwrap()
                    .insert((d.service.clone(), d.environment.clone()), stage);
            }
            store
                .deployments
                .lock()
                .unwrap()
                .insert(d.id.clone(), d.clone());
        }
        store
    }

    /// Every record, by id.
    pub fn snapshot(&self) -> Vec<Deployment> {
        self.deployments.lock().unwrap().values().cloned().collect()
    }

    fn of(&self, service: &str, environment: &str) -> Vec<Deployment> {
        let mut found: Vec<Deployment> = self
            .deployments
            .lock()
            .unwrap()
            .values()
            .filter(|d| d.service == service && d.environment == environment)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        found
    }
}

impl Store {
    /// The record as stored (its recent audit events), with its unsaved events appended to the
    /// trail, as the DynamoDB store's transaction does.
    fn with_trail(&self, d: &Deployment) -> Deployment {
        let mut audit = self.audit.lock().unwrap();
        let trail = audit.entry(d.id.clone()).or_default();
        for (seq, event) in d.unsaved_events() {
            trail.truncate(seq as usize);
            trail.push(event.clone());
        }
        let mut stored = d.clone();
        stored.events_written();
        stored
    }
}

impl DeploymentStore for Store {
    async fn registrations(&self) -> PortResult<Vec<Registration>> {
        Ok(self.registrations.lock().unwrap().clone())
    }

    async fn put_registration(&self, registration: &Registration) -> PortResult<()> {
        let mut all = self.registrations.lock().unwrap();
        if let Some(taken) = registration.ecs_service_taken(&all) {
            return Err(PortError::Taken(taken));
        }
        all.retain(|r| {
            (r.service.as_str(), r.environment.as_str())
                != (
                    registration.service.as_str(),
                    registration.environment.as_str(),
                )
        });
        all.push(registration.clone());
        Ok(())
    }

    async fn registration(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<Option<Registration>> {
        Ok(self
            .registrations
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.service == service && r.environment == environment)
            .cloned())
    }

    async fn registrations_by(&self, key: &LookupKey) -> PortResult<Vec<Registration>> {
        Ok(self
            .registrations
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.lookup_keys().contains(key))
            .cloned()
            .collect())
    }

    async fn create(&self, deployment: &Deployment) -> PortResult<Created> {
        let mut all = self.deployments.lock().unwrap();
        if all.contains_key(&deployment.id) {
            return Ok(Created::AlreadyExists);
        }
        let stored = self.with_trail(deployment);
        all.insert(stored.id.clone(), stored);
        Ok(Created::New)
    }

    async fn audit_trail(&self, id: &str) -> PortResult<Vec<AuditEvent>> {
        Ok(self
            .audit
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default())
    }

    async fn get(&self, id: &str) -> PortResult<Option<Deployment>> {
        Ok(self.deployments.lock().unwrap().get(id).cloned())
    }

    async fn save(&self, deployment: &mut Deployment) -> PortResult<()> {
        let mut all = self.deployments.lock().unwrap();
        let stored = all.get(&deployment.id).map(|d| d.record_version);
        if stored != Some(deployment.record_version) {
            return Err(PortError::Conflict);
        }
        deployment.record_version += 1;
        *deployment = self.with_trail(deployment);
        all.insert(deployment.id.clone(), deployment.clone());
        Ok(())
    }

    async fn active(&self, service: &str, environment: &str) -> PortResult<Vec<String>> {
        Ok(self
            .of(service, environment)
            .into_iter()
            .filter(Deployment::needs_reconcile)
            .map(|d| d.id)
            .collect())
    }

    async fn all_active(&self) -> PortResult<Vec<String>> {
        Ok(self
            .deployments
            .lock()
            .unwrap()
            .values()
            .filter(|d| d.needs_reconcile())
            .map(|d| d.id.clone())
            .collect())
    }

    async fn latest(&self, service: &str, environment: &str) -> PortResult<Option<Deployment>> {
        Ok(self.of(service, environment).pop())
    }

    async fn remember(&self, key: &str) -> PortResult<Created> {
        Ok(if self.markers.lock().unwrap().insert(key.to_string()) {
            Created::New
        } else {
            Created::AlreadyExists
        })
    }

    async fn forget(&self, key: &str) -> PortResult<()> {
        self.markers.lock().unwrap().remove(key);
        Ok(())
    }

    async fn stage(&self, service: &str, environment: &str) -> PortResult<Stage> {
        let stages = self.stages.lock().unwrap();
        Ok(stages
            .get(&(service.to_string(), environment.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    async fn save_stage(
        &self,
        service: &str,
        environment: &str,
        stage: &mut Stage,
    ) -> PortResult<()> {
        let mut stages = self.stages.lock().unwrap();
        let key = (service.to_string(), environment.to_string());
        if stages.get(&key).map_or(0, |s| s.version) != stage.version {
            return Err(PortError::Conflict);
        }
        stage.version += 1;
        stages.insert(key, stage.clone());
        Ok(())
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        deployment_id: &str,
    ) -> PortResult<Option<(String, String)>> {
        let mut keys = self.keys.lock().unwrap();
        if let Some(earlier) = keys.get(key) {
            return Ok(Some(earlier.clone()));
        }
        keys.insert(
            key.to_string(),
            (fingerprint.to_string(), deployment_id.to_string()),
        );
        Ok(None)
    }

    async fn page(
        &self,
        service: &str,
        environment: &str,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<Page> {
        // Tokens are positions as decimal text; anything else is not one of ours.
        let start = match cursor {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| PortError::BadCursor)?,
        };
        let mut all: Vec<Deployment> = self
            .of(service, environment)
            .into_iter()
            .rev()
            .filter(|d| status.is_none_or(|s| d.status().as_str() == s))
            .collect();
        let end = start.saturating_add(limit as usize).min(all.len());
        let next = (end < all.len()).then(|| end.to_string());
        let deployments = if start < all.len() {
            all.drain(start..end).collect()
        } else {
            Vec::new()
        };
        Ok(Page { deployments, next })
    }

    async fn tally(&self, tally: &flightdeck::ports::Tally) -> PortResult<()> {
        self.tallies
            .lock()
            .unwrap()
            .insert(tally.id.clone(), tally.clone());
        Ok(())
    }

    async fn tallies(
        &self,
        service: &str,
        environment: &str,
        since: chrono::NaiveDate,
    ) -> PortResult<Vec<flightdeck::ports::Tally>> {
        Ok(self
            .tallies
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.in_summary(service, environment, since))
            .cloned()
            .collect())
    }
}

/// ECS: every service runs revision 6 of its task definition, two tasks, and takes any update.
pub struct Ecs;

impl EcsControl for Ecs {
    async fn service_tags(&self, _cluster: &str, _service: &str) -> PortResult<Tags> {
        let (key, value) = MANAGED_TAG;
        Ok(Some(vec![(key.to_string(), value.to_string())]))
    }

    async fn service(&self, _cluster: &str, service: &str) -> PortResult<EcsService> {
        let td = format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{service}:6");
        Ok(EcsService {
            task_definition: td.clone(),
            desired_count: 2,
            running_count: 2,
            deployments: vec![ServiceDeployment {
                task_definition: td,
                running: 2,
                completed: true,
            }],
            current_service_deployment: None,
            production_listener_rule: None,
        })
    }

    async fn update_service_native(
        &self,
        _cluster: &str,
        service: &str,
        _task_definition: &str,
        _strategy: &flightdeck::native::NativeStrategy,
    ) -> PortResult<Option<String>> {
        Ok(Some(format!(
            "arn:aws:ecs:eu-west-1:123456789012:service-deployment/prod/{service}/sd1"
        )))
    }

    async fn service_deployment(
        &self,
        _arn: &str,
    ) -> PortResult<Option<flightdeck::ports::ServiceDeploymentView>> {
        Ok(None)
    }

    async fn revision_task_definitions(
        &self,
        _revision_arns: &[String],
    ) -> PortResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    async fn stop_service_deployment(&self, _arn: &str) -> PortResult<()> {
        Ok(())
    }

    async fn image_of(
        &self,
        _task_definition: &str,
        _container: &str,
    ) -> PortResult<Option<String>> {
        Ok(None)
    }

    async fn register_revision(
        &self,
        task_definition: &str,
        _container: &str,
        _image: &str,
        _deployment_id: &str,
        _retry: bool,
    ) -> PortResult<String> {
        let family = task_definition
            .rsplit_once(':')
            .map_or(task_definition, |(f, _)| f);
        Ok(format!("{family}:7"))
    }

    async fn update_service(
        &self,
        _cluster: &str,
        _service: &str,
        _task_definition: &str,
        _desired_count: Option<u32>,
    ) -> PortResult<Option<String>> {
        Ok(Some("ecs-svc/1234567890".to_string()))
    }

    async fn stopped_tasks(
        &self,
        _cluster: &str,
        _service: &str,
    ) -> PortResult<Vec<StoppedTaskView>> {
        Ok(Vec::new())
    }

    async fn scale(&self, _cluster: &str, _service: &str, _desired_count: u32) -> PortResult<()> {
        Ok(())
    }
}

/// The listener: all traffic on blue until told otherwise; every target healthy.
#[derive(Default)]
pub struct Traffic(Mutex<Option<Vec<(String, u32)>>>);

impl TrafficControl for Traffic {
    async fn weights(&self, listener: &Listener) -> PortResult<Vec<(String, u32)>> {
        if let Some(w) = self.0.lock().unwrap().clone() {
            return Ok(w);
        }
        let _ = listener;
        Ok(vec![
            (
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-web-blue/0123456789abcdef".to_string(),
                100,
            ),
            (
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/checkout-web-green/fedcba9876543210".to_string(),
                0,
            ),
        ])
    }

    async fn set_weights(&self, _listener: &Listener, weights: &[(String, u32)]) -> PortResult<()> {
        *self.0.lock().unwrap() = Some(weights.to_vec());
        Ok(())
    }

    async fn healthy_targets(&self, _target_group_arn: &str) -> PortResult<u32> {
        Ok(2)
    }

    async fn resource_tags(&self, _arn: &str) -> PortResult<Tags> {
        let (key, value) = MANAGED_TAG;
        Ok(Some(vec![(key.to_string(), value.to_string())]))
    }
}

/// Alerts are kept, so a target can check what would have been sent.
#[derive(Default)]
pub struct Outbox(pub Mutex<Vec<Alert>>);

impl Notifier for Outbox {
    async fn publish(&self, alert: &Alert) -> PortResult<()> {
        self.0.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

/// ECR: every tag points at one digest, except `missing`, which does not exist.
pub struct Images;

impl ImageResolver for Images {
    async fn digest_of(&self, _repository: &str, tag: &str) -> PortResult<Option<String>> {
        Ok((tag != "missing").then(|| format!("sha256:{}", "cd".repeat(32))))
    }

    /// Every image scanned, without findings.
    async fn scan_findings(
        &self,
        _repository: &str,
        _digest: &str,
    ) -> PortResult<flightdeck::scan::ScanReport> {
        Ok(flightdeck::scan::ScanReport::Complete {
            counts: Vec::new(),
            findings: Vec::new(),
        })
    }
}

pub type MemoryPorts = Ports<Store, Ecs, Traffic, Outbox, FixedClock, Images>;

/// Fresh ports over the sample world.
pub fn ports() -> MemoryPorts {
    Ports {
        store: Store::sample(),
        ecs: Ecs,
        traffic: Traffic::default(),
        notifier: Outbox::default(),
        clock: FixedClock,
        images: Images,
    }
}
