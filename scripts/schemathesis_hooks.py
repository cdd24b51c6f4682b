"""Schemathesis hooks for scripts/schemathesis.sh when no loopback-only
network namespace is available: every endpoint URL and OAuth token URL in a
request body is pointed at the local server, so no delivery and no token
request leaves the machine."""

import os

import schemathesis

SINK = os.environ["WEBHOOKS_FUZZ_SINK"]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("url"), str):
        body["url"] = SINK
    auth = body.get("auth") if isinstance(body, dict) else None
    if isinstance(auth, dict) and isinstance(auth.get("token_url"), str):
        auth["token_url"] = SINK
