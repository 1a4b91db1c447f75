#!/usr/bin/env bash
# Swarm benchmark: N simulated agents (default 10000) in one process, each a
# real mTLS gRPC session with its own certificate (enrolled with a join
# token), Hello with facts, heartbeats and results from a fake driver,
# against a release `convoy-coordinator` process. Measures connect time, the
# idle coordinator's RSS and CPU, a no-op rollout of all N (max_parallel 500)
# and the resume after a SIGKILL of the coordinator mid-rollout.
# See docs/benchmark.md. Usage: bench/swarm.sh [N] [extra options of the swarm example]
# The last line reads `swarm N=… connect_s=… idle_rss_mb=… idle_cpu_pct=… rollout_s=… resume_s=…`.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-${N:-10000}}"
shift || true
TARGET="${CARGO_TARGET_DIR:-target}"
# Two builds: `--example` alone would build the swarm but not the coordinator binary.
cargo build --release -q -p convoy-coordinator --bin convoy-coordinator
cargo build --release -q -p convoy-fleet --example swarm
# One descriptor per agent connection on each side, plus files: the coordinator
# raises its own soft limit to the hard one; this raises ours.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((N + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  echo "swarm: the open-file limit $(ulimit -n) is below $need needed for $N agents (raise the hard limit)" >&2
  exit 2
fi
# 10,000 simulated agents share one heap here, where real agents have one
# host each: under glibc's malloc that sharing costs the swarm a quarter of
# its CPU, which the coordinator then does not get on a 2-core machine.
# Debian's mimalloc (`apt-get install libmimalloc2.0`) is preloaded into the
# swarm when installed (SWARM_MALLOC=glibc to keep glibc); the coordinator
# always runs on glibc (the swarm removes LD_PRELOAD from its environment).
MIMALLOC=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
if [ "${SWARM_MALLOC:-mimalloc}" = mimalloc ] && [ -e "$MIMALLOC" ]; then
  echo "swarm: simulated agents on mimalloc ($MIMALLOC), the coordinator on glibc" >&2
  export LD_PRELOAD="$MIMALLOC"
else
  echo "swarm: simulated agents and coordinator on glibc's malloc" >&2
fi
exec "$TARGET/release/examples/swarm" --agents "$N" --coordinator-exe "$TARGET/release/convoy-coordinator" "$@"
