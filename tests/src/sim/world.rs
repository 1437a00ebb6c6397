//! The simulated AWS account: DynamoDB table, ECS (see `ecs`), ELBv2 listener rules and target
//! health, CloudWatch alarms, SNS, EventBridge's bus, the clock, the fault plan, and the trace.
//! Everything here is plain data mutated by the port wrappers (`ports`) and the scheduler.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use flightdeck::deployment::{AuditEvent, Deployment, Stage};
use flightdeck::ports::{Created, PortError, PortResult};
use flightdeck::registration::{LookupKey, Registration};
use serde_json::Value;

use super::ecs::Ecs;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";
/// DynamoDB refuses items over 400 KB.
pub const DYNAMODB_ITEM_LIMIT: usize = 400 * 1024;

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Which invocation a port call belongs to.
pub type TaskId = usize;

/// How often things go wrong; all zero in the quiet phase.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A port call fails before its effect (throttling, 5xx).
    pub before: f64,
    /// A mutating call takes effect but its answer is lost.
    pub lost: f64,
    /// An invocation is stopped at an await point (timeout, crash).
    pub drop: f64,
    /// An event is never delivered.
    pub event_loss: f64,
    /// An event is delivered twice.
    pub event_dup: f64,
    /// An event is delivered minutes late.
    pub event_late: f64,
}

/// What kind of call a port call is, for the faults it can suffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    /// A mutation whose lost answer surfaces as an error.
    Write,
    /// A DynamoDB conditional write: a lost answer is an error, or the SDK's retry finds its
    /// own write and reports the condition failed.
    CondWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Before,
    Lost,
    /// The write landed; the SDK retried and the retry's condition failed.
    RetrySeesOwnWrite,
}

/// A mutating ECS or ELBv2 call, attributed to the deployment its invocation worked on last.
#[derive(Clone, Debug)]
pub struct Mutation {
    pub task: TaskId,
    pub deployment: Option<String>,
    pub what: MutationKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MutationKind {
    Register {
        task_definition: String,
        image: String,
    },
    UpdateService {
        service: String,
        task_definition: String,
    },
    Scale {
        service: String,
        desired: u32,
    },
    SetWeights {
        rule: String,
    },
}

impl MutationKind {
    /// The ECS service or listener rule the call changed.
    pub fn target(&self) -> Option<&str> {
        match self {
            MutationKind::Register { .. } => None,
            MutationKind::UpdateService { service, .. } | MutationKind::Scale { service, .. } => {
                Some(service)
            }
            MutationKind::SetWeights { rule } => Some(rule),
        }
    }
}

/// The DynamoDB table, item by item, with the conditions the store trait documents.
#[derive(Default)]
pub struct Store {
    pub registrations: BTreeMap<(String, String), Registration>,
    pub deployments: BTreeMap<String, Deployment>,
    /// Stage items (in-flight slot, colour owners, scale lock) by service and environment.
    pub stages: BTreeMap<(String, String), Stage>,
    /// Audit events, each deployment's trail in order (items of their own, as in DynamoDB).
    pub audit: BTreeMap<String, Vec<AuditEvent>>,
    pub markers: BTreeSet<String>,
    /// The `/metrics` summary: ended deployments by service, environment and id.
    pub tallies: BTreeMap<(String, String, String), flightdeck::ports::Tally>,
    pub idempotency: BTreeMap<String, (String, String)>,
    pub largest_item: usize,
    pub largest_item_id: String,
    /// Deployment writes whose JSON exceeded the record bound (id, bytes), for the invariant.
    pub oversized: Vec<(String, usize)>,
    /// Bumped on every deployment write, so checks can skip unchanged steps.
    pub generation: u64,
    /// The last measured JSON size of each record, by the lengths of its lists.
    sizes: BTreeMap<String, ((usize, usize, usize), usize)>,
}

struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The record bound of DESIGN.md ("under 16 KB").
pub const RECORD_BOUND: usize = 16 * 1024;

impl Store {
    /// The record's JSON size. Serialising every write dominates a run, so a record whose
    /// audit trail, task list and outbox have the same lengths as at its last measurement is
    /// taken to have that size still (its other fields vary by a few bytes at most).
    fn json_size(&mut self, d: &Deployment) -> usize {
        let shape = (d.events.len(), d.failed_task_ids.len(), d.outbox.len());
        if let Some((known, size)) = self.sizes.get(&d.id)
            && *known == shape
        {
            return *size;
        }
        let mut count = CountingWriter(0);
        let size = match serde_json::to_writer(&mut count, d) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        };
        self.sizes.insert(d.id.clone(), (shape, size));
        size
    }

