//! The deterministic simulation (tests/src/sim): the invariants over many seeds, and that a seed
//! replays exactly. `FLIGHTDECK_SIM_SEEDS` sets how many seeds (default 2000),
//! `FLIGHTDECK_SIM_FROM` the first one. A failing seed prints itself; replay it with
//! `cargo run -p flightdeck-local --bin flightdeck-sim -- --seed S`.

use std::time::Instant;

use flightdeck_local::sim::invariants::Invariant;
use flightdeck_local::sim::{Options, run_many, run_many_with, run_seed};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// DESIGN.md: reconcile is the source of truth, events are accelerators. With every ECS event
/// lost, each deployment still gets to its end by the reconcile loop alone, within its budget (per
/// phase: its progress deadline, its bakes, and a few ticks), and every invariant holds.
#[test]
fn every_deployment_converges_with_every_ecs_event_lost() {
    let count = env_u64("FLIGHTDECK_SIM_DROP_SEEDS", 300);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let options = Options {
        keep_trace: false,
        drop_ecs_events: true,
    };
    let reports = run_many_with(0, count, threads, &options);
    let failing: Vec<_> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    println!(
        "{} seeds with every ECS event lost: {} failing",
        reports.len(),
        failing.len()
    );
    if let Some(first) = failing.first() {
        panic!(
            "{} of {} seeds break an invariant with every ECS event lost (replay with \
             `flightdeck-sim --seed S --drop-ecs-events`):\n{}",
            failing.len(),
            reports.len(),
            first.failure_text(40)
        );
    }
}

