#!/usr/bin/env python3
"""Medians per data set and tool from bench/run.sh's JSON lines, as Markdown tables: the
tools side by side, then Backazon beside the machine's limits and the issue's targets."""
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
    ("no-change backup peak RSS (MiB)", lambda r: r["nochange"]["rss_kib"] / 1024, "{:.0f}"),
    ("one file touched, backup (s)", lambda r: r["touched"]["wall"], "{:.2f}"),
    ("one file touched, peak RSS (MiB)", lambda r: r["touched"]["rss_kib"] / 1024, "{:.0f}"),
    ("restore into ext4 (s)", lambda r: r["restore"]["wall"], "{:.2f}"),
    ("restore into tmpfs (s)", lambda r: r["restore_tmpfs"]["wall"], "{:.2f}"),
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

    lim = rows.get((s, "limits"), [])
    if not lim:
        continue
    w = lambda k: (lambda r: r[k]["wall"])
    zstd, find, tarx = med(lim, w("zstd")), med(lim, w("find")), med(lim, w("tarx"))
    tarxz = med(lim, w("tarxz"))
    bk = {name: med(b, f) for name, f, _ in metrics}
    rs = {name: med(r, f) for name, f, _ in metrics}
    print(f"\n#### {s}: Backazon against the machine's limits (same run)\n")
    print("| measure | backazon | against | ratio | target |")
    print("|---|---:|---|---:|---:|")
    rows_out = [
        ("initial backup (s)", bk["initial backup (s)"], f"`zstd -3 -T2` of one tar: {zstd:.2f} s", zstd, "≤ 1.2x"),
        ("no-change backup (s)", bk["no-change backup (s)"], f"restic: {rs['no-change backup (s)']:.2f} s", rs["no-change backup (s)"], "≤ 0.1x"),
        ("no-change backup (s)", bk["no-change backup (s)"], f"`find` stating every file: {find:.2f} s", find, "–"),
        ("one file touched (s)", bk["one file touched, backup (s)"], f"no-change: {bk['no-change backup (s)']:.2f} s", bk["no-change backup (s)"], "≤ 1.2x"),
        ("one file touched, RSS (MiB)", bk["one file touched, peak RSS (MiB)"], f"no-change: {bk['no-change backup peak RSS (MiB)']:.0f} MiB", bk["no-change backup peak RSS (MiB)"], "≤ 1.2x"),
        ("restore into tmpfs (s)", bk["restore into tmpfs (s)"], f"`tar -x` into the same tmpfs: {tarx:.2f} s", tarx, "≤ 1.3x"),
        ("restore into tmpfs (s)", bk["restore into tmpfs (s)"], f"`zstd -dc \\| tar -x`, same tmpfs: {tarxz:.2f} s", tarxz, "–"),
    ]
    if s == "kernel":  # the figure is the kernel tree's
        rows_out.insert(5, ("initial backup peak RSS (MiB)", bk["initial backup peak RSS (MiB)"], "this table before issue 14: 93", 93, "≤ 1x"))
    for name, v, against, base, target in rows_out:
        print(f"| {name} | {v:.2f} | {against} | {v / base:.2f}x | {target} |")
