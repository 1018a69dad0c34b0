#!/usr/bin/env bash
# Installs what the tests need when it is missing. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v diff >/dev/null || need_apt+=(diffutils)
# Mount tests: fusermount3 (unmounting a killed mount) and the FUSE device.
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
# Restore tests on a folder that ignores case: an NTFS image (ntfs-3g, through FUSE).
command -v lowntfs-3g >/dev/null || need_apt+=(ntfs-3g)
# Web console tests: Debian's chromium, driven by playwright-core on Node.js.
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -e /dev/fuse ] || { echo "/dev/fuse is missing: the mount tests need FUSE" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup)" >&2; exit 1; }
# S3 tests: a real S3 server, Garage, built once from crates.io into ~/.cargo/bin (about
# 13 minutes on 2 cores) and reused; the tests start their own throw-away node.
if ! command -v garage >/dev/null && [ ! -x "$HOME/.cargo/bin/garage" ]; then
    echo "building the Garage S3 server once (cargo install garage)..." >&2
    cargo install garage --locked --version 2.5.0 --quiet
fi
# playwright-core, pinned by tests/browser/package-lock.json (no browser download: the
# tests use Debian's chromium).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
# Windows tests: Debian's Rust with the std sources, mingw-w64 and Wine, and the Wine
# prefix they run in (ci/windows.sh).
bash ci/windows.sh setup
