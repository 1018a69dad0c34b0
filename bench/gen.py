#!/usr/bin/env python3
"""Generates the 'large and compressed' data set: big files (half text-like, half
random), already-compressed media and archives, and many small documents; with
`--windows`, the set of bench/windows.sh: 20,000 files, about 1 GB (19,980 documents of
1-50 KB in 400 folders, 20 files of 25 MB, half text-like, half random), only names
Windows can hold. Deterministic, so every run and every tool sees the same bytes."""
import os, random, sys

root = sys.argv[1]
windows = "--windows" in sys.argv[2:]
rng = random.Random(7 if windows else 42)
words = [w.encode() for w in "invoice ledger the quarterly report alice backup photo 2026 total account balance\n".split(" ")]

def text(n):
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(words) for _ in range(4096)) + b" "
    return bytes(out[:n])

def write(rel, data):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)

os.makedirs(root, exist_ok=True)
if windows:
    for i in range(20):
        write(f"large/file-{i:02d}.bin", text(12_500_000) + rng.randbytes(12_500_000))
    for i in range(19_980):
        write(f"documents/{i % 400:03d}/note-{i:05d}.txt", text(rng.randint(1_000, 50_000)))
    sys.exit(0)
for i in range(2):
    with open(os.path.join(root, f"disk{i}.img"), "wb") as f:
        for j in range(64):
            f.write(text(4 << 20) if j % 2 == 0 else rng.randbytes(4 << 20))
for i in range(100):
    write(f"photos/IMG_{i:04d}.JPG", rng.randbytes(rng.randint(1 << 20, 4 << 20)))
for i in range(20):
    write(f"archives/backup-{i:02d}.zip", rng.randbytes(10 << 20))
for i in range(2000):
    write(f"documents/{i % 40:02d}/note-{i:05d}.txt", text(rng.randint(1000, 40000)))
