"""The Pillow side of bench/compare.sh: the same cases as `bench worker`, measured in-process
with time.process_time(), the way a Pillow user would write them (Image.draft for JPEG
shrink-on-load, LANCZOS resampling, optimised JPEG Huffman tables like sharp and imgpipe).

  python pillow_bench.py worker|once --case CASE --input FILE --out-dir DIR --stem NAME

`worker` reads `run` lines on stdin and prints one JSON line per iteration, then
{"peakRssKb"} at EOF; `once` does one iteration and exits. CASE: one, web, webp, grayblur
(see sharp_bench.mjs).
"""

import io
import json
import os
import sys
import time

from PIL import Image, ImageFilter, ImageOps

LANCZOS = Image.LANCZOS


def fit_inside(size, box):
    """sharp's `inside` (never enlarging): the larger shrink factor, rounded."""
    w, h = size
    s = max(w / box[0], h / box[1], 1.0)
    return round(w / s), round(h / s)


def cover(im, box):
    """sharp's `cover` with centre gravity: scale to cover, then crop the middle."""
    w, h = im.size
    s = max(min(w / box[0], h / box[1]), 1.0)
    sw, sh = round(w / s), round(h / s)
    scaled = im.resize((sw, sh), LANCZOS)
    left, top = (sw - box[0] + 1) // 2, (sh - box[1] + 1) // 2
    return scaled.crop((left, top, left + min(box[0], sw), top + min(box[1], sh)))


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(im, quality):
    return encode(im, "JPEG", quality=quality, optimize=True)


def open_upright(data, need=None):
    im = Image.open(io.BytesIO(data))
    if need is not None and im.format == "JPEG":
        im.draft("RGB", need)
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB") if im.mode != "RGB" else im


def width_1024(im):
    w, h = im.size
    return 1024, round(h * 1024 / w)


def case_one(data):
    w, h = Image.open(io.BytesIO(data)).size
    size = (1024, round(h * 1024 / w))
    im = open_upright(data, size)
    return [("out", "jpg", jpeg(im.resize(size, LANCZOS), 80))]


def case_web(data):
    probe = Image.open(io.BytesIO(data))
    large_size = fit_inside(probe.size, (2048, 2048))
    im = open_upright(data, large_size)
    src = probe.size
    return [
        ("thumb", "webp", encode(cover_from(im, src, (256, 256)), "WEBP", quality=80, method=4)),
        ("medium", "jpg", jpeg(im.resize(fit_inside(src, (1024, 1024)), LANCZOS), 82)),
        ("large", "jpg", jpeg(im.resize(large_size, LANCZOS), 82)),
    ]


def cover_from(im, src, box):
    """`cover` planned on the original size, applied to a (possibly draft-shrunk) decode."""
    s = max(min(src[0] / box[0], src[1] / box[1]), 1.0)
    sw, sh = round(src[0] / s), round(src[1] / s)
    scaled = im.resize((sw, sh), LANCZOS)
    left, top = (sw - box[0] + 1) // 2, (sh - box[1] + 1) // 2
    return scaled.crop((left, top, left + min(box[0], sw), top + min(box[1], sh)))


def case_webp(data):
    im = open_upright(data)
    return [("out", "webp", encode(im.resize(width_1024(im), LANCZOS), "WEBP", quality=80, method=4))]


def case_grayblur(data):
    im = open_upright(data).convert("L").filter(ImageFilter.GaussianBlur(2))
    return [("out", "jpg", jpeg(im, 80))]


CASES = {"one": case_one, "web": case_web, "webp": case_webp, "grayblur": case_grayblur}


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    opts = dict(zip(args[0::2], args[1::2]))
    run = CASES[opts["--case"]]
    last = []

    def iteration():
        nonlocal last
        cpu0, t0 = time.process_time(), time.perf_counter()
        with open(opts["--input"], "rb") as f:
            outputs = run(f.read())
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        last = outputs
        print(json.dumps({"cpuMs": cpu * 1e3, "wallMs": wall * 1e3,
                          "outputs": [{"name": n, "bytes": len(b)} for n, _, b in outputs]}),
              flush=True)

    if mode == "once":
        iteration()
    else:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            iteration()
    out_dir = opts["--out-dir"]
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for name, ext, data in last:
        path = os.path.join(out_dir, f"{opts.get('--stem', 'pillow')}-{name}.{ext}")
        with open(path, "wb") as f:
            f.write(data)
        files.append(path)
    # VmHWM of this process: getrusage's maxrss would include the parent's RSS at fork time.
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    print(json.dumps({"peakRssKb": peak, "files": files}), flush=True)


if __name__ == "__main__":
    main()
