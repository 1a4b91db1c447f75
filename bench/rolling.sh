#!/usr/bin/env bash
# Rolling-upgrade benchmark: N agent processes (default 200) in 4 tiers, DAG
# db -> collector -> polling -> api, 10% windows, 3 steps per host.
# Prints `convoy N=… wall_s=… per_host_step_ms=… cold|warm` and the
# coordinator's peak RSS and CPU time. The agents are the `convoy-agent`
# binary, what hosts install (packaging/convoy). Usage: bench/rolling.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-${N:-200}}"
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p convoy-cli -p convoy-agent
ulimit -n 65536 2>/dev/null || true
exec "$TARGET/release/convoy" __bench-rolling --hosts "$N" --agent-exe "$TARGET/release/convoy-agent"
