#!/usr/bin/env bash
# Makespan benchmark: the pure engine under a simulated clock over random
# DAGs (one per seed), against the lower bound max(longest host, work /
# window, ...) taken group by group along the DAG's longest path, and against
# the in-order optimum. See docs/benchmark.md. Usage: bench/makespan.sh [SEEDS]
# The last line reads `makespan seeds=… worst_ratio=… median_ratio=… …`.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-${SEEDS:-100}}"
exec cargo run --release -q -p convoy-common --example makespan -- --seeds "$SEEDS"
