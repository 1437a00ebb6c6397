//! Deterministic simulation of Flightdeck (DESIGN.md, "How correctness is shown").
//!
//! The five handler entry points run in-process against in-memory fakes of DynamoDB, ECS, ELBv2,
//! CloudWatch and SNS (`world`, `ecs`, wired through the port traits in `ports`). A seeded
//! scheduler interleaves several invocations at once (every port call is an await point),
//! delivers events late, twice, out of order or never, fails port calls before or after their
//! effect, stops invocations at await points and moves the clock. After every step it checks the
//! invariants (`invariants`). A quiet phase at the end (no faults, the shifter ticking) lets
//! everything settle. The same seed always gives the same schedule and the same outcome.

pub mod ecs;
pub mod events;
pub mod invariants;
pub mod ports;
pub mod scenario;
pub mod world;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Duration, Utc};
use flightdeck::api::{self, ApiConfig, ApiRequest};
use flightdeck::deployment::Status;
use flightdeck::handlers::{
    HandlerError, Outcome, Ports, ecs_hook, on_alarm, on_ecs_event, on_image_push, shifter,
};
use serde_json::json;

use ecs::{Quality, TaskStatus};
use invariants::{Checker, Violation};
use ports::{Alarms, Images, Sim, SimClock, Sns, Store, Traffic};
use scenario::{ADMIN, APPROVER, CLUSTER, CONTAINER, DEPLOYER, OperatorAction, Scenario};
use world::{ACCOUNT, Alarm, BusEvent, Faults, REGION, Target, TaskId, World, start_time};

/// What the handlers are given: the port wrappers, all over one world.
pub struct Env {
    pub ports: Ports<Store, ports::Ecs, Traffic, Sns, SimClock, Images>,
    pub alarms: Alarms,
    pub api: ApiConfig,
}

