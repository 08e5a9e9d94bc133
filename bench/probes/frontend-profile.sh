#!/usr/bin/env bash
# bench/probes/frontend-profile.sh TURNS PACKED(0|1) OUTDIR [dequeue|enqueue]
# Where the front-end's time goes with each back-end. One testpmd virtio-user front-end in txonly (dequeue
# for the back-end, the default) or rxonly (enqueue) runs in server mode the whole time, as in bench/pvp.sh;
# DPDK's net_vhost and `vhost net` take turns as its back-end (DPDK first), and during each turn `perf record`
# samples CPU 0, where the front-end forwards, for 8 s after 7 s of warm-up. With PROFILE_BACKEND=1 it
# samples both CPUs, the back-end's too (ours with its JIT-compiled methods named through a perf map, which
# needs W^X off). Then frontend-profile.py OUTDIR turns the samples into
# nanoseconds per frame per instruction address, each back-end's turns averaged, low and high level apart.
# The Debian testpmd has no symbols, so addresses are given; objdump -d on the binary shows what they are.
# Written here because perf alone cannot tie a sample share to the rate of the turn it was taken in.
set -uo pipefail
turns=$1 packed=$2 out=$3 dir=${4:-dequeue}
case $dir in
  dequeue) fmode=txonly bmode=rxonly key=Tx-pps ;;
  enqueue) fmode=rxonly bmode=txonly key=Rx-pps ;;
  *) echo "frontend-profile: direction is dequeue or enqueue, not $dir" >&2; exit 2 ;;
esac
cpus=0; [[ ${PROFILE_BACKEND:-0} == 1 ]] && cpus=0,1
here=$(cd "$(dirname "$0")/../.." && pwd)
tool=${VHOST_BIN:-$here/src/Vhost.Cli/bin/Release/net10.0/Vhost.Cli}
[[ -x $tool ]] || dotnet build -c Release "$here/src/Vhost.Cli" -v q --nologo >/dev/null || exit 1
mkdir -p "$out"; : >"$out/turns"; echo "$key" >"$out/key"; echo "$cpus" >"$out/cpus"
w=$(mktemp -d) sock=$w/vhost.sock
testpmd=(dpdk-testpmd -l 0,1 --no-huge -m 1024 --no-pci)
fwdargs=(--txpkts=64 --stats-period 1 --no-flush-rx --total-num-mbufs=16384)
"${testpmd[@]}" --main-lcore 1 --file-prefix=fprof$$ \
  --vdev "net_virtio_user0,path=$sock,server=1,queues=1,packed_vq=$packed,mrg_rxbuf=1,in_order=1" -- \
  --forward-mode=$fmode "${fwdargs[@]}" 2>&1 |
  while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$out/frontend.log" &
for _ in $(seq 300); do [[ -S $sock ]] && break; sleep 0.1; done
[[ -S $sock ]] || { echo "frontend-profile: the front-end made no socket" >&2; exit 1; }
for ((r = 0; r < turns; r++)); do
  if ((r % 2 == 0)); then who=dpdk
    "${testpmd[@]}" --main-lcore 0 --file-prefix=fprofb$$ --vdev "net_vhost0,iface=$sock,client=1,queues=1" -- \
      --forward-mode=$bmode "${fwdargs[@]}" >"$w/backend.log" 2>&1 &
  else who=ours
    DOTNET_PerfMapEnabled=${PROFILE_BACKEND:-0} DOTNET_EnableWriteXorExecute=$((1 - ${PROFILE_BACKEND:-0})) taskset -c 1 "$tool" net --socket "$sock" --client --fwd $bmode \
      --stats-period 0 >"$w/backend.log" 2>&1 &
  fi
  be=$!
  sleep 7
  t0=$EPOCHREALTIME
  perf record -q -e cpu-clock -F 4999 -C $cpus -o "$out/t$r.$who.data" -- sleep 8 >/dev/null 2>&1
  echo "$r $who $t0 $EPOCHREALTIME" >>"$out/turns"
  kill $be; sleep 1; kill -9 $be 2>/dev/null; wait $be 2>/dev/null; sleep 1
done
pkill -f "file-prefix=fprof$$"; sleep 1; pkill -9 -f "file-prefix=fprof$$"
rm -rf "$w"
python3 "$(dirname "$0")/frontend-profile.py" "$out"
