#!/usr/bin/env bash
# Runs one SharpFuzz/AFL++ target for a time: fuzz/run.sh TARGET SECONDS
# (TARGET: messages memtable chains blk nettx inflight crypto cryptosession)
# Installs AFL++ (Debian afl++) and the sharpfuzz instrumentation tool when missing, builds
# Vhost.Fuzz, instruments the libraries (Vhost.dll, Vhost.Blk.dll, Vhost.Net.dll, Vhost.Crypto.dll), fuzzes, then keeps the inputs
# that found new paths (small ones) in fuzz/corpus/TARGET and prints executions, crashes and hangs.
set -euo pipefail
targets="messages memtable chains blk nettx inflight crypto cryptosession"
target=${1:?target: one of $targets}
case " $targets " in *" $target "*) ;; *) echo "unknown target $target (one of $targets)" >&2; exit 2;; esac
seconds=${2:?seconds}
here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
export PATH=$PATH:$HOME/.dotnet/tools

if ! command -v afl-fuzz >/dev/null; then
  apt-get update -qq && apt-get install -y -qq afl++ >/dev/null
fi
if ! command -v sharpfuzz >/dev/null; then
  dotnet tool install --global SharpFuzz.CommandLine >/dev/null
fi

bin=$out/bin
if [ ! -f "$bin/.instrumented" ] || [ -n "$(find "$here/Vhost.Fuzz" "$here/../src/Vhost" "$here/../src/Vhost.Blk" "$here/../src/Vhost.Net" "$here/../src/Vhost.Crypto" -name '*.cs' -newer "$bin/.instrumented")" ]; then
  rm -rf "$bin"
  dotnet publish "$here/Vhost.Fuzz/Vhost.Fuzz.csproj" -c Release -o "$bin" -v q --nologo
  # seeds come from the plain build: instrumented code needs the fuzzer's shared memory to run at all
  for t in $targets; do
    mkdir -p "$here/corpus/$t"
    if [ -z "$(ls -A "$here/corpus/$t")" ]; then dotnet "$bin/Vhost.Fuzz.dll" seed "$t" "$here/corpus/$t"; fi
  done
  # only the libraries are instrumented: coverage of the fuzz harness itself would be noise
  for dll in Vhost Vhost.Blk Vhost.Net Vhost.Crypto; do sharpfuzz "$bin/$dll.dll"; done
  touch "$bin/.instrumented"
fi

corpus=$here/corpus/$target

findings=$out/$target
rm -rf "$findings"
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
nice -n 10 afl-fuzz -i "$corpus" -o "$findings" -V "$seconds" -t 10000 -m none -- dotnet "$bin/Vhost.Fuzz.dll" "$target" || true

q=$findings/default/queue
if [ -d "$q" ]; then
  # keep new-path inputs under 4 KiB, at most 64 of them (not the seeds again), so the checked-in corpus stays small
  find "$q" -maxdepth 1 -type f -size -4k -name 'id:*' ! -name '*orig*' | head -64 | while read -r f; do
    cp "$f" "$corpus/$(basename "$f" | tr ':,' '__' | cut -c1-40)"
  done
fi
stats=$findings/default/fuzzer_stats
if [ -f "$stats" ]; then
  grep -E '^(execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|run_time)' "$stats"
fi
ls "$findings/default/crashes" "$findings/default/hangs" 2>/dev/null || true
