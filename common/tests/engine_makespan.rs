//! The engine never waits needlessly: over random DAGs (the makespan
//! benchmark's generator, `examples/makespan`), its simulated makespan equals
//! the in-order optimum (every host started as soon as its window, its stage
//! and its group's dependencies allow) and is never below the lower bound.

#[path = "../examples/makespan/bound.rs"]
mod bound;
#[path = "../examples/makespan/dag.rs"]
mod dag;
// The benchmark also reports the events it handled; this test does not.
#[allow(dead_code)]
#[path = "../examples/makespan/sim.rs"]
mod sim;

#[test]
fn engine_makespan_equals_the_in_order_optimum() {
    for seed in 1..=25 {
        let case = dag::generate(seed);
        let got = sim::run(&case).unwrap_or_else(|e| panic!("seed {seed}: {e}")).makespan_ms as f64;
        let ordered = bound::in_order(&case);
        let lb = bound::lower_bound(&case);
        assert_eq!(got, ordered, "seed {seed}: engine {got} ms, in-order optimum {ordered} ms");
        assert!(got >= lb, "seed {seed}: engine {got} ms below the lower bound {lb} ms");
    }
}
