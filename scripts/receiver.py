#!/usr/bin/env python3
"""A webhook receiver for trying `webhooks dev` by hand (standard library only).

Prints every delivery and checks both signatures with the endpoint's secret:

    WEBHOOK_SECRET=whsec_... python3 scripts/receiver.py --port 9000

Answers 204, or the status given with --status (e.g. 500 to watch retries).
"""
import argparse
import base64
import hashlib
import hmac
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def check(secret, headers, body):
    if not secret:
        return "set WEBHOOK_SECRET to check signatures"
    x_sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    x_ok = hmac.compare_digest(x_sig, headers.get("X-Signature", ""))
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    std_ok = any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())
    return f"X-Signature {'valid' if x_ok else 'INVALID'}, webhook-signature {'valid' if std_ok else 'INVALID'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--status", type=int, default=204)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET", "")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            print(f"--- {self.command} {self.path}  event={self.headers.get('X-Webhook-Event')} "
                  f"attempt={self.headers.get('X-Webhook-Attempt')} id={self.headers.get('webhook-id')}")
            print(f"    {check(secret, self.headers, body)}")
            print(f"    {body.decode(errors='replace')}", flush=True)
            self.send_response(args.status)
            self.end_headers()

        def log_message(self, *_):
            pass

    print(f"receiving on http://127.0.0.1:{args.port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
