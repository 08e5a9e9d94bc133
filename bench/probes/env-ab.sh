#!/usr/bin/env bash
# bench/probes/env-ab.sh CASE PACKED HOLD ROUNDS OUT VARIANT0 VARIANT1 [...]
# Our `vhost net` against itself under different environment variables (a runtime knob such as
# DOTNET_TieredCompilation=0, or an experiment flag read by an experiment build), on one testpmd virtio-user
# front-end with pvp.sh's parameters. The variants take turns as vhost-user clients, HOLD seconds each, ROUNDS
# times; VARIANT is one `NAME=VALUE` word (`X=1` for "as shipped"). CASE is dequeue or enqueue, PACKED 0 or 1.
# Writes the front-end's samples to OUT as "turn variant offset-in-turn pps", where variant is v0, v1, ...
# in argument order; bench/probes/env-ab.py OUT [SKIP] [LEVEL] makes the comparison. TOOL overrides the binary.
set -uo pipefail
(($# >= 7)) || { sed -n 2,8p "$0" >&2; exit 2; }
c=$1 packed=$2 hold=$3 rounds=$4 out=$5
shift 5
here=$(cd "$(dirname "$0")/../.." && pwd)
command -v dpdk-testpmd >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpdk-dev >/dev/null; }
if [[ -z ${TOOL:-} ]]; then
  dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
  TOOL=$here/src/Vhost.Cli/bin/Release/net10.0/Vhost.Cli
fi
if [[ $c == dequeue ]]; then bmode=rxonly fmode=txonly key=Tx-pps; else bmode=txonly fmode=rxonly key=Rx-pps; fi
w=$(mktemp -d) sock=$w/vhost.sock prefix=envab$$
: >"$w/turns"
testpmd=(dpdk-testpmd -l 0,1 --no-huge -m 1024 --no-pci)
"${testpmd[@]}" --main-lcore 1 --file-prefix=$prefix \
  --vdev "net_virtio_user0,path=$sock,server=1,queues=1,packed_vq=$packed,mrg_rxbuf=1,in_order=1" -- \
  --forward-mode=$fmode --txpkts=64 --stats-period 1 --no-flush-rx --total-num-mbufs=16384 2>&1 |
  while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$w/frontend.log" &
for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { echo "env-ab: the front-end made no socket" >&2; exit 1; }
for ((r = 0; r < rounds; r++)); do
  i=0
  for v in "$@"; do
    env "$v" taskset -c 1 "$TOOL" net --socket "$sock" --client --fwd $bmode --txpkts 64 --stats-period 0 >/dev/null 2>&1 &
    be=$! t0=$EPOCHREALTIME
    sleep "$hold"
    t1=$EPOCHREALTIME
    kill "$be"; wait "$be" 2>/dev/null
    echo "v$i $t0 $t1" >>"$w/turns"
    i=$((i + 1))
    sleep 0.5
  done
done
pkill -f -- "--file-prefix=$prefix"
for _ in $(seq 100); do pgrep -f -- "--file-prefix=$prefix" >/dev/null || break; sleep 0.1; done
awk -v key="$key:" 'NR == FNR {who[NR] = $1; from[NR] = $2; to[NR] = $3; n = NR; next}
  $0 ~ key {start = prev ? prev : $1 - 1; prev = $1
    for (i = 1; i <= n; i++) if (start >= from[i] && $1 <= to[i]) printf "%d %s %.1f %s\n", i, who[i], $1 - from[i], $3}' \
  "$w/turns" "$w/frontend.log" >"$out"
rm -rf "$w"
