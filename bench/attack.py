"""Reruns docs/security.md's attack list on `imgpipe serve` over 127.0.0.1 and prints a table.

    python3 bench/attack.py [--bin PATH] [--only 1,5,8] [--keep]

Every attack is measured from outside, the way crates/cli/tests/attacks.rs does it: status
codes and time-to-drop read off raw TCP connections where a polite HTTP client would not send
what an attacker does, the server's peak RSS from /proc/PID/status. A background poller asks
each server for /health every 0.5 s (5 s timeout) for the whole run, and a sampler reads its
VmRSS. Each attack decides "held" or "NOT HELD" from what it saw; "info" rows only record.
The run ends with a "hostile mix" of several attacks at once. Exit status 1 if any row is
NOT HELD.

Python standard library only. Servers run in a temporary directory with their default limits
(`--no-inbox` aside: no attack here uses the inbox), killed at the end.
"""

import argparse
import http.client
import json
import os
import re
import select
import selectors
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

# The server's defaults the verdicts rely on (docs/security.md, "Limits and their defaults").
HEADER_TIMEOUT = 10.0  # request headers must arrive within this (also the keep-alive limit)
API_TIMEOUT = 30.0  # an API request, body included, is answered 408 after this
BODY_IDLE = 30.0  # an upload body silent this long is answered 408
# Scheduling slack on a busy 2-core machine on top of a server deadline (as in the tests).
SLACK = 8.0

HEALTH_EVERY = 0.5
HEALTH_TIMEOUT = 5.0
RSS_EVERY = 0.25
ATTACK_LIMIT = 45.0  # an attack still running after this is reported NOT HELD and left behind
MIX_SECONDS = 32.0  # long enough for the mix's stalled uploads to reach their 30 s deadline
MIB = 1 << 20

HELD, NOT_HELD, INFO = "held", "**NOT HELD**", "info"


# --------------------------------------------------------------------------------------------
# Images


