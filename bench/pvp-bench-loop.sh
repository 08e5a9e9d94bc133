#!/usr/bin/env bash
# bench/pvp-bench-loop.sh [RUNS] [CASE...]
# The issue's own measure, ../shared/harness/pvp-bench.sh, run RUNS times (default 5) per back-end and case,
# DPDK's net_vhost and our `vhost net` taking turns (DPDK first), one result line per run with its start time.
# One run per back-end gives whatever level the host chose for it (docs/benchmarks.md), so compare the
# medians of several runs taken in turn. CASE: dequeue-split, dequeue-packed, enqueue-split, enqueue-packed
# (default: all four). Builds src/Vhost.Cli in Release first.
set -uo pipefail
runs=${1:-5}
shift $(($# < 1 ? $# : 1))
cases=("$@")
((${#cases[@]})) || cases=(dequeue-split dequeue-packed enqueue-split enqueue-packed)
here=$(cd "$(dirname "$0")/.." && pwd)
harness=${VHOST_SHARED_DIR:-$here/../shared/harness}/pvp-bench.sh
[[ -x $harness ]] || { echo "pvp-bench-loop: no $harness (set VHOST_SHARED_DIR)" >&2; exit 2; }
dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
ours="$here/src/Vhost.Cli/bin/Release/net10.0/Vhost.Cli net --socket {sock} --fwd {mode} --txpkts {size} --stats-period 0"
for c in "${cases[@]}"; do
  dir=${c%-*} ring=${c#*-}
  [[ $dir == dequeue || $dir == enqueue ]] && [[ $ring == split || $ring == packed ]] ||
    { echo "pvp-bench-loop: unknown case $c" >&2; exit 2; }
  packed=0; [[ $ring == packed ]] && packed=1
  for ((r = 0; r < runs; r++)); do
    for b in dpdk "$ours"; do
      echo "$(date -u +%T) $("$harness" --case "$dir" --packed $packed --backend "$b" 2>/dev/null | tail -1)"
    done
  done
done
