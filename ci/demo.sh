#!/usr/bin/env bash
# The main job on the embedded default: a local-folder repository. Builds backazon,
# creates the repository if needed, backs up PATH... (default: this project's source),
# lists the snapshots, restores the latest one and compares it with the original.
#   bash ci/demo.sh [PATH...]
# BACKAZON_DEMO_DIR (default /tmp/backazon-demo) holds the repository and the restore;
# BACKAZON_PASSWORD (default "demo password") is the repository's password.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
bz="$PWD/target/release/backazon"
demo="${BACKAZON_DEMO_DIR:-/tmp/backazon-demo}"
export BACKAZON_REPOSITORY="$demo/repo"
export BACKAZON_PASSWORD="${BACKAZON_PASSWORD:-demo password}"
if [ $# -eq 0 ]; then set -- "$PWD/engine" "$PWD/fs" "$PWD/cli" "$PWD/docs"; fi

[ -f "$BACKAZON_REPOSITORY/config" ] || "$bz" init
"$bz" backup "$@"
"$bz" snapshots
rm -rf "$demo/restore"
"$bz" restore latest --target "$demo/restore"
for p in "$@"; do
    abs="$(cd "$p" && pwd)"
    diff -r --no-dereference "$abs" "$demo/restore$abs"
done
"$bz" check
echo "demo: backed up, restored and compared $*; repository at $BACKAZON_REPOSITORY"
