//! Makespan benchmark: the pure engine, under a simulated clock, over random
//! DAGs of groups (sizes, windows and ramps, soaks, step durations from a
//! seed), against the lower bound and the in-order optimum of `bound`.
//!
//! ```sh
//! cargo run --release -p convoy-common --example makespan -- --seeds 100
//! ```
//!
//! One line per seed with `--verbose`; the last line always reads
//! `makespan seeds=N worst_ratio=… median_ratio=… worst_vs_in_order=… …`.
//! Exits 1 if the engine is ever slower than the in-order optimum (it waited
//! for nothing), 2 on bad arguments.

mod bound;
mod dag;
mod sim;

use std::process::ExitCode;

struct Args {
    seeds: u64,
    first: u64,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { seeds: 100, first: 1, verbose: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            let n: u64 = v.parse().map_err(|_| format!("{name}: not a number: {v}"))?;
            if !(1..=100_000).contains(&n) {
                return Err(format!("{name}: {n} is not in 1..=100000"));
            }
            Ok(n)
        };
        match a.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--first" => args.first = number("--first")?,
            "--verbose" | "-v" => args.verbose = true,
            other => return Err(format!("unknown argument {other} (use --seeds N, --first SEED, --verbose)")),
        }
    }
    Ok(args)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("makespan: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ratios = Vec::new();
    let mut vs_order = Vec::new();
    let mut order_cost = Vec::new();
    let (mut worst, mut worst_seed) = (0.0f64, 0);
    let (mut hosts, mut events) = (0usize, 0usize);
    let started = std::time::Instant::now();
    for seed in args.first..args.first + args.seeds {
        let case = dag::generate(seed);
        let out = match sim::run(&case) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("makespan: seed {seed}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (lb, ordered) = (bound::lower_bound(&case), bound::in_order(&case));
        let got = out.makespan_ms as f64;
        let ratio = got / lb;
        hosts += case.spec.hosts.len();
        events += out.events;
        if args.verbose {
            println!(
                "seed={seed} groups={} hosts={} makespan_s={:.1} lower_bound_s={:.1} in_order_s={:.1} ratio={ratio:.4}",
                case.spec.groups.len(),
                case.spec.hosts.len(),
                got / 1000.0,
                lb / 1000.0,
                ordered / 1000.0
            );
        }
        if ratio > worst {
            (worst, worst_seed) = (ratio, seed);
        }
        ratios.push(ratio);
        vs_order.push(got / ordered);
        order_cost.push(ordered / lb);
    }
    let worst_vs_order = vs_order.iter().copied().fold(0.0, f64::max);
    let worst_order_cost = order_cost.iter().copied().fold(0.0, f64::max);
    println!(
        "makespan seeds={} hosts={hosts} events={events} worst_ratio={worst:.4} (seed {worst_seed}) median_ratio={:.4} \
         worst_vs_in_order={worst_vs_order:.4} worst_in_order_vs_bound={worst_order_cost:.4} engine_ms={}",
        args.seeds,
        median(&mut ratios),
        started.elapsed().as_millis()
    );
    if worst_vs_order > 1.0 + 1e-9 {
        eprintln!("makespan: the engine was slower than the in-order optimum: it waited for nothing");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
