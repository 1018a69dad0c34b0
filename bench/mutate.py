#!/usr/bin/env python3
"""Changes a tree the way a working copy changes between nightly backups, the same way
for the same step: appends to 5% of the files, deletes 0.5%, adds a folder of new files
(about 8 MiB, half text, half random).  usage: mutate.py TREE STEP"""
import os, random, sys

root, step = sys.argv[1], int(sys.argv[2])
rng = random.Random(step)
files = []
for d, dirs, names in os.walk(root):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(d, n)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
for p in files:
    r = rng.random()
    if r < 0.05:
        with open(p, "ab") as f:
            f.write(f"/* change {step} */\n".encode() + rng.randbytes(64).hex().encode() + b"\n")
    elif r < 0.055:
        os.remove(p)
new = os.path.join(root, f"new-{step}")
os.makedirs(new, exist_ok=True)
for i in range(8):
    data = rng.randbytes(512 << 10) + (f"line {i} of step {step}\n" * 20000).encode()[: 512 << 10]
    with open(os.path.join(new, f"f{i}.bin"), "wb") as f:
        f.write(data)
