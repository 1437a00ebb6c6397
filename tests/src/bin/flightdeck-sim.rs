//! Runs the deterministic simulation (tests/src/sim) over many seeds, or replays one.
//!
//! ```text
//! flightdeck-sim [--seeds N] [--from S] [--threads T]   run seeds S..S+N (default 0..2000)
//! flightdeck-sim ... --list                             and print every violation, one a line
//! flightdeck-sim ... --drop-ecs-events                  with every ECS event lost
//! flightdeck-sim --seed S                               replay seed S, printing its schedule
//! ```

use std::process::ExitCode;
use std::time::Instant;

use flightdeck_local::sim::invariants::Invariant;
use flightdeck_local::sim::{Options, SeedReport, run_many_with, run_seed};

struct Args {
    seeds: u64,
    from: u64,
    one: Option<u64>,
    threads: usize,
    /// Print every violation of every seed, one a line.
    list: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 2000,
        from: 0,
        one: None,
        list: false,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a number"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?,
            "--from" => args.from = value("--from")?,
            "--seed" => args.one = Some(value("--seed")?),
            "--threads" => args.threads = value("--threads")?.max(1) as usize,
            "--list" => args.list = true,
            "--drop-ecs-events" => {}
            "-h" | "--help" => {
                return Err(
                    "usage: flightdeck-sim [--seeds N] [--from S] [--threads T] [--list] | --seed S; [--drop-ecs-events]"
                        .to_string(),
                );
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn replay(seed: u64) -> ExitCode {
    let started = Instant::now();
    let report = run_seed(
        seed,
        &Options {
            keep_trace: true,
            drop_ecs_events: std::env::args().any(|a| a == "--drop-ecs-events"),
        },
    );
    println!("seed {seed}: scenario\n{}", report.scenario);
    println!("schedule:");
    for line in report.full_trace.iter().flatten() {
        println!("  {line}");
    }
    println!("deployments:");
    for (id, status) in &report.deployments {
        println!("  {id} {status}");
    }
    println!(
        "steps {}, invariant checks {}, port calls {}, faults injected {}, largest record {} bytes, trace hash {:016x}, elapsed {:.3} s",
        report.steps,
        report.checks,
        report.port_calls,
        report.faults_injected,
        report.largest_record,
        report.trace_hash,
        started.elapsed().as_secs_f64()
    );
    if report.violations.is_empty() {
        println!("no violations");
        ExitCode::SUCCESS
    } else {
        print!("{}", report.failure_text(15));
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        return replay(seed);
    }
    let started = Instant::now();
    let options = Options {
        keep_trace: false,
        drop_ecs_events: std::env::args().any(|a| a == "--drop-ecs-events"),
    };
    let reports: Vec<SeedReport> = run_many_with(args.from, args.seeds, args.threads, &options);
    let elapsed = started.elapsed().as_secs_f64();
    let failing: Vec<&SeedReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    if args.list {
        for r in &failing {
            for v in &r.violations {
                println!(
                    "seed {} {} step {}: {}",
                    r.seed,
                    v.invariant.name(),
                    v.step,
                    v.detail
                );
            }
        }
    }
    for r in failing.iter().take(3) {
        print!("{}", r.failure_text(25));
    }
    if failing.len() > 3 {
        println!("... and {} more failing seeds", failing.len() - 3);
    }
    println!("\nby invariant (seeds violating it, smallest seed):");
    for inv in Invariant::ALL {
        let seeds: Vec<u64> = reports
            .iter()
            .filter(|r| r.violations.iter().any(|v| v.invariant == inv))
            .map(|r| r.seed)
            .collect();
        if let Some(first) = seeds.first() {
            let detail = reports
                .iter()
                .find(|r| r.seed == *first)
                .and_then(|r| r.violations.iter().find(|v| v.invariant == inv))
                .map(|v| v.detail.clone())
                .unwrap_or_default();
            println!(
                "  {:<28} {:>5} seeds, smallest {first}: {detail}",
                inv.name(),
                seeds.len()
            );
        }
    }
    let mut gates: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for outcome in reports.iter().flat_map(|r| &r.gate_outcomes) {
        *gates.entry(outcome).or_default() += 1;
    }
    if !gates.is_empty() {
        println!("\ngates (deployments):");
        for (outcome, n) in &gates {
            println!("  {outcome:<44} {n:>6}");
        }
    }
    let steps: u64 = reports.iter().map(|r| r.steps).sum();
    let checks: u64 = reports.iter().map(|r| r.checks).sum();
    let longest = reports.iter().map(|r| r.steps).max().unwrap_or(0);
    let largest = reports.iter().map(|r| r.largest_record).max().unwrap_or(0);
    println!(
        "\nseeds run {} (from {}), steps executed {steps}, invariant checks {checks}, violations {} (in {} seeds), longest schedule {longest} steps, largest record {largest} bytes, elapsed {elapsed:.1} s ({:.1} seeds/s on {} threads)",
        reports.len(),
        args.from,
        reports.iter().map(|r| r.violations.len()).sum::<usize>(),
        failing.len(),
        reports.len() as f64 / elapsed.max(1e-9),
        args.threads
    );
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
