#!/usr/bin/env bash
# The Windows build, on this Linux machine: Debian's Rust 1.96 builds std for
# x86_64-pc-windows-gnu (-Zbuild-std; rustup cannot fetch a Windows std here), mingw-w64
# links, Wine 8.0 runs the result.
#   bash ci/windows.sh setup     install the toolchain and Wine, make the Wine prefix
#   bash ci/windows.sh build     cross-build the workspace (warnings denied) into target/windows
#   bash ci/windows.sh test      the workspace's unit tests (engine, fs, cli) under Wine
#   bash ci/windows.sh clippy    clippy for the Windows target
#   bash ci/windows.sh start     keep one Wine server (and Wine's services) running
#   bash ci/windows.sh stop      end them
#   bash ci/windows.sh cargo ARGS...   any cargo command with the cross set-up
# Each step skips what is already there. WINEPREFIX defaults to ~/.wine-backazon.
set -euo pipefail
cd "$(dirname "$0")/.."

export WINEPREFIX="${WINEPREFIX:-$HOME/.wine-backazon}"
export WINEDEBUG="${WINEDEBUG:--all}"
WINE=/usr/lib/wine/wine64
TARGET=x86_64-pc-windows-gnu

setup() {
    local need=()
    [ -x /usr/bin/rustc ] || need+=(rustc-web)
    [ -x /usr/bin/cargo ] || need+=(cargo-web)
    [ -e /usr/lib/rustlib/src/rust/library/Cargo.lock ] || need+=(rust-web-src)
    [ -x /usr/bin/clippy-driver ] || need+=(rust-web-clippy)
    command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
    [ -x "$WINE" ] || need+=(wine64)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "missing ${need[*]}: install them (apt-get install ${need[*]})" >&2
            exit 1
        fi
        echo "installing the Windows toolchain and Wine: ${need[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    if [ ! -e "$WINEPREFIX/system.reg" ]; then
        echo "making the Wine prefix $WINEPREFIX" >&2
        "$WINE" wineboot --init >/dev/null 2>&1 || true
        /usr/lib/wine/wineserver -w
    fi
    local dll="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
    if [ ! -e "$dll" ] || [ ci/wine/processprng.c -nt "$dll" ]; then
        x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" ci/wine/processprng.c ci/wine/processprng.def -lbcrypt
    fi
}

xcargo() {
    # Debian's toolchain only for these builds: ~/.cargo/bin (rustup's) comes first on PATH.
    # std is built from source; with `test` among its crates for every command, the
    # program's build and the tests' build share it and every dependency (without it,
    # `test --no-run` rebuilt all of them: 7 minutes).
    PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-D warnings" \
        CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
        CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE" \
        /usr/bin/cargo "$1" -Zbuild-std=std,panic_abort,test --target "$TARGET" \
        --target-dir target/windows "${@:2}"
}

case "${1:-}" in
setup) setup ;;
build)
    # Warnings are errors for the project's own crates (xcargo; dependencies' are capped).
    # Always the whole workspace: cargo unifies dependencies' features over the packages
    # selected, so building a subset for the tests would build most dependencies again.
    xcargo build --release --workspace --bins
    xcargo test --release --workspace --no-run
    ;;
test)
    # The e2e crate (tests/) is Linux's: its test programs are empty here.
    # The unit tests' scratch folders go to the prefix's Temp (on disk). Under Wine 8,
    # std's remove_dir_all leaves them there (it deletes the files but not the folders
    # it has emptied; see XAMPPRocky/remove_dir_all#31): about 450 MB a run, removed here.
    status=0
    xcargo test --release --workspace "${@:2}" || status=$?
    rm -rf "$WINEPREFIX"/drive_c/users/*/Temp/bz-* "$WINEPREFIX"/drive_c/users/*/Temp/backazon-*
    exit "$status"
    ;;
clippy)
    # clippy 1.96's missing_const_for_thread_local fires on thread_locals that are already
    # `const { }` when std is built from source; it is off for this target only.
    xcargo clippy --release --workspace --all-targets -- -D warnings \
        -A clippy::missing_const_for_thread_local
    ;;
start)
    # Wine starts its services (services.exe, rpcss, ...) with the first program and
    # they stay: started here with no standard streams, they hold no test's pipe open.
    /usr/lib/wine/wineserver -p 2>/dev/null || true  # already running: fine
    "$WINE" cmd /c exit </dev/null >/dev/null 2>&1 || true
    ;;
stop) /usr/lib/wine/wineserver -k 2>/dev/null || true ;;
cargo) xcargo "${@:2}" ;;
*)
    echo "usage: bash ci/windows.sh setup|build|test|clippy|start|stop|cargo ARGS..." >&2
    exit 2
    ;;
esac
