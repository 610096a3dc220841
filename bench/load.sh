#!/usr/bin/env bash
# `imgpipe serve` under load on this machine: starts a release server on a free loopback
# port over a fresh data directory (default queue and workers), then CLIENTS clients upload
# ROUNDS images each (create the upload, post the form, poll until COMPLETE; 503 +
# Retry-After from a full queue honoured) and prints the report: images/s, latency p50/p99,
# busy retries, errors and lost images. Exits non-zero if any image was lost or any 5xx other
# than the queue's 503 appeared.
#
#   bash bench/load.sh [--clients 100] [--rounds 10] [--size 1024x768] [-- SERVE_OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${IMGPIPE_CACHE:-$HOME/.cache/imgpipe}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
load_args=()
serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; serve_args=("$@"); break ;;
    *) load_args+=("$1"); shift ;;
  esac
done

cargo build --release --locked -q -p imgpipe --bin imgpipe --example load
bin="$CARGO_TARGET_DIR/release/imgpipe"
data="$(mktemp -d)"
out="$(mktemp)"
# Every client uses the one token: the per-user form limits are off so that they stand for
# many users.
"$bin" serve --addr 127.0.0.1:0 --no-inbox --forms-per-minute 0 --max-open-forms 0 \
  --data "$data" ${serve_args[@]+"${serve_args[@]}"} \
  >"$out" 2>"$data/serve.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
url=""
for _ in $(seq 300); do
  url="$(sed -n 's/^imgpipe serve: listening on \([^ ]*\).*/\1/p' "$out")"
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$data/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "bench/load.sh: the server did not start" >&2; exit 1; }
token="$("$bin" token --data "$data" --user loader)"
echo "bench/load.sh: $url, $(nproc) cores, serve ${serve_args[*]:-(defaults)}" >&2
status=0
"$CARGO_TARGET_DIR/release/examples/load" --url "$url" --token "$token" \
  ${load_args[@]+"${load_args[@]}"} || status=$?
if grep -q panicked "$data/serve.log"; then
  echo "bench/load.sh: the server panicked:" >&2
  grep -A5 panicked "$data/serve.log" >&2
  status=1
fi
exit "$status"
