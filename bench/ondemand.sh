#!/usr/bin/env bash
# On-demand transforms of `imgpipe serve` (first request, repeat request, a burst of identical
# requests) against sharp doing the same resize and encode in-process. From a fresh clone:
#
#   bash bench/ondemand.sh [--renders N] [--repeats N] [--concurrent N]
#
# Installs what it needs idempotently under $IMGPIPE_CACHE/bench (default ~/.cache/imgpipe):
# the Debian photos and npm sharp (pinned, as bench/compare.sh does); builds imgpipe in
# release; runs bench/ondemand.py, which prints the table and the targets.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${IMGPIPE_CACHE:-$HOME/.cache/imgpipe}"
export IMGPIPE_CACHE="$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
bench="$cache/bench"
mkdir -p "$bench"

SHARP_VERSION=0.34.5
photo=/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg

need=()
[ -f "$photo" ] || need+=(mate-backgrounds)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "ondemand.sh: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

installed="$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) {}' \
  "$bench/node_modules/sharp/package.json")"
if [ "$installed" != "$SHARP_VERSION" ]; then
  echo "ondemand.sh: installing sharp@$SHARP_VERSION into $bench" >&2
  [ -f "$bench/package.json" ] || echo '{"private": true}' > "$bench/package.json"
  npm install --prefix "$bench" --no-audit --no-fund --loglevel=error "sharp@$SHARP_VERSION" >&2
fi

echo "ondemand.sh: building imgpipe (release)" >&2
cargo build --release --locked -p imgpipe >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 bench/ondemand.py --imgpipe "$CARGO_TARGET_DIR/release/imgpipe" --photo "$photo" \
  --work "$work" "$@"
