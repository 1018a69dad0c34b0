#!/usr/bin/env bash
# macOS does not rot: the workspace type-checks for x86_64-apple-darwin with Debian's
# Rust (-Zbuild-std, as ci/windows.sh; `bash ci/windows.sh setup` installs it). Nothing
# is linked or run: no macOS SDK can be had here. The C in zstd-sys and aws-lc-sys is
# answered by a stand-in compiler (ci/macos/cc: empty objects) and fuser's macFUSE by a
# stand-in pkg-config entry (ci/macos/fuse.pc); a real build needs Xcode and macFUSE.
#   bash ci/macos.sh [check|clippy]
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-check}"
lints=()
[ "$what" = clippy ] && lints=(-- -A clippy::missing_const_for_thread_local)
PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-D warnings" \
    CC_x86_64_apple_darwin="$PWD/ci/macos/cc" AR_x86_64_apple_darwin=ar \
    PKG_CONFIG_PATH="$PWD/ci/macos" PKG_CONFIG_ALLOW_CROSS=1 \
    /usr/bin/cargo "$what" -Zbuild-std=std,panic_abort --target x86_64-apple-darwin \
    --target-dir target/macos --release --workspace --all-targets "${lints[@]}"
