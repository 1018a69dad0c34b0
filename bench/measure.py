#!/usr/bin/env python3
"""Runs one command; prints its wall time (s) and peak RSS (KiB) as JSON on stdout.
The command's own output goes to /dev/null; a failure stops the benchmark."""
import json, os, resource, subprocess, sys, time

start = time.monotonic()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if proc.returncode != 0:
    sys.stderr.write(proc.stderr.decode(errors="replace"))
    sys.exit(f"command failed ({proc.returncode}): {' '.join(sys.argv[1:])}")
print(json.dumps({"wall": wall, "rss_kib": rss}))
