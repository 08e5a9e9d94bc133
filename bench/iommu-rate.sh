#!/usr/bin/env bash
# bench/iommu-rate.sh [ROUNDS] [SECONDS]: net dequeue rate with and without a vIOMMU, ours (`vhost net --fwd rxonly`)
# and DPDK's net_vhost (testpmd rxonly, iommu-support=1) in turns, driven by `Vhost.Scale rate` (docs/iommu.md).
# Back-end on CPU 1, driver on CPU 0. Prints one line per turn and the medians and pair ratios at the end.
set -uo pipefail
rounds=${1:-6}; secs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/artifacts/iommu-rate; mkdir -p "$out"
dotnet build "$root/src/Vhost.Cli" -c Release -o "$out/vhost" -v q --nologo >/dev/null || exit 1
dotnet build "$root/bench/Vhost.Scale" -c Release -o "$out/driver" -v q --nologo >/dev/null || exit 1
tool=$out/vhost/Vhost.Cli.dll
command -v dpdk-testpmd >/dev/null || { echo "iommu-rate: dpdk-testpmd missing (apt-get install dpdk-dev)" >&2; exit 1; }
drive() { taskset -c 0 dotnet "$out/driver/Vhost.Scale.dll" rate "$1" "$secs" $2 2>&1 | grep '^rate'; }
wait_sock() { for _ in $(seq 100); do [[ -S $1 ]] && return; sleep 0.1; done; }
ours() {
  local s=$out/ours.sock; rm -f "$s"
  taskset -c 1 dotnet "$tool" net --socket "$s" --fwd rxonly --stats-period 0 >"$out/ours.log" 2>&1 & local p=$!
  wait_sock "$s"; drive "$s" "$1"; kill -TERM $p; wait $p 2>/dev/null
}
dpdk() {
  local s=$out/dpdk.sock flag=; rm -f "$s"; [[ $1 == 1 ]] && flag=--iommu
  dpdk-testpmd -l 0,1 --main-lcore 0 --no-huge -m 1024 --no-pci --file-prefix iommu-rate \
    --vdev "net_vhost0,iface=$s,queues=1,iommu-support=$1" -- --forward-mode=rxonly --nb-cores=1 --stats-period 100 \
    >"$out/testpmd.log" 2>&1 & local p=$!
  wait_sock "$s"; drive "$s" "$flag"; kill -INT $p; wait $p 2>/dev/null
}
for r in $(seq "$rounds"); do
  echo "ours iommu: $(ours --iommu)"; echo "dpdk iommu: $(dpdk 1)"
  echo "ours plain: $(ours '')"; echo "dpdk plain: $(dpdk 0)"
done | tee "$out/turns.txt"
python3 - "$out/turns.txt" <<'PY'
import re, statistics as st, sys
d = {}
for l in open(sys.argv[1]):
    m = re.match(r'(ours|dpdk) (iommu|plain): .*median_mpps=([\d.]+)', l)
    if m: d.setdefault((m[1], m[2]), []).append(float(m[3]))
for mode in ('iommu', 'plain'):
    o, p = d.get(('ours', mode), []), d.get(('dpdk', mode), [])
    if not o or not p: print(f"{mode}: no figures"); continue
    r = [a / b for a, b in zip(o, p)]
    print(f"{mode}: ours median {st.median(o):.1f} Mpps, dpdk {st.median(p):.1f}, pair ratios {min(r):.2f}-{max(r):.2f}, median {st.median(r):.2f}")
PY
