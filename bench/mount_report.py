#!/usr/bin/env python3
"""Medians per tool from bench/mount.sh's JSON lines, as a Markdown table, with
Backazon's ratios to restic and the issue's targets."""
import json, statistics, sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["tool"]].append(r)
tools = [t for t in ("backazon", "restic", "borg") if t in rows]

def med(tool, f):
    return statistics.median(f(r) for r in rows[tool])

metrics = [
    ("mount to first listing (s)", lambda r: r["first_listing"], "{:.2f}", "≤ 1 s"),
    ("find over the snapshot (s)", lambda r: r["find"], "{:.2f}", "≤ 0.25x restic"),
    ("cat of every file (s)", lambda r: r["cat"], "{:.1f}", "≤ 0.1x restic"),
    ("mount RSS after the cat (MiB)", lambda r: r["rss_kib"] / 1024, "{:.0f}", "≤ 0.5x restic"),
    ("sequential read, 1 GiB file, cold (MB/s)", lambda r: 1073.741824 / r["seq_1g"], "{:.0f}", "≥ 500 MB/s"),
]
n = len(rows[tools[0]])
print(f"\n### kernel tree mounted (median of {n} runs)\n")
print("| metric | " + " | ".join(tools) + " | backazon / restic | target |")
print("|---|" + "---:|" * len(tools) + "---:|---|")
for name, f, fmt, target in metrics:
    vals = {t: med(t, f) for t in tools}
    ratio = f"{vals['backazon'] / vals['restic']:.2f}x" if {"restic", "backazon"} <= vals.keys() else ""
    print(f"| {name} | " + " | ".join(fmt.format(vals[t]) for t in tools) + f" | {ratio} | {target} |")
