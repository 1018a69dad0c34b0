#!/usr/bin/env python3
"""Generates the 'large and compressed' data set: big files (half text-like, half
random), already-compressed media and archives, and many small documents.
Deterministic, so every run and every tool sees the same bytes."""
import os, random, sys

root = sys.argv[1]
rng = random.Random(42)
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
