# Data sets shared by the benchmark scripts: `dataset NAME` prints its folder, making it
# the first time (the kernel tree from Debian's linux-source-6.1, or bench/gen.py's set).
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
    generated)
        local d="$BENCH_DIR/generated"
        [ -d "$d" ] || python3 bench/gen.py "$d"
        echo "$d" ;;
    esac
}