impl Env {
    fn new(sim: &Sim) -> Env {
        Env {
            ports: Ports {
                store: Store(sim.clone()),
                ecs: ports::Ecs(sim.clone()),
                traffic: Traffic(sim.clone()),
                notifier: Sns(sim.clone()),
                clock: SimClock(sim.clone()),
                images: Images(sim.clone()),
            },
            alarms: Alarms(sim.clone()),
            api: ApiConfig {
                admins: vec![ADMIN.to_string()],
                region: REGION.to_string(),
                ..ApiConfig::default()
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep (and return) every trace line, for replaying one seed.
    pub keep_trace: bool,
    /// Lose every ECS event: deployments must get to their end by the reconcile loop alone.
    pub drop_ecs_events: bool,
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub steps: u64,
    pub checks: u64,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub trace_lines: u64,
    pub trace_tail: Vec<String>,
    pub full_trace: Option<Vec<String>>,
    pub scenario: String,
    pub largest_record: usize,
    pub port_calls: u64,
    pub faults_injected: u64,
    /// Each deployment's id and final status.
    pub deployments: Vec<(String, String)>,
    /// What the gates did, one entry per deployment a gate acted on (see `gate_outcomes`).
    pub gate_outcomes: Vec<&'static str>,
}

/// What the gates did to each deployment, from its record and whole audit trail: held by a
/// freeze, by the scan, failed by the scan (findings, or none in time), failed by the canary
/// judge (worse, or no data), passed by it, rolled back in the watch window.
fn gate_outcomes(w: &World) -> Vec<&'static str> {
    let mut out = Vec::new();
    for d in w.store.deployments.values() {
        let trail = w.store.audit.get(&d.id).cloned().unwrap_or_default();
        let said = |text: &str| {
            trail
                .iter()
                .chain(&d.events)
                .any(|e| e.reason.as_deref().is_some_and(|r| r.contains(text)))
        };
        let reason = d.reason.as_deref().unwrap_or("");
        if said("change freeze ") {
            out.push("held by a freeze");
        }
        if said("waiting for the vulnerability scan") {
            out.push("held for the scan");
        }
        if reason.starts_with("vulnerability scan:") && reason.contains("findings at or above") {
            out.push("failed by scan findings");
        }
        if reason.contains("no vulnerability scan result") {
            out.push("failed: no scan result in time");
        }
        if said("let through (gates.scan.missing is `allow`)") {
            out.push("let through: no scan result, missing allow");
        }
        if reason.starts_with("canary judge fail") {
            out.push("rolled back by the canary judge");
        }
        if reason.contains("gates.analysis.no_data is `fail`") {
            out.push("rolled back by the canary judge (no data)");
        }
        if said("canary judge pass") {
            out.push("a step passed by the canary judge");
        }
        if reason.starts_with("post-deployment watch:") {
            out.push("rolled back in the watch window");
        }
        if said("post-deployment watch of") {
            out.push("watch window passed");
        }
        if said("post-deployment watch ended early") {
            out.push("watch ended by a newer deployment");
        }
    }
    out
}

impl SeedReport {
    /// The failure as printed: the seed, each violated invariant, and a short trace.
    pub fn failure_text(&self, trace_lines: usize) -> String {
        let mut out = format!("seed {}\n", self.seed);
        for v in &self.violations {
            out.push_str(&format!(
                "  violated {} ({}) at step {} ({}): {}\n",
                v.invariant.name(),
                v.invariant.meaning(),
                v.step,
                v.at.format("%H:%M:%S%.3f"),
                v.detail
            ));
        }
        out.push_str("  scenario:\n");
        out.push_str(&self.scenario);
        if let Some(first) = self.violations.first() {
            let skip = first.trace.len().saturating_sub(trace_lines);
            out.push_str(&format!(
                "  trace up to the first violation ({}; replay all with `flightdeck-sim --seed {}`):\n",
                first.invariant.name(),
                self.seed
            ));
            for line in &first.trace[skip..] {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

type Boxed = Pin<Box<dyn Future<Output = Result<String, String>>>>;

/// What an invocation was started for (to retry it as Lambda or the client would).
#[derive(Clone)]
enum Work {
    Event(BusEvent),
    Shifter,
    /// ECS calling `ecs-hook` for a service deployment's stage (synchronously: its answer, or
    /// its failure, moves the service deployment on).
    Hook {
        arn: String,
        payload: serde_json::Value,
    },
    Api {
        request: ApiRequest,
        attempts_left: u8,
    },
}

struct Invocation {
    id: TaskId,
    label: String,
    future: Boxed,
    /// Slow invocations are polled rarely: they hold stale decisions for long.
    weight: u32,
    work: Work,
}

fn summary(result: Result<Outcome, HandlerError>) -> Result<String, String> {
    match result {
        Ok(o) => Ok(match o.skipped {
            Some(why) if o.deployments.is_empty() => format!("skipped: {why}"),
            _ => o
                .deployments
                .iter()
                .map(|d| format!("{} {}", &d.id[..8.min(d.id.len())], d.status()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        Err(e) => Err(format!("{}: {e}", e.kind())),
    }
}

fn start(env: &Arc<Env>, work: &Work) -> Boxed {
    let env = env.clone();
    match work {
        Work::Event(e) => {
            let body = e.body.clone();
            match e.target {
                Target::Push => {
                    Box::pin(async move { summary(on_image_push::handle(&env.ports, body).await) })
                }
                Target::Ecs => {
                    Box::pin(async move { summary(on_ecs_event::handle(&env.ports, body).await) })
                }
                Target::Alarm => {
                    Box::pin(async move { summary(on_alarm::handle(&env.ports, body).await) })
                }
            }
        }
        Work::Shifter => {
            Box::pin(async move { summary(shifter::handle(&env.ports, &env.alarms).await) })
        }
        Work::Hook { payload, .. } => {
            let payload = payload.clone();
            Box::pin(async move {
                match ecs_hook::handle(&env.ports, &env.alarms, &payload).await {
                    Ok(answer) => Ok(format!(
                        "{} {}",
                        answer.hook_status.name(),
                        answer.call_back_delay.unwrap_or(30)
                    )),
                    Err(e) => Err(e.to_string()),
                }
            })
        }
        Work::Api { request, .. } => {
            let request = request.clone();
            Box::pin(async move {
                let r = api::handle(&env.ports, &env.api, &request).await;
                let code = r.body["error"]["code"].as_str().unwrap_or("");
                let status = r.body["status"].as_str().unwrap_or("");
                if r.status >= 500 {
                    Err(format!("{} {code}", r.status))
                } else {
                    Ok(format!("{} {code}{status}", r.status))
                }
            })
        }
    }
}

fn action_request(id: &str, action: &str, caller: &str) -> ApiRequest {
    ApiRequest {
        method: "POST".into(),
        path: format!("/deployments/{id}/{action}"),
        caller: Some(caller.into()),
        account: Some(ACCOUNT.into()),
        ..ApiRequest::default()
    }
}

/// Waiting for an approver: AWAITING_APPROVAL, or an ecs-native rollout held at its hook.
fn waits_for_approval(d: &flightdeck::deployment::Deployment) -> bool {
    let held = d.native.as_ref().is_some_and(|n| n.approval_asked)
        && d.approved_by.is_none()
        && d.in_flight();
    d.status() == Status::AwaitingApproval || held
}

/// The scenario's reactions to what happens: approvals, back-to-back pushes.
#[derive(Default)]
struct Driver {
    approvals: std::collections::BTreeSet<String>,
    succeeded: std::collections::BTreeSet<String>,
    /// API calls to make at a time.
    calls: Vec<(DateTime<Utc>, ApiRequest)>,
    /// API calls the client retries after a 5xx or a dropped connection.
    retries: Vec<(DateTime<Utc>, Work)>,
    store_generation: u64,
    /// The quiet phase has begun (no faults; people answer).
    quiet: bool,
}

impl Driver {
    fn observe(&mut self, w: &mut World, plan: &mut Scenario) {
        if w.store.generation == self.store_generation {
            return;
        }
        self.store_generation = w.store.generation;
        let now = w.now;
        let mut waiting = Vec::new();
        let mut succeeded = Vec::new();
        for d in w.store.deployments.values() {
            if waits_for_approval(d) && !self.approvals.contains(&d.id) {
                waiting.push(d.id.clone());
            }
            if d.status() == Status::Succeeded && !self.succeeded.contains(&d.id) {
                succeeded.push((d.id.clone(), d.service.clone(), d.environment.clone()));
            }
        }
        for id in waiting {
            self.approvals.insert(id.clone());
            // Once the world is quiet, people act: whatever starts waiting then is approved.
            let roll = if self.quiet { 0 } else { w.rng.u32(0..100) };
            let at = now + Duration::seconds(w.rng.i64(20..=360));
            if roll < 85 {
                self.calls
                    .push((at, action_request(&id, "approve", APPROVER)));
            } else if roll < 95 {
                self.calls
                    .push((at, action_request(&id, "abort", DEPLOYER)));
            }
        }
        for (id, service, environment) in succeeded {
            self.succeeded.insert(id);
            if !w.chance(plan.back_to_back) {
                continue;
            }
            let Some(reg) = plan.regs.iter().position(|r| {
                r.registration.service == service && r.registration.environment == environment
            }) else {
                continue;
            };
            let window = plan.regs[reg]
                .alb
                .as_ref()
                .map(|a| i64::from(a.scale_down_after) * 60)
                .unwrap_or(120);
            let at = now + Duration::seconds(w.rng.i64(0..=window));
            if let Some(p) = plan
                .pushes
                .iter_mut()
                .filter(|p| p.reg == reg && !p.released)
                .min_by_key(|p| p.at)
                && p.at > at
            {
                p.at = at;
                w.log(format!(
                    "scenario: next push {} moved to follow the success",
                    p.tag
                ));
            }
        }
    }

    fn idle(&self) -> bool {
        self.calls.is_empty() && self.retries.is_empty()
    }

    fn quiet_start(&mut self, w: &World) {
        self.quiet = true;
        for d in w.store.deployments.values() {
            if waits_for_approval(d) {
                self.calls.push((
                    w.now + Duration::seconds(10),
                    action_request(&d.id, "approve", APPROVER),
                ));
            }
        }
    }
}

fn setup(w: &mut World, plan: &Scenario) {
    w.faults = plan.faults.clone();
    for reg in &plan.regs {
        w.store
            .registrations
            .insert(reg.key(), reg.registration.clone());
        let image = format!(
            "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{}@sha256:{}",
            reg.repository,
            "0".repeat(64)
        );
        let td = w.ecs.register(&reg.family, CONTAINER, &image, None);
        match &reg.alb {
            None => {
                w.ecs
                    .create_service(CLUSTER, &reg.services[0], &td, reg.desired, None);
                // ecs-native judged by the canary judge: behind a production listener rule whose
                // weights ECS moves.
                if reg.registration.spec.gates.analysis.is_some() {
                    let (rule, a, b) = native_rule(&reg.services[0]);
                    let actions = vec![world::RuleAction::Forward {
                        groups: vec![(a, 100), (b, 0)],
                        stickiness: None,
                    }];
                    w.elb.rules.insert(rule.clone(), actions.clone());
                    w.elb.initial.insert(rule.clone(), actions);
                    if let Some(s) = w.ecs.services.get_mut(&reg.services[0]) {
                        s.production_rule = Some(rule);
                    }
                }
            }
            Some(alb) => {
                w.ecs.create_service(
                    CLUSTER,
                    &alb.blue.service,
                    &td,
                    reg.desired,
                    Some(alb.blue.target_group.clone()),
                );
                w.ecs.create_service(
                    CLUSTER,
                    &alb.green.service,
                    &td,
                    0,
                    Some(alb.green.target_group.clone()),
                );
                w.elb.rules.insert(alb.rule.clone(), alb.actions.clone());
                w.elb.initial.insert(alb.rule.clone(), alb.actions.clone());
                for c in [&alb.blue, &alb.green] {
                    w.elb
                        .target_groups
                        .insert(c.target_group.clone(), c.service.clone());
                }
            }
        }
        if let Some(name) = &reg.alarm {
            w.alarms.insert(
                name.clone(),
                Alarm {
                    name: name.clone(),
                    state: "OK".into(),
                    reason: "Threshold Crossed: no datapoints were greater than the threshold"
                        .into(),
                    bad_since: None,
                    good_since: None,
                    registration: plan
                        .regs
                        .iter()
                        .position(|r| r.alarm.as_deref() == Some(name))
                        .unwrap_or(0),
                },
            );
        }
    }
    for p in &plan.pushes {
        w.ecs.quality.insert(p.digest.clone(), p.quality);
        let report = match p.scan {
            scenario::ScanOutcome::Clean => Some(flightdeck::scan::ScanReport::Complete {
                counts: vec![(flightdeck::scan::Severity::Low, 3)],
                findings: Vec::new(),
            }),
            scenario::ScanOutcome::Blocking => Some(flightdeck::scan::ScanReport::Complete {
                counts: vec![(flightdeck::scan::Severity::Critical, 1)],
                findings: vec![flightdeck::scan::Finding {
                    id: "CVE-2026-0001".into(),
                    severity: flightdeck::scan::Severity::Critical,
                    package: Some("openssl".into()),
                }],
            }),
            scenario::ScanOutcome::Never => None,
        };
        if let Some(report) = report {
            w.scans.insert(p.digest.clone(), report);
        }
    }
    let now = w.now;
    w.ecs.settle_initial(now);
}

/// Alarms go to ALARM while an alarming revision takes traffic, and back to OK after.
fn evaluate_alarms(w: &mut World, plan: &Scenario) {
    let now = w.now;
    let names: Vec<String> = w.alarms.keys().cloned().collect();
    for name in names {
        let Some(alarm) = w.alarms.get(&name).cloned() else {
            continue;
        };
        let reg = &plan.regs[alarm.registration];
        let serving: Vec<&str> = match &reg.alb {
            None => vec![reg.services[0].as_str()],
            Some(a) => [&a.blue, &a.green]
                .into_iter()
                .filter(|c| w.elb.percent_to(&a.rule, &c.target_group) > 0)
                .map(|c| c.service.as_str())
                .collect(),
        };
        let bad = w.ecs.tasks.values().any(|t| {
            t.status == TaskStatus::Running
                && t.quality == Quality::Alarming
                && serving.contains(&t.service.as_str())
        });
        let mut next = alarm.clone();
        let mut change = None;
        if bad {
            next.good_since = None;
            let since = *next.bad_since.get_or_insert(now);
            if alarm.state != "ALARM" && now - since >= Duration::seconds(40) {
                next.state = "ALARM".into();
                next.reason = "Threshold Crossed: 1 out of the last 1 datapoints [12.0] was greater than the threshold (5.0)".into();
                change = Some(("ALARM", "OK"));
            }
        } else {
            next.bad_since = None;
            let since = *next.good_since.get_or_insert(now);
            if alarm.state == "ALARM" && now - since >= Duration::seconds(60) {
                next.state = "OK".into();
                next.reason =
                    "Threshold Crossed: no datapoints were greater than the threshold".into();
                change = Some(("OK", "ALARM"));
            }
        }
        let reason = next.reason.clone();
        w.alarms.insert(name.clone(), next);
        if let Some((state, previous)) = change {
            let id = w.next_id("alarm");
            let body = events::alarm_state_change(&events::AlarmEvent {
                id,
                at: now,
                alarm: &name,
                state,
                previous,
                reason: &reason,
                cluster: CLUSTER,
                service: &reg.services[reg.services.len() - 1],
            });
            w.log(format!("cloudwatch: {name} -> {state}"));
            w.emit(Target::Alarm, format!("alarm {name} {state}"), body);
        }
    }
}

/// The production listener rule of an ecs-native service judged by the canary judge, and its
/// two target groups.
fn native_rule(service: &str) -> (String, String, String) {
    let elb = format!("arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}");
    (
        format!("{elb}:listener-rule/app/sim-native/6d0ecf831eec9f09/f2f7dc8efc522ab2/{service}"),
        format!("{elb}:targetgroup/{service}-a/00000000000000a1"),
        format!("{elb}:targetgroup/{service}-b/00000000000000b2"),
    )
}

/// ecs-native behind a production rule: the task definition whose tasks take `tg`'s traffic
/// (the target revision's while its service deployment is in flight and `tg` is the one it
/// took, the source's for the other; the service's own otherwise).
fn native_revision_on(w: &World, service: &str, tg: &str) -> Option<String> {
    let in_flight = w
        .ecs
        .service_deployments
        .values()
        .find(|sd| sd.service == service && sd.in_progress() && sd.new_tg.is_some());
    match in_flight {
        Some(sd) if sd.new_tg.as_deref() == Some(tg) => Some(sd.target_td.clone()),
        Some(sd) => Some(sd.source_td.clone()),
        None => w.ecs.describe(service).map(|s| s.task_definition),
    }
}

/// One minute of ALB samples of a target group taking `percent` of the traffic.
fn alb_sample(
    w: &mut World,
    done: i64,
    at: DateTime<Utc>,
    target_group: &str,
    salt: u32,
    percent: u32,
    alarming: bool,
) {
    // Noise from the minute and the colour, not from the world's random stream (which
    // schedules everything else: the seeds keep their schedules).
    let mut noise =
        fastrand::Rng::with_seed((done as u64).wrapping_mul(0x9e37_79b9) ^ u64::from(salt));
    let requests = f64::from(percent) * 10.0 + f64::from(noise.u32(0..40));
    let (rate, p99) = if alarming {
        (0.06 + noise.f64() * 0.02, 0.45 + noise.f64() * 0.1)
    } else {
        (noise.f64() * 0.004, 0.18 + noise.f64() * 0.04)
    };
    let sample = flightdeck::judge::Minute {
        requests,
        errors: Some((requests * rate).round()),
        p99: Some(p99),
    };
    let key = flightdeck::registration::target_group_dimension(target_group).to_string();
    w.alb_metrics.entry(key).or_default().push((at, sample));
}

/// CloudWatch's per-minute ALB samples of each colour taking traffic: about 1,000 requests a
/// minute split by the weights; a colour running an alarming revision answers 6% errors and
/// slowly, a good one a fraction of a percent (the canary judge's view of the revision).
fn record_metrics(w: &mut World, plan: &Scenario) {
    let minute = w.now.timestamp().div_euclid(60);
    if w.metrics_minute == Some(minute) {
        return;
    }
    let Some(done) = w.metrics_minute.replace(minute) else {
        return;
    };
    let at = chrono::DateTime::from_timestamp(done * 60, 0).unwrap_or(w.now);
    for reg in &plan.regs {
        let Some(alb) = &reg.alb else {
            if reg.registration.spec.gates.analysis.is_some() {
                let service = &reg.services[0];
                let (rule, a, b) = native_rule(service);
                for (salt, tg) in [(1u32, a), (2, b)] {
                    let percent = w.elb.percent_to(&rule, &tg);
                    let Some(td) = native_revision_on(w, service, &tg) else {
                        continue;
                    };
                    if percent == 0 {
                        continue;
                    }
                    let alarming = w.ecs.tasks.values().any(|t| {
                        t.status == TaskStatus::Running
                            && t.quality == Quality::Alarming
                            && t.service == *service
                            && t.task_definition == td
                    });
                    alb_sample(w, done, at, &tg, salt, percent, alarming);
                }
            }
            continue;
        };
        for colour in [&alb.blue, &alb.green] {
            let percent = w.elb.percent_to(&alb.rule, &colour.target_group);
            if percent == 0 {
                continue;
            }
            let alarming = w.ecs.tasks.values().any(|t| {
                t.status == TaskStatus::Running
                    && t.quality == Quality::Alarming
                    && t.service == colour.service
            });
            let salt = colour.service.len() as u32;
            alb_sample(w, done, at, &colour.target_group, salt, percent, alarming);
        }
    }
}

/// The next time something happens by itself (so an idle world can jump to it).
fn next_wakeup(w: &World, plan: &Scenario, driver: &Driver) -> DateTime<Utc> {
    let now = w.now;
    let mut t = now + Duration::seconds(20);
    let minute = next_minute(now);
    t = t.min(minute);
    for e in &w.bus {
        t = t.min(e.deliver_at);
    }
    for task in w.ecs.tasks.values() {
        if task.live() {
            t = t.min(task.next_at);
        }
    }
    for sd in w
        .ecs
        .service_deployments
        .values()
        .filter(|sd| sd.in_progress())
    {
        match &sd.hook {
            Some(h) if h.asked.is_none() => t = t.min(h.due),
            Some(_) => {}
            None => t = t.min(sd.next_at),
        }
    }
    for a in w.alarms.values() {
        if let Some(s) = a.bad_since
            && a.state != "ALARM"
        {
            t = t.min(s + Duration::seconds(40));
        }
        if let Some(s) = a.good_since
            && a.state == "ALARM"
        {
            t = t.min(s + Duration::seconds(60));
        }
    }
    for p in plan.pushes.iter().filter(|p| !p.released) {
        t = t.min(p.at);
    }
    for (at, _, _) in &plan.operator {
        if *at > now {
            t = t.min(*at);
        }
    }
    for (at, _) in &driver.calls {
        t = t.min(*at);
    }
    for (at, _) in &driver.retries {
        t = t.min(*at);
    }
    if plan.noisy_end > now {
        t = t.min(plan.noisy_end);
    }
    t = t.min(plan.quiet_end);
    t.max(now + Duration::milliseconds(100))
}

fn next_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    let s = (now - start_time()).num_milliseconds();
    start_time() + Duration::milliseconds((s / 60_000 + 1) * 60_000)
}

/// The world of `seed` as its run starts (for checking the checker).
pub fn prepared(seed: u64) -> (World, Scenario) {
    let plan = scenario::generate(seed);
    let mut w = World::new(seed, false);
    setup(&mut w, &plan);
    (w, plan)
}

/// How long a quiet world must stay settled before a run ends early: longer than a claim's
/// lease, so an effect held back by an expired claim still shows.
const SETTLED_FOR: Duration = Duration::minutes(10);

/// Every deployment terminal, nothing in any outbox, nothing left to scale down.
fn settled(w: &World) -> bool {
    w.store
        .deployments
        .values()
        .all(|d| !d.status().is_active() && !d.needs_reconcile())
}

/// Runs one seed to the end of its quiet phase.
pub fn run_seed(seed: u64, options: &Options) -> SeedReport {
    let mut plan = scenario::generate(seed);
    let sim = Sim(Arc::new(Mutex::new(World::new(seed, options.keep_trace))));
    {
        let mut w = sim.lock();
        setup(&mut w, &plan);
        w.drop_ecs_events = options.drop_ecs_events;
        let text = plan.describe();
        for line in text.lines() {
            w.log(format!("scenario:{line}"));
        }
    }
    let env = Arc::new(Env::new(&sim));
    let mut tasks: Vec<Invocation> = Vec::new();
    let mut next_task: TaskId = 0;
    let mut checker = Checker::default();
    let mut driver = Driver::default();
    let mut step: u64 = 0;
    let mut quiet = false;
    let mut operator_done = 0usize;
    let mut settled_since: Option<DateTime<Utc>> = None;
    let mut cx = Context::from_waker(Waker::noop());

    loop {
        step += 1;
        let known = checker.violations.len();
        // What to do this step.
        let mut spawn: Vec<(String, Work)> = Vec::new();
        let mut poll_index = None;
        {
            let mut w = sim.lock();
            w.step_mutations.clear();
            if w.now >= plan.quiet_end {
                break;
            }
            // A quiet world that has settled for a while has nothing more to show.
            if quiet && tasks.is_empty() && w.bus.is_empty() && driver.idle() && settled(&w) {
                let since = *settled_since.get_or_insert(w.now);
                if w.now - since >= SETTLED_FOR {
                    w.log("settled: every deployment is terminal with nothing left to do");
                    break;
                }
            } else {
                settled_since = None;
            }
            if !quiet && w.now >= plan.noisy_end {
                quiet = true;
                w.quiet = true;
                w.faults = Faults::default();
                w.log("quiet phase: no more faults");
                driver.quiet_start(&w);
            }
            let now = w.now;
            let due: Vec<usize> = (0..w.bus.len())
                .filter(|&i| w.bus[i].deliver_at <= now)
                .collect();
            let busy = !tasks.is_empty();
            let r = w.rng.f64();
            if busy && r < 0.9 {
                let total: u32 = tasks.iter().map(|t| t.weight).sum();
                let mut pick = w.rng.u32(0..total);
                let mut index = 0;
                for (i, t) in tasks.iter().enumerate() {
                    if pick < t.weight {
                        index = i;
                        break;
                    }
                    pick -= t.weight;
                }
                let p_drop = w.faults.drop;
                let drop_it = w.chance(p_drop);
                if drop_it {
                    let t = tasks.remove(index);
                    w.log(format!("#{} {} stopped at an await point", t.id, t.label));
                    w.invocation_ended(t.id, true);
                    w.claims.remove(&t.id);
                    w.health_reads.remove(&t.id);
                    w.store_refused_after_claim.remove(&t.id);
                    w.last_failure.remove(&t.id);
                    hook_answered(&mut w, &t.work, None);
                    retry(&mut w, &mut driver, &t.work, "stopped");
                } else {
                    poll_index = Some(index);
                    w.current = Some(tasks[index].id);
                }
            } else if !due.is_empty() && (r < 0.97 || !busy) {
                let pick = due[w.rng.usize(0..due.len())];
                let e = w.bus.remove(pick);
                spawn.push((e.label.clone(), Work::Event(e)));
            } else {
                // Time passes: a little while invocations run, up to the next happening if idle.
                let target = if busy {
                    (now + Duration::milliseconds(w.rng.i64(100..=3000))).min(next_minute(now))
                } else {
                    next_wakeup(&w, &plan, &driver)
                };
                let crossed = target >= next_minute(now);
                w.now = target;
                ecs::advance(&mut w);
                evaluate_alarms(&mut w, &plan);
                record_metrics(&mut w, &plan);
                for (label, work) in due_hooks(&mut w) {
                    spawn.push((label, work));
                }
                if crossed {
                    spawn.push(("shifter".into(), Work::Shifter));
                }
                release(
                    &mut w,
                    &mut plan,
                    &mut driver,
                    &mut operator_done,
                    &mut spawn,
                );
            }
        }
        if let Some(index) = poll_index {
            let polled = tasks[index].future.as_mut().poll(&mut cx);
            let mut w = sim.lock();
            w.current = None;
            if let Poll::Ready(result) = polled {
                let t = tasks.remove(index);
                match &result {
                    Ok(s) => w.log(format!("#{} {} done: {s}", t.id, t.label)),
                    Err(e) => w.log(format!("#{} {} failed: {e}", t.id, t.label)),
                }
                w.invocation_ended(t.id, result.is_err());
                let mut claims = w.claims.remove(&t.id).unwrap_or_default();
                w.health_reads.remove(&t.id);
                // A store that refuses writes leaves no way to release a claim; an effect call
                // that failed, or a write whose answer was lost, does.
                if w.store_refused_after_claim.remove(&t.id) {
                    claims.clear();
                }
                w.last_failure.remove(&t.id);
                let outcome = match &result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.chars().take(120).collect(),
                };
                checker.invocation_returned(&w, claims, &t.label, &outcome, step);
                hook_answered(&mut w, &t.work, result.as_ref().ok().map(String::as_str));
                if result.is_err() {
                    retry(&mut w, &mut driver, &t.work, "failed");
                }
            }
        }
        for (label, work) in spawn {
            next_task += 1;
            let mut w = sim.lock();
            let weight = if w.chance(0.1) { 1 } else { 10 };
            w.log(format!(
                "#{next_task} start {label}{}",
                if weight == 1 { " (slow)" } else { "" }
            ));
            drop(w);
            tasks.push(Invocation {
                id: next_task,
                label,
                future: start(&env, &work),
                weight,
                work,
            });
        }
        let mut w = sim.lock();
        driver.observe(&mut w, &mut plan);
        checker.after_step(&w, &plan, step);
        for v in checker.violations.iter_mut().skip(known) {
            v.trace = w.trace.tail.iter().cloned().collect();
        }
    }

    let w = sim.lock();
    let known = checker.violations.len();
    checker.at_end(&w, step);
    for v in checker.violations.iter_mut().skip(known) {
        v.trace = w.trace.tail.iter().cloned().collect();
    }
    let mut trace_tail: Vec<String> = w.trace.tail.iter().cloned().collect();
    for v in &checker.violations {
        trace_tail.push(format!(
            "VIOLATION {} at step {}: {}",
            v.invariant.name(),
            v.step,
            v.detail
        ));
    }
    SeedReport {
        seed,
        steps: step,
        checks: checker.checks,
        violations: checker.violations.clone(),
        trace_hash: w.trace.hash,
        trace_lines: w.trace.lines,
        trace_tail,
        full_trace: w.trace.full.clone(),
        scenario: plan.describe(),
        largest_record: w.store.largest_item,
        port_calls: w.port_calls,
        faults_injected: w.faults_injected,
        deployments: w
            .store
            .deployments
            .values()
            .map(|d| (d.id.clone(), d.status().to_string()))
            .collect(),
        gate_outcomes: gate_outcomes(&w),
    }
}

/// The service deployments whose hook is due: each becomes an invocation, with the payload ECS
/// sends (weights by service revision).
fn due_hooks(w: &mut World) -> Vec<(String, Work)> {
    let now = w.now;
    let mut out = Vec::new();
    for sd in w.ecs.service_deployments.values_mut() {
        if !sd
            .hook
            .as_ref()
            .is_some_and(|h| h.asked.is_none() && h.due <= now)
        {
            continue;
        }
        let payload = hook_payload(sd, now);
        if let Some(hook) = sd.hook.as_mut() {
            hook.asked = payload["executionId"].as_str().map(str::to_string);
        }
        let label = format!(
            "ecs-hook {} {} {} ({}%)",
            sd.service,
            ecs::short_sd(&sd.arn),
            sd.stage,
            sd.percent
        );
        out.push((
            label,
            Work::Hook {
                arn: sd.arn.clone(),
                payload,
            },
        ));
    }
    out
}

/// What ECS sends the hook for a service deployment's current stage (weights by service
/// revision).
pub fn hook_payload(sd: &ecs::NativeSd, now: DateTime<Utc>) -> serde_json::Value {
    let (target, source) = (f64::from(sd.percent), 100.0 - f64::from(sd.percent));
    let test = if sd.stage == "PRE_SCALE_UP" || sd.stage == "POST_SCALE_UP" {
        0.0
    } else {
        100.0
    };
    json!({
        "executionId": format!("{}-{}-{}", ecs::short_sd(&sd.arn), sd.stage, now.timestamp_millis()),
        "lifecycleStage": sd.stage,
        "resourceArn": sd.arn,
        "executionDetails": {
            "serviceArn": format!("arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{}", sd.service),
            "targetServiceRevisionArn": sd.target_revision,
            "testTrafficWeights": { sd.target_revision.clone(): test, sd.source_revision.clone(): 100.0 - test },
            "productionTrafficWeights": { sd.target_revision.clone(): target, sd.source_revision.clone(): source },
        },
        "hookDetails": null,
    })
}

/// ECS takes the hook's answer (`None`: the invocation failed or never returned).
fn hook_answered(w: &mut World, work: &Work, result: Option<&str>) {
    let Work::Hook { arn, payload } = work else {
        return;
    };
    let execution = payload["executionId"].as_str().unwrap_or_default();
    let now = w.now;
    let answer = result.and_then(|r| {
        let (status, delay) = r.split_once(' ')?;
        Some((status.to_string(), delay.parse::<u32>().unwrap_or(30)))
    });
    let Some(sd) = w.ecs.service_deployments.get_mut(arn) else {
        return;
    };
    let waited = sd.hook.as_ref().and_then(|h| h.asked.as_deref()) == Some(execution);
    let before = sd.status.clone();
    sd.answered(
        execution,
        answer.as_ref().map(|(s, d)| (s.as_str(), *d)),
        now,
    );
    let line = match (waited, &answer) {
        (false, _) => format!(
            "ecs: {} hook answer for {execution} ignored (ECS no longer waits for it)",
            ecs::short_sd(arn)
        ),
        (true, _) if sd.status != before => format!(
            "ecs: {} hook answer {} -> {}",
            ecs::short_sd(arn),
            answer.as_ref().map_or("none", |(s, _)| s.as_str()),
            sd.status
        ),
        _ => return,
    };
    w.log(line);
}

/// Lambda retries a failed asynchronous invocation twice; the API client retries 5xx answers.
fn retry(w: &mut World, driver: &mut Driver, work: &Work, why: &str) {
    match work {
        Work::Event(e) if e.retries_left > 0 => {
            let mut again = e.clone();
            again.retries_left -= 1;
            let wait = if again.retries_left == 1 { 60 } else { 120 };
            again.deliver_at = w.now + Duration::seconds(wait);
            let base = e.label.split(" (retry").next().unwrap_or(&e.label);
            again.label = format!("{base} (retry after {why})");
            w.bus.push(again);
        }
        Work::Api {
            request,
            attempts_left,
        } if *attempts_left > 0 => {
            let at = w.now + Duration::seconds(w.rng.i64(5..=30));
            driver.retries.push((
                at,
                Work::Api {
                    request: request.clone(),
                    attempts_left: attempts_left - 1,
                },
            ));
        }
        _ => {}
    }
}

/// Starts what the scenario has due: pushes, operator actions, the driver's API calls.
fn release(
    w: &mut World,
    plan: &mut Scenario,
    driver: &mut Driver,
    operator_done: &mut usize,
    spawn: &mut Vec<(String, Work)>,
) {
    let now = w.now;
    for p in plan.pushes.iter_mut() {
        if p.released || p.at > now {
            continue;
        }
        p.released = true;
        let reg = &plan.regs[p.reg];
        w.images
            .insert((reg.repository.clone(), p.tag.clone()), p.digest.clone());
        if p.via_api {
            let body = json!({
                "service": reg.registration.service,
                "environment": reg.registration.environment,
                "image": p.digest,
            });
            let request = ApiRequest {
                method: "POST".into(),
                path: "/deployments".into(),
                idempotency_key: Some(format!("ci-{}-{}", reg.repository, p.tag)),
                body: Some(body.to_string()),
                caller: Some(DEPLOYER.into()),
                account: Some(ACCOUNT.into()),
                ..ApiRequest::default()
            };
            spawn.push((
                format!("api POST /deployments {} {}", p.tag, p.quality.name()),
                Work::Api {
                    request,
                    attempts_left: 3,
                },
            ));
        } else {
            let id = w.next_id("ecr");
            let body = events::image_push(id, now, &reg.repository, &p.digest, &p.tag);
            w.log(format!(
                "ecr: push {}:{} ({})",
                reg.repository,
                p.tag,
                p.quality.name()
            ));
            w.emit(
                Target::Push,
                format!("push {}:{} {}", reg.repository, p.tag, p.quality.name()),
                body,
            );
        }
    }
    while *operator_done < plan.operator.len() && plan.operator[*operator_done].0 <= now {
        let (_, reg, action) = plan.operator[*operator_done];
        *operator_done += 1;
        let (service, environment) = plan.regs[reg].key();
        let target = w
            .store
            .by_service(&service, &environment)
            .into_iter()
            .find(|d| d.status().is_active())
            .map(|d| d.id.clone());
        let Some(id) = target else { continue };
        let verb = match action {
            OperatorAction::Rollback => "rollback",
            OperatorAction::Abort => "abort",
            OperatorAction::Promote => "promote",
        };
        spawn.push((
            format!("api POST {verb} {}", &id[..10]),
            Work::Api {
                request: action_request(&id, verb, DEPLOYER),
                attempts_left: 2,
            },
        ));
    }
    let mut later = Vec::new();
    for (at, request) in driver.calls.drain(..) {
        if at <= now {
            spawn.push((
                format!("api {} {}", request.method, request.path),
                Work::Api {
                    request,
                    attempts_left: 2,
                },
            ));
        } else {
            later.push((at, request));
        }
    }
    driver.calls = later;
    let mut later = Vec::new();
    for (at, work) in driver.retries.drain(..) {
        if at <= now {
            let label = match &work {
                Work::Api { request, .. } => {
                    format!("api {} {} (retry)", request.method, request.path)
                }
                _ => "retry".into(),
            };
            spawn.push((label, work));
        } else {
            later.push((at, work));
        }
    }
    driver.retries = later;
}

/// Runs seeds `from..from + count` on `threads` threads (each seed is its own single-threaded,
/// deterministic world); the reports come back in seed order.
pub fn run_many(from: u64, count: u64, threads: usize) -> Vec<SeedReport> {
    run_many_with(from, count, threads, &Options::default())
}

/// `run_many` with options (e.g. every ECS event lost).
pub fn run_many_with(from: u64, count: u64, threads: usize, options: &Options) -> Vec<SeedReport> {
    let threads = threads.clamp(1, 64) as u64;
    let options = options.clone();
    let mut reports: Vec<SeedReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let options = options.clone();
                scope.spawn(move || {
                    (from..from + count)
                        .filter(|s| (s - from) % threads == k)
                        .map(|s| run_seed(s, &options))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    reports
}
