"""On-demand transforms of `imgpipe serve` against sharp doing the same work in-process.

Run by bench/ondemand.sh, which installs sharp and builds imgpipe first:

    python3 bench/ondemand.py --imgpipe BIN --photo JPEG --work DIR [--renders N]
        [--repeats N] [--concurrent N]

1. A 12 MP JPEG (4032x3024, q90) is made from --photo with sharp and uploaded through the
   API (form, then the pipeline's web preset) to a fresh `imgpipe serve`.
2. First requests: `GET /v1/images/{id}/transform?w=800&fmt=auto&q=Q` with
   `Accept: image/webp`, one Q per request so each one renders (decode, resize, WebP
   encode, store); wall time at the client, and the server's CPU time per request.
3. Repeats: the same transform again, --repeats times on one kept-alive connection.
4. --concurrent identical first requests at once (another size), all released together: how
   many renders the server made for them (its `imgpipe_transforms_rendered_total`).
5. sharp: `sharp(buf).rotate().resize({width: 800}).webp({quality: 80}).toBuffer()` in one
   warm process, --renders times.

Only the standard library: http.client, threads, subprocess.
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def verdict(ok, text):
    print(f"{'PASS' if ok else 'MISS'}  {text}")
    return ok


class Server:
    def __init__(self, binary, data, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data", str(data), "--addr", "127.0.0.1:0", "--no-inbox"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            sys.exit(f"ondemand: no startup line from imgpipe serve: {line!r}")
        self.host, self.port = m.group(1), int(m.group(2))
        token = subprocess.run(
            [binary, "token", "--data", str(data), "--user", "bench"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.auth = {"Authorization": f"Bearer {token}"}

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        c = conn or self.conn()
        c.request(method, path, body=body, headers={**self.auth, **(headers or {})})
        r = c.getresponse()
        data = r.read()
        out = (r.status, dict(r.getheaders()), data)
        if own:
            c.close()
        return out

    def cpu_seconds(self):
        """The server's user + system CPU so far, from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def renders(self):
        _, _, body = self.request("GET", "/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("imgpipe_transforms_rendered_total"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def upload(server, photo):
    data = Path(photo).read_bytes()
    status, _, body = server.request(
        "POST",
        "/v1/uploads",
        json.dumps({"filename": "photo.jpg", "contentType": "image/jpeg", "bytes": len(data)}),
        {"Content-Type": "application/json"},
    )
    assert status == 201, (status, body)
    created = json.loads(body)
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in created["upload"]["fields"].items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    url = urlsplit(created["upload"]["url"])
    status, _, body = server.request(
        "POST", url.path, b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 204, (status, body)
    image_id = created["imageId"]
    deadline = time.time() + 300
    while time.time() < deadline:
        _, _, body = server.request("GET", f"/v1/images/{image_id}")
        record = json.loads(body)
        if record["status"] == "COMPLETE":
            return image_id
        assert record["status"] in ("AWAITING_UPLOAD", "PROCESSING"), record
        time.sleep(0.2)
    sys.exit("ondemand: the upload did not complete in 5 minutes")


def transform(server, image_id, query, conn=None):
    t = time.perf_counter()
    status, headers, body = server.request(
        "GET", f"/v1/images/{image_id}/transform?{query}", headers={"Accept": "image/webp"}, conn=conn
    )
    ms = (time.perf_counter() - t) * 1000
    assert status == 302, (status, body)
    return ms, headers["location"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgpipe", required=True)
    ap.add_argument("--node", default="node")
    ap.add_argument("--photo", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--renders", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=200)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    source = work / "source-12mp.jpg"
    subprocess.run(
        [args.node, str(HERE / "ondemand.mjs"), "make", "--input", args.photo, "--out", str(source),
         "--width", "4032", "--height", "3024"],
        check=True,
    )
    server = Server(args.imgpipe, work / "data", work / "serve.log")
    try:
        image_id = upload(server, source)

        # First requests: each a render.
        first_ms, first_cpu = [], []
        for i in range(args.renders):
            cpu = server.cpu_seconds()
            ms, _ = transform(server, image_id, f"w=800&fmt=auto&q={70 + i}")
            first_ms.append(ms)
            first_cpu.append((server.cpu_seconds() - cpu) * 1000)

        # Repeats, on one kept-alive connection.
        conn = server.conn()
        transform(server, image_id, "w=800&fmt=auto&q=70", conn)
        repeat_ms = [transform(server, image_id, "w=800&fmt=auto&q=70", conn)[0] for _ in range(args.repeats)]
        conn.close()

        # Identical concurrent first requests, released together.
        before = server.renders()
        barrier = threading.Barrier(args.concurrent)
        results, errors = [], []

        def one():
            c = server.conn()
            c.connect()
            barrier.wait()
            try:
                results.append(transform(server, image_id, "w=640&fmt=auto", c)[1].split("?")[0])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                c.close()

        threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        burst_s = time.perf_counter() - t
        rendered = server.renders() - before
    finally:
        server.stop()

    out = subprocess.run(
        [args.node, str(HERE / "ondemand.mjs"), "render", "--input", str(source), "--width", "800",
         "--iterations", str(args.renders)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sharp = json.loads(out)

    imgpipe_p50 = statistics.median(first_ms)
    sharp_p50 = statistics.median(sharp["wallMs"])
    print(f"Source: {source.name}, 4032x3024 (12.2 MP), from {args.photo}; w=800, WebP q80 (Accept: image/webp).\n")
    print("| what | p50 ms | p99 ms | CPU ms (p50) | n |")
    print("|---|---:|---:|---:|---:|")
    print(f"| imgpipe serve, first request (render + store + 302) | {imgpipe_p50:.1f} | "
          f"{percentile(first_ms, 99):.1f} | {statistics.median(first_cpu):.0f} | {len(first_ms)} |")
    print(f"| sharp in-process, resize + WebP encode (all cores) | {sharp_p50:.1f} | "
          f"{percentile(sharp['wallMs'], 99):.1f} | {statistics.median(sharp['cpuMs']):.0f} | {len(sharp['wallMs'])} |")
    print(f"| imgpipe serve, repeat request (302 to the stored file) | {statistics.median(repeat_ms):.2f} | "
          f"{percentile(repeat_ms, 99):.2f} | | {len(repeat_ms)} |")
    print(f"\n{args.concurrent} identical first requests at once: {len(results)} answered 302 "
          f"({len(set(results))} distinct locations), {len(errors)} errors, {rendered:.0f} render(s), "
          f"{burst_s:.2f} s for all.\n")
    ok = True
    ok &= verdict(imgpipe_p50 <= 0.5 * sharp_p50,
                  f"first request p50 {imgpipe_p50:.1f} ms ≤ 0.5 × sharp in-process ({sharp_p50:.1f} ms): "
                  f"{imgpipe_p50 / sharp_p50:.2f} ×")
    ok &= verdict(percentile(repeat_ms, 99) < 5.0,
                  f"repeat request p99 {percentile(repeat_ms, 99):.2f} ms < 5 ms")
    ok &= verdict(rendered == 1 and not errors and len(set(results)) == 1,
                  f"{args.concurrent} concurrent identical first requests render once: {rendered:.0f}")
    if errors:
        print("errors:", errors[:5])


if __name__ == "__main__":
    main()