#[test]
fn every_seed_keeps_the_invariants() {
    let count = env_u64("FLIGHTDECK_SIM_SEEDS", 2000);
    let from = env_u64("FLIGHTDECK_SIM_FROM", 0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let started = Instant::now();
    let reports = run_many(from, count, threads);
    let elapsed = started.elapsed().as_secs_f64();
    let failing: Vec<_> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let steps: u64 = reports.iter().map(|r| r.steps).sum();
    let checks: u64 = reports.iter().map(|r| r.checks).sum();
    println!(
        "{} seeds from {from} in {elapsed:.1} s ({:.1} seeds/s on {threads} threads): {steps} steps, {checks} invariant checks, {} failing seeds",
        reports.len(),
        reports.len() as f64 / elapsed.max(1e-9),
        failing.len()
    );
    if failing.is_empty() {
        return;
    }
    let mut summary = String::new();
    for inv in Invariant::ALL {
        let seeds: Vec<u64> = failing
            .iter()
            .filter(|r| r.violations.iter().any(|v| v.invariant == inv))
            .map(|r| r.seed)
            .collect();
        if let Some(first) = seeds.first() {
            summary.push_str(&format!(
                "  {:<28} {:>5} seeds, smallest {first}\n",
                inv.name(),
                seeds.len()
            ));
        }
    }
    // The smallest failing seed in full, the next few by their violations.
    let mut text = failing[0].failure_text(40);
    for r in failing.iter().skip(1).take(4) {
        text.push_str(&format!("seed {}\n", r.seed));
        for v in &r.violations {
            text.push_str(&format!(
                "  violated {}: {}\n",
                v.invariant.name(),
                v.detail
            ));
        }
    }
    panic!(
        "{} of {} seeds violate invariants:\n{summary}\n{text}",
        failing.len(),
        reports.len()
    );
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options::default();
    for seed in [0, 7, 1234] {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        assert_eq!(
            (a.trace_hash, a.steps, a.trace_lines),
            (b.trace_hash, b.steps, b.trace_lines),
            "seed {seed} did not replay the same"
        );
        assert_eq!(a.deployments, b.deployments);
        let violated = |r: &flightdeck_local::sim::SeedReport| {
            r.violations
                .iter()
                .map(|v| (v.invariant, v.step))
                .collect::<Vec<_>>()
        };
        assert_eq!(violated(&a), violated(&b));
    }
}

mod checker {
    //! The checker itself: each invariant fires on a world broken by hand, and not on the
    //! world as it starts.

    use chrono::Duration;
    use flightdeck::deployment::{Deployment, ImagePush, Status};
    use flightdeck_local::sim::invariants::{Checker, Invariant};
    use flightdeck_local::sim::prepared;
    use flightdeck_local::sim::world::{Mutation, MutationKind, Published, RuleAction};

    fn alb_seed() -> u64 {
        (0..100)
            .find(|s| {
                let (w, plan) = prepared(*s);
                plan.regs
                    .iter()
                    .any(|r| r.alb.as_ref().is_some_and(|a| a.actions.len() == 2))
                    && !w.elb.rules.is_empty()
            })
            .expect("an alb-weights seed with two rule actions among the first 100")
    }

    fn violated(c: &Checker) -> Vec<Invariant> {
        c.violations.iter().map(|v| v.invariant).collect()
    }

    fn deployment(
        plan: &flightdeck_local::sim::scenario::Scenario,
        w_now: chrono::DateTime<chrono::Utc>,
    ) -> Deployment {
        let reg = &plan.regs[0];
        let push = ImagePush {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: reg.repository.clone(),
            digest: format!("sha256:{}", "e".repeat(64)),
            tag: Some("v9".into()),
            event_id: "e-1".into(),
        };
        Deployment::from_push(&reg.registration, &push, w_now)
    }

    #[test]
    fn a_fresh_world_breaks_nothing() {
        let (w, plan) = prepared(alb_seed());
        let mut c = Checker::default();
        c.after_step(&w, &plan, 1);
        c.at_end(&w, 1);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }

    #[test]
    fn lost_rule_actions_and_traffic_to_an_empty_colour_are_seen() {
        let (mut w, plan) = prepared(alb_seed());
        let alb = plan.regs.iter().find_map(|r| r.alb.clone()).expect("alb");
        let actions = vec![RuleAction::Forward {
            groups: vec![
                (alb.blue.target_group.clone(), 50),
                (alb.green.target_group.clone(), 50),
            ],
            stickiness: None,
        }];
        w.elb.rules.insert(alb.rule.clone(), actions.clone());
        let now = w.now;
        w.elb.writes.push((now, alb.rule.clone(), actions));
        // A deployment putting its new revision on green (blue serving) made the write.
        let reg = plan.regs.iter().find(|r| r.alb.is_some()).expect("alb");
        let push = ImagePush {
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: reg.repository.clone(),
            digest: format!("sha256:{}", "e".repeat(64)),
            tag: Some("v9".into()),
            event_id: "e-x".into(),
        };
        let mut d = Deployment::from_push(&reg.registration, &push, now);
        d.id = "d-x".into();
        if let Some(t) = d.traffic.as_mut() {
            t.stable = Some(flightdeck::deployment::Colour::Blue);
        }
        w.store.deployments.insert(d.id.clone(), d);
        w.step_mutations.push(Mutation {
            task: 1,
            deployment: Some("d-x".into()),
            what: MutationKind::SetWeights {
                rule: alb.rule.clone(),
            },
        });
        let mut c = Checker::default();
        c.after_step(&w, &plan, 1);
        let seen = violated(&c);
        assert!(seen.contains(&Invariant::RuleActions), "{seen:?}");
        assert!(seen.contains(&Invariant::TrafficHealth), "{seen:?}");
    }

    #[test]
    fn duplicate_and_disordered_alerts_and_big_records_are_seen() {
        let (mut w, plan) = prepared(0);
        let alert = |event_type: &str, excused: bool| Published {
            at: w.now,
            event_type: event_type.into(),
            deployment_id: Some("d-1".into()),
            task: 1,
            excused,
        };
        let (a, b, c2, d) = (
            alert("deployment.started", true),
            alert("deployment.started", false),
            alert("deployment.rolled_back", false),
            alert("deployment.started", false),
        );
        w.sns.extend([a, b]);
        let mut c = Checker::default();
        c.after_step(&w, &plan, 1);
        assert!(c.violations.is_empty(), "an excused resend is no duplicate");
        w.sns.extend([c2, d]);
        w.store.oversized.push(("d-1".into(), 20_000));
        c.after_step(&w, &plan, 2);
        let seen = violated(&c);
        for inv in [
            Invariant::AlertDuplicate,
            Invariant::AlertOrder,
            Invariant::RecordSize,
        ] {
            assert!(seen.contains(&inv), "{inv:?} not in {seen:?}");
        }
    }

    #[test]
    fn a_deployment_left_in_flight_is_late_unterminated_and_unannounced() {
        let (mut w, plan) = prepared(0);
        let mut d = deployment(&plan, w.now);
        d.state = flightdeck::deployment::State::Deploying(flightdeck::deployment::Progress {
            progress_deadline: w.now + Duration::minutes(10),
            settled_at: None,
            bake_until: None,
        });
        d.rollout.started_at = Some(w.now);
        d.events.push(flightdeck::deployment::AuditEvent {
            at: w.now,
            status: Some(Status::Deploying),
            reason: None,
            actor: None,
        });
        w.store.deployments.insert(d.id.clone(), d);
        w.store.generation += 1;
        w.now += plan.regs[0].budget + Duration::minutes(1);
        let mut c = Checker::default();
        c.after_step(&w, &plan, 1);
        c.at_end(&w, 2);
        let seen = violated(&c);
        for inv in [
            Invariant::Deadline,
            Invariant::Terminal,
            Invariant::AlertMissing,
        ] {
            assert!(seen.contains(&inv), "{inv:?} not in {seen:?}");
        }
    }
}