def png(width, height, rows, level=1):
    """An 8-bit RGB PNG from `rows`: each row a filter byte (0) and width*3 bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, level))
        + chunk(b"IEND", b"")
    )


def gradient_png(width, height):
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes((x * 255 // width, y * 255 // height, (x ^ y) & 0xFF))
    return png(width, height, bytes(rows))


def noise_png(width, height):
    """Random pixels: nothing for the decoder or the encoders to take a shortcut on."""
    return png(width, height, b"".join(b"\0" + os.urandom(width * 3) for _ in range(height)))


# --------------------------------------------------------------------------------------------
# HTTP over http.client, and raw TCP where an attacker's bytes are the point


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error(self):
        """`error: message` of a JSON refusal, or the start of the body."""
        doc = self.json()
        if isinstance(doc, dict) and "error" in doc:
            return f"{doc.get('error')}: {doc.get('message')}"
        return self.body[:120].decode("utf-8", "replace")


def multipart(fields, file, file_type):
    """A multipart/form-data body as a browser posts an upload form: fields, then `file`."""
    boundary = f"----imgpipe{time.monotonic_ns():x}"
    body = bytearray()
    for name, value in fields.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.png"\r\n'.encode()
    if file_type:
        body += f"Content-Type: {file_type}\r\n".encode()
    body += b"\r\n" + file + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(body)


class Outcome:
    """What a raw connection got: the status code if one came, and whether it ended (answered
    or closed) within the wait, after how long."""

    def __init__(self, code, ended, secs):
        self.code = code
        self.ended = ended
        self.secs = secs

    def __str__(self):
        if self.code:
            return f"{self.code} after {self.secs:.1f} s"
        return f"closed after {self.secs:.1f} s" if self.ended else f"nothing in {self.secs:.1f} s"


def read_status(sock, within):
    """Reads until the server sends a status line or closes the connection, for at most
    `within` seconds."""
    started = time.monotonic()
    got = b""
    ended = False
    while True:
        left = within - (time.monotonic() - started)
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        got += chunk
        if b"\r\n" in got:
            ended = True
            break
    m = re.match(rb"HTTP/1\.[01] (\d{3})", got)
    return Outcome(int(m.group(1)) if m else None, ended, time.monotonic() - started)


def wait_closed(sock, within):
    """Seconds until the server closed the connection (reading whatever it says first), or
    None if it was still open after `within`."""
    started = time.monotonic()
    while True:
        left = within - (time.monotonic() - started)
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - started


def chunk_of(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


def chunked_post(srv, path, head, filler, cap, extra_headers="", send_for=8.0, wait=5.0):
    """POSTs a chunked body to `path`: `head`, then `filler` (1 MiB chunks) up to `cap` bytes
    or for `send_for` seconds, stopping as soon as the server answers or stops reading; then
    waits up to `wait` s for its answer. Returns (Outcome, bytes sent, seconds until the server
    answered or the writes stopped)."""
    sock = srv.connect()
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {srv.hostport}\r\nTransfer-Encoding: chunked\r\n"
            f"{extra_headers}\r\n"
        ).encode()
    )
    started = time.monotonic()
    sent = 0
    if head:  # (an empty chunk would end the body)
        sock.sendall(chunk_of(head))
        sent += len(head)
    block = chunk_of(filler * MIB)
    while sent < cap and time.monotonic() - started < send_for:
        # An early answer is read before the next write, which could otherwise meet a reset
        # connection and lose the answer with it.
        if select.select([sock], [], [], 0)[0]:
            break
        sock.settimeout(3)  # a server that stopped reading fills the socket buffers
        try:
            sock.sendall(block)
        except OSError:  # timeout, reset or broken pipe
            break
        sent += MIB
    stopped = time.monotonic() - started
    outcome = read_status(sock, wait)
    sock.close()
    return outcome, sent, stopped


# --------------------------------------------------------------------------------------------
# The server, its monitor and its API


class Monitor:
    """Polls /health every HEALTH_EVERY s and samples VmRSS every RSS_EVERY s, keeping every
    observation with its time so an attack can look at its own window."""

    def __init__(self, srv):
        self.srv = srv
        self.polls = []  # (time, latency, ok, note)
        self.rss = []  # (time, kB)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._poll, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _poll(self):
        next_at = time.monotonic()
        while not self.stopping.is_set():
            asked = time.monotonic()
            ok, note = False, ""
            try:
                res = self.srv.request("GET", "/health", timeout=HEALTH_TIMEOUT)
                ok = res.status == 200
                note = "" if ok else f"status {res.status}"
            except Exception as e:  # noqa: BLE001 - any failure is what gets recorded
                note = f"{type(e).__name__}: {e}"
            self.polls.append((asked, time.monotonic() - asked, ok, note))
            next_at = max(next_at + HEALTH_EVERY, time.monotonic())
            self.stopping.wait(next_at - time.monotonic())

    def _sample(self):
        while not self.stopping.is_set():
            kb = proc_status_kb(self.srv.pid, "VmRSS")
            if kb is None:
                return
            self.rss.append((time.monotonic(), kb))
            self.stopping.wait(RSS_EVERY)

    def health(self, since=0.0, until=float("inf")):
        """(polls, max latency, failures) among the polls started in [since, until]."""
        polls = [p for p in self.polls if since <= p[0] <= until]
        failures = [p for p in polls if not p[2]]
        return len(polls), max((p[1] for p in polls), default=0.0), failures

    def health_summary(self, since=0.0, until=float("inf")):
        n, worst, failures = self.health(since, until)
        text = f"{n} polls, max {worst:.2f} s, {len(failures)} failed"
        if failures:
            text += " (first: " + failures[0][3][:80] + ")"
        return text, n > 0 and not failures and worst < HEALTH_TIMEOUT

    def max_rss_mb(self, since=0.0, until=float("inf")):
        return max((kb for t, kb in self.rss if since <= t <= until), default=0) / 1024

    def stop(self):
        self.stopping.set()


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0, owner of the process), so a later VmHWM
    is the peak of what came after. False if the kernel would not."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Server:
    """A running `imgpipe serve` on a free loopback port, with its Monitor."""

    def __init__(self, binary, root, name, extra=()):
        self.binary = binary
        self.name = name
        home = Path(root) / name
        home.mkdir(parents=True)
        # Not created here: the server makes it, so its mode is the one imgpipe chooses.
        self.data = home / "data"
        self.log_path = home / "serve.log"
        # Info-level logs: 8c reads the queue's "processed" line to know when a job ended.
        env = dict(os.environ, RUST_LOG="info")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", "--addr", "127.0.0.1:0", "--data", str(self.data), "--no-inbox", *extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self.pid = self.proc.pid
        self.url = self._startup_url()
        self.hostport = urlsplit(self.url).netloc
        self.host, port = self.hostport.rsplit(":", 1)
        self.port = int(port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", "/health", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: /health never answered 200; log:\n{self.log()}")
            time.sleep(0.1)
        self.monitor = Monitor(self)
        self.tokens = {}
        self.peak_before = 0.0

    def _startup_url(self):
        found = {}

        def read():
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace")
                if "url" not in found and line.startswith("imgpipe serve: listening on "):
                    found["url"] = line.split()[4]
                    ready.set()
            ready.set()  # (stdout closed: the server exited)

        ready = threading.Event()
        threading.Thread(target=read, daemon=True).start()
        ready.wait(60)
        if "url" not in found:
            self.kill()
            raise RuntimeError(f"{self.name}: no startup line; log:\n{self.log()}")
        return found["url"]

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self):
        if getattr(self, "monitor", None):
            self.monitor.stop()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def connect(self, timeout=10):
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def request(self, method, path, body=None, headers=None, token=None, timeout=30):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = dict(headers or {})
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            return Response(res.status, {k.lower(): v for k, v in res.getheaders()}, res.read())
        finally:
            conn.close()

    def token(self, user, admin=False):
        if user not in self.tokens:
            cmd = [self.binary, "token", "--data", str(self.data), "--user", user]
            if admin:
                cmd.append("--admin")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise RuntimeError(f"imgpipe token --user {user}: {out.stderr.strip()}")
            self.tokens[user] = out.stdout.strip()
        return self.tokens[user]

    def reset_peak(self):
        """Resets VmHWM (see reset_peak), remembering the peak so far for the whole-run line."""
        self.peak_before = max(self.peak_before, self.peak_mb())
        return reset_peak(self.pid)

    def whole_run_peak_mb(self):
        return max(self.peak_before, self.peak_mb())

    def peak_mb(self):
        return (proc_status_kb(self.pid, "VmHWM") or 0) / 1024

    def rss_mb(self):
        return (proc_status_kb(self.pid, "VmRSS") or 0) / 1024


class User:
    """One user's side of the API: upload forms, posting them, records."""

    def __init__(self, srv, name):
        self.srv = srv
        self.name = name
        self.token = srv.token(name)

    def create_raw(self, size, recipe=None, filename="photo.png", content_type="image/png"):
        doc = {"filename": filename, "contentType": content_type, "bytes": size}
        if recipe is not None:
            doc["recipe"] = recipe
        else:
            doc["preset"] = "web"
        return self.srv.request(
            "POST",
            "/v1/uploads",
            json.dumps(doc),
            {"Content-Type": "application/json"},
            token=self.token,
        )

    def create(self, size, recipe=None):
        res = self.create_raw(size, recipe)
        if res.status != 201:
            raise RuntimeError(f"POST /v1/uploads as {self.name}: {res.status} {res.error()}")
        return res.json()

    def post_form(self, created, file, file_type="image/png"):
        """POSTs the form as a browser does; the status code."""
        content_type, body = multipart(created["upload"]["fields"], file, file_type)
        path = urlsplit(created["upload"]["url"]).path
        return self.srv.request("POST", path, body, {"Content-Type": content_type}, timeout=60).status

    def upload(self, file, recipe=None):
        created = self.create(len(file), recipe)
        status = self.post_form(created, file)
        if status != 204:
            raise RuntimeError(f"posting a fresh form: {status}")
        return created["imageId"], created

    def image(self, image_id):
        res = self.srv.request("GET", f"/v1/images/{image_id}", token=self.token)
        return res.status, res.json()

    def wait_final(self, image_id, within=30):
        deadline = time.monotonic() + within
        while True:
            status, record = self.image(image_id)
            if status != 200:
                return status, record
            if record.get("status") in ("COMPLETE", "REJECTED", "FAILED"):
                return status, record
            if time.monotonic() > deadline:
                return status, record
            time.sleep(0.1)

    def delete(self, image_id):
        return self.srv.request("DELETE", f"/v1/images/{image_id}", token=self.token).status


