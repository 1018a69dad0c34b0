#!/usr/bin/env python3
"""Medians per tool from bench/s3.sh's JSON lines: times, and requests counted by the
S3 server, with Backazon's ratios to restic and the issue's targets."""
import json, statistics, sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[r["tool"]].append(r)

def med(tool, f):
    return statistics.median(f(r) for r in rows[tool])

def puts(r, step):
    return sum(v for k, v in r[step]["requests"].items() if k in ("PutObject", "UploadPart", "CompleteMultipartUpload", "CreateMultipartUpload"))

def gets(r, step):
    return sum(v for k, v in r[step]["requests"].items() if k in ("GetObject", "HeadObject"))

def total(r, step):
    return sum(r[step]["requests"].values())

gib = lambda r: r["data_bytes"] / 2**30
metrics = [
    ("initial backup (s)", lambda r: r["backup"]["wall"], "{:.2f}", "≤ 0.5x"),
    ("no-change backup (s)", lambda r: r["nochange"]["wall"], "{:.2f}", ""),
    ("restore (s)", lambda r: r["restore"]["wall"], "{:.2f}", "≤ 0.5x"),
    ("initial backup: PUT requests", lambda r: puts(r, "backup"), "{:.0f}", ""),
    ("initial backup: PUTs per GiB of new data", lambda r: puts(r, "backup") / gib(r), "{:.1f}", "≤ 64"),
    ("initial backup: all requests", lambda r: total(r, "backup"), "{:.0f}", ""),
    ("no-change backup: all requests", lambda r: total(r, "nochange"), "{:.0f}", ""),
    ("restore: GET requests", lambda r: gets(r, "restore"), "{:.0f}", ""),
    ("restore: all requests", lambda r: total(r, "restore"), "{:.0f}", ""),
]
n = len(rows["backazon"])
print(f"\n### kernel tree to Garage on loopback (median of {n} runs)\n")
print("| metric | backazon | restic | ratio | target |")
print("|---|---:|---:|---:|---|")
for name, f, fmt, target in metrics:
    b, r = med("backazon", f), med("restic", f)
    ratio = f"{b / r:.2f}x" if r else ""
    print(f"| {name} | {fmt.format(b)} | {fmt.format(r)} | {ratio} | {target} |")
