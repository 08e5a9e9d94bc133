#!/usr/bin/env bash
# Runs every test project of Vhost.sln (unit tests and interop tests against real peers: DPDK testpmd,
# QEMU, qemu-storage-daemon), installing the Debian packages the peers need when missing.
# Prints "N passed, N failed" at the end (summed over the test assemblies' trx files); non-zero exit on failure.
set -uo pipefail
cd "$(dirname "$0")"
root=$(pwd)

# the peers: dpdk-testpmd (dpdk-dev), qemu-system-x86_64 (qemu-system-x86), qemu-img (qemu-utils),
# qemu-storage-daemon (qemu-system-common), build-guest.sh's busybox-static + linux-image-amd64, binutils
need=()
command -v dpdk-testpmd >/dev/null 2>&1 || need+=(dpdk-dev)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v qemu-storage-daemon >/dev/null 2>&1 || need+=(qemu-system-common)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
# as and objcopy (binutils): SigbusGuardTests assembles the SIGBUS handler's listing to check its bytes
command -v as >/dev/null 2>&1 && command -v objcopy >/dev/null 2>&1 || need+=(binutils)
# the crypto interop test builds its AF_ALG guest program with gcc -static (libc.a is in libc6-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || need+=(libc6-dev)
for tool in cpio gzip timeout; do command -v $tool >/dev/null 2>&1 || need+=($([[ $tool == timeout ]] && echo coreutils || echo $tool)); done
if ((${#need[@]})); then
  echo "test.sh: installing ${need[*]}"
  sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "test.sh: could not install ${need[*]}"; exit 1; }
fi

# the shared harness (VHOST_SHARED_DIR, else ../shared/harness above the repository)
if [[ -z ${VHOST_SHARED_DIR:-} ]]; then
  d=$root/..
  while [[ $(cd "$d" && pwd) != / ]]; do
    [[ -f $d/shared/harness/guest-run.sh ]] && { export VHOST_SHARED_DIR=$(cd "$d/shared/harness" && pwd); break; }
    d=$d/..
  done
fi
[[ -n ${VHOST_SHARED_DIR:-} && -f $VHOST_SHARED_DIR/build-guest.sh ]] || { echo "test.sh: shared harness not found (set VHOST_SHARED_DIR)"; exit 1; }

guest=${VHOST_GUEST_DIR:-$root/artifacts/guest}
if [[ ! -s $guest/initrd.gz || ! -f $guest/vmlinuz ]]; then
  echo "test.sh: building the guest into $guest"
  bash "$VHOST_SHARED_DIR/build-guest.sh" "$guest" || { echo "test.sh: guest build failed"; exit 1; }
fi
export VHOST_GUEST_DIR=$guest

results=$root/artifacts/test-results
rm -rf "$results"; mkdir -p "$results"
start=$(date +%s)
# -m:1: one test assembly at a time; the interop tests busy-poll both cores with testpmd and would starve
# the timing-sensitive unit tests of the other assemblies
timeout -k 30 85m dotnet test Vhost.sln -c Release -m:1 --results-directory "$results" \
  --logger "console;verbosity=normal" --logger "trx" 2>&1 | tee "$results/console.log"
rc=${PIPESTATUS[0]}
end=$(date +%s)

# sum each test assembly's summary ("Total tests: N" / "Passed: N" / "Failed: N"); trx files written in
# the same second can share a name, so the console is the count of record
read -r passed failed total files < <(sed 's/\x1b\[[0-9;]*m//g' "$results/console.log" | awk '
  /^ *Total tests: *[0-9]+/ { t += $NF; n++ }
  /^ *Passed: *[0-9]+$/     { p += $NF }
  /^ *Failed: *[0-9]+$/     { f += $NF }
  END { print p + 0, f + 0, t + 0, n + 0 }')
echo "test.sh: dotnet test exit $rc after $((end - start)) s; $total tests in $files test assemblies"
if ((rc != 0 && failed == 0)); then failed=1; fi  # a crash or a build failure counts as a failure
echo "$passed passed, $failed failed"
((rc == 0 && failed == 0))
