#!/usr/bin/env bash
# docs/security.md's attack list against `imgpipe serve` on 127.0.0.1, as a markdown table
# (bench/attack.py; Python standard library only). From a fresh clone:
#
#   bash bench/attack.sh [--no-build] [--only 1,5,8] [--keep]
#
# Builds imgpipe in release into $CARGO_TARGET_DIR (default $IMGPIPE_CACHE/target, i.e.
# ~/.cache/imgpipe/target) unless given --no-build, then runs the attacks against that binary.
# Takes about 2-3 minutes; exit status 1 if any attack is NOT HELD.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${IMGPIPE_CACHE:-$HOME/.cache/imgpipe}/target}"

build=1
args=()
for arg in "$@"; do
  if [ "$arg" = --no-build ]; then build=0; else args+=("$arg"); fi
done
if [ "$build" = 1 ]; then
  cargo build --release -p imgpipe --locked
fi
# A --bin among the arguments comes later, so it wins.
exec python3 bench/attack.py --bin "$CARGO_TARGET_DIR/release/imgpipe" ${args[@]+"${args[@]}"}
