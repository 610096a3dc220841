#!/usr/bin/env bash
# imgpipe side by side with sharp, Pillow(-SIMD) and libvips on the same inputs, alternating
# runs, one thread each (both cores for the batch case). From a fresh clone:
#
#   bash bench/compare.sh [--iterations N] [--cases a,b,c,d,e,f,bytes] [--batch-iterations N]
#
# `bytes` compares encoders by bytes at equal SSIMULACRA2 (bench/bytes_case.py).
#
# Installs the peers idempotently under $IMGPIPE_CACHE/bench (default ~/.cache/imgpipe):
# Debian libvips-tools, libjpeg-turbo-progs and the wallpaper photos; npm sharp (pinned);
# Pillow-SIMD (pinned) if it builds here, else Pillow, with numpy and scikit-image for SSIM in
# a venv. Then builds imgpipe and the bench binary in release and runs bench/compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${IMGPIPE_CACHE:-$HOME/.cache/imgpipe}"
export IMGPIPE_CACHE="$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
bench="$cache/bench"
mkdir -p "$bench"

SHARP_VERSION=0.34.5
PILLOW_SIMD_VERSION=9.5.0.post2
PILLOW_VERSION=11.3.0
NUMPY_VERSION=2.4.6
SCIKIT_IMAGE_VERSION=0.26.0

# Debian: the command-line peers, the photos, and what building Pillow-SIMD needs.
need=()
command -v vipsthumbnail >/dev/null || need+=(libvips-tools)
command -v djpeg >/dev/null && command -v jpegtran >/dev/null || need+=(libjpeg-turbo-progs)
[ -f /usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg ] || need+=(mate-backgrounds)
[ -f /usr/share/wallpapers/Opal/contents/images/3840x2160.png ] || need+=(plasma-workspace-wallpapers)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
for pkg in libjpeg62-turbo-dev zlib1g-dev libwebp-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "compare.sh: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# sharp, pinned, in its own prefix: a package.json there keeps npm from walking up to an
# ancestor directory's.
installed="$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) {}' \
  "$bench/node_modules/sharp/package.json")"
if [ "$installed" != "$SHARP_VERSION" ]; then
  echo "compare.sh: installing sharp@$SHARP_VERSION into $bench" >&2
  [ -f "$bench/package.json" ] || echo '{"private": true}' > "$bench/package.json"
  npm install --prefix "$bench" --no-audit --no-fund --loglevel=error "sharp@$SHARP_VERSION" >&2
fi

# Python: numpy and scikit-image (SSIM) for the driver; Pillow-SIMD replaces the Pillow that
# scikit-image pulls in when it builds (it needs a C compiler and the -dev packages above).
venv="$bench/venv"
stamp="$venv/.bench-$SCIKIT_IMAGE_VERSION-$NUMPY_VERSION-$PILLOW_SIMD_VERSION"
if [ ! -f "$stamp" ]; then
  echo "compare.sh: setting up $venv" >&2
  # From scratch: a half-finished earlier setup can leave a package's metadata without its
  # files, which pip would then count as installed.
  rm -rf "$venv"
  python3 -m venv "$venv"
  pip=("$venv/bin/pip" install -q --disable-pip-version-check)
  "${pip[@]}" "numpy==$NUMPY_VERSION" "scikit-image==$SCIKIT_IMAGE_VERSION" "pillow==$PILLOW_VERSION"
  "$venv/bin/pip" uninstall -q -y pillow
  # Built here, not from pip's wheel cache: a wheel built before libwebp-dev was installed
  # would lack WebP, which the cases write and the SSIM check reads.
  if ! { "${pip[@]}" --no-cache-dir --no-deps "pillow-simd==$PILLOW_SIMD_VERSION" >&2 &&
         "$venv/bin/python" -c 'from PIL import features; assert features.check("webp")'; }; then
    echo "compare.sh: Pillow-SIMD did not build here with WebP; using Pillow $PILLOW_VERSION" >&2
    "$venv/bin/pip" uninstall -q -y pillow-simd || true
    "${pip[@]}" "pillow==$PILLOW_VERSION"
  fi
  touch "$stamp"
fi
pillow="$("$venv/bin/python" -c '
import importlib.metadata as m
for d in ("Pillow-SIMD", "pillow"):
    try:
        print(d.replace("pillow", "Pillow"), m.version(d)); break
    except m.PackageNotFoundError:
        pass')"

echo "compare.sh: building imgpipe and the bench binary (release)" >&2
cargo build --release --locked -p imgpipe -p bench >&2

echo "compare.sh: sharp $SHARP_VERSION (libvips $(node -e "
  const s = require(process.argv[1]); console.log(s.versions.vips)" "$bench/node_modules/sharp")),"\
  "$pillow, $(vips --version), $(djpeg -version 2>&1 | head -1)" >&2
exec "$venv/bin/python" bench/compare.py --pillow "$pillow" "$@"
