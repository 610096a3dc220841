"""Runs the cases of bench/compare.sh and prints one table per case (docs/performance.md).

Tools run round-robin, one iteration each in turn, so that drift on a shared machine hits all
of them alike. In-process tools (imgpipe's `bench worker`, sharp, Pillow) stay up for a whole
case and report CPU time per iteration and their peak RSS for that case; whole-process tools
(vipsthumbnail, djpeg, and every tool in the cold-start and batch cases) are timed with
wait4(), which gives their CPU time and peak RSS. Quality is SSIM against a reference made
by decoding the source in full and resizing it with Lanczos3 in floating point. The `bytes`
case (bench/bytes_case.py) compares encoders by bytes at equal SSIMULACRA2 instead.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from bytes_case import bytes_case

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("IMGPIPE_CACHE", Path.home() / ".cache" / "imgpipe"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "target"))
BENCH = TARGET / "release" / "bench"
IMGPIPE = TARGET / "release" / "imgpipe"
VENV_PY = CACHE / "bench" / "venv" / "bin" / "python"
ELEPHANTS = Path("/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg")
OPAL_PNG = Path("/usr/share/wallpapers/Opal/contents/images/3840x2160.png")
AQUA = Path("/usr/share/backgrounds/mate/nature/Aqua.jpg")
SMALL_SOURCE = Path("/usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg")
# Photos for the batch: every JPEG photo of mate-backgrounds' nature set plus plasma's
# 2560x1600 and larger photos (1.3 to 14.7 MP).
BATCH = sorted(Path("/usr/share/backgrounds/mate/nature").glob("*.jpg")) + [
    Path(f"/usr/share/wallpapers/{name}/contents/images/{size}.jpg")
    for name, size in [
        ("Autumn", "2560x1600"), ("BytheWater", "2560x1600"), ("ColdRipple", "2560x1600"),
        ("ColorfulCups", "2560x1600"), ("DarkestHour", "2560x1600"),
        ("EveningGlow", "2560x1600"), ("FallenLeaf", "2560x1600"), ("Kite", "2560x1600"),
        ("Path", "2560x1600"), ("PastelHills", "3200x2000"), ("Flow", "5120x2880"),
        ("Volna", "5120x2880"),
    ]
]
ENV = dict(os.environ, VIPS_CONCURRENCY="1", IMGPIPE_CACHE=str(CACHE))


def web_geometry(src):
    """The web preset's renditions: name -> (scaled size, crop box or None), sharp's rules."""
    w, h = src
    s = max(min(w / 256, h / 256), 1.0)
    sw, sh = round(w / s), round(h / s)
    left, top = (sw - 256 + 1) // 2, (sh - 256 + 1) // 2
    out = {"thumb": ((sw, sh), (left, top, left + min(256, sw), top + min(256, sh)))}
    for name, box in [("medium", 1024), ("large", 2048)]:
        s = max(w / box, h / box, 1.0)
        out[name] = ((round(w / s), round(h / s)), None)
    return out


def width_geometry(src, width=1024):
    return {"out": ((width, round(src[1] * width / src[0])), None)}


# ---- quality ---------------------------------------------------------------------------------

_ref_cache = {}


def reference(src, scaled, crop):
    """Full decode, Lanczos3 on float channels, then the crop: the best these pixels can be."""
    key = (str(src), scaled, crop)
    if key not in _ref_cache:
        im = Image.open(src).convert("RGB")
        chans = [c.convert("F").resize(scaled, Image.LANCZOS) for c in im.split()]
        arr = np.stack([np.asarray(c, dtype=np.float64) for c in chans], axis=2)
        if crop:
            arr = arr[crop[1]:crop[3], crop[0]:crop[2]]
        _ref_cache[key] = np.clip(arr, 0, 255)
    return _ref_cache[key]


def grey_blur_reference(src, sigma=2.0):
    """Rec. 709 luminance on linear light (sharp's and imgpipe's grey), then a Gaussian blur
    in float on the encoded values, as both blur."""
    from scipy.ndimage import gaussian_filter

    key = (str(src), "greyblur", sigma)
    if key not in _ref_cache:
        rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64) / 255
        lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        y = lin @ np.array([0.2126, 0.7152, 0.0722])
        grey = np.where(y <= 0.0031308, y * 12.92, 1.055 * y ** (1 / 2.4) - 0.055) * 255
        blurred = gaussian_filter(grey, sigma, mode="nearest", truncate=3.0)
        _ref_cache[key] = np.repeat(np.clip(blurred, 0, 255)[:, :, None], 3, axis=2)
    return _ref_cache[key]


def ssim(path, refs):
    """Against the best of the candidate references: a cover crop may be planned on a scaled
    size rounded either way (sharp makes 456x256 where imgpipe makes 455x256 before a
    256x256 crop), and a one-pixel shift would otherwise be scored as lost quality."""
    out = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    scores = [structural_similarity(out, ref, channel_axis=2, data_range=255)
              for ref in (refs if isinstance(refs, list) else [refs]) if out.shape == ref.shape]
    return max(scores) if scores else None


def cover_references(src, scaled, box):
    """References for a `cover` crop planned on `scaled` or on one pixel more either way."""
    refs = []
    for dw in (0, 1):
        for dh in (0, 1):
            sw, sh = scaled[0] + dw, scaled[1] + dh
            left, top = (sw - box[0] + 1) // 2, (sh - box[1] + 1) // 2
            refs.append(reference(src, (sw, sh), (left, top, left + box[0], top + box[1])))
    return refs


# ---- tools -----------------------------------------------------------------------------------


class InProcess:
    """A worker that does one iteration per `run` line and reports its peak RSS at the end."""

    def __init__(self, name, argv):
        self.name, self.argv = name, [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=ENV)
        self.samples, self.last, self.error = [], None, None

    def step(self, record):
        if self.error:
            return
        try:
            self.proc.stdin.write("run\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            result = json.loads(line)
        except (OSError, ValueError) as e:
            self.error = f"worker stopped ({e})"
            return
        self.last = result
        if record:
            self.samples.append(result)

    def finish(self):
        try:
            out, _ = self.proc.communicate("quit\n", timeout=120)
            lines = [l for l in out.splitlines() if l.strip()]
            end = json.loads(lines[-1])
            return {"peakRssKb": end["peakRssKb"],
                    "files": {Path(f).stem.split("-")[-1]: f for f in end.get("files", [])}}
        except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError) as e:
            self.error = self.error or f"no final report ({e})"
            return {"peakRssKb": None, "files": {}}


def run_timed(argv):
    """Runs one process to the end under `bench time`; returns (wall ms, CPU ms, peak RSS KiB)."""
    p = subprocess.run([str(BENCH), "time", *[str(a) for a in argv]], capture_output=True,
                       text=True, env=ENV)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{argv[0]}: {p.stderr.strip()[-400:]}")
    if r["code"] != 0:
        raise RuntimeError(f"{Path(str(argv[0])).name} exited {r['code']}: {p.stderr.strip()[-400:]}")
    return r["wallMs"], r["cpuMs"], r["peakRssKb"]


class WholeProcess:
    """One or more commands per iteration (e.g. three vipsthumbnail calls for three
    renditions): CPU and wall time add up, peak RSS is the largest."""

    def __init__(self, name, commands, files, prepare=None):
        self.name, self.commands, self.files = name, commands, files
        self.prepare = prepare
        self.samples, self.error, self.peak = [], None, 0

    def step(self, record):
        if self.error:
            return
        for f in self.files.values():
            Path(f).parent.mkdir(parents=True, exist_ok=True)
        if self.prepare:
            self.prepare()
        wall = cpu = 0.0
        peak = 0
        try:
            for argv in self.commands:
                w, c, rss = run_timed(argv)
                wall, cpu, peak = wall + w, cpu + c, max(peak, rss)
        except (RuntimeError, OSError) as e:
            self.error = str(e)
            return
        self.peak = max(self.peak, peak)
        if record:
            outputs = [{"name": n, "bytes": Path(f).stat().st_size}
                       for n, f in self.files.items() if Path(f).exists()]
            self.samples.append({"cpuMs": cpu, "wallMs": wall, "peakRssKb": peak,
                                 "outputs": outputs})

    def finish(self):
        return {"peakRssKb": self.peak or None, "files": self.files}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- cases -----------------------------------------------------------------------------------


class Case:
    def __init__(self, key, title, tools, geometry=None, refs=None, note=""):
        self.key, self.title, self.tools = key, title, tools
        self.refs = refs or {}
        self.note = note
        self.results = {}


def run_case(case, iterations, warmup):
    """Round-robin: every tool's iteration i runs before any tool's iteration i + 1."""
    tools = [t() if callable(t) else t for t in case.tools]
    for i in range(warmup + iterations):
        for tool in tools:
            tool.step(record=i >= warmup)
    for tool in tools:
        end = tool.finish()
        case.results[tool.name] = (tool, end)
    return tools


def fmt(v, spec=".0f"):
    return "-" if v is None or v != v else format(v, spec)


def print_table(case, targets):
    print(f"\n### ({case.key}) {case.title}\n")
    if case.note:
        print(case.note + "\n")
    print("| tool | CPU ms (median) | min–max | × sharp | wall ms | peak RSS MB | output bytes | SSIM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    sharp = case.results.get("sharp")
    sharp_cpu = median([s["cpuMs"] for s in sharp[0].samples]) if sharp else None
    rows = {}
    for name, (tool, end) in case.results.items():
        if tool.error and not tool.samples:
            print(f"| {name} | failed: {tool.error[:120]} | | | | | | |")
            continue
        cpu = [s["cpuMs"] for s in tool.samples]
        wall = [s["wallMs"] for s in tool.samples]
        m = median(cpu)
        outputs = tool.samples[-1]["outputs"] if tool.samples else []
        size = sum(o["bytes"] for o in outputs) if outputs else None
        scores = []
        for rendition, ref in case.refs.items():
            path = end["files"].get(rendition)
            scores.append(ssim(path, ref()) if path and Path(path).exists() else None)
        shown = [s for s in scores if s is not None]
        mean_ssim = sum(shown) / len(shown) if shown and len(shown) == len(scores) else None
        ratio = m / sharp_cpu if sharp_cpu else None
        rss = end["peakRssKb"] / 1024 if end["peakRssKb"] else None
        per = ""
        if len(scores) > 1:
            per = " (" + " / ".join(fmt(s, ".4f") for s in scores) + ")"
        print(f"| {name} | {fmt(m)} | {fmt(min(cpu))}–{fmt(max(cpu))} | {fmt(ratio, '.2f')} | "
              f"{fmt(median(wall))} | {fmt(rss, '.1f')} | {fmt(size)} | {fmt(mean_ssim, '.4f')}{per} |")
        rows[name] = {"cpu": m, "ssim": mean_ssim, "rss": rss, "scores": scores}
    if len(case.refs) > 1:
        print(f"\nSSIM is the mean over {', '.join(case.refs)} (each in brackets).")
    for line in targets(rows):
        print(line)
    return rows


def verdict(ok, text):
    return f"{'PASS' if ok else 'MISS'}  {text}"


def ssim_target(rows, tool="imgpipe"):
    a, b = rows.get(tool, {}).get("ssim"), rows.get("sharp", {}).get("ssim")
    if a is None or b is None:
        return [f"MISS  SSIM: not measured ({tool} {a}, sharp {b})"]
    who = "" if tool in ("imgpipe", "imgpipe process") else f"{tool}: "
    return [verdict(a >= b - 0.005,
                    f"{who}SSIM {a:.4f} vs sharp {b:.4f} (within 0.005 or better)")]


def cpu_target(rows, limit, against="sharp", label=None, tool="imgpipe"):
    a, b = rows.get(tool, {}).get("cpu"), rows.get(against, {}).get("cpu")
    if a is None or b is None:
        return [f"MISS  CPU vs {against}: not measured"]
    label = label or against
    who = "" if tool == "imgpipe" else f"{tool}: "
    return [verdict(a <= limit * b, f"{who}CPU {a:.0f} ms ≤ {limit} × {label} ({b:.0f} ms): "
                                    f"{a / b:.2f} ×")]


def like_for_like(rows, tool, peer):
    """Not a target: the default JPEG encoder's CPU beside the peer making the same trade
    (trellis quantisation and scan optimisation), for scale."""
    a, b = rows.get(tool, {}).get("cpu"), rows.get(peer, {}).get("cpu")
    if a is None or b is None:
        return [f"NOTE  {tool} vs {peer}: not measured"]
    return [f"NOTE  {tool} CPU {a:.0f} ms = {a / b:.2f} × {peer} ({b:.0f} ms), the same "
            "trellis-and-scans trade (no target)"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=int(os.environ.get("ITERATIONS", 9)))
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-iterations", type=int, default=3)
    ap.add_argument("--cases", default="a,b,c,d,e,f,bytes",
                    help="comma-separated case letters, and `bytes`")
    ap.add_argument("--pillow", default="Pillow", help="name of the Pillow distribution used")
    args = ap.parse_args()
    cases = set(args.cases.split(","))

    work = CACHE / "bench" / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    baseline = work / "Elephants_5640x3172-baseline.jpg"
    subprocess.run(["jpegtran", "-optimize", "-copy", "all", "-outfile", baseline, ELEPHANTS],
                   check=True)
    small = work / "Elephants-1024.jpg"
    src = Image.open(SMALL_SOURCE).convert("RGB")
    src.resize((1024, 576), Image.LANCZOS).save(small, "JPEG", quality=95)
    elephants_size = Image.open(ELEPHANTS).size
    n, w = args.iterations, args.warmup
    node = shutil.which("node")
    py = str(VENV_PY)

    def inproc(case_name, tool, argv_tail, out):
        if tool == "imgpipe":
            return lambda: InProcess("imgpipe", [BENCH, "worker", *argv_tail, "--out-dir", out,
                                                  "--stem", "imgpipe"])
        if tool == "imgpipe fast":
            # The same work with libjpeg-turbo as the JPEG encoder: the like-for-like row
            # against sharp's default (also libjpeg-turbo settings) at equal quality numbers,
            # which is what the SSIM check compares. The default row's own JPEG encoder
            # (mozjpeg's trellis) is judged at equal score in the bytes case.
            return lambda: InProcess("imgpipe fast", [BENCH, "worker", *argv_tail,
                                                       "--out-dir", out, "--stem", "imgpipe-fast"])
        if tool == "sharp":
            return lambda: InProcess("sharp", [node, HERE / "sharp_bench.mjs", "worker",
                                                "--case", case_name, *argv_tail[:2],
                                                "--out-dir", out, "--stem", "sharp"])
        if tool == "sharp mozjpeg":
            return lambda: InProcess("sharp mozjpeg", [node, HERE / "sharp_bench.mjs", "worker",
                                                        "--case", f"{case_name}-mozjpeg",
                                                        *argv_tail[:2], "--out-dir", out,
                                                        "--stem", "sharp-mozjpeg"])
        return lambda: InProcess(args.pillow, [py, HERE / "pillow_bench.py", "worker",
                                               "--case", case_name, *argv_tail[:2],
                                               "--out-dir", out, "--stem", "pillow"])

    one_recipe = json.dumps({"renditions": [{"name": "out", "resize": {"width": 1024},
                                             "format": "jpeg", "quality": 80}]})
    one_fast = json.dumps({"renditions": [{"name": "out", "resize": {"width": 1024},
                                           "format": "jpeg", "quality": 80,
                                           "jpegEncoder": "fast"}]})
    presets = json.loads((HERE.parent / "crates/pipeline/presets/presets.json").read_text())
    web_fast = presets["web"]
    for r in web_fast["renditions"]:
        if r.get("format") == "jpeg":
            r["jpegEncoder"] = "fast"
    web_fast = json.dumps(web_fast)
    summary = []

    print("# imgpipe vs sharp, Pillow and libvips\n")
    print(f"{n} measured iterations after {w} warm-up, tools alternating round-robin, "
          "one thread each (sharp.concurrency(1), VIPS_CONCURRENCY=1), except case (d).")
    print(f"Peak RSS is per process and per case. Load average at start: "
          f"{open('/proc/loadavg').read().split()[:3]}")

    if "a" in cases:
        for label, path in [("baseline", baseline), ("progressive, as shipped", ELEPHANTS)]:
            out = work / f"a-{label.split(',')[0]}"
            tail = ["--input", path, "--recipe", one_recipe]
            # The floor decodes at imgpipe's own DCT scale, read from its decoded size.
            scale = jpeg_scale_of(path, (1024, 576))
            case = Case(
                "a", f"one rendition: {path.name} ({label}, 5640x3172) -> 1024x576 JPEG q80",
                [inproc("one", "imgpipe", tail, out), inproc("one", "sharp", tail, out),
                 inproc("one", "imgpipe fast", ["--input", path, "--recipe", one_fast], out),
                 inproc("one", "sharp mozjpeg", tail, out),
                 inproc("one", "pillow", tail, out),
                 WholeProcess("vipsthumbnail", [["vipsthumbnail", path, "-s", "1024x",
                                                 "-o", f"{out}/vips-out.jpg[Q=80,optimize_coding,strip]"]],
                              {"out": f"{out}/vips-out.jpg"}),
                 WholeProcess(f"(g) djpeg -scale 1/{scale} (floor)",
                              [["djpeg", "-scale", f"1/{scale}", "-outfile", "/dev/null", path]], {})],
                refs={"out": lambda p=path: reference(p, (1024, 576), None)},
                note=f"(g) the floor is `djpeg -scale 1/{scale}`: decoding alone, at the DCT scale "
                     "imgpipe picks for this output, as a whole process.")
            run_case(case, n, w)

            # The default (mozjpeg's trellis encoder) within sharp's default CPU; libjpeg-turbo
            # at 0.8 × on the baseline file, as before the trellis encoder was the default.
            def targets(rows, scale=scale, baseline=label == "baseline"):
                floor = f"(g) djpeg -scale 1/{scale} (floor)"
                fast = cpu_target(rows, 0.8, tool="imgpipe fast") if baseline else []
                return (cpu_target(rows, 1.0) + fast
                        + cpu_target(rows, 1.25, floor, "djpeg floor")
                        + cpu_target(rows, 1.25, floor, "djpeg floor", tool="imgpipe fast")
                        + ssim_target(rows, "imgpipe fast")
                        + like_for_like(rows, "imgpipe", "sharp mozjpeg"))
            rows = print_table(case, targets)
            summary += [f"(a) {label}: {t}" for t in targets(rows)]

    if "b" in cases:
        for label, path in [("progressive, as shipped", ELEPHANTS), ("baseline", baseline)]:
            out = work / f"b-{label.split(',')[0]}"
            tail = ["--input", path, "--preset", "web"]
            geo = web_geometry(elephants_size)
            vips = [
                ["vipsthumbnail", path, "-s", "256x256", "-m", "centre", "-o",
                 f"{out}/vips-thumb.webp[Q=80,strip]"],
                ["vipsthumbnail", path, "-s", "1024x1024", "-o",
                 f"{out}/vips-medium.jpg[Q=82,optimize_coding,strip]"],
                ["vipsthumbnail", path, "-s", "2048x2048", "-o",
                 f"{out}/vips-large.jpg[Q=82,optimize_coding,strip]"],
            ]
            case = Case(
                "b", f"web preset from one upload: {path.name} ({label}) -> thumb 256x256 WebP q80, "
                     "medium 1024x576 JPEG q82, large 2048x1152 JPEG q82",
                [inproc("web", "imgpipe", tail, out), inproc("web", "sharp", tail, out),
                 inproc("web", "imgpipe fast", ["--input", path, "--recipe", web_fast], out),
                 inproc("web", "pillow", tail, out),
                 WholeProcess("vipsthumbnail ×3", vips,
                              {r: f"{out}/vips-{r}.{'webp' if r == 'thumb' else 'jpg'}"
                               for r in ["thumb", "medium", "large"]})],
                refs={r: (lambda p=path, g=g: reference(p, *g) if g[1] is None
                          else cover_references(p, g[0], (256, 256))) for r, g in geo.items()},
                note="sharp: one pipeline per rendition from one input buffer (`clone()`), run "
                     "in turn; Pillow: one draft decode for the largest rendition, each rendition "
                     "resized from it; imgpipe: one decode, then the render cascade.")
            run_case(case, n, w)

            def targets(rows):
                return (cpu_target(rows, 0.5) + cpu_target(rows, 0.5, tool="imgpipe fast")
                        + ssim_target(rows, "imgpipe fast"))
            rows = print_table(case, targets)
            summary += [f"(b) {label}: {t}" for t in targets(rows)]

    if "c" in cases:
        # The 17.9 MP photo of case (a), and a typical 4 MP camera-phone-sized photo where the
        # process start-up weighs more.
        for path in [baseline, AQUA]:
            summary += cold_start(work, path, node, py, args.pillow, n, w)

    if "d" in cases:
        summary += batch_case(work, node, args.batch_iterations, w)

    if "e" in cases:
        out = work / "e"
        path = OPAL_PNG
        recipe = json.dumps({"renditions": [{"name": "out", "resize": {"width": 1024},
                                             "format": "webp", "quality": 80}]})
        tail = ["--input", path, "--recipe", recipe]
        case = Case(
            "e", f"PNG to WebP: {path} (3840x2160 RGB) -> 1024x576 WebP q80 (effort/method 4)",
            [inproc("webp", "imgpipe", tail, out), inproc("webp", "sharp", tail, out),
             inproc("webp", "pillow", tail, out),
             WholeProcess("vipsthumbnail", [["vipsthumbnail", path, "-s", "1024x", "-o",
                                             f"{out}/vips-out.webp[Q=80,strip]"]],
                          {"out": f"{out}/vips-out.webp"})],
            refs={"out": lambda: reference(path, (1024, 576), None)})
        run_case(case, n, w)

        def targets(rows):
            return ssim_target(rows)
        rows = print_table(case, targets)
        summary += [f"(e) PNG->WebP: {t}" for t in targets(rows)]

    if "f" in cases:
        out = work / "f"
        recipe = json.dumps({"renditions": [{"name": "out", "operations": [
            {"op": "grayscale"}, {"op": "blur", "sigma": 2}], "format": "jpeg", "quality": 80}]})
        tail = ["--input", small, "--recipe", recipe]
        fast_recipe = json.loads(recipe)
        fast_recipe["renditions"][0]["jpegEncoder"] = "fast"
        case = Case(
            "f", f"grayscale + blur σ2 on a 1024x576 JPEG -> JPEG q80 (decode and encode included)",
            [inproc("grayblur", "imgpipe", tail, out), inproc("grayblur", "sharp", tail, out),
             inproc("grayblur", "imgpipe fast",
                    ["--input", small, "--recipe", json.dumps(fast_recipe)], out),
             inproc("grayblur", "pillow", tail, out)],
            refs={"out": lambda: grey_blur_reference(small)},
            note="Input: Elephants_3840x2160.jpg resized to 1024x576 (Lanczos, q95) once. "
                 "Reference: Rec. 709 luminance on linear light, Gaussian σ2 in float. sharp and "
                 "Pillow write one-channel JPEGs, imgpipe three equal channels; Pillow's grey is "
                 "Rec. 601 luma on encoded values and its GaussianBlur a box approximation.")
        run_case(case, n, w)

        def targets(rows):
            return ssim_target(rows) + ssim_target(rows, "imgpipe fast")
        rows = print_table(case, targets)
        summary += [f"(f) grayscale+blur: {t}" for t in targets(rows)]

    if "bytes" in cases:
        summary += [f"(bytes) {t}" for t in bytes_case(work, BENCH, node, HERE / "sharp_bench.mjs",
                                                       ENV)]

    print("\n## Targets\n")
    for line in summary:
        print(f"    {line}")
    print(f"\nLoad average at the end: {open('/proc/loadavg').read().split()[:3]}")


def cold_start(work, path, node, py, pillow, n, w):
    out = work / f"c-{path.stem}"
    data = (Path("/dev/shm") if Path("/dev/shm").is_dir() else work) / f"imgpipe-bench-{os.getpid()}"

    def fresh():
        shutil.rmtree(data, ignore_errors=True)
    size = Image.open(path).size
    geo = (1024, round(size[1] * 1024 / size[0]))
    case = Case(
        "c", f"cold start, whole process: {path.name} ({size[0]}x{size[1]}) -> "
             f"{geo[0]}x{geo[1]} JPEG q80",
        # --overwrite: every timed run writes the same output file again.
        [WholeProcess("imgpipe process", [[IMGPIPE, "process", path, "--out", out, "--resize",
                                           "1024x", "--format", "jpeg", "--quality", "80",
                                           "--jobs", "1", "--data", data, "--overwrite"]],
                      {"out": f"{out}/{path.stem}-out.jpg"}, prepare=fresh),
         # libjpeg-turbo, as sharp's default encoder: the like-for-like SSIM at q80 (the
         # default trellis encoder writes fewer bytes and scores lower at the same number).
         WholeProcess("imgpipe process fast", [[IMGPIPE, "process", path, "--out", out / "fast",
                                                "--resize", "1024x", "--format", "jpeg",
                                                "--quality", "80", "--jpeg-encoder", "fast",
                                                "--jobs", "1", "--data", data, "--overwrite"]],
                      {"out": f"{out}/fast/{path.stem}-out.jpg"}, prepare=fresh),
         WholeProcess("sharp", [[node, HERE / "sharp_bench.mjs", "once", "--case", "one",
                                 "--input", path, "--out-dir", out, "--stem", "sharp"]],
                      {"out": f"{out}/sharp-out.jpg"}),
         WholeProcess("sharp mozjpeg", [[node, HERE / "sharp_bench.mjs", "once", "--case",
                                         "one-mozjpeg", "--input", path, "--out-dir", out,
                                         "--stem", "sharp-mozjpeg"]],
                      {"out": f"{out}/sharp-mozjpeg-out.jpg"}),
         WholeProcess(pillow, [[py, HERE / "pillow_bench.py", "once", "--case", "one",
                                "--input", path, "--out-dir", out, "--stem", "pillow"]],
                      {"out": f"{out}/pillow-out.jpg"}),
         WholeProcess("vipsthumbnail", [["vipsthumbnail", path, "-s", "1024x", "-o",
                                         f"{out}/vips-out.jpg[Q=80,optimize_coding,strip]"]],
                      {"out": f"{out}/vips-out.jpg"})],
        refs={"out": lambda: reference(path, geo, None)},
        note="Whole processes, timed by `bench time` (getrusage of the child): CPU and peak "
             "RSS of the process. `imgpipe process` does the product's whole path: copies the "
             "original into a fresh data directory on tmpfs (so the SQLite database is created "
             "each run), hashes it (sha256), runs the state machine (validate, resize, filter, "
             "store, notify), records the job in SQLite, appends to events.jsonl and exports "
             "the rendition.")
    run_case(case, n, w)
    fresh()

    def targets(rows):
        lines = []
        b = rows.get("sharp", {})
        for tool in ["imgpipe process", "imgpipe process fast"]:
            a = rows.get(tool, {})
            who = "" if tool == "imgpipe process" else "imgpipe fast: "
            if a.get("cpu") and b.get("cpu"):
                lines.append(verdict(a["cpu"] <= 0.5 * b["cpu"],
                                     f"{who}CPU {a['cpu']:.0f} ms ≤ 0.5 × sharp "
                                     f"({b['cpu']:.0f} ms): {a['cpu'] / b['cpu']:.2f} ×"))
            if a.get("rss") and b.get("rss"):
                lines.append(verdict(a["rss"] <= 0.4 * b["rss"],
                                     f"{who}peak RSS {a['rss']:.1f} MB ≤ 0.4 × sharp "
                                     f"({b['rss']:.1f} MB): {a['rss'] / b['rss']:.2f} ×"))
        return (lines + ssim_target(rows, "imgpipe process fast")
                + like_for_like(rows, "imgpipe process", "sharp mozjpeg"))
    rows = print_table(case, targets)
    return [f"(c) cold start, {path.name}: {t}" for t in targets(rows)]


def jpeg_scale_of(path, need):
    """The power-of-two DCT scale imgpipe decodes at, from its own decoded size."""
    recipe = json.dumps({"renditions": [{"name": "out", "resize": {"width": need[0]},
                                         "format": "jpeg", "quality": 80}]})
    p = subprocess.run([str(BENCH), "worker", "--input", str(path), "--recipe", recipe,
                        "--out-dir", "/tmp", "--stem", "scale-probe"],
                       input="run\n", capture_output=True, text=True, check=True, env=ENV)
    first = json.loads(p.stdout.splitlines()[0])
    return round(Image.open(path).size[0] / first["decoded"][0])


def batch_case(work, node, iterations, warmup):
    out = work / "d"
    batch = work / "batch"
    batch.mkdir(exist_ok=True)
    files = []
    for i, f in enumerate(BATCH):
        if f.exists():
            link = batch / f"{i:02d}-{f.parent.parent.parent.name if 'wallpapers' in str(f) else f.stem}.jpg"
            if not link.exists():
                link.symlink_to(f)
            files.append(link)
    data = (Path("/dev/shm") if Path("/dev/shm").is_dir() else work) / f"imgpipe-batch-{os.getpid()}"
    # The default JPEG encoder (trellis) writes a fifth fewer bytes than sharp's default
    # libjpeg-turbo and costs several times its encode; `--jpeg-encoder fast` is the same
    # encoder as sharp's, the like-for-like throughput.
    fast = "imgpipe process --jobs 2 --jpeg-encoder fast"
    results = {"imgpipe process --jobs 2": [], fast: [],
               "sharp (2 at a time, concurrency 2)": []}
    cmds = {
        "imgpipe process --jobs 2": [IMGPIPE, "process", batch, "--preset", "web", "--jobs", "2",
                                     "--out", out / "imgpipe", "--data", data],
        fast: [IMGPIPE, "process", batch, "--preset", "web", "--jobs", "2",
               "--jpeg-encoder", "fast", "--out", out / "fast", "--data", data],
        "sharp (2 at a time, concurrency 2)": [node, HERE / "sharp_bench.mjs", "batch",
                                               "--concurrency", "2", "--out-dir", out / "sharp",
                                               *files],
    }
    for i in range(warmup + iterations):
        for name, argv in cmds.items():
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            (out / "sharp").mkdir(parents=True)
            wall, cpu, rss = run_timed(argv)
            if i >= warmup:
                results[name].append((wall, cpu, rss))
    shutil.rmtree(data, ignore_errors=True)
    print(f"\n### (d) batch: {len(files)} photos, web preset, both cores\n")
    print("Photos: " + ", ".join(str(f) for f in BATCH if f.exists()) + ".\n")
    print("Whole processes (wall time from start to exit); `imgpipe process` also records every "
          "image in SQLite and keeps a copy of each original in its data directory (tmpfs).\n")
    print("| tool | wall s (median) | images/s | × sharp | CPU s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    rates = {}
    for name, rs in results.items():
        wall = median([r[0] for r in rs]) / 1e3
        rates[name] = len(files) / wall
    sharp_rate = rates["sharp (2 at a time, concurrency 2)"]
    for name, rs in results.items():
        wall = median([r[0] for r in rs]) / 1e3
        print(f"| {name} | {wall:.2f} | {rates[name]:.1f} | {rates[name] / sharp_rate:.2f} | "
              f"{median([r[1] for r in rs]) / 1e3:.2f} | {max(r[2] for r in rs) / 1024:.1f} |")
    lines = []
    for name, who in [("imgpipe process --jobs 2", ""), (fast, "imgpipe fast: ")]:
        a = rates[name]
        lines.append(verdict(a >= 1.5 * sharp_rate,
                             f"{who}{a:.1f} images/s ≥ 1.5 × sharp ({sharp_rate:.1f}): "
                             f"{a / sharp_rate:.2f} ×"))
    for line in lines:
        print(line)
    return [f"(d) batch: {line}" for line in lines]


if __name__ == "__main__":
    sys.exit(main())
