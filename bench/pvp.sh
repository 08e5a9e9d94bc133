#!/usr/bin/env bash
# bench/pvp.sh [REPS] — packet rate of `vhost net` against DPDK's net_vhost, measured in the same run by
# ../shared/harness/pvp-bench.sh (testpmd virtio-user counts on the front-end side, 64-byte frames,
# mergeable buffers and in-order on, as virtio-user defaults). Each case alternates the two back-ends
# REPS times (default 3) and reports the median of each and their ratio.
set -uo pipefail
reps=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
harness=${VHOST_SHARED_DIR:-$here/../shared}/harness
dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
tool=$here/src/Vhost.Cli/bin/Release/net10.0/vhost
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '| case | ring | vhost net (Mpps) | DPDK net_vhost (Mpps) | ratio |\n|---|---|---|---|---|\n'
for packed in 0 1; do
  for c in dequeue enqueue; do
    ours=() dpdk=()
    for ((r = 0; r < reps; r++)); do
      ours+=("$("$harness/pvp-bench.sh" --case $c --packed $packed --seconds 8 \
        --backend "$tool net --socket {sock} --fwd {mode} --txpkts {size} --stats-period 0" | sed -n 's/.*mpps=//p')")
      dpdk+=("$("$harness/pvp-bench.sh" --case $c --packed $packed --seconds 8 | sed -n 's/.*mpps=//p')")
    done
    o=$(printf '%s\n' "${ours[@]}" | median) d=$(printf '%s\n' "${dpdk[@]}" | median)
    printf '| %s | %s | %s | %s | %.2f |\n' "$c" "$([[ $packed == 1 ]] && echo packed || echo split)" \
      "$o (${ours[*]})" "$d (${dpdk[*]})" "$(echo "$o / $d" | bc -l)"
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
