#!/usr/bin/env python3
"""env-ab.py SAMPLES [SKIP] [LEVEL]: compares the variants of bench/probes/env-ab.sh.

Each turn's median of the samples taken after its first SKIP seconds (default 5), listed per variant; then
the median of v1/v0 over neighbouring turns of the two, over all such pairs and over the pairs whose two
turns sat on the same side of LEVEL Mpps (default 12.5), since the host moves both between levels.
"""
import collections
import statistics
import sys

skip = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
level = float(sys.argv[3]) * 1e6 if len(sys.argv) > 3 else 12.5e6
turns = collections.OrderedDict()
for line in open(sys.argv[1]):
    turn, variant, offset, pps = line.split()
    kept = turns.setdefault(int(turn), (variant, []))[1]
    if float(offset) >= skip + 1:  # the sample's interval lies wholly after the skip
        kept.append(float(pps))
medians = {t: (v, statistics.median(ps)) for t, (v, ps) in turns.items() if ps}
per_variant = collections.defaultdict(list)
for v, m in medians.values():
    per_variant[v].append(m)
for v in sorted(per_variant):
    print(v, "turn medians (Mpps):", " ".join(f"{m / 1e6:.1f}" for m in per_variant[v]))
every, low, high = [], [], []
keys = sorted(medians)
for a, b in zip(keys, keys[1:]):
    (va, ma), (vb, mb) = medians[a], medians[b]
    if {va, vb} != {"v0", "v1"}:
        continue
    r = mb / ma if va == "v0" else ma / mb
    every.append(r)
    if (ma < level) == (mb < level):
        (low if ma < level else high).append(r)


def summary(rs):
    return f"{statistics.median(rs):.3f} ({len(rs)} pairs)" if rs else "-"


print("v1/v0, neighbouring turns: all", summary(every), "| both low", summary(low), "| both high", summary(high))
