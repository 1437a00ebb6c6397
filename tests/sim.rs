//! The deterministic simulation (tests/src/sim): the invariants over many seeds, and that a seed
//! replays exactly. `FLIGHTDECK_SIM_SEEDS` sets how many seeds (default 2000),
//! `FLIGHTDECK_SIM_FROM` the first one. A failing seed prints itself; replay it with
//! `cargo run -p flightdeck-local --bin flightdeck-sim -- --seed S`.

use std::time::Instant;

use flightdeck_local::sim::invariants::Invariant;
use flightdeck_local::sim::{Options, run_many, run_seed};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
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
