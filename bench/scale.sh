#!/usr/bin/env bash
# bench/scale.sh [COUNT] [CYCLES]: the device runtime's scale and leak figures (docs/scale.md), against our own tool.
#   - COUNT net sockets in one `vhost net` (rxonly, polling on 2 threads) and COUNT blk devices in one `vhost blk`
#     (event-driven, one event thread), a C# test front-end on each moving traffic: threads, RSS, fds, mappings;
#   - CYCLES connect/set-up/traffic/disconnect cycles on one socket: fds, mappings, threads and RSS before and after;
#   - a stalled, a flooding and a dying front-end beside a good device: the good device's request latency.
set -euo pipefail
count=${1:-256}
cycles=${2:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/artifacts/scale
dotnet build "$root/src/Vhost.Cli" -c Release -o "$out/vhost" -v q --nologo >/dev/null
dotnet build "$root/bench/Vhost.Scale" -c Release -o "$out/driver" -v q --nologo >/dev/null
run() { timeout -k 5 600 dotnet "$out/driver/Vhost.Scale.dll" "$@" "$out/vhost/Vhost.Cli" "{sockets}" --stats-period 0 2>&1 | grep -v '^\['; }
netargs=(--fwd rxonly --threads 2)
run_net() { local what=$1 n=$2; timeout -k 5 600 dotnet "$out/driver/Vhost.Scale.dll" "$what" net $n "$out/vhost/Vhost.Cli" "{sockets}" "${netargs[@]}" --stats-period 0 2>&1 | grep -v '^\['; }
run_net scale "$count"
run scale blk "$count"
netargs=(--fwd rxonly --threads 1)
run_net cycles "$cycles"
run cycles blk "$cycles"
timeout -k 5 600 dotnet "$out/driver/Vhost.Scale.dll" neighbours net "$out/vhost/Vhost.Cli" "{sockets}" "${netargs[@]}" --stats-period 0 2>&1 | grep -v '^\['
timeout -k 5 600 dotnet "$out/driver/Vhost.Scale.dll" neighbours blk "$out/vhost/Vhost.Cli" "{sockets}" --stats-period 0 2>&1 | grep -v '^\['
