#!/usr/bin/env bash
# Installs what the tests need when it is missing. Safe to run again: it skips what is there.
set -euo pipefail

need_apt=()
command -v diff >/dev/null || need_apt+=(diffutils)
# Mount tests: fusermount3 (unmounting a killed mount) and the FUSE device.
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
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