    fn size_check(&mut self, d: &Deployment) -> PortResult<()> {
        let size = self.json_size(d);
        if size > self.largest_item {
            self.largest_item = size;
            self.largest_item_id = d.id.clone();
        }
        if size > RECORD_BOUND {
            self.oversized.push((d.id.clone(), size));
        }
        if size > DYNAMODB_ITEM_LIMIT {
            return Err(PortError::remote(
                "DynamoDB PutItem",
                "ValidationException: Item size has exceeded the maximum allowed size",
            ));
        }
        Ok(())
    }

    /// The record as stored (its recent audit events) and its unsaved events, written together
    /// as one transaction would.
    fn write_record(&mut self, d: &Deployment) -> PortResult<Deployment> {
        let unsaved: Vec<(u32, AuditEvent)> = d
            .unsaved_events()
            .into_iter()
            .map(|(seq, e)| (seq, e.clone()))
            .collect();
        let mut stored = d.clone();
        stored.events_written();
        self.size_check(&stored)?;
        let trail = self.audit.entry(stored.id.clone()).or_default();
        for (seq, event) in unsaved {
            let seq = seq as usize;
            if seq < trail.len() {
                trail[seq] = event;
            } else {
                trail.push(event);
            }
        }
        self.deployments.insert(stored.id.clone(), stored.clone());
        self.generation += 1;
        Ok(stored)
    }

    pub fn create(&mut self, d: &Deployment) -> PortResult<Created> {
        if self.deployments.contains_key(&d.id) {
            return Ok(Created::AlreadyExists);
        }
        self.write_record(d)?;
        Ok(Created::New)
    }

    /// Conditional on the stored `record_version`; returns the record as stored.
    pub fn save(&mut self, d: &Deployment) -> PortResult<Deployment> {
        let expected = d.record_version;
        match self.deployments.get(&d.id) {
            Some(stored) if stored.record_version == expected => {}
            _ => return Err(PortError::Conflict),
        }
        let mut next = d.clone();
        next.record_version = expected + 1;
        self.write_record(&next)
    }

    /// Registrations an event's key leads to, as the lookup items would answer.
    pub fn registrations_by(&self, key: &LookupKey) -> Vec<Registration> {
        self.registrations
            .values()
            .filter(|r| r.lookup_keys().contains(key))
            .cloned()
            .collect()
    }

    /// Conditional on the stored stage's version (absent for 0); returns the new version.
    pub fn save_stage(
        &mut self,
        service: &str,
        environment: &str,
        stage: &Stage,
    ) -> PortResult<u64> {
        let key = (service.to_string(), environment.to_string());
        let stored = self.stages.get(&key).map_or(0, |s| s.version);
        if stored != stage.version {
            return Err(PortError::Conflict);
        }
        let mut next = stage.clone();
        next.version = stage.version + 1;
        self.stages.insert(key, next);
        Ok(stage.version + 1)
    }

    /// The sparse active index (`svc#env#created_at#id`) of records that need reconciling.
    /// ASSUMES: creation times are whole milliseconds, so ordering by time equals ordering the
    /// index's RFC 3339 millisecond strings.
    pub fn active_index(&self) -> Vec<(String, String)> {
        let mut keys: Vec<&Deployment> = self
            .deployments
            .values()
            .filter(|d| d.needs_reconcile())
            .collect();
        keys.sort_by(|a, b| {
            (&a.service, &a.environment, a.created_at, &a.id).cmp(&(
                &b.service,
                &b.environment,
                b.created_at,
                &b.id,
            ))
        });
        keys.into_iter()
            .map(|d| (format!("{}#{}#", d.service, d.environment), d.id.clone()))
            .collect()
    }

