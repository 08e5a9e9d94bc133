#!/usr/bin/env bash
# bench/pvp.sh [REPS] [HOLD] [CASE...]
# Packet rate of `vhost net` against DPDK's net_vhost, both served to one DPDK testpmd virtio-user front-end
# with the parameters of ../shared/harness/pvp-bench.sh (back-end pinned to CPU 1, front-end forwarding on
# CPU 0, --no-huge, 64-byte frames, mergeable buffers and in-order on as virtio-user defaults, the front-end
# counting).
#
# Why not one pvp-bench.sh run per back-end: on this VM the rate of either back-end swings about 2x with
# the host's load and vCPU placement, and a level holds from seconds to minutes, so runs taken half a minute
# apart (testpmd's start-up) compare placements more than back-ends. Here the front-end runs the whole time
# in virtio-user's server mode and the two back-ends take turns as vhost-user clients, HOLD seconds each
# (default 10), REPS turns each (default 6), DPDK's first. A sample is the
# front-end's per-second rate, kept when it lies wholly inside a turn after the turn's first PVP_SKIP
# seconds (default 4: reconnection and warm-up); the sample files also give each sample's offset in its turn. Reported: the median of each back-end's samples, their ratio, and the median
# of the ratios of neighbouring turns (ours over DPDK), which compares the two under the same conditions.
# The rate also sits on one of two levels, about 5-11 and 13-23 Mpps, switched by the host (vCPU placement) for
# seconds to minutes with either back-end, so each back-end's samples are also split at PVP_LEVEL (default
# 12.5 Mpps; it was 10.5 until our dequeue's low level reached 10-11 Mpps with line eviction): the median of
# each level, the low levels' ratio, and the share of samples on the high level.
# Last, "same mix" weighs each back-end's two level medians by the share of all samples (both back-ends') on the
# high level and gives the ratio of the two: what the back-ends would compare at if the host had placed them
# alike.
# CASE: dequeue-split, enqueue-split, dequeue-packed, enqueue-packed (default: all four).
# Samples are left in $PVP_OUT (default /tmp/pvp-samples), one file per case: turn, back-end, pps. With
# PVP_REPORT=1 nothing is measured: the table is made again from the samples already there.
set -uo pipefail
reps=${1:-6} hold=${2:-10}
shift $(($# < 2 ? $# : 2))
cases=("$@")
((${#cases[@]})) || cases=(dequeue-split enqueue-split dequeue-packed enqueue-packed)
here=$(cd "$(dirname "$0")/.." && pwd)
out=${PVP_OUT:-/tmp/pvp-samples}
level=${PVP_LEVEL:-12.5}
skip=${PVP_SKIP:-4}
mkdir -p "$out"
command -v dpdk-testpmd >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpdk-dev >/dev/null; }
[[ ${PVP_REPORT:-0} == 1 ]] || dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
tool=$here/src/Vhost.Cli/bin/Release/net10.0/Vhost.Cli
testpmd=(dpdk-testpmd -l 0,1 --no-huge -m 1024 --no-pci)
fwdargs=(--txpkts=64 --stats-period 1 --no-flush-rx --total-num-mbufs=16384)

# measure CASE RING(0|1) FILE: one front-end, alternating back-ends; writes "turn backend pps" lines to FILE
measure() {
  local c=$1 packed=$2 file=$3 w sock bmode fmode key be t0 t1 prefix=pvpf$$-$1-$2
  w=$(mktemp -d) sock=$w/vhost.sock
  if [[ $c == dequeue ]]; then bmode=rxonly fmode=txonly key=Tx-pps; else bmode=txonly fmode=rxonly key=Rx-pps; fi
  # each line of the front-end's output stamped with the time it was printed
  "${testpmd[@]}" --main-lcore 1 --file-prefix=$prefix \
    --vdev "net_virtio_user0,path=$sock,server=1,queues=1,packed_vq=$packed,mrg_rxbuf=1,in_order=1" -- \
    --forward-mode=$fmode "${fwdargs[@]}" 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$w/frontend.log" &
  for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
  [[ -S $sock ]] || { echo "pvp: the front-end made no socket" >&2; tail -5 "$w/frontend.log" >&2; return 1; }
  : >"$w/turns"
  for ((r = 0; r < 2 * reps; r++)); do
    for who in $( ((r % 2)) && echo ours || echo dpdk); do
      if [[ $who == dpdk ]]; then
        "${testpmd[@]}" --main-lcore 0 --file-prefix=pvpb$$ --vdev "net_vhost0,iface=$sock,client=1,queues=1" -- \
          --forward-mode=$bmode "${fwdargs[@]}" >"$w/backend.log" 2>&1 &
      else
        taskset -c 1 "$tool" net --socket "$sock" --client --fwd $bmode --txpkts 64 --stats-period 0 >"$w/backend.log" 2>&1 &
      fi
      be=$!
      t0=$EPOCHREALTIME
      sleep "$hold"
      t1=$EPOCHREALTIME
      kill "$be" 2>/dev/null
      wait "$be" 2>/dev/null
      echo "$who $t0 $t1" >>"$w/turns"
    done
  done
  pkill -f -- "--file-prefix=$prefix"
  for _ in $(seq 100); do pgrep -f -- "--file-prefix=$prefix" >/dev/null || break; sleep 0.1; done
  # testpmd prints the rate over the interval since its previous line (about a second, longer when its
  # main thread waits for CPU 1)
  awk -v key="$key:" -v skip="$skip" 'NR == FNR {who[NR] = $1; from[NR] = $2; to[NR] = $3; n = NR; next}
    $0 ~ key {start = prev ? prev : $1 - 1; prev = $1
      if ($3 > 0) for (i = 1; i <= n; i++) if (start >= from[i] + skip && $1 <= to[i]) printf "%d %s %s %.1f\n", i, who[i], $3, $1 - from[i]}' \
    "$w/turns" "$w/frontend.log" >"$file"
  rm -rf "$w"
}

# lv FILE WHO LOW(1|0): WHO's samples below (1) or at and above (0) PVP_LEVEL Mpps; share FILE WHO: % at and above
lv() { awk -v who="$2" -v lo="$3" -v t="$level" '$2 == who && (lo ? $3 < t * 1e6 : $3 >= t * 1e6) {print $3}' "$1"; }
share() { awk -v who="$2" -v t="$level" '$2 == who {n++; if ($3 >= t * 1e6) h++} END {printf "%d%%", n ? 100 * h / n : 0}' "$1"; }
median() { sort -n | awk '{a[NR] = $1} END {if (NR) printf "%.2f", a[int((NR + 1) / 2)] / 1e6; else printf "-"}'; }

printf '| case | ring | vhost net (Mpps) | DPDK net_vhost (Mpps) | ratio of medians | neighbouring turns, ours/DPDK | low level: ours, DPDK, ratio | high level: ours, DPDK (share of samples) | same mix |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for cs in "${cases[@]}"; do
  c=${cs%-*} ring=${cs#*-} packed=0
  [[ $ring == packed ]] && packed=1
  f=$out/$cs
  if [[ ${PVP_REPORT:-0} == 1 ]]; then [[ -s $f ]] || continue; else measure "$c" "$packed" "$f" || continue; fi
  mo=$(awk '$2 == "ours" {print $3}' "$f" | median)
  md=$(awk '$2 == "dpdk" {print $3}' "$f" | median)
  # each turn's median, then the ratio of every two neighbouring turns of different back-ends
  pairs=$(awk '{print $1, $2, $3}' "$f" | sort -k1,1n -k3,3n | awk '{k = $1; v[k, ++c[k]] = $3; who[k] = $2}
    END {for (k in c) print k, who[k], v[k, int((c[k] + 1) / 2)]}' | sort -n |
    awk '{t[$1] = $3; w[$1] = $2} END {for (i in t) if (((i + 1) in t) && w[i] != w[i + 1])
      printf "%.3f\n", w[i] == "ours" ? t[i] / t[i + 1] : t[i + 1] / t[i]}' | sort -n)
  np=$(grep -c . <<<"$pairs")
  pm=$(awk -v n="$np" 'NR == int((n + 1) / 2) {printf "%.2f", $1}' <<<"$pairs")
  ratio=-
  [[ $mo != - && $md != - ]] && ratio=$(printf '%.2f' "$(echo "$mo / $md" | bc -l)")
  lo=$(lv "$f" ours 1 | median) ld=$(lv "$f" dpdk 1 | median) ho=$(lv "$f" ours 0 | median) hd=$(lv "$f" dpdk 0 | median)
  lr=-
  [[ $lo != - && $ld != - ]] && lr=$(printf '%.2f' "$(echo "$lo / $ld" | bc -l)")
  mix=-
  if [[ $lo != - && $ld != - && $ho != - && $hd != - ]]; then
    s=$(awk -v t="$level" '{n++; if ($3 >= t * 1e6) h++} END {print h / n}' "$f")
    mix=$(printf '%.2f' "$(echo "($s * $ho + (1 - $s) * $lo) / ($s * $hd + (1 - $s) * $ld)" | bc -l)")
  fi
  printf '| %s | %s | %s | %s | %s | %s (%s) | %s, %s, %s | %s, %s (%s, %s) | %s |\n' "$c" "$ring" "$mo" "$md" "$ratio" "${pm:--}" \
    "$(tr '\n' ' ' <<<"$pairs" | sed 's/ $//')" "$lo" "$ld" "$lr" "$ho" "$hd" "$(share "$f" ours)" "$(share "$f" dpdk)" "$mix"
done
if [[ ${PVP_REPORT:-0} == 1 ]]; then echo "made from the samples in $out; levels split at $level Mpps"
else echo "$reps turns of ${hold} s per back-end and case; levels split at $level Mpps; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"; fi
