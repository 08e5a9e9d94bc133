#!/usr/bin/env bash
# bench/probes/frontend-drops.sh [ROUNDS] [WINDOWS] [SECS] [PACKED]
# Who waits for whom in dequeue: testpmd's txonly builds a burst, then drops whatever does not fit in the
# ring. A front-end that drops little is the slower side; one that drops a lot is waiting for the back-end
# (its ring is full of buffers not yet taken or returned). Per round, DPDK's net_vhost and then our
# `vhost net --fwd rxonly` serve one fresh interactive testpmd virtio-user front-end (pvp.sh's parameters);
# 6 s after the start its forward statistics are cleared, then read every SECS seconds (default 4), WINDOWS
# times (default 3). Prints per window: back-end, frames sent per second (Mpps) and the share of built frames
# dropped.
set -uo pipefail
rounds=${1:-2} windows=${2:-3} secs=${3:-4} packed=${4:-1}
here=$(cd "$(dirname "$0")/../.." && pwd)
command -v dpdk-testpmd >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpdk-dev >/dev/null; }
# a front-end that died would close the command FIFO, and the next write would kill this script silently
trap 'echo "frontend-drops.sh: the testpmd front-end went away; its log was $w/frontend.log" >&2; exit 1' PIPE
dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
tool=$here/src/Vhost.Cli/bin/Release/net10.0/Vhost.Cli
testpmd=(dpdk-testpmd -l 0,1 --no-huge -m 1024 --no-pci)

turn() {
  local who=$1 sock fe be i line
  w=$(mktemp -d) sock=$w/vhost.sock
  mkfifo "$w/in"
  # line-buffered, so each statistics block is in the log when it is read
  stdbuf -oL "${testpmd[@]}" --main-lcore 1 --file-prefix=drops$$ \
    --vdev "net_virtio_user0,path=$sock,server=1,queues=1,packed_vq=$packed,mrg_rxbuf=1,in_order=1" -- \
    -i --forward-mode=txonly --txpkts=64 --no-flush-rx --total-num-mbufs=16384 <"$w/in" >"$w/frontend.log" 2>&1 &
  fe=$!
  exec 7>"$w/in"
  for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
  echo start >&7
  if [[ $who == dpdk ]]; then
    "${testpmd[@]}" --main-lcore 0 --file-prefix=dropsb$$ --vdev "net_vhost0,iface=$sock,client=1,queues=1" -- \
      --forward-mode=rxonly --txpkts=64 --stats-period 1 --no-flush-rx --total-num-mbufs=16384 </dev/null >"$w/backend.log" 2>&1 &
  else
    taskset -c 1 "$tool" net --socket "$sock" --client --fwd rxonly --txpkts 64 --stats-period 0 >"$w/backend.log" 2>&1 &
  fi
  be=$!
  sleep 6
  echo "clear fwd stats all" >&7
  for ((i = 0; i < windows; i++)); do
    sleep "$secs"
    echo "show fwd stats all" >&7
    sleep 0.5
    echo "clear fwd stats all" >&7
    line=$(grep 'TX-packets:.*TX-dropped' "$w/frontend.log" | tail -1)
    awk -v who="$who" -v s="$secs" '{printf "%s %.2f %.1f%%\n", who, $2 / s / 1e6, 100 * $4 / ($2 + $4)}' <<<"$line"
  done
  echo stop >&7
  echo quit >&7
  exec 7>&-
  sleep 1
  kill "$be" 2>/dev/null; wait "$be" 2>/dev/null
  kill "$fe" 2>/dev/null; wait "$fe" 2>/dev/null
  rm -rf "$w"
}

echo "back-end Mpps-sent dropped"
for ((r = 0; r < rounds; r++)); do
  turn dpdk
  turn ours
done