    /// The by-service index, newest first.
    pub fn by_service(&self, service: &str, environment: &str) -> Vec<&Deployment> {
        let mut found: Vec<&Deployment> = self
            .deployments
            .values()
            .filter(|d| d.service == service && d.environment == environment)
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        found
    }
}

/// One action of a listener rule, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleAction {
    AuthenticateOidc {
        issuer: String,
        client_id: String,
    },
    Forward {
        groups: Vec<(String, u32)>,
        /// Target-group stickiness duration in seconds, when enabled.
        stickiness: Option<u32>,
    },
}

/// ELBv2: listener rules (every write recorded) and target groups.
#[derive(Default)]
pub struct Elb {
    pub rules: BTreeMap<String, Vec<RuleAction>>,
    pub initial: BTreeMap<String, Vec<RuleAction>>,
    /// Target group ARN -> the ECS service registered with it.
    pub target_groups: BTreeMap<String, String>,
    pub writes: Vec<(DateTime<Utc>, String, Vec<RuleAction>)>,
}

impl Elb {
    /// The forward weights of a rule: (target group, weight).
    pub fn weights(&self, rule: &str) -> &[(String, u32)] {
        self.rules
            .get(rule)
            .into_iter()
            .flatten()
            .find_map(|a| match a {
                RuleAction::Forward { groups, .. } => Some(groups.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Percent of traffic a rule sends to `tg`.
    pub fn percent_to(&self, rule: &str, tg: &str) -> u32 {
        let weights = self.weights(rule);
        let total: u32 = weights.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return 0;
        }
        let to: u32 = weights
            .iter()
            .filter(|(arn, _)| arn == tg)
            .map(|(_, w)| *w)
            .sum();
        to * 100 / total
    }
}

/// One CloudWatch alarm, watching one ECS service (rolling) or a colour pair.
#[derive(Clone, Debug)]
pub struct Alarm {
    pub name: String,
    pub state: String,
    pub reason: String,
    /// Since when a misbehaving revision has been taking traffic, if it is.
    pub bad_since: Option<DateTime<Utc>>,
    pub good_since: Option<DateTime<Utc>>,
    /// The registration (index) whose traffic it watches.
    pub registration: usize,
}

#[derive(Clone, Debug)]
pub struct Published {
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub deployment_id: Option<String>,
    pub task: TaskId,
    /// The publisher may legitimately publish it again: its answer was lost, or the invocation
    /// was stopped or failed before it could record that it had published.
    pub excused: bool,
}

/// Which function an event goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Push,
    Ecs,
    Alarm,
}

#[derive(Clone, Debug)]
pub struct BusEvent {
    pub seq: u64,
    pub target: Target,
    pub deliver_at: DateTime<Utc>,
    pub body: Value,
    /// Lambda's retries of a failed asynchronous invocation still left.
    pub retries_left: u8,
    pub label: String,
}

/// A running hash of the trace and its last lines (all of them when replaying one seed).
pub struct Trace {
    pub hash: u64,
    pub lines: u64,
    pub tail: VecDeque<String>,
    pub full: Option<Vec<String>>,
}

const TAIL: usize = 60;

impl Trace {
    fn new(keep_all: bool) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            tail: VecDeque::with_capacity(TAIL),
            full: keep_all.then(Vec::new),
        }
    }

    pub fn push(&mut self, line: String) {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        if let Some(full) = self.full.as_mut() {
            full.push(line.clone());
        }
        self.tail.push_back(line);
    }
}

