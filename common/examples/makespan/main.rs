//! Makespan benchmark: the pure engine, under a simulated clock, over random
//! DAGs of groups (sizes, windows and ramps, soaks, step durations from a
//! seed), against the lower bound and the in-order optimum of `bound`: once
//! with each group's hosts in the listed order, once balanced
//! (`order: balanced`, [`convoy_common::host_order`]) from a remembered
//! history of each step's duration that is off by up to `--history-error`
//! percent (default 20).
//!
//! ```sh
//! cargo run --release -p convoy-common --example makespan -- --seeds 100
//! ```
//!
//! One line per seed with `--verbose`; the last line always reads
//! `makespan seeds=N … worst_ratio=… median_ratio=… listed_worst_ratio=… …`
//! (the unprefixed ratios are the balanced order's).
//! Exits 1 if the engine is ever slower than the in-order optimum (it waited
//! for nothing), 2 on bad arguments.

mod bound;
mod dag;
mod sim;

use std::process::ExitCode;

struct Args {
    seeds: u64,
    first: u64,
    /// Percent each step's remembered duration is off by, at most (either way).
    history_error: u64,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { seeds: 100, first: 1, history_error: 20, verbose: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str, lo: u64, hi: u64| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            let n: u64 = v.parse().map_err(|_| format!("{name}: not a number: {v}"))?;
            if !(lo..=hi).contains(&n) {
                return Err(format!("{name}: {n} is not in {lo}..={hi}"));
            }
            Ok(n)
        };
        match a.as_str() {
            "--seeds" => args.seeds = number("--seeds", 1, 100_000)?,
            "--first" => args.first = number("--first", 1, 100_000)?,
            "--history-error" => args.history_error = number("--history-error", 0, 100)?,
            "--verbose" | "-v" => args.verbose = true,
            other => {
                return Err(format!(
                    "unknown argument {other} (use --seeds N, --first SEED, --history-error PCT, --verbose)"
                ));
            }
        }
    }
    Ok(args)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Ratios over the seeds of one way of ordering the hosts.
#[derive(Default)]
struct Tally {
    ratios: Vec<f64>,
    vs_order: Vec<f64>,
    worst: f64,
    worst_seed: u64,
    hosts: usize,
    events: usize,
}

impl Tally {
    /// Run `case` (seed `seed`); its line with `--verbose`.
    fn add(&mut self, seed: u64, label: &str, case: &dag::Case, verbose: bool) -> Result<(), String> {
        let out = sim::run(case).map_err(|e| format!("seed {seed} ({label}): {e}"))?;
        let (lb, ordered) = (bound::lower_bound(case), bound::in_order(case));
        let got = out.makespan_ms as f64;
        let ratio = got / lb;
        self.hosts += case.spec.hosts.len();
        self.events += out.events;
        if verbose {
            println!(
                "seed={seed} order={label} groups={} hosts={} makespan_s={:.1} lower_bound_s={:.1} in_order_s={:.1} \
                 ratio={ratio:.4}",
                case.spec.groups.len(),
                case.spec.hosts.len(),
                got / 1000.0,
                lb / 1000.0,
                ordered / 1000.0
            );
        }
        if ratio > self.worst {
            (self.worst, self.worst_seed) = (ratio, seed);
        }
        self.ratios.push(ratio);
        self.vs_order.push(got / ordered);
        Ok(())
    }

    fn worst_vs_order(&self) -> f64 {
        self.vs_order.iter().copied().fold(0.0, f64::max)
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("makespan: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut listed, mut balanced) = (Tally::default(), Tally::default());
    let started = std::time::Instant::now();
    for seed in args.first..args.first + args.seeds {
        let case = dag::generate(seed);
        let history = case.history(seed, args.history_error);
        let ran = listed
            .add(seed, "listed", &case, args.verbose)
            .and_then(|()| balanced.add(seed, "balanced", &case.balanced(&history), args.verbose));
        if let Err(e) = ran {
            eprintln!("makespan: {e}");
            return ExitCode::FAILURE;
        }
    }
    let worst_vs_order = listed.worst_vs_order().max(balanced.worst_vs_order());
    println!(
        "makespan seeds={} hosts={} events={} order=balanced history_error_pct={} worst_ratio={:.4} (seed {}) \
         median_ratio={:.4} listed_worst_ratio={:.4} (seed {}) listed_median_ratio={:.4} \
         worst_vs_in_order={worst_vs_order:.4} engine_ms={}",
        args.seeds,
        balanced.hosts,
        balanced.events + listed.events,
        args.history_error,
        balanced.worst,
        balanced.worst_seed,
        median(&mut balanced.ratios),
        listed.worst,
        listed.worst_seed,
        median(&mut listed.ratios),
        started.elapsed().as_millis()
    );
    if worst_vs_order > 1.0 + 1e-9 {
        eprintln!("makespan: the engine was slower than the in-order optimum: it waited for nothing");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
