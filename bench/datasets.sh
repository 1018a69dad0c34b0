# Data sets shared by the benchmark scripts: `dataset NAME` prints its folder, making it
# the first time (the kernel tree from Debian's linux-source-6.1, bench/gen.py's set, or
# one 1 GiB file).
dataset() {
    case "$1" in
    kernel)
        local d="$BENCH_DIR/linux-source-6.1"
        if [ ! -d "$d" ]; then
            (cd "$BENCH_DIR" && apt-get download linux-source-6.1 >/dev/null 2>&1 || apt-get download linux-source-6.1)
            rm -rf "$BENCH_DIR/deb" && dpkg-deb -x "$BENCH_DIR"/linux-source-6.1_*.deb "$BENCH_DIR/deb"
            tar -C "$BENCH_DIR" -xf "$BENCH_DIR"/deb/usr/src/linux-source-6.1.tar.xz
            rm -rf "$BENCH_DIR/deb"
        fi
        echo "$d" ;;
    big)
        # One 1 GiB file, half text, half noise, in 4 MiB pieces: like a disk image or a
        # mailbox.
        local d="$BENCH_DIR/big"
        if [ ! -f "$d/1g.bin" ]; then
            mkdir -p "$d"
            python3 - "$d/1g.bin" <<'PY'
import random, sys
rng = random.Random(3)
words = b"invoice ledger the quarterly report alice backup photo 2026 total account".split()
with open(sys.argv[1], "wb") as f:
    for i in range(256):
        if i % 2:
            f.write(rng.randbytes(4 << 20))
        else:
            t = b" ".join(rng.choice(words) for _ in range(900_000))
            f.write((t * 2)[: 4 << 20])
PY
        fi
        echo "$d" ;;
    million)
        # 1,000,000 small files (20-400 bytes) in 1,000 folders of 1,000 under 10 tops:
        # where per-file costs show (the no-change and one-touched-file backups).
        local d="$BENCH_DIR/million"
        if [ ! -f "$d/.complete" ]; then
            rm -rf "$d"
            python3 - "$d" <<'PY'
import os, random, sys
rng = random.Random(11)
root = sys.argv[1]
for t in range(10):
    for s in range(100):
        d = os.path.join(root, f"top-{t}", f"dir-{s:03d}")
        os.makedirs(d)
        for i in range(1000):
            with open(os.path.join(d, f"note-{i:04d}.txt"), "wb") as f:
                f.write(b"line %d of %s\n" % (i, d.encode()) * rng.randint(1, 10))
open(os.path.join(root, ".complete"), "w").close()
PY
        fi
        echo "$d" ;;
    generated)
        local d="$BENCH_DIR/generated"
        [ -d "$d" ] || python3 bench/gen.py "$d"
        echo "$d" ;;
    esac
}