pub struct World {
    pub now: DateTime<Utc>,
    pub rng: fastrand::Rng,
    pub faults: Faults,
    pub quiet: bool,
    /// Port operations (by name, e.g. "DynamoDB Query active") that fail before taking effect
    /// while listed: scripted outages for tests; the seeded runs never set it.
    pub failing: Vec<&'static str>,
    pub store: Store,
    pub ecs: Ecs,
    pub elb: Elb,
    pub alarms: BTreeMap<String, Alarm>,
    pub sns: Vec<Published>,
    pub images: BTreeMap<(String, String), String>,
    pub bus: Vec<BusEvent>,
    pub next_seq: u64,
    /// The invocation being polled.
    pub current: Option<TaskId>,
    /// The deployment each invocation worked on last (store calls name it).
    pub context: BTreeMap<TaskId, String>,
    /// The publish each invocation has not yet followed with a successful call.
    pub unconfirmed_publish: BTreeMap<TaskId, usize>,
    /// Mutating ECS/ELBv2 calls of the current step.
    pub step_mutations: Vec<Mutation>,
    /// Revisions registered per deployment (attributed).
    pub registrations_by_deployment: BTreeMap<String, Vec<String>>,
    /// The deployment that last changed what serves (UpdateService, ModifyRule) per ECS
    /// service or listener rule, with a running count to order them.
    pub last_changed_by: BTreeMap<String, (u64, String)>,
    changes: u64,
    pub port_calls: u64,
    pub faults_injected: u64,
    /// Outbox claims each running invocation made: (deployment, effect seq, claimed at).
    pub claims: BTreeMap<TaskId, Vec<(String, u32, DateTime<Utc>)>>,
    /// Invocations whose DynamoDB calls were refused after they had claimed an effect: with the
    /// store refusing, nothing can release a claim.
    pub store_refused_after_claim: BTreeSet<TaskId>,
    /// Every ECS event is lost (the reconcile loop alone must get deployments to their end).
    pub drop_ecs_events: bool,
    /// The last DescribeTargetHealth each invocation made: (target group, healthy, when).
    pub health_reads: BTreeMap<TaskId, (String, u32, DateTime<Utc>)>,
    /// ECR scan results by image digest (none: no scan started yet).
    pub scans: BTreeMap<String, flightdeck::scan::ScanReport>,
    /// Per-minute ALB samples by target group (CloudWatch's `targetgroup/NAME/ID`).
    pub alb_metrics: BTreeMap<String, Vec<(DateTime<Utc>, flightdeck::judge::Minute)>>,
    /// The minute whose ALB samples are being gathered (recorded when it is over).
    pub metrics_minute: Option<i64>,
    /// The last failed port call of each running invocation and the fault behind it.
    pub last_failure: BTreeMap<TaskId, (&'static str, Fault)>,
    pub trace: Trace,
}

impl World {
    pub fn new(seed: u64, keep_trace: bool) -> World {
        World {
            now: start_time(),
            rng: fastrand::Rng::with_seed(seed),
            faults: Faults::default(),
            quiet: false,
            failing: Vec::new(),
            store: Store::default(),
            ecs: Ecs::default(),
            elb: Elb::default(),
            alarms: BTreeMap::new(),
            sns: Vec::new(),
            images: BTreeMap::new(),
            bus: Vec::new(),
            next_seq: 0,
            current: None,
            context: BTreeMap::new(),
            unconfirmed_publish: BTreeMap::new(),
            step_mutations: Vec::new(),
            registrations_by_deployment: BTreeMap::new(),
            last_changed_by: BTreeMap::new(),
            changes: 0,
            port_calls: 0,
            faults_injected: 0,
            claims: BTreeMap::new(),
            store_refused_after_claim: BTreeSet::new(),
            drop_ecs_events: false,
            health_reads: BTreeMap::new(),
            scans: BTreeMap::new(),
            alb_metrics: BTreeMap::new(),
            metrics_minute: None,
            last_failure: BTreeMap::new(),
            trace: Trace::new(keep_trace),
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.f64() < p
    }

    /// Seconds since the start, for trace lines.
    pub fn clock(&self) -> String {
        let s = (self.now - start_time()).num_milliseconds();
        format!(
            "{:>4}:{:02}.{:01}",
            s / 60_000,
            (s / 1000) % 60,
            (s % 1000) / 100
        )
    }

    pub fn log(&mut self, line: impl AsRef<str>) {
        let line = format!("{} {}", self.clock(), line.as_ref());
        self.trace.push(line);
    }

    pub fn next_id(&mut self, prefix: &str) -> String {
        self.next_seq += 1;
        format!("{prefix}-{:08x}", self.next_seq)
    }

    /// Puts an event on the bus; the fault plan may lose it, delay it or deliver it twice.
    pub fn emit(&mut self, target: Target, label: String, body: Value) {
        if self.drop_ecs_events && matches!(target, Target::Ecs) {
            self.log(format!("bus: lost {label} (every ECS event is lost)"));
            return;
        }
        if self.chance(self.faults.event_loss) {
            self.log(format!("bus: lost {label}"));
            return;
        }
        let copies = if self.chance(self.faults.event_dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delivery_delay();
            self.next_seq += 1;
            self.bus.push(BusEvent {
                seq: self.next_seq,
                target,
                deliver_at: self.now + delay,
                body: body.clone(),
                retries_left: 2,
                label: label.clone(),
            });
        }
    }

    fn delivery_delay(&mut self) -> Duration {
        if self.chance(self.faults.event_late) {
            Duration::seconds(self.rng.i64(30..=300))
        } else {
            Duration::milliseconds(self.rng.i64(200..=4000))
        }
    }

    /// Chooses the fault of one port call (none in the quiet phase).
    pub fn pick_fault(&mut self, kind: Kind) -> Fault {
        if self.quiet {
            return Fault::None;
        }
        if self.chance(self.faults.before) {
            return Fault::Before;
        }
        if kind != Kind::Read && self.chance(self.faults.lost) {
            if kind == Kind::CondWrite && self.rng.bool() {
                return Fault::RetrySeesOwnWrite;
            }
            return Fault::Lost;
        }
        Fault::None
    }

    pub fn set_context(&mut self, id: &str) {
        if let Some(task) = self.current {
            self.context.insert(task, id.to_string());
        }
    }

    pub fn context_of_current(&self) -> Option<String> {
        self.current.and_then(|t| self.context.get(&t).cloned())
    }

    /// Saves a deployment for the current invocation, noting the outbox claims it makes.
    pub fn save_deployment(&mut self, d: &Deployment) -> PortResult<Deployment> {
        let before: Vec<(u32, Option<DateTime<Utc>>)> = self
            .store
            .deployments
            .get(&d.id)
            .map(|s| {
                s.outbox
                    .iter()
                    .map(|e| (e.seq, e.claim.as_ref().map(|c| c.at)))
                    .collect()
            })
            .unwrap_or_default();
        let stored = self.store.save(d)?;
        if let Some(task) = self.current {
            for e in &d.outbox {
                if let Some(at) = e.claim.as_ref().map(|c| c.at)
                    && !before.contains(&(e.seq, Some(at)))
                {
                    self.claims
                        .entry(task)
                        .or_default()
                        .push((d.id.clone(), e.seq, at));
                }
            }
        }
        Ok(stored)
    }

    pub fn mutation(&mut self, what: MutationKind) {
        let task = self.current.unwrap_or(usize::MAX);
        let deployment = self.context_of_current();
        if let (
            MutationKind::UpdateService {
                service: target, ..
            }
            | MutationKind::SetWeights { rule: target },
            Some(d),
        ) = (&what, &deployment)
        {
            self.changes += 1;
            self.last_changed_by
                .insert(target.clone(), (self.changes, d.clone()));
        }
        if let (
            MutationKind::Register {
                task_definition, ..
            },
            Some(d),
        ) = (&what, &deployment)
        {
            self.registrations_by_deployment
                .entry(d.clone())
                .or_default()
                .push(task_definition.clone());
        }
        self.step_mutations.push(Mutation {
            task,
            deployment,
            what,
        });
    }

    /// The invocation's previous publish is confirmed by a later successful call, or excused
    /// when that call failed (the outbox will legitimately send it again).
    pub fn settle_publish(&mut self, failed: bool) {
        if let Some(task) = self.current
            && let Some(index) = self.unconfirmed_publish.remove(&task)
            && failed
            && let Some(p) = self.sns.get_mut(index)
        {
            p.excused = true;
        }
    }

    /// An invocation ended (dropped or returned an error): an unconfirmed publish is excused.
    pub fn invocation_ended(&mut self, task: TaskId, failed: bool) {
        if let Some(index) = self.unconfirmed_publish.remove(&task)
            && failed
            && let Some(p) = self.sns.get_mut(index)
        {
            p.excused = true;
        }
        self.context.remove(&task);
    }
}
