#!/usr/bin/env python3
"""Medians per data set and tool from bench/run.sh's JSON lines, as a Markdown table."""
import json, statistics, sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["set"], r["tool"])].append(r)

def med(rs, f):
    return statistics.median(f(r) for r in rs)

metrics = [
    ("initial backup (s)", lambda r: r["backup"]["wall"], "{:.2f}"),
    ("initial backup peak RSS (MiB)", lambda r: r["backup"]["rss_kib"] / 1024, "{:.0f}"),
    ("no-change backup (s)", lambda r: r["nochange"]["wall"], "{:.2f}"),
    ("restore (s)", lambda r: r["restore"]["wall"], "{:.2f}"),
    ("repository size (MB)", lambda r: r["size"] / 1e6, "{:.1f}"),
]
for s in sorted({k[0] for k in rows}):
    b, r = rows.get((s, "backazon"), []), rows.get((s, "restic"), [])
    if not b or not r:
        continue
    print(f"\n### {s} (median of {len(b)} runs)\n")
    print("| metric | backazon | restic | ratio |")
    print("|---|---:|---:|---:|")
    for name, f, fmt in metrics:
        vb, vr = med(b, f), med(r, f)
        print(f"| {name} | {fmt.format(vb)} | {fmt.format(vr)} | {vb / vr:.2f}x |")