def stall_upload(srv, created, file):
    """Opens POST /upload for `created`'s form with its whole length declared, sends the
    fields and half the file, and goes silent. The socket, and when it went silent."""
    content_type, body = multipart(created["upload"]["fields"], file, "image/png")
    sock = srv.connect()
    sock.sendall(
        (
            f"POST /upload HTTP/1.1\r\nHost: {srv.hostport}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[: len(body) - len(file) // 2]
    )
    return sock, time.monotonic()


def files_under(path):
    path = Path(path)
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def in_threads(fns):
    """Runs the callables at once; their results in order (an exception is a result too)."""
    results = [None] * len(fns)

    def run(i, fn):
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# --------------------------------------------------------------------------------------------
# The attacks. Each takes the Context and returns rows: (id, attack, verdict, observed).


class Context:
    def __init__(self, binary, root):
        self.binary = binary
        self.root = Path(root)
        self.servers = {}
        self._complete = None
        self._big_png = None

    def server(self, name, extra=()):
        """The named server, started the first time it is asked for."""
        if name not in self.servers:
            self.servers[name] = Server(self.binary, self.root, name, extra)
        return self.servers[name]

    @property
    def main(self):
        return self.server("main", ["--auth", "local"])

    def complete_image(self):
        """An image of alice's on the main server that finished COMPLETE: (id, record)."""
        if self._complete is None:
            alice = User(self.main, "alice")
            image_id, _ = alice.upload(gradient_png(64, 48))
            status, record = alice.wait_final(image_id)
            if status != 200 or record.get("status") != "COMPLETE":
                raise RuntimeError(f"a plain upload ended {status} {record}")
            self._complete = (image_id, record)
        return self._complete

    def big_png(self):
        if self._big_png is None:
            self._big_png = noise_png(4000, 3000)
        return self._big_png


# What each row is about (an attack that runs past its limit gets its main row's title).
TITLES = {
    "1": "300 MiB chunked body / endless preamble or part header on POST /upload",
    "2": "16 renditions of 7000x7000 fit=fill from a 1x1 PNG",
    "4": "8 stalled uploads on --queue 4, then a normal upload",
    "5": "200 connections with half-sent headers, one idle keep-alive",
    "5b": "API JSON body trickled at 1 byte/s",
    "7": "DNS rebinding against --auth none (Host header)",
    "8a": "one form posted 8 times at once",
    "8b": "form replayed after DELETE /v1/images/{id}",
    "8c": "DELETE /v1/images/{id} while PROCESSING (12 MP, 4 big renditions)",
    "10": "a token for the user `inbox` / `drop`",
    "11": "data directory and files readable by others",
    "12": "300 upload forms by one user in a tight loop",
    "13": "GET /metrics (from loopback)",
    "13b": "download with a bad signature",
    "13c": "`imgpipe inspect FILE | head -1` (closed pipe)",
    "mix": f"hostile mix for {MIX_SECONDS:.0f} s: 100 slow headers, 4x 100 MiB garbage uploads, "
    "2 recipe bombs, 8 stalled uploads, a form flood",
}


def verdict(ok):
    return HELD if ok else NOT_HELD


def bomb_recipe():
    # Sixteen 7000x7000 renditions: each within the 50 MP limit, 784 MP (about 3 GB) together.
    return {
        "renditions": [
            {"name": f"r{i}", "resize": {"width": 7000, "height": 7000, "fit": "fill"}}
            for i in range(16)
        ]
    }


def attack_1(ctx):
    """Unauthenticated bodies on POST /upload that never become a valid form."""
    srv = ctx.main
    reset = srv.reset_peak()
    before = srv.rss_mb() if reset else srv.peak_mb()
    mp = "Content-Type: multipart/form-data; boundary=XYZ\r\n"
    results = []
    # A preamble that never reaches a boundary, chunked so no length is declared.
    results.append(("300 MiB preamble", *chunked_post(srv, "/upload", b"", b"a", 300 * MIB, mp)))
    # A part header that never ends.
    head = b'--XYZ\r\nContent-Disposition: form-data; name="policy"\r\nX-Pad: '
    results.append(("endless part header", *chunked_post(srv, "/upload", head, b"a", 300 * MIB, mp)))
    # A declared length far over the limit: answered before anything is read.
    sock = srv.connect()
    sock.sendall(
        f"POST /upload HTTP/1.1\r\nHost: {srv.hostport}\r\n{mp}Content-Length: 1073741824\r\n\r\n".encode()
    )
    declared = read_status(sock, 5)
    sock.close()
    # The API's JSON body, chunked, 160 KiB: past its 64 KiB limit.
    token = srv.token("alice")
    sock = srv.connect()
    sock.sendall(
        (
            f"POST /v1/uploads HTTP/1.1\r\nHost: {srv.hostport}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    try:
        sock.sendall(chunk_of(b" " * 4096) * 40)
    except OSError:
        pass  # (refused before all of it went out)
    api_json = read_status(sock, 5)
    sock.close()

    parts, ok = [], True
    for label, outcome, sent, stopped in results:
        # "Early": refused with 413 before 64 MiB went out (the socket buffers hold some MB).
        early = outcome.code == 413 and sent < 64 * MIB
        ok &= early
        parts.append(f"{label}: {outcome.code or 'no answer'} after {sent / MIB:.0f} MiB sent, {stopped:.1f} s")
    ok &= declared.code == 413 and api_json.code == 413
    parts.append(f"Content-Length 1 GiB: {declared.code or 'no answer'}; "
                 f"160 KiB chunked API JSON body: {api_json.code or 'no answer'}")
    grown = srv.peak_mb() - before
    ok &= grown < 64
    parts.append(f"peak RSS +{grown:.0f} MB" + ("" if reset else " (VmHWM not resettable)"))
    return [("1", TITLES["1"], verdict(ok), "; ".join(parts))]


def attack_2(ctx):
    """A recipe asking for gigabytes of pixels from a 1x1 PNG."""
    alice = User(ctx.main, "alice")
    tiny = png(1, 1, b"\0\0\0\0")
    image_id, _ = alice.upload(tiny, bomb_recipe())
    started = time.monotonic()
    status, record = alice.wait_final(image_id, within=30)
    took = time.monotonic() - started
    state = record.get("status") if record else None
    error = (record.get("error") or {}).get("type") if record else None
    ok = state == "REJECTED" and error == "RecipeTooLarge"
    return [("2", TITLES["2"], verdict(ok),
             f"image {state}{' ' + error if error else ''} after {took:.1f} s; "
             f"server peak RSS {ctx.main.peak_mb():.0f} MB")]


def attack_4(ctx):
    """More stalled uploads than the queue has places, then a normal upload."""
    srv = ctx.server("queue4", ["--auth", "local", "--queue", "4", "--jobs", "1"])
    alice = User(srv, "alice")
    photo = noise_png(160, 120)
    stalled = [stall_upload(srv, alice.create(len(photo)), photo) for _ in range(8)]
    # With every queue place held by a stalled client, this would answer 503.
    created = alice.create(len(photo))
    normal = alice.post_form(created, photo)
    _, record = alice.wait_final(created["imageId"], within=20) if normal == 204 else (None, {})
    final = (record or {}).get("status")
    dropped = []
    for sock, since in stalled:
        outcome = read_status(sock, max(0.1, BODY_IDLE + SLACK - (time.monotonic() - since)))
        sock.close()
        dropped.append((outcome, time.monotonic() - since))
    answered = [t for o, t in dropped if o.ended and o.code in (408, None)]
    kinds = {}
    for outcome, _ in dropped:
        kind = str(outcome.code) if outcome.code else ("closed" if outcome.ended else "no answer")
        kinds[kind] = kinds.get(kind, 0) + 1
    kept = files_under(srv.data / "objects" / "uploads")
    # The normal one stored, none of the stalled ones.
    ok = normal == 204 and final == "COMPLETE" and len(answered) == 8 and len(kept) == 1
    return [("4", TITLES["4"], verdict(ok),
             f"normal upload {normal}, image {final}; stalled: "
             + ", ".join(f"{n}x {k}" for k, n in kinds.items())
             + (f", dropped {min(answered):.1f}-{max(answered):.1f} s after going silent" if answered else "")
             + f" (waited up to {BODY_IDLE + SLACK:.0f} s); {len(kept)} upload(s) kept")]


def attack_5(ctx):
    """Half-sent headers on 200 connections, an idle keep-alive one, a trickled API body."""
    srv = ctx.main
    token = srv.token("alice")
    # The trickle starts first: its 30 s deadline is the long pole, the rest runs meanwhile.
    trickle = {}

    def trickle_body():
        sock = srv.connect()
        sock.sendall(
            (
                f"POST /v1/uploads HTTP/1.1\r\nHost: {srv.hostport}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            ).encode()
        )
        started = time.monotonic()
        sent = 1
        while time.monotonic() - started < API_TIMEOUT + SLACK:
            if select.select([sock], [], [], 1.0)[0]:  # one byte a second until answered
                break
            try:
                sock.sendall(b" ")
                sent += 1
            except OSError:
                break
        trickle["outcome"] = read_status(sock, max(0.1, API_TIMEOUT + SLACK - (time.monotonic() - started)))
        trickle["secs"] = time.monotonic() - started
        trickle["sent"] = sent
        sock.close()

    trickler = threading.Thread(target=trickle_body, daemon=True)
    trickler.start()

    started = time.monotonic()
    slow = []
    for _ in range(200):
        sock = srv.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(sock)
    opened = time.monotonic() - started
    idle = srv.connect()
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    idle_first = read_status(idle, 10)
    idle_since = time.monotonic()

    # Every connection at once, until each is closed or HEADER_TIMEOUT + SLACK have passed.
    sel = selectors.DefaultSelector()
    for sock in slow + [idle]:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    closed_at = {}
    deadline = started + HEADER_TIMEOUT + SLACK
    while len(closed_at) < len(slow) + 1 and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed_at[key.fileobj] = time.monotonic()
                sel.unregister(key.fileobj)
    ended = time.monotonic()
    sel.close()
    slow_closed = [closed_at[s] - started for s in slow if s in closed_at]
    idle_closed = closed_at.get(idle)
    for sock in slow + [idle]:
        sock.close()
    health, health_ok = srv.monitor.health_summary(started, ended)

    # Waited for up to HEADER_TIMEOUT + SLACK to see what happens, but held means dropped
    # close to the 10 s header deadline.
    in_time = len(slow_closed) == 200 and max(slow_closed) <= HEADER_TIMEOUT + 2
    idle_in_time = idle_closed is not None and idle_closed - idle_since <= HEADER_TIMEOUT + 2
    ok_a = in_time and idle_first.code == 200 and idle_in_time and health_ok
    observed_a = (
        f"{len(slow_closed)}/200 dropped"
        + (f", by {max(slow_closed):.1f} s (first {min(slow_closed):.1f} s)" if slow_closed else "")
        + f" (opened in {opened:.1f} s); idle keep-alive "
        + (f"dropped after {idle_closed - idle_since:.1f} s" if idle_closed else "still open")
        + f"; /health meanwhile: {health}"
    )

    trickler.join(API_TIMEOUT + SLACK + 2)
    outcome = trickle.get("outcome")
    ok_b = outcome is not None and outcome.code == 408 and trickle["secs"] <= API_TIMEOUT + SLACK
    observed_b = (
        f"{outcome.code or 'no answer'} after {trickle['secs']:.1f} s ({trickle['sent']} bytes trickled)"
        if outcome else "trickle did not finish"
    )
    return [
        ("5", TITLES["5"], verdict(ok_a), observed_a),
        ("5", TITLES["5b"], verdict(ok_b), observed_b),
    ]


def attack_7(ctx):
    """DNS rebinding: with --auth none, requests addressed to a name other than loopback."""
    srv = ctx.server("noauth", ["--auth", "none"])

    def ask(host):
        sock = srv.connect()
        sock.sendall(f"GET /v1/images HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        code = read_status(sock, 10).code
        sock.close()
        return code

    want = {
        "evil.example": 421,
        f"rebind.example.com:{srv.port}": 421,
        "127.0.0.1.nip.io": 421,
        f"localhost:{srv.port}": 200,
        f"127.0.0.1:{srv.port}": 200,
    }
    got = {host: ask(host) for host in want}
    ok = got == want
    return [("7", TITLES["7"], verdict(ok),
             ", ".join(f"`{h}` {c}" for h, c in got.items()))]


def attack_8a(ctx):
    """One form posted eight times at once."""
    alice = User(ctx.main, "alice")
    photo = noise_png(640, 480)  # ~0.9 MB: the posts overlap
    created = alice.create(len(photo))
    content_type, body = multipart(created["upload"]["fields"], photo, "image/png")
    gate = threading.Barrier(8)

    def post():
        conn = http.client.HTTPConnection(ctx.main.host, ctx.main.port, timeout=60)
        conn.connect()
        gate.wait()
        conn.request("POST", "/upload", body, {"Content-Type": content_type})
        status = conn.getresponse().status
        conn.close()
        return status

    codes = sorted(c if isinstance(c, int) else repr(c) for c in in_threads([post] * 8))
    _, record = alice.wait_final(created["imageId"], within=20)
    ok = codes == [204] + [409] * 7
    return [("8", TITLES["8a"], verdict(ok),
             f"{codes.count(204)}x 204, {codes.count(409)}x 409"
             + (f", other: {[c for c in codes if c not in (204, 409)]}" if len(set(codes) - {204, 409}) else "")
             + f"; image {(record or {}).get('status')}")]


def attack_8b(ctx):
    """a form replayed after its image was deleted must not bring the image back."""
    srv = ctx.main
    alice = User(srv, "alice")
    photo = gradient_png(64, 48)
    image_id, created = alice.upload(photo)
    _, record = alice.wait_final(image_id)
    deleted = alice.delete(image_id)
    replay = alice.post_form(created, photo)
    after, _ = alice.image(image_id)
    time.sleep(3)  # long enough for a replayed upload to be processed into a record again
    later, record_later = alice.image(image_id)
    kept = [f for f in files_under(srv.data / "objects" / "uploads") if image_id in f]
    ok = deleted == 204 and 400 <= replay < 500 and after == 404 and later == 404
    return [("8", TITLES["8b"], verdict(ok),
             f"image {(record or {}).get('status')}, DELETE {deleted}; replay {replay}; "
             f"GET {after}, 3 s later {later}"
             + (f" ({(record_later or {}).get('status')})" if later == 200 else "")
             + f"; {len(kept)} original(s) on disk")]


def attack_8c(ctx):
    """DELETE while the image is being processed: nothing may be left once processing ends."""
    # Its own server: a legitimate 12 MP job leaves the allocator holding 100-250 MB, which
    # would otherwise count against the hostile mix's memory limit on the main server.
    srv = ctx.server("bigjob", ["--auth", "local"])
    alice = User(srv, "alice")
    photo = ctx.big_png()
    # Several big renditions of a 12 MP noise PNG: some seconds of work, within the job budget.
    recipe = {
        "renditions": [
            {"name": "big", "resize": {"width": 4000, "height": 3000, "fit": "fill"}, "format": "png"},
            {"name": "web", "resize": {"width": 3000, "height": 2250, "fit": "fill"}, "format": "webp"},
            {"name": "jpg", "resize": {"width": 4000, "height": 3000, "fit": "fill"}, "format": "jpeg"},
            {"name": "half", "resize": {"width": 2000, "height": 1500, "fit": "fill"}, "format": "png"},
        ]
    }
    names = [r["name"] for r in recipe["renditions"]]
    image_id, _ = alice.upload(photo, recipe)
    posted = time.monotonic()
    # Wait for PROCESSING, then a little more so the DELETE lands among the renditions.
    state = None
    while time.monotonic() - posted < 15:
        _, record = alice.image(image_id)
        state = (record or {}).get("status")
        if state != "AWAITING_UPLOAD":
            break
        time.sleep(0.05)
    time.sleep(0.5)
    _, record = alice.image(image_id)
    state_at_delete = (record or {}).get("status")
    finished_before = done_line(srv, image_id) is not None
    deleted = alice.delete(image_id)
    deleted_at = time.monotonic()
    # "Once processing ends": the queue's log line for the image, else a generous wait.
    while done_line(srv, image_id) is None and time.monotonic() - deleted_at < 25:
        time.sleep(0.2)
    end = done_line(srv, image_id)
    ended_after = time.monotonic() - deleted_at
    time.sleep(1)  # a last write racing the end of the job
    after, record_after = alice.image(image_id)
    renditions = {}
    for name in names:
        res = srv.request("GET", f"/v1/images/{image_id}/renditions/{name}", token=alice.token)
        renditions[name] = res.status
    # Anywhere in the store: uploads, renditions, quarantine, object metadata.
    left = [f for f in files_under(srv.data / "objects") if image_id in f]
    during = state_at_delete == "PROCESSING" and not finished_before
    ok = during and after == 404 and all(s == 404 for s in renditions.values()) and not left
    observed = (
        f"DELETE {deleted} while {state_at_delete}"
        + ("" if during else " (NOT during processing: inconclusive)")
        + (f"; processing ended {ended_after:.1f} s later ({end})" if end else "; processing end not seen in 25 s")
        + f"; then GET {after}"
        + (f" ({(record_after or {}).get('status')})" if after == 200 else "")
        + f", renditions {'/'.join(str(s) for s in renditions.values())}; {len(left)} file(s) left"
        + (f" ({', '.join(left[:3])})" if left else "")
    )
    return [("8", TITLES["8c"], verdict(ok), observed)]


def done_line(srv, image_id):
    """The status the queue logged for the image's job once it ended, or None."""
    m = re.search(rf"serve::queue: \S+.*image_id={image_id}.*?status=(\w+)", srv.log())
    return m.group(1) if m else None


def attack_10(ctx):
    """A user named after the owner of inbox (and bucket) drops."""
    data = ctx.root / "tokens-data"
    parts, ok = [], True
    for user in ("inbox", "drop"):
        out = subprocess.run(
            [ctx.binary, "token", "--data", str(data), "--user", user],
            capture_output=True, text=True, timeout=30,
        )
        ok &= out.returncode != 0
        if out.returncode == 0:
            parts.append(f"`token --user {user}` rc 0: a token was issued")
        else:
            last = (out.stderr.strip().splitlines() or [""])[-1]
            parts.append(f"`token --user {user}` rc {out.returncode}: {last[:80]}")
    return [("10", TITLES["10"], verdict(ok), "; ".join(parts))]


def attack_11(ctx):
    """The data directory and what is in it are private to the server's user."""
    ctx.complete_image()  # (so there are objects to look at)
    data = ctx.main.data

    def mode(path):
        return stat.S_IMODE(path.lstat().st_mode)

    # What docs/security.md promises: the directory and objects/ 0700; the database, events,
    # key and every object 0600.
    promised = {".": 0o700, "objects": 0o700, "imgpipe.db": 0o600, "events.jsonl": 0o600, "auth.key": 0o600}
    objects = [p for p in (data / "objects").rglob("*") if p.is_file() and not p.is_symlink()]
    wrong = [f"{'DIR' if name == '.' else name} {mode(data / name):o}" for name, want in promised.items()
             if not (data / name).exists() or mode(data / name) != want]
    wrong += [f"{p.relative_to(data)} {mode(p):o}" for p in objects if mode(p) != 0o600]
    # Anything else more open than that: unreachable by others behind the 0700 directory, so
    # only noted.
    others = [f"{p.relative_to(data)} {mode(p):o}" for p in data.rglob("*")
              if not p.is_symlink() and p not in objects and str(p.relative_to(data)) not in promised
              and mode(p) & 0o077]
    observed = (
        ", ".join(f"{'DIR' if n == '.' else n} {mode(data / n):o}" for n in promised if (data / n).exists())
        + f"; {len(objects)} objects" + (" all 600" if not any("objects/" in w for w in wrong) else "")
        + (f"; NOT PRIVATE: {', '.join(wrong[:6])}" if wrong else "")
        + (f"; also open inside DIR: {', '.join(others[:6])}" if others else "")
    )
    return [("11", TITLES["11"], verdict(not wrong), observed)]


def attack_12(ctx):
    """one user creating upload forms in a tight loop is slowed down (429)."""
    srv = ctx.main
    token = srv.token("mallory")
    body = json.dumps({"filename": "a.png", "contentType": "image/png", "bytes": 100, "preset": "web"})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)  # kept alive: a tight loop
    created, limited, other = 0, None, {}
    started = time.monotonic()
    for _ in range(300):
        try:
            conn.request("POST", "/v1/uploads", body, headers)
            res = conn.getresponse()
            res.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
            continue
        if res.status == 201:
            created += 1
        elif res.status == 429:
            limited = res.getheader("Retry-After")
            limited = "(none)" if limited is None else limited
            break
        else:
            other[res.status] = other.get(res.status, 0) + 1
        if time.monotonic() - started > 25:
            break
    conn.close()
    took = time.monotonic() - started
    bob = User(srv, "bob").create_raw(100).status
    ok = limited not in (None, "(none)") and created < 300 and bob == 201
    observed = (
        (f"429 after {created} forms, Retry-After {limited}" if limited else f"{created} forms created, no 429")
        + f" ({took:.1f} s)"
        + (f", other: {other}" if other else "")
        + f"; another user then: {bob}"
    )
    return [("12", TITLES["12"], verdict(ok), observed)]


def attack_13(ctx):
    """Three smaller findings: /metrics, download refusals, output into a closed pipe."""
    srv = ctx.main
    rows = []
    # /metrics: only loopback can be tried from here (the server listens on 127.0.0.1).
    res = srv.request("GET", "/metrics")
    rows.append(("13", TITLES["13"], INFO,
                 f"{res.status} {res.headers.get('content-type', '')}, {len(res.body)} bytes; "
                 "beyond loopback not testable here"))

    # A download URL with a bad signature: the refusal must name the download URL.
    image_id, record = ctx.complete_image()
    name = record["renditions"][0]["name"]
    alice = User(srv, "alice")
    res = srv.request("GET", f"/v1/images/{image_id}/renditions/{name}", token=alice.token)
    location = res.headers.get("location", "")
    url = urlsplit(location)
    good = srv.request("GET", f"{url.path}?{url.query}").status if location else None
    query = re.sub(r"signature=([^&]*)", lambda m: "signature=" + m.group(1)[::-1], url.query)
    bad = srv.request("GET", f"{url.path}?{query}")
    doc = bad.json()
    message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
    ok = res.status == 302 and good == 200 and bad.status == 403 and "URL" in message
    rows.append(("13", TITLES["13b"], verdict(ok),
                 f"redirect {res.status}, good URL {good}, bad signature {bad.status} \"{bad.error()}\""))

    # `imgpipe inspect FILE | head -1`, without the race: the pipe's reading end is closed
    # before the command starts, so its first write meets EPIPE.
    photo = ctx.root / "inspect.png"
    photo.write_bytes(gradient_png(64, 48))
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([ctx.binary, "inspect", str(photo)], stdout=w, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(w)
    stderr = out.stderr.decode("utf-8", "replace")
    ok = out.returncode == 0 and "panicked" not in stderr
    rows.append(("13", TITLES["13c"], verdict(ok),
                 f"rc {out.returncode}" + (f", stderr: {stderr.strip()[:80]}" if stderr.strip() else ", stderr empty")))
    return rows


def attack_mix(ctx):
    """Several attacks at once for MIX_SECONDS; memory and /health must hold."""
    srv = ctx.main
    reset = srv.reset_peak()
    rss_at_start = srv.rss_mb()
    started = time.monotonic()
    deadline = started + MIX_SECONDS
    stop = threading.Event()
    tally = {}
    lock = threading.Lock()

    def count(kind, what):
        with lock:
            tally.setdefault(kind, {})
            tally[kind][what] = tally[kind].get(what, 0) + 1

    def slow_headers():
        """Keeps 100 half-header connections open, replacing the ones the server drops."""
        open_ = []
        while not stop.is_set():
            open_ = [s for s in open_ if not _closed(s)]
            while len(open_) < 100 and not stop.is_set():
                try:
                    s = srv.connect(timeout=5)
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    s.setblocking(False)
                    open_.append(s)
                    count("slow headers", "opened")
                except OSError:
                    count("slow headers", "connect failed")
                    break
            stop.wait(0.5)
        for s in open_:
            s.close()

    def garbage_uploads(n):
        """A valid 100 MiB form, then 110 MiB of garbage chunked: cut past the declared size.
        (A fresh user every 50 forms, so per-user form limits do not end the attack early.)"""
        done = 0
        while time.monotonic() < deadline - 3:
            if done % 50 == 0:
                user = User(srv, f"garbage{n}-{done // 50}")
            created = user.create(100 * MIB)
            content_type, body = multipart(created["upload"]["fields"], b"", "image/png")
            head = body[: body.rindex(b"\r\n--")]  # everything up to where the file's bytes go
            outcome, sent, _ = chunked_post(
                srv, "/upload", head, b"\xa5", 110 * MIB, f"Content-Type: {content_type}\r\n"
            )
            count("garbage uploads", f"{outcome.code or 'closed'}")
            done += 1

    def recipe_bomb():
        user = User(srv, "bomber")
        image_id, _ = user.upload(png(1, 1, b"\0\0\0\0"), bomb_recipe())
        _, record = user.wait_final(image_id, within=MIX_SECONDS)
        count("recipe bombs", f"{record.get('status')} {(record.get('error') or {}).get('type', '')}".strip())

    def stalled():
        user = User(srv, "staller")
        photo = noise_png(160, 120)
        socks = [stall_upload(srv, user.create(len(photo)), photo) for _ in range(8)]
        stop.wait(max(0.0, deadline - time.monotonic()))
        for sock, since in socks:
            outcome = read_status(sock, max(0.1, BODY_IDLE + SLACK - (time.monotonic() - since)))
            sock.close()
            count("stalled uploads", f"{outcome.code or ('closed' if outcome.ended else 'open')}")

    def form_flood():
        token = srv.token("flood")
        body = json.dumps({"filename": "a.png", "contentType": "image/png", "bytes": 100, "preset": "web"})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        conn = None
        while time.monotonic() < deadline:
            try:
                conn = conn or http.client.HTTPConnection(srv.host, srv.port, timeout=10)
                conn.request("POST", "/v1/uploads", body, headers)
                res = conn.getresponse()
                res.read()
                count("form flood", res.status)
            except (OSError, http.client.HTTPException):
                count("form flood", "error")
                conn.close()
                conn = None
        if conn:
            conn.close()

    def normal_upload():
        """Someone with a real photo in the middle of it all."""
        stop.wait(MIX_SECONDS / 2)
        user = User(srv, "alice")
        image_id, _ = user.upload(noise_png(320, 240))
        _, record = user.wait_final(image_id, within=MIX_SECONDS / 2)
        count("normal upload", record.get("status"))

    workers = [("slow headers", slow_headers), ("recipe bombs", recipe_bomb), ("recipe bombs", recipe_bomb),
               ("stalled uploads", stalled), ("form flood", form_flood), ("normal upload", normal_upload)]
    workers += [("garbage uploads", lambda n=n: garbage_uploads(n)) for n in range(4)]
    threads = [threading.Thread(target=_noting(name, fn, count), daemon=True) for name, fn in workers]
    for t in threads:
        t.start()
    stop.wait(MIX_SECONDS)
    stop.set()
    for t in threads:
        t.join(max(0.1, started + MIX_SECONDS + SLACK + 2 - time.monotonic()))
    ended = time.monotonic()
    peak = srv.peak_mb() if reset else srv.monitor.max_rss_mb(started, ended)
    health, health_ok = srv.monitor.health_summary(started, ended)
    still = sum(t.is_alive() for t in threads)
    ok = peak < 300 and health_ok
    detail = "; ".join(f"{kind}: " + ", ".join(f"{v}x {k}" for k, v in whats.items()) for kind, whats in tally.items())
    observed = (
        f"{ended - started:.0f} s; peak RSS {peak:.0f} MB{'' if reset else ' (sampled)'} "
        f"(RSS {rss_at_start:.0f} MB at the start); /health: {health}; "
        + detail
        + (f"; {still} worker(s) still running" if still else "")
    )
    leftovers = [f for f in files_under(srv.data / "objects" / "uploads") if f.startswith("garbage")]
    observed += f"; garbage uploads kept: {len(leftovers)}"
    return [("mix", TITLES["mix"], verdict(ok), observed)]


def _closed(sock):
    """True if the server closed this non-blocking socket (reading what it said first)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                sock.close()
                return True
    except BlockingIOError:
        return False
    except OSError:
        sock.close()
        return True


def _noting(kind, fn, count):
    """`fn`, with an exception counted under `kind` rather than lost in its thread."""

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            count(kind, f"error {type(e).__name__}: {str(e)[:60]}")

    return run


ATTACKS = [
    ("1", attack_1),
    ("2", attack_2),
    ("4", attack_4),
    ("5", attack_5),
    ("7", attack_7),
    ("8a", attack_8a),
    ("8b", attack_8b),
    ("8c", attack_8c),
    ("10", attack_10),
    ("11", attack_11),
    ("12", attack_12),
    ("13", attack_13),
    ("mix", attack_mix),
]
LIMITS = {"mix": MIX_SECONDS + SLACK + 10}


# --------------------------------------------------------------------------------------------


def default_bin():
    cache = Path(os.environ.get("IMGPIPE_CACHE", Path.home() / ".cache" / "imgpipe"))
    candidates = []
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "imgpipe")
    candidates.append(cache / "target" / "release" / "imgpipe")
    return next((p for p in candidates if p.exists()), candidates[0])


def selected(only, parser):
    """`--only 1,8`: "8" picks 8a, 8b and 8c; "8b" just that one."""
    if not only:
        return ATTACKS
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    unknown = {w for w in wanted if not any(i == w or i.rstrip("abc") == w for i, _ in ATTACKS)}
    if unknown:
        parser.error(f"no attack {', '.join(sorted(unknown))}; have {', '.join(i for i, _ in ATTACKS)}")
    return [(i, fn) for i, fn in ATTACKS if i in wanted or i.rstrip("abc") in wanted]


def run_bounded(ident, fn, ctx):
    """The attack's rows, or a NOT HELD row if it raised or ran past its limit. A thread past
    its limit is left behind (daemon): the run stays bounded, the servers are killed at exit."""
    out = {}

    def run():
        try:
            out["rows"] = fn(ctx)
        except Exception as e:  # noqa: BLE001 - a failed attack is a finding, not a crash
            out["error"] = f"{type(e).__name__}: {e}"

    limit = LIMITS.get(ident, ATTACK_LIMIT)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    name = TITLES[ident]
    if t.is_alive():
        return [(ident.rstrip("abc"), name, NOT_HELD, f"did not finish within {limit:.0f} s")]
    if "error" in out:
        return [(ident.rstrip("abc"), name, NOT_HELD, "error: " + out["error"].splitlines()[0][:200])]
    return out["rows"]


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=default_bin(), help="the imgpipe binary (default: %(default)s)")
    parser.add_argument("--only", help="comma-separated attacks to run: " + ",".join(i for i, _ in ATTACKS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories and server logs")
    args = parser.parse_args()
    binary = str(args.bin.expanduser().resolve())
    if not os.access(binary, os.X_OK):
        sys.exit(f"attack.py: no imgpipe binary at {binary} (build it, or pass --bin)")
    attacks = selected(args.only, parser)

    root = tempfile.mkdtemp(prefix="imgpipe-attack-")
    ctx = Context(binary, root)
    rows = []
    run_started = time.monotonic()
    try:
        ctx.main  # started first so its monitor covers every attack
        for ident, fn in attacks:
            print(f"attack {ident} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            got = run_bounded(ident, fn, ctx)
            rows += got
            for r in got:
                print(f"  {r[2]}: {r[3]}", file=sys.stderr, flush=True)
            print(f"  ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

        # Whole-run lines: every server's /health record, the main server's memory.
        for name, srv in ctx.servers.items():
            text, ok = srv.monitor.health_summary()
            rows.append(("-", f"/health on the `{name}` server, whole run", verdict(ok), text))
        # Memory is judged where an attack is about it (1, mix); here only recorded.
        rows.append(("-", "peak RSS (VmHWM) of each server, whole run", INFO, ", ".join(
            f"`{name}` {srv.whole_run_peak_mb():.0f} MB" for name, srv in ctx.servers.items())
            + ("; `bigjob` ran 8c's legitimate 12 MP job" if "bigjob" in ctx.servers else "")))
    finally:
        for srv in ctx.servers.values():
            srv.kill()
        if args.keep:
            print(f"data and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    took = time.monotonic() - run_started
    print(f"\nimgpipe attacks against {binary} ({took:.0f} s)\n")
    print("| # | Attack | Held | Observed |")
    print("|---|---|---|---|")
    for ident, name, held, observed in rows:
        print(f"| {cell(ident)} | {cell(name)} | {held} | {cell(observed)} |")
    failed = [r for r in rows if r[2] == NOT_HELD]
    print(f"\n{len(failed)} NOT HELD" if failed else "\nall held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
