"""frontend-profile.py OUTDIR [LEVEL]: the front-end's nanoseconds per frame by instruction address, per back-end.

Reads what frontend-profile.sh left in OUTDIR. A turn's share of samples at an address, times the time per frame
at that turn's median rate, is the time the front-end spends there per frame. Turns are split at LEVEL Mpps
(default 10.5, as bench/pvp.sh), since the host's vCPU placement moves both back-ends between two levels.
Each row starts with the CPU sampled: 0 is the front-end's; 1 the back-end's, when PROFILE_BACKEND=1 sampled it.
"""
import collections
import re
import subprocess
import sys

out = sys.argv[1]
level = float(sys.argv[2]) if len(sys.argv) > 2 else 10.5
try:
    key = open(f"{out}/key").read().strip() + ":"
except FileNotFoundError:
    key = "Tx-pps:"  # runs from before the enqueue direction
try:
    ncpus = len(open(f"{out}/cpus").read().split(","))
except FileNotFoundError:
    ncpus = 1
stamps = [l.split() for l in open(f"{out}/frontend.log", errors="ignore") if key in l]
for name, keep in (("low", lambda r: r < level), ("high", lambda r: r >= level)):
    ns = {"dpdk": collections.Counter(), "ours": collections.Counter()}
    rates = collections.defaultdict(list)
    for turn, who, t0, t1 in (l.split() for l in open(f"{out}/turns")):
        inside = sorted(float(s[2]) for s in stamps if float(t0) <= float(s[0]) <= float(t1))
        if not inside:
            continue
        rate = inside[(len(inside) - 1) // 2] / 1e6
        if not keep(rate):
            continue
        report = subprocess.run(["perf", "report", "-i", f"{out}/t{turn}.{who}.data", "--sort", "cpu,dso,sym",
                                 "--stdio", "-q"], capture_output=True, text=True).stdout
        for line in report.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(.+?)\s+\[.\]\s+(.+?)\s*$", line)
            if m:
                # a JIT-compiled method's name from the perf map: keep Type::Method of its long signature
                sym = re.search(r"([\w.`+/]+::[\w.`<>|]+)", m.group(4))
                sym = sym.group(1).rsplit(".", 1)[-1] if sym else m.group(4)[:40]
                dso = re.sub(r"\[JIT\] tid \d+", "[JIT]", m.group(3))
                ns[who][f"{m.group(2)} {dso[:16]} {sym}"] += float(m.group(1)) / 100 * ncpus * 1e3 / rate
        rates[who].append(rate)
    if not rates["dpdk"] or not rates["ours"]:
        print(f"{name} level: turns of only one back-end")
        continue
    avg = {who: {k: v / len(rates[who]) for k, v in ns[who].items()} for who in ns}
    print(f"{name} level: DPDK turns at {[round(r, 2) for r in rates['dpdk']]} Mpps, ours at "
          f"{[round(r, 2) for r in rates['ours']]}")
    print(f"{'ns per frame':44s} {'DPDK':>7s} {'ours':>7s}")
    for cpu in sorted({k.split()[0] for k in avg["dpdk"]} | {k.split()[0] for k in avg["ours"]}):
        print(f"{'total, CPU ' + cpu:44s} {sum(v for k, v in avg['dpdk'].items() if k.split()[0] == cpu):7.2f} "
              f"{sum(v for k, v in avg['ours'].items() if k.split()[0] == cpu):7.2f}")
    keys = sorted(set(avg["dpdk"]) | set(avg["ours"]), key=lambda k: -(avg["dpdk"].get(k, 0) + avg["ours"].get(k, 0)))
    for k in keys[:25]:
        print(f"{k:44s} {avg['dpdk'].get(k, 0):7.2f} {avg['ours'].get(k, 0):7.2f}")
