#!/usr/bin/env bash
# Where the CPU goes while sandboxes are started back to back: runs
# `stockade bench --sustained` and samples every CPU with `perf record -a` meanwhile, then
# prints the share of samples per command name (runc, containerd-shim, containerd,
# stockade's tokio workers, …) and the runs per second the bench reached.
#
#   scripts/profile-sustained.sh [SECONDS] [CONCURRENCY]     (root; needs perf)
#
# Defaults: 12 seconds at concurrency 4, cold (no pool). The profile covers the middle of
# the run (it starts 2 s in and stops 2 s before the end).
set -euo pipefail

secs=${1:-12}
conc=${2:-4}
stockade=${STOCKADE:-stockade}
command -v perf >/dev/null || { echo "profile-sustained: perf is not installed (apt-get install linux-perf)" >&2; exit 125; }
(( secs >= 6 )) || { echo "profile-sustained: SECONDS must be at least 6" >&2; exit 125; }

work=$(mktemp -d)
bench_pid=
cleanup() {
    if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
        kill "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$stockade" bench --sustained "${secs}s" --concurrency "$conc" --pool-size 0 \
    >"$work/bench.txt" 2>"$work/bench.err" &
bench_pid=$!
sleep 2
perf record -a -F 999 -o "$work/perf.data" -- sleep $((secs - 4)) 2>/dev/null
wait "$bench_pid"
bench_pid=

echo "# stockade bench --sustained ${secs}s --concurrency $conc (cold)"
grep '^sustained' "$work/bench.txt" || cat "$work/bench.err" >&2
echo "# perf record -a -F 999, share of all samples per command"
perf report -i "$work/perf.data" --sort comm --stdio 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -15
