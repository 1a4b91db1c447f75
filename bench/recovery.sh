#!/usr/bin/env bash
# Restart (recovery) time of a coordinator whose sled store holds one
# unfinished rollout with a long event log: the whole log replayed against a
# snapshot plus a short tail. See docs/ha.md ("Snapshots").
# Usage: bench/recovery.sh [EVENTS] (default 100000; RUNS=5, TAIL=500).
# The last line reads `recovery events=… full_ms=… snapshot_ms=… speedup=… …` (medians).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-${EVENTS:-100000}}"
exec cargo run --release -q -p convoy-coordinator --example recovery -- \
    --events "$EVENTS" --runs "${RUNS:-5}" --tail "${TAIL:-500}"
