"""moto's server, with DynamoDB's atomicity.

DynamoDB applies each request to an item atomically: of two conditional
writes that both expect `enabled = true`, one succeeds and the other fails
its condition. moto's threaded server reads, checks and writes an item in
Python without a lock, so two concurrent requests can both pass the check
(`tests/it/contract/stores.rs`,
`concurrent_disables_turn_an_endpoint_off_once` on plain moto: two
winners of eight in its fifth round of ten). This runs moto's own server with every DynamoDB
request handled one at a time; other services (an SQS long poll) keep
their threads.

    .venv/bin/python scripts/moto-server.py -H 127.0.0.1 -p PORT
"""

import threading

from moto import server
from moto.moto_server import werkzeug_app

_DYNAMODB_TARGET = "DynamoDB_20120810."
_dynamodb = threading.Lock()
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__


def _atomic_dynamodb(self, environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGET):
        with _dynamodb:
            # The body is made inside the lock, not when it is sent.
            return list(_dispatch(self, environ, start_response))
    return _dispatch(self, environ, start_response)


werkzeug_app.DomainDispatcherApplication.__call__ = _atomic_dynamodb

if __name__ == "__main__":
    server.main()
