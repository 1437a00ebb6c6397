//! The invariants of DESIGN.md ("How correctness is shown"), checked against the world and the
//! records after every step, and at the end of the quiet phase.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use flightdeck::deployment::{Deployment, Status};

use super::ecs::short_td;
use super::scenario::{RegPlan, Scenario};
use super::world::{MutationKind, RuleAction, TaskId, World, start_time};

/// How long a colour may keep traffic without enough healthy tasks before it is a violation
/// (the world can break a serving colour; the core must notice and act within this).
pub const TRAFFIC_GRACE: Duration = Duration::minutes(5);
/// How long a terminal record may disagree with what serves (ECS converging) before it lies.
pub const TRUTH_GRACE: Duration = Duration::minutes(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    TrafficHealth,
    TerminalTruth,
    OneRevision,
    OneAtATime,
    AlertMissing,
    AlertDuplicate,
    AlertOrder,
    Terminal,
    Deadline,
    RecordSize,
    RuleActions,
    ClaimReleased,
    GatesHold,
}

impl Invariant {
    pub const ALL: [Invariant; 13] = [
        Invariant::TrafficHealth,
        Invariant::TerminalTruth,
        Invariant::OneRevision,
        Invariant::OneAtATime,
        Invariant::AlertMissing,
        Invariant::AlertDuplicate,
        Invariant::AlertOrder,
        Invariant::Terminal,
        Invariant::Deadline,
        Invariant::RecordSize,
        Invariant::RuleActions,
        Invariant::ClaimReleased,
        Invariant::GatesHold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invariant::TrafficHealth => "traffic-health",
            Invariant::TerminalTruth => "terminal-truth",
            Invariant::OneRevision => "one-revision-per-deployment",
            Invariant::OneAtATime => "one-deployment-at-a-time",
            Invariant::AlertMissing => "alert-missing",
            Invariant::AlertDuplicate => "alert-duplicate",
            Invariant::AlertOrder => "alert-order",
            Invariant::Terminal => "terminal-after-quiet",
            Invariant::Deadline => "deadline",
            Invariant::RecordSize => "record-size",
            Invariant::RuleActions => "rule-actions-kept",
            Invariant::ClaimReleased => "claim-released",
            Invariant::GatesHold => "gates-hold",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Invariant::TrafficHealth => {
                "traffic never goes to a colour without enough running, healthy tasks of its revision"
            }
            Invariant::TerminalTruth => "a terminal record tells the truth about what serves",
            Invariant::OneRevision => "at most one task-definition revision per deployment",
            Invariant::OneAtATime => {
                "one deployment per service and environment touches ECS or the listener at a time"
            }
            Invariant::AlertMissing => "every transition's alert is published at least once",
            Invariant::AlertDuplicate => "no alert is published twice",
            Invariant::AlertOrder => "a deployment's alerts come in lifecycle order",
            Invariant::Terminal => "every deployment is terminal after the quiet phase",
            Invariant::Deadline => "a deployment in flight ends within its deadlines",
            Invariant::RecordSize => "no record exceeds 16 KB of JSON",
            Invariant::RuleActions => {
                "listener rule actions other than the forward weights never change"
            }
            Invariant::ClaimReleased => {
                "an invocation that ends leaves none of its effects claimed (a failed effect releases its claim at once)"
            }
            Invariant::GatesHold => {
                "no rollout starts inside a change freeze, and nothing of an image with blocking scan findings reaches ECS"
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    pub step: u64,
    pub at: DateTime<Utc>,
    pub detail: String,
    /// The trace lines up to the step that broke it.
    pub trace: Vec<String>,
}

#[derive(Default)]
pub struct Checker {
    /// The first violation of each invariant.
    pub violations: Vec<Violation>,
    pub checks: u64,
    store_generation: u64,
    last_now: Option<DateTime<Utc>>,
    elb_writes: usize,
    oversized_seen: usize,
    sns_seen: usize,
    unhealthy_since: BTreeMap<String, DateTime<Utc>>,
    /// The share of traffic each colour had at the last check.
    last_percent: BTreeMap<String, u32>,
    untrue_since: BTreeMap<String, (String, DateTime<Utc>)>,
    alert_ranks: BTreeMap<String, (u8, String)>,
    alerts_sent: BTreeSet<(String, String)>,
}

fn minutes_since_start(t: DateTime<Utc>) -> String {
    let s = (t - start_time()).num_seconds();
    format!("+{}:{:02}", s / 60, s % 60)
}

/// `native`: an ecs-native deployment asks its approval at the lifecycle hook, once started.
fn rank(event_type: &str, native: bool) -> u8 {
    match event_type {
        "deployment.approval_required" | "deployment.approval_reminder" if native => 1,
        "deployment.approval_required" | "deployment.approval_reminder" => 0,
        // A freeze or the scan holds it before it starts.
        "deployment.waiting" => 0,
        "deployment.started" => 1,
        // What follows an ending (a promotion, a scale-down given up on) comes after it.
        "deployment.follow_up_failed" => 3,
        _ => 2,
    }
}

impl Checker {
    fn violate(&mut self, invariant: Invariant, step: u64, at: DateTime<Utc>, detail: String) {
        if self.violations.iter().any(|v| v.invariant == invariant) {
            return;
        }
        self.violations.push(Violation {
            invariant,
            step,
            at,
            detail,
            trace: Vec::new(),
        });
    }

    /// After every step.
    pub fn after_step(&mut self, w: &World, plan: &Scenario, step: u64) {
        let now = w.now;
        // Steps that only read change nothing these checks look at.
        let changed = self.last_now != Some(now)
            || !w.step_mutations.is_empty()
            || self.store_generation != w.store.generation;
        self.last_now = Some(now);
        self.mutations(w, plan, step);
        if changed {
            self.traffic(w, plan, step);
            self.truth(w, plan, step);
            self.deadlines(w, plan, step);
        }
        self.alerts(w, step);
        if self.elb_writes != w.elb.writes.len() {
            self.elb_writes = w.elb.writes.len();
            self.rule_actions(w, step);
        }
        while self.oversized_seen < w.store.oversized.len() {
            let (id, size) = w.store.oversized[self.oversized_seen].clone();
            self.oversized_seen += 1;
            self.checks += 1;
            self.violate(
                Invariant::RecordSize,
                step,
                now,
                format!("deployment {id} was written as {size} bytes of JSON (bound 16384)"),
            );
        }
        if self.store_generation != w.store.generation {
            self.store_generation = w.store.generation;
            self.records(w, plan, step);
            self.gates(w, step);
        }
    }

    /// A rollout call is never decided inside a change freeze (unless an admin overrode it, or it
    /// is a revert), and a deployment of an image with blocking findings never registers a revision.
    fn gates(&mut self, w: &World, step: u64) {
        for d in w.store.deployments.values() {
            self.checks += 1;
            // The rollout call's decision is what a freeze holds (a call decided before it began
            // may land inside it, retried within the progress deadline).
            if let (Some(freeze), Some(started)) = (&d.gates.freeze, d.rollout.deploy_decided_at)
                && d.gates.freeze_override.is_none()
                && d.trigger != flightdeck::deployment::Trigger::Revert
                && let Some(frozen) = freeze.at(started)
            {
                self.violate(
                    Invariant::GatesHold,
                    step,
                    w.now,
                    format!(
                        "deployment {} decided its rollout call at {} inside the freeze {}",
                        d.id,
                        minutes_since_start(started),
                        frozen.window
                    ),
                );
            }
            // With `missing: allow`, a scan unreadable for `wait_minutes` (the noisy phase's
            // faults) lets the rollout through by design.
            let blocked = d.gates.scan.as_ref().is_some_and(|gate| {
                gate.missing == flightdeck::scan::Missing::Fail
                    && matches!(
                        w.scans.get(&d.digest),
                        Some(flightdeck::scan::ScanReport::Complete { counts, findings })
                            if gate.blocking(counts, findings).0 > 0
                    )
            });
            if blocked && w.registrations_by_deployment.contains_key(&d.id) {
                self.violate(
                    Invariant::GatesHold,
                    step,
                    w.now,
                    format!(
                        "deployment {} of an image with blocking findings registered a revision ({})",
                        d.id,
                        d.status()
                    ),
                );
            }
        }
    }

    fn mutations(&mut self, w: &World, plan: &Scenario, step: u64) {
        for m in &w.step_mutations {
            self.checks += 1;
            let Some(by) = m.deployment.as_deref() else {
                continue;
            };
            if let MutationKind::Register {
                task_definition, ..
            } = &m.what
                && let Some(all) = w.registrations_by_deployment.get(by)
                && all.len() > 1
            {
                let list: Vec<&str> = all.iter().map(|td| short_td(td)).collect();
                self.violate(
                    Invariant::OneRevision,
                    step,
                    w.now,
                    format!(
                        "deployment {by} registered {} revisions: {} (latest {})",
                        all.len(),
                        list.join(", "),
                        short_td(task_definition)
                    ),
                );
            }
            let Some(target) = m.what.target() else {
                continue;
            };
            let Some(reg) = plan.regs.iter().find(|r| {
                r.services.iter().any(|s| s == target)
                    || r.alb.as_ref().is_some_and(|a| a.rule == target)
            }) else {
                continue;
            };
            let (service, environment) = reg.key();
            let others: Vec<&Deployment> = w
                .store
                .deployments
                .values()
                .filter(|d| {
                    d.service == service
                        && d.environment == environment
                        && d.id != by
                        && d.in_flight()
                })
                .collect();
            if let Some(other) = others.first() {
                let status = w
                    .store
                    .deployments
                    .get(by)
                    .map(|d| d.status().as_str())
                    .unwrap_or("?");
                self.violate(
                    Invariant::OneAtATime,
                    step,
                    w.now,
                    format!(
                        "deployment {by} ({status}) made {:?} while deployment {} is {}",
                        m.what,
                        other.id,
                        other.status()
                    ),
                );
            }
        }
    }

    /// Percent-weighted need: enough healthy tasks for the share of traffic, at least one.
    fn need(percent: u32, desired: u32) -> u32 {
        (percent * desired).div_ceil(100).max(1)
    }

    fn traffic(&mut self, w: &World, plan: &Scenario, step: u64) {
        for reg in &plan.regs {
            let Some(alb) = &reg.alb else { continue };
            for colour in [&alb.blue, &alb.green] {
                self.checks += 1;
                let key = format!("{}#{}", alb.rule, colour.target_group);
                let percent = w.elb.percent_to(&alb.rule, &colour.target_group);
                let td = w
                    .ecs
                    .services
                    .get(&colour.service)
                    .map(|s| s.task_definition().to_string())
                    .unwrap_or_default();
                let healthy = w.ecs.healthy(&colour.service, &td, w.now);
                let need = Self::need(percent, reg.desired);
                let before = self.last_percent.insert(key.clone(), percent).unwrap_or(0);
                if percent == 0 || healthy >= need {
                    self.unhealthy_since.remove(&key);
                    continue;
                }
                // A weight write is to blame only when it raised this colour's share; a write
                // that leaves it as it was (a rollback onto the stable colour) moved nothing there.
                // ... and only when this colour is the one that deployment is putting its new
                // revision on: a rollback puts traffic back on the stable colour whatever state
                // the previous revision is in by then.
                let canary_of = |id: Option<&str>| {
                    id.and_then(|id| w.store.deployments.get(id))
                        .and_then(|d| d.traffic.as_ref())
                        .and_then(|t| t.canary().map(|c| t.target(c).target_group_arn.clone()))
                };
                // A write whose invocation read enough healthy targets of this colour moments
                // before is not to blame for a task that died in between (ELBv2 has no write
                // conditional on target health); the colour is then left to the rule below and to
                // the step's end-of-bake health gate.
                let checked_just_before = |task: TaskId| {
                    w.health_reads.get(&task).is_some_and(|(tg, healthy, at)| {
                        *tg == colour.target_group
                            && *healthy >= need
                            && w.now - *at <= Duration::seconds(10)
                    })
                };
                let caused = w.step_mutations.iter().find(|m| {
                    (m.what.target() == Some(alb.rule.as_str())
                        && percent > before
                        && canary_of(m.deployment.as_deref()).as_deref()
                            == Some(colour.target_group.as_str())
                        && !checked_just_before(m.task))
                        || m.what.target() == Some(colour.service.as_str())
                });
                let detail = format!(
                    "{percent}% of traffic on {} ({}) with {healthy} healthy running tasks of {} (needs {need})",
                    colour.service,
                    super::ports::tg_name(&colour.target_group),
                    short_td(&td)
                );
                if let Some(m) = caused {
                    let by = m.deployment.as_deref().unwrap_or("?").to_string();
                    self.violate(
                        Invariant::TrafficHealth,
                        step,
                        w.now,
                        format!("{detail}, right after {:?} by deployment {by}", m.what),
                    );
                }
                // The world degrading a colour on its own is Flightdeck's to answer (roll back)
                // only while one of this service's deployments is active.
                let (service, environment) = reg.key();
                let watched = w.store.deployments.values().any(|d| {
                    d.service == service && d.environment == environment && d.status().is_active()
                });
                if !watched {
                    // The clock runs only while a deployment is there to answer it.
                    self.unhealthy_since.remove(&key);
                    continue;
                }
                let since = *self.unhealthy_since.entry(key).or_insert(w.now);
                if w.now - since > TRAFFIC_GRACE {
                    self.violate(
                        Invariant::TrafficHealth,
                        step,
                        w.now,
                        format!("{detail}, for {} s", (w.now - since).num_seconds()),
                    );
                }
            }
        }
    }

    /// The deployment that last changed what serves (by the harness's attribution of the
    /// UpdateService and ModifyRule calls), once terminal, must tell the truth about it.
    fn truth(&mut self, w: &World, plan: &Scenario, step: u64) {
        for reg in &plan.regs {
            self.checks += 1;
            let targets = reg
                .services
                .iter()
                .map(String::as_str)
                .chain(reg.alb.as_ref().map(|a| a.rule.as_str()));
            let owner = targets
                .filter_map(|t| w.last_changed_by.get(t))
                .max_by_key(|(n, _)| *n)
                .map(|(_, id)| id.clone());
            let Some(d) = owner.and_then(|id| w.store.deployments.get(&id)) else {
                continue;
            };
            let claim = match d.status() {
                Status::Succeeded | Status::RolledBack => serving_claim(w, reg, d),
                Status::Failed if d.rollout.new_task_definition.is_none() => {
                    started_unknowingly(w, reg, d)
                }
                _ => None,
            };
            let (service, environment) = reg.key();
            let key = format!("{service}#{environment}");
            // SUCCEEDED and ROLLED_BACK are judged by what served when they were declared (an
            // untruth then must clear within the grace): a revision whose tasks die later is the
            // post-deployment watch window's to catch (`gates.watch_minutes`), not a record that
            // lied. Flightdeck's own calls after that are judged by traffic-health and
            // one-deployment-at-a-time.
            let claim = match (claim, d.status(), d.finished_at()) {
                (Some(Err(_)), Status::Succeeded | Status::RolledBack, Some(done))
                    if !self.untrue_since.contains_key(&key) && w.now > done =>
                {
                    None
                }
                (claim, _, _) => claim,
            };
            match claim {
                Some(Err(why)) => {
                    let entry = self
                        .untrue_since
                        .entry(key)
                        .or_insert((d.id.clone(), w.now));
                    if entry.0 != d.id {
                        *entry = (d.id.clone(), w.now);
                    }
                    let since = entry.1;
                    if w.now - since > TRUTH_GRACE {
                        self.violate(
                            Invariant::TerminalTruth,
                            step,
                            w.now,
                            format!(
                                "deployment {} is {} but {why} (for {} s)",
                                d.id,
                                d.status(),
                                (w.now - since).num_seconds()
                            ),
                        );
                    }
                }
                _ => {
                    self.untrue_since.remove(&key);
                }
            }
        }
    }

    fn alerts(&mut self, w: &World, step: u64) {
        while self.sns_seen < w.sns.len() {
            let p = &w.sns[self.sns_seen];
            self.sns_seen += 1;
            self.checks += 1;
            // `alarm.fired` names a suspect deployment; it is not one of its transitions.
            let Some(id) = p
                .deployment_id
                .clone()
                .filter(|_| p.event_type.starts_with("deployment."))
            else {
                continue;
            };
            let key = (id.clone(), p.event_type.clone());
            let earlier = w.sns[..self.sns_seen - 1].iter().any(|e| {
                e.deployment_id.as_deref() == Some(&id)
                    && e.event_type == p.event_type
                    && !e.excused
            });
            // A reminder comes twice (then escalated); a hold is announced per gate.
            if earlier && !p.event_type.contains("reminder") && p.event_type != "deployment.waiting"
            {
                self.violate(
                    Invariant::AlertDuplicate,
                    step,
                    w.now,
                    format!("{} of deployment {id} published again", p.event_type),
                );
            }
            self.alerts_sent.insert(key);
            let native = w
                .store
                .deployments
                .get(&id)
                .is_some_and(|d| d.native.is_some());
            let r = rank(&p.event_type, native);
            match self.alert_ranks.get(&id).cloned() {
                Some((seen, seen_type)) if r < seen => self.violate(
                    Invariant::AlertOrder,
                    step,
                    w.now,
                    format!("{} of deployment {id} after {seen_type}", p.event_type),
                ),
                Some((2, seen_type))
                    if r == 2
                        && seen_type != p.event_type
                        && !(seen_type == "deployment.succeeded"
                            && (p.event_type == "deployment.rolled_back"
                                || p.event_type == "deployment.failed")) =>
                {
                    self.violate(
                        Invariant::AlertOrder,
                        step,
                        w.now,
                        format!(
                            "{} of deployment {id} after {seen_type}: two different endings",
                            p.event_type
                        ),
                    )
                }
                Some((seen, _)) if seen >= r => {}
                _ => {
                    self.alert_ranks.insert(id, (r, p.event_type.clone()));
                }
            }
        }
    }

    fn rule_actions(&mut self, w: &World, step: u64) {
        let strip = |actions: &[RuleAction]| -> Vec<RuleAction> {
            actions
                .iter()
                .map(|a| match a {
                    RuleAction::Forward { stickiness, .. } => RuleAction::Forward {
                        groups: Vec::new(),
                        stickiness: *stickiness,
                    },
                    other => other.clone(),
                })
                .collect()
        };
        for (rule, initial) in &w.elb.initial {
            self.checks += 1;
            let now = w.elb.rules.get(rule).map(|a| strip(a)).unwrap_or_default();
            let before = strip(initial);
            if now != before {
                self.violate(
                    Invariant::RuleActions,
                    step,
                    w.now,
                    format!("listener rule actions were {before:?}, now {now:?}"),
                );
            }
        }
    }

    fn records(&mut self, w: &World, plan: &Scenario, step: u64) {
        for reg in &plan.regs {
            self.checks += 1;
            let (service, environment) = reg.key();
            let in_flight: Vec<&Deployment> = w
                .store
                .deployments
                .values()
                .filter(|d| d.service == service && d.environment == environment && d.in_flight())
                .collect();
            if in_flight.len() > 1 {
                let list: Vec<String> = in_flight
                    .iter()
                    .map(|d| format!("{} {}", d.id, d.status()))
                    .collect();
                self.violate(
                    Invariant::OneAtATime,
                    step,
                    w.now,
                    format!(
                        "{} deployments in flight at once: {}",
                        list.len(),
                        list.join(", ")
                    ),
                );
            }
        }
    }

    fn deadlines(&mut self, w: &World, plan: &Scenario, step: u64) {
        for d in w.store.deployments.values() {
            if !d.in_flight() {
                continue;
            }
            let Some(started) = d.rollout.started_at else {
                continue;
            };
            // ecs-native asks its approval at the hook, with the rollout started: once asked, the
            // wait is the approver's, and the budget counts from the approval.
            if d.native.as_ref().is_some_and(|n| n.approval_asked)
                && d.approval_required
                && d.approved_by.is_none()
            {
                continue;
            }
            let started = started.max(d.approved_at.unwrap_or(started));
            let Some(reg) = plan.regs.iter().find(|r| {
                r.registration.service == d.service && r.registration.environment == d.environment
            }) else {
                continue;
            };
            self.checks += 1;
            if w.now - started > reg.budget {
                self.violate(
                    Invariant::Deadline,
                    step,
                    w.now,
                    format!(
                        "deployment {} has been {} since it started at {} ({} min; budget {} min): {}",
                        d.id,
                        d.status(),
                        minutes_since_start(started),
                        (w.now - started).num_minutes(),
                        reg.budget.num_minutes(),
                        d.reason.as_deref().unwrap_or("-")
                    ),
                );
            }
        }
    }

    /// An invocation returned (it was not stopped): the effects it claimed are done or released.
    pub fn invocation_returned(
        &mut self,
        w: &World,
        claims: Vec<(String, u32, DateTime<Utc>)>,
        label: &str,
        outcome: &str,
        step: u64,
    ) {
        for (id, seq, at) in claims {
            self.checks += 1;
            let held = w.store.deployments.get(&id).and_then(|d| {
                d.outbox
                    .iter()
                    .find(|e| e.seq == seq && e.claim.as_ref().map(|c| c.at) == Some(at))
            });
            if let Some(e) = held {
                let effect = match &e.effect {
                    flightdeck::deployment::Effect::Alert(a) => {
                        format!("Alert({})", a.document.event_type.as_str())
                    }
                    other => format!("{other:?}"),
                };
                self.violate(
                    Invariant::ClaimReleased,
                    step,
                    w.now,
                    format!(
                        "`{label}` ended ({outcome}) leaving effect {seq} {effect} of deployment {id} claimed since {}; nobody retries it until the lease expires",
                        minutes_since_start(at)
                    ),
                );
            }
        }
    }

    /// At the end of the quiet phase.
    pub fn at_end(&mut self, w: &World, step: u64) {
        for d in w.store.deployments.values() {
            self.checks += 1;
            if d.status().is_active() || !d.outbox.is_empty() {
                self.violate(
                    Invariant::Terminal,
                    step,
                    w.now,
                    format!(
                        "deployment {} is {} with {} effects pending after the quiet phase: {}",
                        d.id,
                        d.status(),
                        d.outbox.len(),
                        d.reason.as_deref().unwrap_or("-")
                    ),
                );
            }
            for e in &d.events {
                let expected = match e.status {
                    Some(Status::AwaitingApproval) => "deployment.approval_required",
                    Some(Status::Deploying) => "deployment.started",
                    Some(Status::Succeeded) => "deployment.succeeded",
                    Some(Status::Failed) => "deployment.failed",
                    Some(Status::RolledBack) => "deployment.rolled_back",
                    _ => continue,
                };
                self.checks += 1;
                if !self
                    .alerts_sent
                    .contains(&(d.id.clone(), expected.to_string()))
                {
                    self.violate(
                        Invariant::AlertMissing,
                        step,
                        w.now,
                        format!(
                            "deployment {} became {} at {} but {expected} was never published",
                            d.id,
                            e.status.map(|s| s.as_str()).unwrap_or("?"),
                            minutes_since_start(e.at)
                        ),
                    );
                }
            }
        }
    }
}

/// A FAILED record that never learnt its revision claims nothing of it runs: true unless a
/// revision it registered is what ECS runs (rolling) or takes traffic (alb-weights).
fn started_unknowingly(w: &World, reg: &RegPlan, d: &Deployment) -> Option<Result<(), String>> {
    let registered = w.registrations_by_deployment.get(&d.id)?;
    let serving: Vec<String> = match &reg.alb {
        None => reg
            .services
            .iter()
            .filter_map(|s| w.ecs.services.get(s))
            .map(|s| s.task_definition().to_string())
            .collect(),
        Some(alb) => [&alb.blue, &alb.green]
            .into_iter()
            .filter(|c| w.elb.percent_to(&alb.rule, &c.target_group) > 0)
            .filter_map(|c| w.ecs.services.get(&c.service))
            .map(|s| s.task_definition().to_string())
            .collect(),
    };
    match serving.iter().find(|td| registered.contains(td)) {
        Some(td) => Some(Err(format!(
            "its revision {} serves (the record says the rollout never started: {})",
            short_td(td),
            d.reason.as_deref().unwrap_or("-")
        ))),
        None => Some(Ok(())),
    }
}

/// Whether what the terminal record `d` claims is what serves: `None` when it claims nothing
/// checkable, `Some(Err(why))` when the world disagrees.
fn serving_claim(w: &World, reg: &RegPlan, d: &Deployment) -> Option<Result<(), String>> {
    let previous = d.rollout.previous_task_definition.as_deref()?;
    let new = d.rollout.new_task_definition.as_deref()?;
    let succeeded = d.status() == Status::Succeeded;
    match &reg.alb {
        None => {
            let service = w.ecs.services.get(&reg.services[0])?;
            let want = if succeeded { new } else { previous };
            let running = w.ecs.running(&service.name, want);
            if service.task_definition() != want {
                return Some(Err(format!(
                    "ECS service {} runs {}, not {}",
                    service.name,
                    short_td(service.task_definition()),
                    short_td(want)
                )));
            }
            if running < service.desired.max(1) {
                return Some(Err(format!(
                    "only {running} tasks of {} run (desired {})",
                    short_td(want),
                    service.desired
                )));
            }
            Some(Ok(()))
        }
        Some(alb) => {
            let traffic = d.traffic.as_ref()?;
            let stable = traffic.stable?;
            let (serving, want) = if succeeded {
                (traffic.target(stable.other()), new)
            } else {
                (traffic.target(stable), previous)
            };
            let percent = w.elb.percent_to(&alb.rule, &serving.target_group_arn);
            if percent != 100 {
                return Some(Err(format!(
                    "the listener sends {percent}% to {}",
                    serving.service
                )));
            }
            let service = w.ecs.services.get(&serving.service)?;
            if service.task_definition() != want {
                return Some(Err(format!(
                    "{} runs {}, not {}",
                    serving.service,
                    short_td(service.task_definition()),
                    short_td(want)
                )));
            }
            // ROLLED_BACK (DESIGN.md): all traffic back on the stable colour, which still runs
            // the previous revision (not scaled away). Whether that revision is healthy is its
            // own story (it may have started failing after its own deployment ended).
            if !succeeded {
                if service.desired == 0 {
                    return Some(Err(format!(
                        "{} was scaled to 0 under the traffic",
                        serving.service
                    )));
                }
                return Some(Ok(()));
            }
            let healthy = w.ecs.healthy(&serving.service, want, w.now);
            let need = d.rollout.desired_count.unwrap_or(reg.desired).max(1);
            if healthy < need {
                return Some(Err(format!(
                    "{} has {healthy} healthy tasks of {} (needs {need})",
                    serving.service,
                    short_td(want)
                )));
            }
            Some(Ok(()))
        }
    }
}
