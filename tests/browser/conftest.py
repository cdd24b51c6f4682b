"""What the browser tests run against: `webhooks dev` as a real process on a
free loopback port, a real local receiver, and Debian's headless Chromium
driven through its chromedriver. Every process started here is stopped here.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "browser-test-secret"


def webhooks_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    path = os.environ.get("WEBHOOKS_BIN") or os.path.join(target, "debug", "webhooks")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: build it with `cargo build -p webhooks --bin webhooks`")
    return path


class Receiver:
    """A webhook receiver on 127.0.0.1 answering `status` with `reply`."""

    def __init__(self):
        self.status = 204
        self.reply = b""
        self.requests = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status, reply = receiver.status, receiver.reply
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hooks"):
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def answer(self, status, reply=b""):
        with self.lock:
            self.status, self.reply = status, reply

    def received(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def x_signature_valid(secret, headers, body):
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-signature", ""))


def standard_signature_valid(secret, headers, body):
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


class Dev:
    """`webhooks dev` on a free loopback port; its log goes to a file."""

    def __init__(self, *extra):
        self.bin = webhooks_bin()
        self.log = tempfile.NamedTemporaryFile(prefix="webhooks-dev-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [self.bin, "dev", "--listen", "127.0.0.1:0", "--jwt-secret", JWT_SECRET, *extra],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            pytest.fail(f"webhooks dev did not start: {line!r}")
        self.base = line[len("listening on "):]

    def token(self, org, scope="webhooks:manage events:write"):
        out = subprocess.run(
            [self.bin, "dev", "token", "--org", org, "--scope", scope, "--jwt-secret", JWT_SECRET],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def call(self, method, path, token, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read().decode()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None)

    def portal_url(self, org, ttl=None):
        body = {} if ttl is None else {"ttl_seconds": ttl}
        status, session = self.call("POST", "/v1/portal-sessions", self.token(org, "webhooks:manage"), body)
        assert status == 201, session
        return session["url"]

    def server_log(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def dev():
    # Two attempts, one second apart: a failing delivery dead-letters quickly.
    d = Dev("--retry-schedule", "1s", "--request-timeout", "5s")
    yield d
    d.stop()
    os.unlink(d.log.name)


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    profile = tempfile.TemporaryDirectory(prefix="portal-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--disable-features=Translate,OptimizationHints,MediaRouter",
        "--window-size=1280,900", f"--user-data-dir={profile.name}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    profile.cleanup()
