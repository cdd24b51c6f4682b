"""Checks of infra/template.yaml, the SAM template that deploys the system.

Two kinds of check:

* cfn-lint, AWS's own linter, finds no error and no warning;
* the wiring matches the design: tables and queues, event sources with partial
  batch failures, least-privilege roles that name only each function's own
  tables and queues, the environment each function's Rust code reads, provider
  secrets that come from Secrets Manager/SSM, alarms, and the HTTP API routes.

No network, no AWS account: everything is read from the template and the
workspace's source files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

# Function name (its binary and its folder under functions/) -> logical id.
FUNCTIONS = {
    "api": "ApiFunction",
    "inbound": "InboundFunction",
    "fanout": "FanoutFunction",
    "sender": "SenderFunction",
    "sweeper": "SweeperFunction",
}

# Variables the template may set for the runtime or the logging set-up; the
# code need not read them.
IGNORED_ENV = {"RUST_LOG", "RUST_BACKTRACE", "AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_LOG_LEVEL"}

# Variables naming a resource of this stack -> the resource they must name.
RESOURCE_ENV = {
    "EVENTS_TABLE": "EventsTable",
    "ENDPOINTS_TABLE": "EndpointsTable",
    "DELIVERIES_TABLE": "DeliveriesTable",
    "CURSORS_TABLE": "CursorsTable",
    "IDEMPOTENCY_TABLE": "IdempotencyTable",
    "INBOUND_TABLE": "InboundTable",
    "STATS_TABLE": "StatsTable",
    "DELIVERY_QUEUE_URL": "DeliveryQueue",
    "DELIVERY_DLQ_URL": "DeliveryDeadLetterQueue",
}

# Variables holding the ARN of a Secrets Manager secret the function fetches
# at run time -> the parameter that gives it (its grant: GetSecretValue on it).
SECRET_ARN_ENV = {
    "STRIPE_WEBHOOK_SECRET_ARN": "StripeWebhookSecretArn",
    "TWILIO_AUTH_TOKEN_ARN": "TwilioAuthTokenSecretArn",
    "WHATSAPP_VERIFY_TOKEN_ARN": "WhatsAppVerifyTokenSecretArn",
    "WHATSAPP_APP_SECRET_ARN": "WhatsAppAppSecretArn",
    "PORTAL_SIGNING_KEY_ARN": "PortalSigningKeySecretArn",
    "WEBHOOKS_OPS_WEBHOOK_SECRET_ARN": "OpsWebhookSecretArn",
}

# What each function's role allows, on what: exactly the store and queue
# methods its code calls (checked against the code below), each turned into the
# API actions its adapter in crates/aws/src makes (also checked), plus what
# Lambda's event source mappings need. "X" is resource X's ARN, "X.stream" its
# DynamoDB stream. Nothing more may be granted, nothing less.
#
# Field or variable name holding a store or queue in the functions' code ->
# (adapter file in crates/aws/src, the resource it is built on, per function).
RECEIVERS = {
    "events": "EventsTable",
    "endpoints": "EndpointsTable",
    "health": "EndpointsTable",
    "deliveries": "DeliveriesTable",
    "cursors": "CursorsTable",
    "idempotency": "IdempotencyTable",
    "store": "InboundTable",
    "queue": "DeliveryQueue",
    "dead_letters": "DeliveryDeadLetterQueue",
    "bus": "OpsEventBus",
    "stats": "StatsTable",
}
ADAPTER_FILES = {
    "EventsTable": "events.rs",
    "EndpointsTable": "endpoints.rs",
    "DeliveriesTable": "deliveries.rs",
    "CursorsTable": "cursors.rs",
    "IdempotencyTable": "idempotency.rs",
    "InboundTable": "inbound.rs",
    "DeliveryQueue": "queue.rs",
    "DeliveryDeadLetterQueue": "queue.rs",
    "OpsEventBus": "ops_bus.rs",
    "StatsTable": "stats.rs",
}
# Adapter method -> the IAM actions of the API calls it makes, per adapter file.
ADAPTER_ACTIONS = {
    "events.rs": {
        "put_if_absent": {"dynamodb:PutItem"},
        "get": {"dynamodb:GetItem"},
        "get_many": {"dynamodb:BatchGetItem"},
        "list_after": {"dynamodb:Query"},
    },
    # Writes seal the secrets (a data key: GenerateDataKey), reads that
    # return them open them (Decrypt); the fan-out's list_all, the API's
    # list and summary are projected to attributes without secrets and
    # open nothing.
    "endpoints.rs": {
        # The endpoint's Put and its org's counter Update in one
        # TransactWriteItems; GetItem reads the counter that refused, Query
        # (Select=COUNT) counts an org never counted.
        "create": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:Query", "kms:GenerateDataKey"},
        "get": {"dynamodb:GetItem", "kms:Decrypt"},
        "list": {"dynamodb:Query"},
        "summary": {"dynamodb:GetItem"},
        "list_all": {"dynamodb:Query"},
        # Conditional on the version; GetItem tells a conflict from a delete.
        "update": {"dynamodb:PutItem", "dynamodb:GetItem", "kms:GenerateDataKey", "kms:Decrypt"},
        # The Delete and the counter's Update in one TransactWriteItems.
        "delete": {"dynamodb:DeleteItem", "dynamodb:UpdateItem"},
        "disable": {"dynamodb:UpdateItem"},
        "set_failing_since": {"dynamodb:UpdateItem"},
    },
    "deliveries.rs": {
        # A conditional PutItem; GetItem reads the existing delivery where the
        # condition failure does not return it.
        "create_if_absent": {"dynamodb:PutItem", "dynamodb:GetItem"},
        # A renewal moves a never-attempted delivery's chain to the copy.
        "hand_over": {"dynamodb:UpdateItem"},
        "get": {"dynamodb:GetItem"},
        "get_many": {"dynamodb:BatchGetItem"},
        # Conditional on the attempt number; GetItem reads the kept attempts
        # when the log is over its cap.
        "record_attempt": {"dynamodb:UpdateItem", "dynamodb:GetItem"},
        # The attempt's fence: a conditional UpdateItem, and GetItem of the
        # current delivery where a refusal does not return it.
        "lease": {"dynamodb:UpdateItem", "dynamodb:GetItem"},
        "transition": {"dynamodb:UpdateItem"},
        # Conditional: the reconciler's note that it queued a lost message.
        "mark_requeued": {"dynamodb:UpdateItem"},
        # Conditional: the sender's note of a retry deferred past the time
        # the reconciler would take it for lost.
        "postpone": {"dynamodb:UpdateItem"},
        "list_for_endpoint": {"dynamodb:Query"},
        # On the sparse index pending-by-org, not the table.
        "overdue": {"dynamodb:Query"},
        # The stream fan-out's notes of queued deliveries (items of their
        # own partition in the table).
        "note_queued": {"dynamodb:PutItem"},
        "confirm_note": {"dynamodb:UpdateItem"},
        "noted": {"dynamodb:Query"},
        "notes": {"dynamodb:BatchGetItem"},
        "notes_between": {"dynamodb:Query"},
    },
    "cursors.rs": {
        "get": {"dynamodb:GetItem"},
        "advance": {"dynamodb:UpdateItem"},
        "ensure": {"dynamodb:PutItem"},
        "list": {"dynamodb:Scan"},
        # The sweeper's resume point, an item beside the cursors.
        "resume_at": {"dynamodb:GetItem"},
        "set_resume_at": {"dynamodb:UpdateItem"},
    },
    "idempotency.rs": {
        "claim": {"dynamodb:PutItem", "dynamodb:GetItem"},
    },
    "inbound.rs": {
        # A record with an org is two Puts in one TransactWriteItems, which
        # IAM authorizes as PutItem on each item's table.
        "record": {"dynamodb:PutItem"},
        "route": {"dynamodb:GetItem"},
        "set_route": {"dynamodb:PutItem"},
        "messages": {"dynamodb:Query"},
    },
    "queue.rs": {
        # SendMessageBatch is authorized as SendMessage; the port's
        # `send_batch` is made of it (PORT_DERIVED).
        "send_batch_ids": {"sqs:SendMessage"},
        "receive": {"sqs:ReceiveMessage"},
        "change_visibility": {"sqs:ChangeMessageVisibility"},
        "delete_batch": {"sqs:DeleteMessage"},  # DeleteMessageBatch likewise
    },
    "ops_bus.rs": {
        "publish": {"events:PutEvents"},
    },
    "stats.rs": {
        "add": {"dynamodb:UpdateItem"},
        "read": {"dynamodb:Query"},
    },
}
SDK_CALL_ACTIONS = {
    "put_item": "dynamodb:PutItem",
    "get_item": "dynamodb:GetItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "transact_get_items": "dynamodb:GetItem",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "generate_data_key": "kms:GenerateDataKey",
    "decrypt": "kms:Decrypt",
    "put_events": "events:PutEvents",
}
# The envelope cipher (crates/aws/src/envelope.rs) of the endpoints
# adapter: `self.cipher.seal(` and `self.cipher.open(` make these KMS calls
# (checked against envelope.rs), on the key that seals endpoint secrets.
ENVELOPE_FILE = "envelope.rs"
ENVELOPE_ACTIONS = {
    "seal": {"kms:GenerateDataKey"},
    "open": {"kms:Decrypt"},
}
# Where an action of another service than the adapter's own lands: the
# endpoint secrets' KMS key.
SERVICE_RESOURCES = {"kms": "EndpointSecretsKey"}
TRANSACT_WRITE_ACTIONS = {
    "put": "dynamodb:PutItem",
    "update": "dynamodb:UpdateItem",
    "delete": "dynamodb:DeleteItem",
    "condition_check": "dynamodb:ConditionCheckItem",
}

# The source each function's binary runs (besides crates/aws), and the store
# and queue methods that source calls, by resource.
FUNCTION_SOURCES = {
    "api": [
        "functions/api/src",
        "crates/pipeline/src/requeue.rs",
        "crates/pipeline/src/registration.rs",
        "crates/pipeline/src/ops.rs",
        "crates/pipeline/src/publish.rs",
    ],
    "inbound": ["functions/inbound/src", "crates/pipeline/src/publish.rs"],
    "fanout": ["functions/fanout/src", "crates/pipeline/src/fanout.rs"],
    "sender": ["functions/sender/src", "crates/pipeline/src/sender", "crates/pipeline/src/ops.rs"],
    "sweeper": [
        "functions/sweeper/src",
        "crates/pipeline/src/sweeper.rs",
        "crates/pipeline/src/fanout.rs",
        "crates/pipeline/src/reconciler.rs",
        "crates/pipeline/src/requeue.rs",
        "crates/pipeline/src/redrive.rs",
        "crates/pipeline/src/ops.rs",
    ],
}
FUNCTION_CALLS = {
    "api": {
        # get_many: requeue.rs reads the events of stuck deliveries at once.
        "EventsTable": {"put_if_absent", "get", "get_many"},
        # list_all: requeue.rs checks that a retried delivery's endpoint exists.
        "EndpointsTable": {"create", "get", "summary", "list", "list_all", "update", "delete"},
        # mark_requeued: a stuck pending delivery retried by hand (requeue.rs);
        # get_many: an event's deliveries in the event log (event_log.rs);
        # noted, notes_between: deliveries queued without a record yet
        # (noted.rs).
        "DeliveriesTable": {
            "get",
            "get_many",
            "list_for_endpoint",
            "transition",
            "mark_requeued",
            "noted",
            "notes_between",
        },
        "CursorsTable": {"ensure"},
        "IdempotencyTable": {"claim"},
        "DeliveryQueue": {"send_batch_ids"},
        "OpsEventBus": {"publish"},
        # read: stats and the listing's health; add: requeue moves figures.
        "StatsTable": {"add", "read"},
    },
    "inbound": {
        "EventsTable": {"put_if_absent", "get"},
        "IdempotencyTable": {"claim"},
        "InboundTable": {"record", "route"},
    },
    "fanout": {
        "EndpointsTable": {"list_all"},
        # get_many, noted: the batch's deliveries and notes, read before
        # they are queued; note_queued, confirm_note: a young event's
        # deliveries noted, and the note confirmed.
        "DeliveriesTable": {
            "create_if_absent",
            "get_many",
            "noted",
            "note_queued",
            "confirm_note",
        },
        "DeliveryQueue": {"send_batch_ids"},
    },
    "sender": {
        "EndpointsTable": {"get", "disable", "set_failing_since"},
        # create_if_absent: a message that arrives before its record;
        # hand_over: a renewal's copy takes the chain; get: the delivery
        # read again where its first attempt made no lease; postpone: a
        # retry deferred long by its endpoint's limits.
        "DeliveriesTable": {
            "create_if_absent",
            "get",
            "get_many",
            "lease",
            "record_attempt",
            "transition",
            "hand_over",
            "postpone",
            # The notes of deliveries without a record (unrecorded.rs).
            "notes",
            "noted",
        },
        # send_batch: operational notices ride the delivery queue.
        "DeliveryQueue": {"change_visibility", "send_batch_ids"},
        "DeliveryDeadLetterQueue": {"send_batch_ids"},
        "OpsEventBus": {"publish"},
        "StatsTable": {"add"},
    },
    "sweeper": {
        # get_many: the reconciler reads the events of a page of overdue
        # deliveries at once; get: requeue.rs, which also holds the API's
        # recover (and moves a recovered delivery's figures: StatsTable add).
        # The redrive net (redrive.rs) also reads an event whose delivery
        # has no record, and dead-letters a delivery whose message SQS
        # redrove twice: lease, record_attempt, its figures (add) and
        # delivery.dead_lettered (ops.rs: the delivery queue and the bus).
        "EventsTable": {"list_after", "get", "get_many"},
        "EndpointsTable": {"list_all"},
        "StatsTable": {"add"},
        # get: the reconciler reads one by one a page it cannot read whole;
        # mark_requeued: a delivery whose lost message it queued again.
        "DeliveriesTable": {
            "create_if_absent",
            "get",
            "get_many",
            "overdue",
            "transition",
            "mark_requeued",
            "list_for_endpoint",
            "lease",
            "record_attempt",
            # The redrive net hands a dead letter's chain to the message it
            # sends again.
            "hand_over",
            # The fan-out of swept events reads the notes (and the code it
            # shares with the stream's fan-out writes them).
            "noted",
            "note_queued",
            "confirm_note",
        },
        "CursorsTable": {"list", "advance", "resume_at", "set_resume_at"},
        "DeliveryQueue": {"send_batch_ids"},
        # The redrive net reads the dead-letter queue, deletes what it
        # settled and hides what it leaves for the operators.
        "DeliveryDeadLetterQueue": {"receive", "change_visibility", "delete_batch"},
        "OpsEventBus": {"publish"},
    },
}
# What Lambda itself does with the function's role: poll the stream or queue
# of an event source mapping, and send to its OnFailure destination.
EVENT_SOURCE_GRANTS = {
    "fanout": {
        "EventsTable.stream": {
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        },
        "FanoutFailureQueue": {"sqs:SendMessage"},
    },
    "sender": {
        "DeliveryQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
    },
}


# Methods that read a table's index: their grant is on "X.index", the
# index's ARN, not the table's.
INDEX_METHODS = {"overdue"}


def expected_grants(name: str) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for key, methods in FUNCTION_CALLS[name].items():
        adapter = ADAPTER_ACTIONS[ADAPTER_FILES[key]]
        for method in methods:
            on = f"{key}.index" if method in INDEX_METHODS else key
            for action in adapter[method]:
                target = SERVICE_RESOURCES.get(action.split(":")[0], on)
                grants.setdefault(target, set()).add(action)
    for key, actions in EVENT_SOURCE_GRANTS.get(name, {}).items():
        grants.setdefault(key, set()).update(actions)
    return grants


LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}

ENV_CALL = re.compile(r'env::(?:required|optional)\(\s*"([A-Z0-9_]+)"')
ENV_REQUIRED_CALL = re.compile(r'env::required\(\s*"([A-Z0-9_]+)"')

SQS_MAX_RETENTION = 14 * 24 * 3600


# ----------------------------------------------------------------- helpers


def resources_of_type(template: dict, type_: str) -> dict:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == type_}


def resource(template: dict, logical_id: str) -> dict:
    assert logical_id in template["Resources"], f"template has no resource {logical_id}"
    return template["Resources"][logical_id]


def function_properties(template: dict, logical_id: str) -> dict:
    """A function's properties with SAM's Globals.Function merged in, as SAM does
    (the function's own values win; maps such as Environment.Variables merge)."""

    def merge(base, override):
        if isinstance(base, dict) and isinstance(override, dict):
            merged = dict(base)
            for key, value in override.items():
                merged[key] = merge(base[key], value) if key in base else value
            return merged
        return override

    globals_ = template.get("Globals", {}).get("Function", {})
    return merge(dict(globals_), dict(resource(template, logical_id).get("Properties", {})))


def getatt(value) -> tuple[str, str] | None:
    """(logical id, attribute) of a Fn::GetAtt, in either of its forms."""
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        target = value["Fn::GetAtt"]
        if isinstance(target, str):
            logical_id, _, attribute = target.partition(".")
            return logical_id, attribute
        return target[0], target[1]
    return None


def ref(value) -> str | None:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return value["Ref"]
    return None


def is_getatt(value, logical_id: str, attribute: str) -> bool:
    return getatt(value) == (logical_id, attribute)


def sub_references(value) -> tuple[str, list[str]] | None:
    """(format string, names referenced in it) of a Fn::Sub, or None."""
    if not (isinstance(value, dict) and set(value) == {"Fn::Sub"}):
        return None
    body = value["Fn::Sub"]
    fmt = body if isinstance(body, str) else body[0]
    return fmt, re.findall(r"\$\{([^}!][^}]*)\}", fmt)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def policy_resource_key(template: dict, value) -> str:
    """Names a policy Resource entry as "X" (resource X's ARN) or "X.stream" (its
    DynamoDB stream), or fails the test when it names anything else: "*", a
    literal ARN, a Ref (a queue's Ref is its URL, a table's its name, neither an
    ARN), or several resources at once."""
    assert value != "*", "a policy statement names Resource '*'"
    assert not isinstance(value, str), f"literal resource {value!r}: name this stack's resources with !GetAtt/!Sub"
    if ref(value) in SECRET_ARN_ENV.values():
        return ref(value)  # a secret made outside the stack, by its full ARN
    assert ref(value) is None, (
        f"policy resource !Ref {ref(value)} is a name or URL, not an ARN: use !GetAtt {ref(value)}.Arn"
    )
    attribute = getatt(value)
    if attribute:
        logical_id, name = attribute
        resource(template, logical_id)
        if name == "StreamArn":
            return f"{logical_id}.stream"
        assert name == "Arn", f"policy resource uses {logical_id}.{name}, not an ARN"
        return logical_id
    sub = sub_references(value)
    if sub:
        fmt, names = sub
        own = {n.split(".")[0] for n in names if not n.startswith("AWS::")}
        assert len(own) == 1, f"policy resource {fmt!r} must name exactly one resource of this stack"
        (logical_id,) = own
        resource(template, logical_id)
        literal = re.sub(r"\$\{[^}]*\}", "", fmt)
        assert "*" not in literal.replace("/stream/*", "").replace("/index/*", ""), (
            f"policy resource {fmt!r} widens an ARN with a wildcard"
        )
        if "/index/" in fmt:
            return f"{logical_id}.index"
        return f"{logical_id}.stream" if "/stream/" in fmt else logical_id
    pytest.fail(f"policy resource {value!r} is neither !GetAtt nor !Sub of this stack's resources")


def function_statements(template: dict, logical_id: str) -> list[dict]:
    """Every IAM statement that reaches the function, from an explicit role (its
    inline policies and AWS::IAM::Policy resources attached to it) and from SAM
    `Policies` given as inline documents."""
    props = function_properties(template, logical_id)
    role = props.get("Role")
    role_target = getatt(role)
    assert role_target and role_target[1] == "Arn", (
        f"{logical_id} needs an explicit role of this template (Role: !GetAtt X.Arn): a SAM-generated "
        "role always carries AWS managed policies (basic execution, SQS/stream polling) on Resource '*'"
    )
    role_id = role_target[0]
    role_resource = resource(template, role_id)
    assert role_resource["Type"] == "AWS::IAM::Role"
    role_props = role_resource["Properties"]
    assert not role_props.get("ManagedPolicyArns"), f"{role_id} attaches managed policies"
    principals = [
        s.get("Principal", {}).get("Service") for s in role_props["AssumeRolePolicyDocument"]["Statement"]
    ]
    assert principals == ["lambda.amazonaws.com"], f"{role_id} must be assumable by Lambda only"

    documents = [p["PolicyDocument"] for p in role_props.get("Policies", [])]
    for other in template["Resources"].values():
        if other.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            if {"Ref": role_id} in as_list(other["Properties"].get("Roles", [])):
                documents.append(other["Properties"]["PolicyDocument"])
    for policy in as_list(props.get("Policies", [])):
        assert isinstance(policy, dict) and "Statement" in policy, (
            f"{logical_id} Policies entry {policy!r} is a managed policy or SAM policy template, "
            "not an inline statement list"
        )
        documents.append(policy)

    statements = []
    for statement in (s for doc in documents for s in as_list(doc["Statement"])):
        if isinstance(statement, dict) and set(statement) == {"Fn::If"}:
            # `!If [cond, statement, !Ref AWS::NoValue]`: the grant of an
            # optional secret, present when it is given.
            _, present, absent = statement["Fn::If"]
            assert ref(absent) == "AWS::NoValue", f"{logical_id}: a conditional statement must be all or nothing"
            statement = present
        statements.append(statement)
    assert statements, f"{logical_id} has no IAM statements"
    return statements


# X-Ray's write actions support no resource-level permission: the one grant on "*".
TRACING_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def is_tracing_statement(statement: dict) -> bool:
    return set(as_list(statement["Action"])) == TRACING_ACTIONS and statement["Resource"] == "*"


def granted(template: dict, statements: list[dict]) -> dict[str, set[str]]:
    """Resource key -> actions allowed on it (the tracing statement aside)."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        if statement.get("Effect") != "Allow" or is_tracing_statement(statement):
            continue
        actions = set(as_list(statement["Action"]))
        for action in actions:
            assert "*" not in action, f"wildcard action {action!r}"
        for value in as_list(statement["Resource"]):
            grants.setdefault(policy_resource_key(template, value), set()).update(actions)
    return grants


def code_env_vars(repo_root: Path, name: str) -> tuple[set[str], set[str]]:
    """(every variable, the required ones) that functions/<name>/src reads,
    with those of the adapters every function builds (crates/aws/src/adapters.rs)."""
    every: set[str] = set()
    required: set[str] = set()
    sources = sorted((repo_root / "functions" / name / "src").rglob("*.rs"))
    sources.append(repo_root / "crates" / "aws" / "src" / "adapters.rs")
    for source in sources:
        text = source.read_text(encoding="utf-8")
        every.update(ENV_CALL.findall(text))
        required.update(ENV_REQUIRED_CALL.findall(text))
    return every, required


def function_variables(template: dict, logical_id: str) -> dict:
    """A function's environment: the template's Globals, then its own."""
    variables = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    variables.update(function_properties(template, logical_id).get("Environment", {}).get("Variables", {}))
    return variables


def is_conditional_absent(value) -> bool:
    """True for `!If [cond, x, !Ref AWS::NoValue]`-style values, which may leave
    the variable unset."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        return any(ref(branch) == "AWS::NoValue" for branch in value["Fn::If"][1:])
    return False


def parameter_defaults_to(template: dict, name: str, expected) -> None:
    parameter = template["Parameters"].get(name)
    assert parameter is not None, f"template has no parameter {name}"
    assert str(parameter.get("Default")) == str(expected), f"{name} default is {parameter.get('Default')!r}"


# ----------------------------------------------------------------- cfn-lint


def cfn_lint_command() -> list[str]:
    venv_binary = Path(sys.executable).parent / "cfn-lint"
    if venv_binary.exists():
        return [str(venv_binary)]
    found = shutil.which("cfn-lint")
    assert found, "cfn-lint is not installed (pip install -r requirements-test.txt)"
    return [found]


def test_cfn_lint_finds_no_errors_or_warnings(template_path: Path) -> None:
    run = subprocess.run(
        [*cfn_lint_command(), "--format", "parseable", str(template_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (run.stdout + run.stderr).strip()
    # Exit code bits: 2 errors, 4 warnings, 8 informational, 1 a crash.
    assert run.returncode in (0, 8), f"cfn-lint exited {run.returncode}:\n{output}"


# ----------------------------------------------------------------- tables and queues

TABLES = {
    "EventsTable": ([("org_id", "HASH"), ("event_id", "RANGE")], True),
    "EndpointsTable": ([("org_id", "HASH"), ("endpoint_id", "RANGE")], False),
    "DeliveriesTable": ([("endpoint_id", "HASH"), ("event_id", "RANGE")], True),
    "CursorsTable": ([("org_id", "HASH")], False),
    "IdempotencyTable": ([("key", "HASH")], True),
    "InboundTable": ([("pk", "HASH"), ("sk", "RANGE")], True),
    "StatsTable": ([("endpoint_id", "HASH"), ("hour", "RANGE")], True),
}


# The tables that take the steady write load (a publication, a delivery's
# writes): billed as the BillingMode parameter says.
STEADY_WRITE_TABLES = ("EventsTable", "DeliveriesTable")


@pytest.mark.parametrize("logical_id", sorted(TABLES))
def test_table(template: dict, logical_id: str) -> None:
    keys, has_ttl = TABLES[logical_id]
    table = resource(template, logical_id)
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert "TableName" not in props, "let CloudFormation name tables; functions get names from env vars"
    if logical_id in STEADY_WRITE_TABLES:
        assert props["BillingMode"] == {"Ref": "BillingMode"}
    else:
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert "ProvisionedThroughput" not in props
    assert [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]] == keys
    attribute_types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    index_keys = [k["AttributeName"] for i in props.get("GlobalSecondaryIndexes", []) for k in i["KeySchema"]]
    assert attribute_types == {name: "S" for name in [k for k, _ in keys] + index_keys}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    # Kept when the stack is deleted or the table replaced, and refused by
    # DynamoDB to a DeleteTable from anyone, console or script alike.
    assert table.get("DeletionPolicy") == "Retain" and table.get("UpdateReplacePolicy") == "Retain"
    assert props.get("DeletionProtectionEnabled") is True
    if has_ttl:
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props
    if logical_id == "EventsTable":
        assert props["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"


def test_billing_mode_parameter_defaults_to_on_demand(template: dict) -> None:
    parameter_defaults_to(template, "BillingMode", "PAY_PER_REQUEST")
    assert template["Parameters"]["BillingMode"]["AllowedValues"] == ["PAY_PER_REQUEST", "PROVISIONED"]
    assert template["Conditions"]["IsProvisioned"] == {"Fn::Equals": [{"Ref": "BillingMode"}, "PROVISIONED"]}
    minimum, maximum = (template["Parameters"][p] for p in ("ProvisionedMinCapacity", "ProvisionedMaxCapacity"))
    assert minimum["Type"] == maximum["Type"] == "Number"
    assert int(minimum["Default"]) <= int(maximum["Default"])
    target = template["Parameters"]["ProvisionedTargetUtilization"]
    assert 20 <= int(target["MinValue"]) <= int(target["Default"]) <= int(target["MaxValue"]) <= 90


def provisioned_throughput_of(props: dict) -> None:
    """Capacity only when provisioned, from the minimum parameter."""
    assert props["ProvisionedThroughput"] == {
        "Fn::If": [
            "IsProvisioned",
            {
                "ReadCapacityUnits": {"Ref": "ProvisionedMinCapacity"},
                "WriteCapacityUnits": {"Ref": "ProvisionedMinCapacity"},
            },
            {"Ref": "AWS::NoValue"},
        ]
    }


@pytest.mark.parametrize("logical_id", STEADY_WRITE_TABLES)
def test_steady_write_tables_scale_their_capacity_when_provisioned(template: dict, logical_id: str) -> None:
    """PROVISIONED gives the table (and each of its indexes, whose throttled
    writes would throttle the table's) a read and a write capacity starting
    at the minimum, each tracked by auto-scaling at the target utilization;
    on-demand makes none of it."""
    props = resource(template, logical_id)["Properties"]
    provisioned_throughput_of(props)
    scopes = [("table", f"table/${{{logical_id}}}")]
    for index in props.get("GlobalSecondaryIndexes", []):
        provisioned_throughput_of(index)
        scopes.append(("index", f"table/${{{logical_id}}}/index/{index['IndexName']}"))
    targets = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    for scope, resource_id in scopes:
        for dimension, metric in (("Write", "DynamoDBWriteCapacityUtilization"), ("Read", "DynamoDBReadCapacityUtilization")):
            found = [
                name
                for name, t in targets.items()
                if t["Properties"]["ResourceId"] == {"Fn::Sub": resource_id}
                and t["Properties"]["ScalableDimension"] == f"dynamodb:{scope}:{dimension}CapacityUnits"
            ]
            assert len(found) == 1, f"{resource_id} {dimension}: {found}"
            target = targets[found[0]]
            assert target.get("Condition") == "IsProvisioned"
            assert target["Properties"]["ServiceNamespace"] == "dynamodb"
            assert target["Properties"]["MinCapacity"] == {"Ref": "ProvisionedMinCapacity"}
            assert target["Properties"]["MaxCapacity"] == {"Ref": "ProvisionedMaxCapacity"}
            tracking = [p for p in policies.values() if p["Properties"].get("ScalingTargetId") == {"Ref": found[0]}]
            assert len(tracking) == 1, f"{found[0]}: one policy"
            assert tracking[0].get("Condition") == "IsProvisioned"
            policy = tracking[0]["Properties"]
            assert policy["PolicyType"] == "TargetTrackingScaling"
            config = policy["TargetTrackingScalingPolicyConfiguration"]
            assert config["TargetValue"] == {"Ref": "ProvisionedTargetUtilization"}
            assert config["PredefinedMetricSpecification"] == {"PredefinedMetricType": metric}


def test_nothing_scales_but_the_steady_write_tables(template: dict) -> None:
    targets = resources_of_type(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    named = {
        re.match(r"table/\$\{(\w+)\}", t["Properties"]["ResourceId"]["Fn::Sub"]).group(1) for t in targets.values()
    }
    assert named == set(STEADY_WRITE_TABLES)
    assert len(targets) == 6, "read and write of the two tables and the deliveries index"


@pytest.mark.parametrize("name", ["api", "fanout", "sweeper"])
def test_functions_that_queue_tasks_are_updated_after_the_sender(template: dict, name: str) -> None:
    """A task message's payload is raw JSON, which only a sender of this
    version or later reads: every function that queues tasks waits for the
    sender's update."""
    assert resource(template, FUNCTIONS[name]).get("DependsOn") == "SenderFunction"


def test_deliveries_have_the_reconcilers_sparse_pending_index(template: dict, repo_root: Path) -> None:
    """The reconciler reads pending deliveries by org and next attempt from a
    keys-only index that `webhooks dev --create-resources` makes the same way."""
    props = resource(template, "DeliveriesTable")["Properties"]
    (index,) = props["GlobalSecondaryIndexes"]
    source = (repo_root / "crates" / "aws" / "src" / "deliveries.rs").read_text(encoding="utf-8")
    (name,) = re.findall(r'pub const PENDING_INDEX: &str = "([^"]+)";', source)
    assert index["IndexName"] == name
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("org_id", "HASH"),
        ("next_attempt_at", "RANGE"),
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    resources = (repo_root / "crates" / "aws" / "src" / "resources.rs").read_text(encoding="utf-8")
    spec = re.search(r"PENDING_INDEX: IndexSpec = IndexSpec \{([^}]*)\}", resources)
    assert spec and '"org_id"' in spec.group(1) and '"next_attempt_at"' in spec.group(1)
    grant = {"Fn::Sub": "${DeliveriesTable.Arn}/index/" + name}
    statements = function_statements(template, FUNCTIONS["sweeper"])
    assert any(grant in as_list(s["Resource"]) for s in statements), "the sweeper may query the index"


def test_tables_and_queues_match_what_webhooks_dev_creates(template: dict, repo_root: Path) -> None:
    """`webhooks dev --backend aws --create-resources` makes the same tables and
    queues from crates/aws/src/resources.rs; the two must not drift apart."""
    source_path = repo_root / "crates" / "aws" / "src" / "resources.rs"
    source = source_path.read_text(encoding="utf-8") if source_path.exists() else ""
    specs = []
    for body in re.findall(r"TableSpec\s*\{([^{}]*)\}", source):
        fields = dict(re.findall(r"(\w+)\s*:\s*(Some\(\s*\"[^\"]*\"\s*\)|\"[^\"]*\"|None|true|false)", body))
        if "name" in fields:
            specs.append({k: re.sub(r'^Some\(\s*"|"\s*\)$|"', "", v) for k, v in fields.items()})
    assert len(specs) == 7, f"{source_path} should declare the seven TableSpecs, found {len(specs)}"
    for spec in specs:
        logical_id = spec["name"].capitalize() + "Table"
        keys, has_ttl = TABLES[logical_id]
        expected = [(spec["hash_key"], "HASH")] + ([(spec["range_key"], "RANGE")] if spec["range_key"] != "None" else [])
        assert keys == expected, f"{logical_id}: template keys {keys}, resources.rs {expected}"
        assert has_ttl == (spec["ttl_attribute"] == "expires_at"), f"{logical_id}: TTL differs from resources.rs"
        props = resource(template, logical_id)["Properties"]
        assert ("StreamSpecification" in props) == (spec["stream"] == "true"), f"{logical_id}: stream differs"
    if specs:
        assert {s["name"].capitalize() + "Table" for s in specs} == set(TABLES)

    # The queue settings live beside the ports (the memory queue uses them too).
    settings = (repo_root / "crates" / "ports" / "src" / "lib.rs").read_text(encoding="utf-8")
    constants = dict(re.findall(r"const\s+(\w+)\s*:\s*u32\s*=\s*([0-9_]+)\s*;", settings))
    delivery_queue = resource(template, "DeliveryQueue")["Properties"]
    for constant, actual in (
        ("MAX_RECEIVE_COUNT", delivery_queue["RedrivePolicy"]["maxReceiveCount"]),
        ("DELIVERY_QUEUE_VISIBILITY_SECS", delivery_queue["VisibilityTimeout"]),
        ("QUEUE_RETENTION_SECS", delivery_queue["MessageRetentionPeriod"]),
    ):
        assert constant in constants, f"crates/ports/src/lib.rs no longer declares {constant}"
        assert int(actual) == int(constants[constant].replace("_", "")), f"{constant} differs from the template"


def test_queues_keep_messages_14_days_encrypted(template: dict) -> None:
    for logical_id in ("DeliveryQueue", "DeliveryDeadLetterQueue", "FanoutFailureQueue"):
        props = resource(template, logical_id)["Properties"]
        assert props["MessageRetentionPeriod"] == SQS_MAX_RETENTION, logical_id
        assert props.get("SqsManagedSseEnabled") is True, logical_id


def test_delivery_queue_redrives_to_its_dead_letter_queue(template: dict) -> None:
    redrive = resource(template, "DeliveryQueue")["Properties"]["RedrivePolicy"]
    assert is_getatt(redrive["deadLetterTargetArn"], "DeliveryDeadLetterQueue", "Arn")
    assert int(redrive["maxReceiveCount"]) == 30


def test_delivery_queue_is_a_standard_queue_the_sqs_adapter_makes_fair(template: dict, repo_root: Path) -> None:
    """Tenant isolation rests on SQS fair queues: a standard queue whose
    messages carry a MessageGroupId. A FIFO queue would serialize each org's
    deliveries instead (one in flight per group), and nothing else turns
    fairness on, so the adapter must set the group id on every send."""
    props = resource(template, "DeliveryQueue")["Properties"]
    assert "FifoQueue" not in props and "ContentBasedDeduplication" not in props
    assert not str(props.get("QueueName", "")).endswith(".fifo")
    adapter = (repo_root / "crates" / "aws" / "src" / "queue.rs").read_text(encoding="utf-8")
    assert ".set_message_group_id(" in adapter
    assert "MessageSystemAttributeName::MessageGroupId" in adapter


def test_delivery_queue_visibility_is_at_least_6x_sender_timeout(template: dict) -> None:
    timeout = int(function_properties(template, "SenderFunction")["Timeout"])
    assert timeout == 30
    visibility = int(resource(template, "DeliveryQueue")["Properties"]["VisibilityTimeout"])
    assert visibility >= 6 * timeout, f"VisibilityTimeout {visibility} < 6 x sender Timeout {timeout}"


def parse_duration_seconds(text: str) -> float:
    """webhooks_domain::retry::parse_duration, in Python: a number with an
    optional unit ms, s, m, h or d (bare numbers are seconds)."""
    number, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h|d|)", text).groups()
    return float(number) * {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


DEFAULT_RETRY_SCHEDULE = "5s,5m,30m,2h,5h,10h,12h,12h,12h,12h,8h"


def test_retry_schedule_parameter_fits_the_delivery_queue(template: dict, repo_root: Path) -> None:
    """Every schedule the parameter accepts is one the sender parses, with no
    delay over SQS's 12 h visibility limit, few enough attempts for the
    queue's maxReceiveCount (with room for a couple of receives that fail
    before an attempt), and a total within the queue's retention."""
    source = (repo_root / "crates" / "domain" / "src" / "retry.rs").read_text(encoding="utf-8")
    assert f'"{DEFAULT_RETRY_SCHEDULE}"' in source, "the built-in schedule changed: update DEFAULT_RETRY_SCHEDULE"
    pattern = re.compile(template["Parameters"]["RetrySchedule"]["AllowedPattern"])
    queue = resource(template, "DeliveryQueue")["Properties"]
    max_receives = int(queue["RedrivePolicy"]["maxReceiveCount"])
    retention = int(queue["MessageRetentionPeriod"])

    for accepted in ["", "none", DEFAULT_RETRY_SCHEDULE, "1s,2s,4s", "0s", "9999s", "720m", "12h", ",".join(["12h"] * 14)]:
        assert pattern.fullmatch(accepted), f"RetrySchedule refuses {accepted!r}"
    for refused in ["13h", "721m", "10000s", "1d", "5 s", "5s, 5m", "5s,", ",5s", "x", ",".join(["1s"] * 15)]:
        assert not pattern.fullmatch(refused), f"RetrySchedule accepts {refused!r}"

    longest = max(n for n in range(1, 100) if pattern.fullmatch(",".join(["12h"] * n)))
    assert longest + 1 <= max_receives - 2, f"{longest + 1} attempts leave no spare receive of {max_receives}"
    assert longest * 12 * 3600 < retention, "the longest schedule outlives the queue's retention"
    for delay in ["9999s", "720m", "12h"]:
        assert parse_duration_seconds(delay) <= 12 * 3600


def test_request_timeout_parameter_is_well_under_the_senders_timeout(template: dict) -> None:
    pattern = re.compile(template["Parameters"]["RequestTimeout"]["AllowedPattern"])
    sender_timeout = int(function_properties(template, "SenderFunction")["Timeout"])
    accepted = ["", "1s", "15s", "20s", "100ms", "2500ms", "20000ms"]
    refused = ["0s", "21s", "30s", "60s", "1m", "20001ms", "99ms", "15", "15 s"]
    for value in accepted:
        assert pattern.fullmatch(value), f"RequestTimeout refuses {value!r}"
        if value:
            assert parse_duration_seconds(value) <= sender_timeout * 2 / 3, value
    for value in refused:
        assert not pattern.fullmatch(value), f"RequestTimeout accepts {value!r}"
    # The largest value the pattern allows, found by search, not by reading it.
    largest = max(ms for ms in range(100, 60001, 100) if pattern.fullmatch(f"{ms}ms"))
    assert largest <= sender_timeout * 1000 * 2 / 3, f"{largest} ms is not well under the sender's {sender_timeout} s"


# ----------------------------------------------------------------- functions


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_runtime_and_build(template: dict, repo_root: Path, template_path: Path, name: str) -> None:
    logical_id = FUNCTIONS[name]
    function = resource(template, logical_id)
    assert function["Type"] == "AWS::Serverless::Function"
    props = function_properties(template, logical_id)
    assert props["Runtime"] == "provided.al2023"
    # One architecture for every function, chosen at build/deploy time.
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert props["Handler"] == "bootstrap"
    assert isinstance(props.get("MemorySize"), int) and props["MemorySize"] >= 128
    assert isinstance(props.get("Timeout"), int) and 1 <= props["Timeout"] <= 900

    metadata = function.get("Metadata", {})
    assert metadata.get("BuildMethod") == "rust-cargolambda"
    assert metadata.get("BuildProperties", {}).get("Binary") == name

    # CodeUri is the Cargo workspace, and the binary is one of its targets.
    workspace = (template_path.parent / props["CodeUri"]).resolve()
    assert workspace == repo_root.resolve(), f"CodeUri resolves to {workspace}, not the workspace root"
    workspace_manifest = tomllib.loads((workspace / "Cargo.toml").read_text(encoding="utf-8"))
    assert f"functions/{name}" in workspace_manifest["workspace"]["members"]
    crate_manifest = tomllib.loads((workspace / "functions" / name / "Cargo.toml").read_text(encoding="utf-8"))
    assert name in [b["name"] for b in crate_manifest.get("bin", [])], f"functions/{name} builds no binary {name!r}"


def test_architecture_parameter_defaults_to_arm64(template: dict) -> None:
    parameter = template["Parameters"]["Architecture"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == "arm64"
    assert sorted(parameter["AllowedValues"]) == ["arm64", "x86_64"]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_logs_json_to_a_retained_log_group(template: dict, name: str) -> None:
    props = function_properties(template, FUNCTIONS[name])
    logging = props["LoggingConfig"]
    assert logging["LogFormat"] == "JSON"
    log_group_id = ref(logging["LogGroup"])
    assert log_group_id, "LoggingConfig.LogGroup must !Ref this stack's log group"
    log_group = resource(template, log_group_id)
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert ref(log_group["Properties"]["RetentionInDays"]) == "LogRetentionInDays"
    parameter_defaults_to(template, "LogRetentionInDays", 30)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_environment_matches_what_its_code_reads(template: dict, repo_root: Path, name: str) -> None:
    variables = function_variables(template, FUNCTIONS[name])
    in_template = set(variables) - IGNORED_ENV

    in_code, required = code_env_vars(repo_root, name)
    assert in_code, f"functions/{name}/src reads no variable through env::required/env::optional"
    expected, source = in_code, f"functions/{name}/src (env::required/env::optional calls)"
    missing, extra = expected - in_template, in_template - expected
    assert not missing and not extra, (
        f"{name}: template environment differs from {source}: "
        f"missing {sorted(missing)}, not read by the function {sorted(extra)}"
    )

    # A variable the code requires (env::required rejects unset and empty values)
    # must always be set, and not to a parameter that defaults to "".
    parameters = template.get("Parameters", {})
    for variable in sorted(required):
        value = variables[variable]
        assert not is_conditional_absent(value), f"{name} requires {variable} but the template may leave it unset"
        parameter = parameters.get(ref(value) or "", {})
        assert parameter.get("Default", None) != "", (
            f"{name} requires {variable}, but parameter {ref(value)} defaults to an empty string"
        )
    # Variables that name this stack's tables and queues name the right ones.
    for variable in sorted(in_template & set(RESOURCE_ENV)):
        assert ref(variables[variable]) == RESOURCE_ENV[variable], (
            f"{name}: {variable} should be !Ref {RESOURCE_ENV[variable]}, is {variables[variable]!r}"
        )


def test_secrets_are_passed_by_arn_and_optional(template: dict) -> None:
    """Each secret reaches its function as the ARN of a Secrets Manager
    secret, from a parameter that accepts only such an ARN; an empty one
    leaves the variable unset (the route answers 501, no secret needed)."""
    parameters = template["Parameters"]
    expected = {
        "InboundFunction": {
            v for v in SECRET_ARN_ENV if v not in ("PORTAL_SIGNING_KEY_ARN", "WEBHOOKS_OPS_WEBHOOK_SECRET_ARN")
        },
        "ApiFunction": {"PORTAL_SIGNING_KEY_ARN"},
        "SenderFunction": {"WEBHOOKS_OPS_WEBHOOK_SECRET_ARN"},
    }
    for logical_id, names in expected.items():
        variables = function_properties(template, logical_id)["Environment"]["Variables"]
        for variable in sorted(names):
            value = variables[variable]
            assert is_conditional_absent(value), f"{variable} must be unset when its parameter is empty"
            condition, present, _ = value["Fn::If"]
            parameter_name = SECRET_ARN_ENV[variable]
            assert ref(present) == parameter_name, f"{variable} should be !Ref {parameter_name}"
            assert template["Conditions"][condition] == {
                "Fn::Not": [{"Fn::Equals": [{"Ref": parameter_name}, ""]}]
            }
            parameter = parameters[parameter_name]
            assert parameter["Default"] == ""
            pattern = re.compile(parameter["AllowedPattern"])
            arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:devsphere-webhooks/stripe-AbC123"
            assert pattern.fullmatch(arn) and pattern.fullmatch("")
            for refused in ["whsec_abc", "devsphere-webhooks/stripe", "{{resolve:secretsmanager:x}}"]:
                assert not pattern.fullmatch(refused), f"{parameter_name} accepts {refused!r}"


SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PRIVATE|SIGNING_KEY)")


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_no_environment_variable_holds_a_secret(template: dict, name: str) -> None:
    """Anyone allowed lambda:GetFunctionConfiguration reads a function's
    environment: no variable may hold a secret, resolve one at deploy time
    (a dynamic reference), or take a NoEcho parameter; one named like a
    secret holds only its ARN."""
    parameters = template["Parameters"]
    for variable, value in function_variables(template, FUNCTIONS[name]).items():
        text = repr(value)
        assert "{{resolve:" not in text, f"{name}: {variable} resolves a secret into the environment"
        for referenced in re.findall(r"'Ref': '(\w+)'", text) + re.findall(r"\$\{(\w+)\}", text):
            assert not parameters.get(referenced, {}).get("NoEcho"), f"{name}: {variable} takes NoEcho {referenced}"
        if SECRET_NAME.search(variable):
            assert variable.endswith("_ARN"), f"{name}: {variable} is named like a secret value"
            assert isinstance(value, dict), f"{name}: {variable} is a literal"


def test_no_echo_parameters_have_no_default(template: dict) -> None:
    for name, parameter in template.get("Parameters", {}).items():
        if parameter.get("NoEcho"):
            assert "Default" not in parameter, f"NoEcho parameter {name} has a plain-text Default"


# ----------------------------------------------------------------- IAM


def rust_without_tests(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def flat(text: str) -> str:
    """Rust source without comments and whitespace, so that a call chained over
    several lines (`self\n    .deliveries\n    .get_many(`) reads as one."""
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"\s+", "", text)


# Modules of crates/aws whose free functions every adapter shares
# (`batch_get_items(&self.client, ...)`): a call of one is its SDK calls.
SHARED_HELPER_FILES = ["batch_get.rs"]


def shared_helper_actions(src: Path) -> dict[str, set[str]]:
    """Free function of the shared helper modules -> the IAM actions of the
    SDK calls in its body."""
    found: dict[str, set[str]] = {}
    for name in SHARED_HELPER_FILES:
        text = rust_without_tests(src / name)
        for chunk in re.split(r"\n(?:pub(?:\(crate\))? )?async fn ", text)[1:]:
            body = flat(chunk)
            found[re.match(r"\w+", chunk).group(0)] = {
                SDK_CALL_ACTIONS[call] for call in re.findall(r"\.(\w+)\(\)", body) if call in SDK_CALL_ACTIONS
            }
    return found


def adapter_method_actions(path: Path, follow_bare_calls: bool = False) -> dict[str, set[str]]:
    """Method of an adapter file -> the IAM actions of the SDK calls in its body,
    following calls of the file's own helper methods (`self.query(...)`, and
    `self.helper()` too when `follow_bare_calls`), of the crate's shared
    helpers (`batch_get_items(`), and the KMS calls of its envelope cipher
    (`self.cipher.seal(`)."""
    shared = shared_helper_actions(path.parent)
    text = rust_without_tests(path)
    bodies: dict[str, str] = {}
    for chunk in re.split(r"\n    (?:pub )?async fn ", text)[1:]:
        name = re.match(r"\w+", chunk).group(0)
        bodies[name] = flat(chunk)

    def actions(name: str, seen: frozenset) -> set[str]:
        body = bodies[name]
        found = {SDK_CALL_ACTIONS[call] for call in re.findall(r"\.(\w+)\(\)", body) if call in SDK_CALL_ACTIONS}
        # An item built for TransactWriteItems is that kind of write, whether
        # the method sends the transaction itself or through a helper.
        found |= {
            TRANSACT_WRITE_ACTIONS[kind] for kind in re.findall(r"TransactWriteItem::builder\(\)\.(\w+)\(", body)
        }
        for call in re.findall(r"(?<![.\w])(\w+)\(", body):
            found |= shared.get(call, set())
        for call in re.findall(r"self\.cipher\.(\w+)\(", body):
            found |= ENVELOPE_ACTIONS.get(call, set())
        helper_call = r"self\.(\w+)\(" if follow_bare_calls else r"self\.(\w+)\((?!\))"
        for helper in re.findall(helper_call, body):
            if helper in bodies and helper not in seen:
                found |= actions(helper, seen | {helper})
        return found

    return {name: actions(name, frozenset({name})) for name in bodies}


@pytest.mark.parametrize("adapter", sorted(ADAPTER_ACTIONS))
def test_adapter_actions_match_the_sdk_calls_in_crates_aws(repo_root: Path, adapter: str) -> None:
    """ADAPTER_ACTIONS, from which every role's grants are derived, says what
    each adapter method really calls: a new or changed SDK call fails here."""
    in_code = adapter_method_actions(repo_root / "crates" / "aws" / "src" / adapter)
    for method, expected in ADAPTER_ACTIONS[adapter].items():
        assert method in in_code, f"crates/aws/src/{adapter} has no method {method}"
        assert in_code[method] == expected, (
            f"crates/aws/src/{adapter} {method} calls {sorted(in_code[method])}, ADAPTER_ACTIONS says {sorted(expected)}"
        )


def test_envelope_actions_match_the_kms_calls_in_crates_aws(repo_root: Path) -> None:
    """ENVELOPE_ACTIONS says which KMS calls sealing and opening make."""
    in_code = adapter_method_actions(repo_root / "crates" / "aws" / "src" / ENVELOPE_FILE, follow_bare_calls=True)
    for method, expected in ENVELOPE_ACTIONS.items():
        assert in_code.get(method) == expected, (
            f"crates/aws/src/{ENVELOPE_FILE} {method} calls {sorted(in_code.get(method, set()))}, "
            f"ENVELOPE_ACTIONS says {sorted(expected)}"
        )


def test_endpoint_secrets_key_is_kept_and_rotated(template: dict) -> None:
    """The key that seals every endpoint secret outlives the stack like the
    table does (without it no secret can be read), rotates yearly, and only
    the functions that sign or reveal secrets may use it."""
    key = resource(template, "EndpointSecretsKey")
    assert key["Type"] == "AWS::KMS::Key"
    assert key.get("DeletionPolicy") == "Retain" and key.get("UpdateReplacePolicy") == "Retain"
    assert key["Properties"].get("EnableKeyRotation") is True
    assert key["Properties"].get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert is_getatt(variables["ENDPOINT_SECRETS_KEY_ARN"], "EndpointSecretsKey", "Arn")
    users = {
        name
        for name, logical_id in FUNCTIONS.items()
        if "EndpointSecretsKey" in granted(template, function_statements(template, logical_id))
    }
    assert users == {"api", "sender"}


# Port methods with a default body made of another port method: a call of
# one is a call of the other (crates/ports/src/lib.rs).
PORT_DERIVED = {"send_batch": "send_batch_ids"}


def code_calls(repo_root: Path, name: str) -> dict[str, set[str]]:
    """Resource -> store/queue methods that a function's source calls on it:
    `self.deliveries.get_many(`, `api.events.get(`, or a clone
    (`let endpoints = self.endpoints.clone(); ... endpoints.list_all(`)."""
    methods = {m for adapter in ADAPTER_ACTIONS.values() for m in adapter} | set(PORT_DERIVED)
    calls: dict[str, set[str]] = {}
    paths: list[Path] = []
    for source in FUNCTION_SOURCES[name]:
        path = repo_root / source
        paths.extend(sorted(path.rglob("*.rs")) if path.is_dir() else [path])
    for path in paths:
        text = flat(rust_without_tests(path))
        cloned = set(re.findall(r"let(\w+)=(?:self|api)\.(?:\w+\.)?\1\.clone\(\);", text))
        for receiver, method in re.findall(r"(?:self|api|inbound|sender|fanout)\.(\w+)\.(\w+)\(", text):
            if receiver in RECEIVERS and method in methods:
                calls.setdefault(RECEIVERS[receiver], set()).add(PORT_DERIVED.get(method, method))
        # A store passed as a parameter (`cursors: &dyn CursorStore`) is
        # called bare, like a clone.
        params = set(re.findall(r"(\w+):&dyn\w+", text))
        for receiver, method in re.findall(r"(?<![\w.])(\w+)\.(\w+)\(", text):
            if receiver in (cloned | params) and receiver in RECEIVERS and method in methods:
                calls.setdefault(RECEIVERS[receiver], set()).add(PORT_DERIVED.get(method, method))
    return calls


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_calls_match_the_declared_store_methods(repo_root: Path, name: str) -> None:
    """FUNCTION_CALLS, from which the function's grants are derived, lists what
    its code calls: a new store or queue call in the code fails here until its
    grant is added, a removed one until its grant is dropped."""
    assert code_calls(repo_root, name) == FUNCTION_CALLS[name]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_policy_grants_exactly_what_its_code_uses(template: dict, repo_root: Path, name: str) -> None:
    logical_id = FUNCTIONS[name]
    statements = function_statements(template, logical_id)
    grants = granted(template, statements)

    log_group_id = ref(function_properties(template, logical_id)["LoggingConfig"]["LogGroup"])
    expected = {**expected_grants(name), log_group_id: LOG_ACTIONS}
    # Each secret whose ARN the code reads: GetSecretValue on that secret only.
    for variable in sorted(code_env_vars(repo_root, name)[0] & set(SECRET_ARN_ENV)):
        expected[SECRET_ARN_ENV[variable]] = {"secretsmanager:GetSecretValue"}

    unexpected = set(grants) - set(expected)
    assert not unexpected, f"{name}'s policy names resources it does not use: {sorted(unexpected)}"
    for key, actions in expected.items():
        missing = actions - grants.get(key, set())
        extra = grants.get(key, set()) - actions
        assert not missing, f"{name} lacks {sorted(missing)} on {key}"
        assert not extra, f"{name} may do {sorted(extra)} on {key}, which its code never does"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_function_policy_has_one_statement_per_resource(template: dict, name: str) -> None:
    """Each table (and queue, stream, log group) has its own statement, so a
    grant can be read, and tightened, one resource at a time."""
    keys = []
    for statement in function_statements(template, FUNCTIONS[name]):
        if is_tracing_statement(statement):
            continue
        resources = as_list(statement["Resource"])
        assert len(resources) == 1, f"{name}: statement {statement.get('Sid')} names {len(resources)} resources"
        keys.append(policy_resource_key(template, resources[0]))
    # The stream's ARN and its ListStreams wildcard are two resources of one stream.
    tables = [k for k in keys if not k.endswith(".stream")]
    assert len(tables) == len(set(tables)), f"{name}: several statements on one resource: {sorted(tables)}"


def test_no_managed_full_access_policies(template: dict) -> None:
    for logical_id, role in resources_of_type(template, "AWS::IAM::Role").items():
        assert not role["Properties"].get("ManagedPolicyArns"), f"{logical_id} attaches managed policies"
    assert "FullAccess" not in repr(template)


# ----------------------------------------------------------------- event sources


def events_of_type(template: dict, logical_id: str, type_: str) -> list[dict]:
    events = function_properties(template, logical_id).get("Events", {})
    return [e["Properties"] for e in events.values() if e["Type"] == type_]


def test_events_stream_feeds_fanout_with_partial_batch_failures(template: dict) -> None:
    (stream,) = events_of_type(template, "FanoutFunction", "DynamoDB")
    assert is_getatt(stream["Stream"], "EventsTable", "StreamArn")
    assert stream["StartingPosition"] in ("TRIM_HORIZON", "LATEST")
    assert stream["BatchSize"] == 100
    assert stream.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
    assert stream.get("BisectBatchOnFunctionError") is True
    assert 0 <= int(stream["MaximumRetryAttempts"]) <= 100, "retries must be bounded (-1 is forever)"
    assert 60 <= int(stream["MaximumRecordAgeInSeconds"]) <= 6 * 3600, "record age must be bounded (-1 is forever)"
    on_failure = stream["DestinationConfig"]["OnFailure"]
    assert is_getatt(on_failure["Destination"], "FanoutFailureQueue", "Arn")


def test_delivery_queue_feeds_sender_with_partial_batch_failures(template: dict) -> None:
    (queue,) = events_of_type(template, "SenderFunction", "SQS")
    assert is_getatt(queue["Queue"], "DeliveryQueue", "Arn")
    assert queue["BatchSize"] == 10
    assert queue.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
    assert 0 <= int(queue.get("MaximumBatchingWindowInSeconds", 0)) <= 5
    assert 2 <= int(queue["ScalingConfig"]["MaximumConcurrency"]) <= 1000


def test_sweeper_runs_on_a_schedule(template: dict) -> None:
    schedules = events_of_type(template, "SweeperFunction", "Schedule") + events_of_type(
        template, "SweeperFunction", "ScheduleV2"
    )
    assert len(schedules) == 1
    expression = schedules[0].get("Schedule") or schedules[0].get("ScheduleExpression")
    name = ref(expression)
    if name:
        expression = template["Parameters"][name]["Default"]
    assert re.fullmatch(r"rate\(\d+ minutes?\)|cron\(.+\)", expression), expression


def rate_seconds(expression: str) -> int:
    number, unit = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression).groups()
    return int(number) * {"minute": 60, "hour": 3600, "day": 86400}[unit]


def test_sweeper_runs_cannot_overlap(template: dict) -> None:
    """A sweep may start late by the event's maximum age (in EventBridge's retry
    policy and in Lambda's async queue) and run for its timeout: the shortest
    schedule the parameter allows leaves room for both before the next run."""
    props = function_properties(template, "SweeperFunction")
    (schedule,) = events_of_type(template, "SweeperFunction", "Schedule")
    invoke = props["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 0, "an async retry would overlap the next scheduled run"
    lateness = max(int(invoke["MaximumEventAgeInSeconds"]), int(schedule["RetryPolicy"]["MaximumEventAgeInSeconds"]))
    assert 60 <= lateness, "EventBridge and Lambda accept no maximum age below 60 s"
    busy = int(props["Timeout"]) + lateness

    parameter = template["Parameters"][ref(schedule["Schedule"])]
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch(parameter["Default"])
    assert rate_seconds(parameter["Default"]) >= busy
    allowed = ["rate(5 minutes)", "rate(10 minutes)", "rate(59 minutes)", "rate(1 hour)", "rate(2 hours)", "rate(1 day)"]
    refused = ["rate(1 minute)", "rate(4 minutes)", "rate(0 minutes)", "rate(2 hour)", "cron(* * * * ? *)", ""]
    for expression in allowed:
        assert pattern.fullmatch(expression), f"SweepSchedule refuses {expression}"
        assert rate_seconds(expression) >= busy, f"{expression} is shorter than {busy} s of a late, slow run"
    for expression in refused:
        assert not pattern.fullmatch(expression), f"SweepSchedule accepts {expression!r}"
    shortest = min(m * 60 for m in range(1, 61) if pattern.fullmatch(f"rate({m} minutes)"))
    assert shortest >= busy, f"SweepSchedule allows a {shortest} s period, less than {busy} s"


def test_only_the_stream_and_queue_functions_have_those_event_sources(template: dict) -> None:
    for logical_id in FUNCTIONS.values():
        kinds = {e["Type"] for e in function_properties(template, logical_id).get("Events", {}).values()}
        if logical_id == "FanoutFunction":
            assert kinds == {"DynamoDB"}
        elif logical_id == "SenderFunction":
            assert kinds == {"SQS"}
        elif logical_id == "SweeperFunction":
            assert kinds <= {"Schedule", "ScheduleV2"}
        else:
            assert kinds == {"HttpApi"}


# ----------------------------------------------------------------- HTTP API


def http_routes(template: dict, logical_id: str) -> dict[tuple[str, str], dict]:
    routes = {}
    for event in events_of_type(template, logical_id, "HttpApi"):
        assert ref(event.get("ApiId")) == "HttpApi", "every route belongs to the stack's HttpApi"
        routes[(event["Method"].upper(), event["Path"])] = event
    return routes


def test_http_api_has_a_jwt_authorizer_from_parameters(template: dict) -> None:
    api = resource(template, "HttpApi")
    assert api["Type"] == "AWS::Serverless::HttpApi"
    auth = api["Properties"]["Auth"]
    default = auth["DefaultAuthorizer"]
    authorizer = auth["Authorizers"][default]
    jwt = authorizer["JwtConfiguration"]
    assert ref(jwt["issuer"]) in template["Parameters"]
    audience = jwt["audience"]
    assert ref(audience) in template["Parameters"] or all(ref(a) in template["Parameters"] for a in audience)
    assert authorizer["IdentitySource"] == "$request.header.Authorization"
    settings = api["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] and settings["ThrottlingBurstLimit"]


def test_api_routes(template: dict) -> None:
    routes = http_routes(template, "ApiFunction")
    assert set(routes) == {
        ("ANY", "/v1/{proxy+}"),
        ("GET", "/healthz"),
        ("ANY", "/portal-api/v1/{proxy+}"),
        ("GET", "/portal"),
        ("GET", "/portal/{proxy+}"),
    }
    v1_auth = routes[("ANY", "/v1/{proxy+}")].get("Auth", {}).get("Authorizer")
    assert v1_auth in (None, resource(template, "HttpApi")["Properties"]["Auth"]["DefaultAuthorizer"])
    # The page and its assets need no token; the portal's API calls carry a
    # portal session token, which the api checks itself.
    for route in [("GET", "/healthz"), ("GET", "/portal"), ("GET", "/portal/{proxy+}"), ("ANY", "/portal-api/v1/{proxy+}")]:
        assert routes[route]["Auth"]["Authorizer"] == "NONE", route


def test_no_authorizer_trusts_an_issuer_this_stack_serves(template: dict) -> None:
    """API Gateway fetches a JWT authorizer's `<issuer>/.well-known/
    openid-configuration` while it creates it; an issuer served by this
    stack's own API (PublicBaseUrl, a custom domain, the API's URL) does not
    exist yet then, so the first deploy fails and rolls back. The only
    authorizer trusts the identity provider's issuer, a parameter."""
    auth = resource(template, "HttpApi")["Properties"]["Auth"]
    assert list(auth["Authorizers"]) == [auth["DefaultAuthorizer"]]
    for name, authorizer in auth["Authorizers"].items():
        issuer = authorizer["JwtConfiguration"]["issuer"]
        assert ref(issuer) == "JwtIssuer", (name, issuer)


def test_portal_tokens_are_checked_by_the_api_with_its_own_key(template: dict) -> None:
    """The api signs and checks portal sessions with the key of the secret
    named by PortalSigningKeySecretArn, as issuer PublicBaseUrl/portal (not
    the platform's JwtIssuer, so the platform's authorizer refuses them on
    /v1)."""
    variables = function_properties(template, "ApiFunction")["Environment"]["Variables"]
    issuer = variables["PORTAL_ISSUER"]
    assert sub_references(issuer) == ("${PublicBaseUrl}/portal", ["PublicBaseUrl"]) or issuer == {
        "Fn::Sub": "${PublicBaseUrl}/portal"
    }
    assert ref(variables["WEBHOOKS_PUBLIC_BASE_URL"]) == "PublicBaseUrl"
    key = variables["PORTAL_SIGNING_KEY_ARN"]
    assert is_conditional_absent(key) and ref(key["Fn::If"][1]) == "PortalSigningKeySecretArn"
    main = resource(template, "HttpApi")["Properties"]["Auth"]["Authorizers"]["JwtAuthorizer"]
    assert main["JwtConfiguration"]["issuer"] != issuer


def test_inbound_routes_skip_the_authorizer(template: dict) -> None:
    routes = http_routes(template, "InboundFunction")
    assert set(routes) == {
        ("POST", "/inbound/stripe"),
        ("POST", "/inbound/twilio"),
        ("GET", "/inbound/whatsapp"),
        ("POST", "/inbound/whatsapp"),
    }
    for route, event in routes.items():
        assert event.get("Auth", {}).get("Authorizer") == "NONE", f"{route} must not require a JWT"


def test_max_endpoints_per_org_parameter_reaches_only_the_api(template: dict, repo_root: Path) -> None:
    """CONTRACT section 11: at most 100 endpoints per org unless the stack
    says otherwise (at least 1). The api reads the limit at start from the
    same variable `webhooks dev --max-endpoints-per-org` takes; unset, the
    code's own default is the template's."""
    parameter = template["Parameters"]["MaxEndpointsPerOrg"]
    assert parameter["Type"] == "Number"
    assert int(parameter["Default"]) == 100
    assert int(parameter["MinValue"]) == 1
    source = (repo_root / "crates" / "domain" / "src" / "endpoint.rs").read_text(encoding="utf-8")
    assert "pub const DEFAULT_MAX_ENDPOINTS_PER_ORG: u32 = 100;" in source, "the code's default differs from the template's"
    variable = "WEBHOOKS_MAX_ENDPOINTS_PER_ORG"
    for name, logical_id in FUNCTIONS.items():
        variables = function_variables(template, logical_id)
        if name == "api":
            assert ref(variables.get(variable)) == "MaxEndpointsPerOrg", f"api: {variable} is {variables.get(variable)!r}"
        else:
            assert variable not in variables, f"{name} is given {variable} but does not enforce it"
    every, required = code_env_vars(repo_root, "api")
    assert variable in every and variable not in required
    cli = flat((repo_root / "crates" / "cli" / "src" / "main.rs").read_text(encoding="utf-8"))
    assert f'env="{variable}"' in cli, f"webhooks dev --max-endpoints-per-org does not read {variable}"
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    assert any("MaxEndpointsPerOrg" in group["Parameters"] for group in groups)


def test_unauthenticated_inbound_routes_have_their_own_throttle(template: dict) -> None:
    """Anyone can call /inbound/*: each route gets a rate and burst of its own,
    below the stage's, so a flood on one cannot use up the management API's."""
    parameters = template["Parameters"]
    for route, event in http_routes(template, "InboundFunction").items():
        settings = event.get("RouteSettings", {})
        assert ref(settings.get("ThrottlingRateLimit")) == "InboundThrottlingRateLimit", route
        assert ref(settings.get("ThrottlingBurstLimit")) == "InboundThrottlingBurstLimit", route
    rate, burst = parameters["InboundThrottlingRateLimit"], parameters["InboundThrottlingBurstLimit"]
    assert 1 <= rate["MinValue"] and 1 <= burst["MinValue"]
    assert rate["Default"] < parameters["ApiThrottlingRateLimit"]["Default"]
    assert burst["Default"] < parameters["ApiThrottlingBurstLimit"]["Default"]
    assert rate["Default"] <= burst["Default"] <= burst["MaxValue"]


# ----------------------------------------------------------------- alarms


def alarms_on(template: dict, namespace: str, metric: str, dimension: str, target) -> list[dict]:
    found = []
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("Namespace") != namespace or props.get("MetricName") != metric:
            continue
        if any(d["Name"] == dimension and d["Value"] == target for d in props.get("Dimensions", [])):
            found.append(props)
    return found


def assert_alarm(template: dict, namespace: str, metric: str, dimension: str, target, threshold=0) -> None:
    alarms = alarms_on(template, namespace, metric, dimension, target)
    assert len(alarms) == 1, f"expected one {namespace} {metric} alarm on {target!r}, found {len(alarms)}"
    (alarm,) = alarms
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    if threshold == 0:
        assert alarm["Threshold"] == 0
    else:
        assert ref(alarm["Threshold"]) == threshold, f"threshold should be the parameter {threshold}"
    assert {"Ref": "AlarmTopic"} in alarm["AlarmActions"]


def test_alarm_topic_mails_the_alarm_email_when_one_is_given(template: dict) -> None:
    assert resource(template, "AlarmTopic")["Type"] == "AWS::SNS::Topic"
    (subscription,) = resources_of_type(template, "AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert ref(subscription["Properties"]["Endpoint"]) == "AlarmEmail"
    assert ref(subscription["Properties"]["TopicArn"]) == "AlarmTopic"
    condition = template["Conditions"][subscription["Condition"]]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    parameter_defaults_to(template, "AlarmEmail", "")


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(template: dict) -> None:
    """SNS encrypts the topic at rest. With the AWS managed key alias/aws/sns
    CloudWatch could not publish (that key's policy cannot be changed to let
    it), so the topic uses a key of this stack whose policy lets CloudWatch
    generate and decrypt data keys."""
    topic = resource(template, "AlarmTopic")["Properties"]
    key_id = ref(topic.get("KmsMasterKeyId")) or (getatt(topic.get("KmsMasterKeyId")) or [None])[0]
    assert key_id, "AlarmTopic has no KmsMasterKeyId of this stack (alias/aws/sns would drop alarms)"
    key = resource(template, key_id)
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"].get("EnableKeyRotation") is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"]
    assert len(cloudwatch) == 1, "the key policy must let cloudwatch.amazonaws.com use the key"
    assert set(as_list(cloudwatch[0]["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch[0]["Effect"] == "Allow"


def alarm(template: dict, logical_id: str) -> dict:
    """An alarm's properties, after checking what every alarm of this stack
    shares: it pages the alarm topic, says when it recovers, and treats no
    data as all clear (an arrivals metric has none when nothing arrives)."""
    props = resource(template, logical_id)["Properties"]
    assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
    assert props["OKActions"] == [{"Ref": "AlarmTopic"}], logical_id
    assert props["TreatMissingData"] == "notBreaching", logical_id
    assert props["ComparisonOperator"] == "GreaterThanThreshold", logical_id
    return props


def math_inputs(props: dict) -> dict[str, tuple[str, str, dict, int, str]]:
    """Metric-math alarm: id -> (namespace, metric, dimensions, period, stat)."""
    out = {}
    for m in props["Metrics"]:
        if "MetricStat" in m:
            assert m["ReturnData"] is False
            stat = m["MetricStat"]
            metric = stat["Metric"]
            dims = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
            out[m["Id"]] = (metric["Namespace"], metric["MetricName"], dims, stat["Period"], stat["Stat"])
    return out


def math_expression(props: dict) -> str:
    (returned,) = [m for m in props["Metrics"] if m.get("ReturnData")]
    return returned["Expression"]


def test_no_alarm_watches_a_queue_depth(template: dict) -> None:
    """Depth alarms latch: nothing consumes the dead-letter or failure queue,
    so after one message they stayed in ALARM and later incidents paged no one.
    A depth is read only through its change (DIFF), which returns to zero."""
    for logical_id, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        names = [a["Properties"].get("MetricName")]
        depths = [
            m["Id"]
            for m in a["Properties"].get("Metrics", [])
            if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"].startswith("ApproximateNumberOfMessages")
        ]
        assert "ApproximateNumberOfMessagesVisible" not in names, logical_id
        if depths:
            expression = math_expression(a["Properties"])
            inside_diff = expression[expression.index("DIFF(") :] if "DIFF(" in expression else ""
            for id_ in depths:
                assert f"FILL({id_}, REPEAT)" in inside_diff, f"{logical_id} reads the depth {id_} outside DIFF"


def test_dead_letter_poison_alarm_pages_on_any_system_dead_letter(template: dict) -> None:
    props = alarm(template, "DeadLetterPoisonAlarm")
    assert (props["Namespace"], props["MetricName"]) == ("DevSphereWebhooks", "DeadLetters")
    assert props["Dimensions"] == [{"Name": "Cause", "Value": "poison"}]
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"], props["Threshold"]) == ("Sum", 300, 1, 0)


def test_no_alarm_pages_on_customers_dead_letters(template: dict) -> None:
    """A customer's dead letter is a metric and an operational notification:
    the only alarm reading it subtracts it."""
    for logical_id, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        props = a["Properties"]
        if props.get("MetricName") == "DeadLetters":
            assert props["Dimensions"] == [{"Name": "Cause", "Value": "poison"}], logical_id
        for id_, (_, metric, dims, _, _) in math_inputs(props).items() if "Metrics" in props else []:
            if dims.get("Cause") == "customer":
                assert f"- FILL({id_}, 0)" in math_expression(props), logical_id


def test_dead_letter_arrivals_the_sender_did_not_count_page(template: dict) -> None:
    props = alarm(template, "DeadLetterUnexplainedArrivalsAlarm")
    inputs = math_inputs(props)
    dlq = {"QueueName": {"Fn::GetAtt": ["DeliveryDeadLetterQueue", "QueueName"]}}
    assert inputs["sent"] == ("AWS/SQS", "NumberOfMessagesSent", dlq, 3600, "Sum")
    assert inputs["counted"] == ("DevSphereWebhooks", "DeadLetters", {"Cause": "customer"}, 3600, "Sum")
    assert inputs["poison"] == ("DevSphereWebhooks", "DeadLetters", {"Cause": "poison"}, 3600, "Sum")
    assert math_expression(props) == "FILL(sent, 0) - FILL(counted, 0) - FILL(poison, 0)"
    assert (props["EvaluationPeriods"], props["Threshold"]) == (1, 1)


def test_redrives_into_the_dead_letter_queue_page(template: dict) -> None:
    """SQS's redrive is not in NumberOfMessagesSent: the alarm reads the
    queue's depth change (returning to OK between incidents), adds what was
    deleted and subtracts what was sent."""
    props = alarm(template, "DeadLetterRedrivesAlarm")
    inputs = math_inputs(props)
    dlq = {"QueueName": {"Fn::GetAtt": ["DeliveryDeadLetterQueue", "QueueName"]}}
    assert inputs["visible"] == ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, 300, "Maximum")
    assert inputs["hidden"] == ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", dlq, 300, "Maximum")
    assert inputs["deleted"] == ("AWS/SQS", "NumberOfMessagesDeleted", dlq, 300, "Sum")
    assert inputs["sent"] == ("AWS/SQS", "NumberOfMessagesSent", dlq, 300, "Sum")
    expression = math_expression(props)
    assert expression.startswith("DIFF(") and "- FILL(sent, 0)" in expression and "+ FILL(deleted, 0)" in expression
    assert (props["EvaluationPeriods"], props["Threshold"]) == (1, 0.5)
    # Evaluate the expression on a story: 3 redriven, then quiet with them
    # still queued, then the net deletes them, then the sender dead-letters 2.
    depth = [0, 3, 3, 0, 2]
    deleted = [0, 0, 0, 3, 0]
    sent = [0, 0, 0, 0, 2]
    redriven = [depth[i] - depth[i - 1] + deleted[i] - sent[i] for i in range(1, len(depth))]
    assert [r > props["Threshold"] for r in redriven] == [True, False, False, False]


def test_fanout_failure_queue_alarm_watches_arrivals(template: dict) -> None:
    props = alarm(template, "FanoutFailureQueueArrivalsAlarm")
    assert (props["Namespace"], props["MetricName"]) == ("AWS/SQS", "NumberOfMessagesSent")
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["FanoutFailureQueue", "QueueName"]}}]
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"], props["Threshold"]) == ("Sum", 300, 1, 0)


def test_fanout_destination_failures_alarm(template: dict) -> None:
    props = alarm(template, "FanoutDestinationFailuresAlarm")
    assert (props["Namespace"], props["MetricName"]) == ("AWS/Lambda", "DestinationDeliveryFailures")
    assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "FanoutFunction"}}]
    assert (props["Statistic"], props["Period"], props["Threshold"]) == ("Sum", 300, 0)


def test_delivery_queue_age_alarm(template: dict) -> None:
    queue = {"Fn::GetAtt": ["DeliveryQueue", "QueueName"]}
    assert_alarm(template, "AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queue, "DeliveryQueueAgeAlarmSeconds")


def test_fanout_iterator_age_alarm(template: dict) -> None:
    fanout = {"Ref": "FanoutFunction"}
    assert_alarm(template, "AWS/Lambda", "IteratorAge", "FunctionName", fanout, "FanoutIteratorAgeAlarmMilliseconds")


def test_lambda_throttles_alarm_sums_every_function(template: dict) -> None:
    props = alarm(template, "LambdaThrottlesAlarm")
    inputs = math_inputs(props)
    assert {(ns, m, d["FunctionName"]["Ref"], p, st) for ns, m, d, p, st in inputs.values()} == {
        ("AWS/Lambda", "Throttles", fn, 300, "Sum") for fn in FUNCTIONS.values()
    }
    assert math_expression(props) == " + ".join(f"FILL({i}, 0)" for i in inputs)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (3, 2, 0)


def test_api_5xx_rate_alarm(template: dict) -> None:
    props = alarm(template, "Api5xxRateAlarm")
    inputs = math_inputs(props)
    api = {"ApiId": {"Ref": "HttpApi"}}
    assert inputs == {
        "errors": ("AWS/ApiGateway", "5xx", api, 300, "Sum"),
        "requests": ("AWS/ApiGateway", "Count", api, 300, "Sum"),
    }
    assert math_expression(props) == "IF(requests >= 20, 100 * FILL(errors, 0) / requests, 0)"
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (2, 2, 5)


@pytest.mark.parametrize("name", ["api", "inbound"])
def test_error_rate_alarm(template: dict, name: str) -> None:
    """api and inbound answer people and providers: a rate, not one error, pages."""
    fn = FUNCTIONS[name]
    props = alarm(template, f"{fn}ErrorRateAlarm")
    inputs = math_inputs(props)
    by = {"FunctionName": {"Ref": fn}}
    assert inputs == {
        "errors": ("AWS/Lambda", "Errors", by, 300, "Sum"),
        "invocations": ("AWS/Lambda", "Invocations", by, 300, "Sum"),
    }
    assert math_expression(props) == "IF(invocations >= 20, 100 * errors / invocations, 0)"
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (2, 2, 5)
    assert not alarms_on(template, "AWS/Lambda", "Errors", "FunctionName", {"Ref": fn})


@pytest.mark.parametrize("name", ["fanout", "sender"])
def test_function_errors_alarm(template: dict, name: str) -> None:
    """A batch handler that fails at all is a fault: every error pages."""
    assert_alarm(template, "AWS/Lambda", "Errors", "FunctionName", {"Ref": FUNCTIONS[name]})


def test_sweeper_failed_invocations_alarm(template: dict) -> None:
    props = alarm(template, "SweeperFailedInvocationsAlarm")
    errors = next(m for m in props["Metrics"] if m["Id"] == "errors")["MetricStat"]
    assert (errors["Metric"]["Namespace"], errors["Metric"]["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "SweeperFunction"}}]
    assert (errors["Stat"], errors["Period"]) == ("Sum", 300)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (3, 2, 0)


def test_every_function_is_traced_and_may_write_traces(template: dict) -> None:
    for name, logical_id in FUNCTIONS.items():
        assert function_properties(template, logical_id)["Tracing"] == "Active", name
        tracing = [s for s in function_statements(template, logical_id) if is_tracing_statement(s)]
        assert len(tracing) == 1, f"{name} has no X-Ray write statement"


# ----------------------------------------------------------------- outputs


def test_outputs_name_the_api_queues_and_tables(template: dict) -> None:
    outputs = template["Outputs"]
    assert "execute-api" in sub_references(outputs["ApiUrl"]["Value"])[0]
    named = {ref(o["Value"]) for o in outputs.values()}
    expected = set(TABLES) | {"DeliveryQueue", "DeliveryDeadLetterQueue", "FanoutFailureQueue"}
    assert expected <= named, f"outputs miss {sorted(expected - named)}"


def test_outputs_give_the_seal_migration_its_table_and_key(template: dict, repo_root: Path) -> None:
    """`webhooks migrate seal-secrets` takes the endpoints table and the
    secrets' key from the stack's outputs, as the README says."""
    outputs = template["Outputs"]
    assert ref(outputs["EndpointsTableName"]["Value"]) == "EndpointsTable"
    assert is_getatt(outputs["EndpointSecretsKeyArn"]["Value"], "EndpointSecretsKey", "Arn")
    readme = (repo_root / "README.md").read_text()
    assert "webhooks migrate seal-secrets" in readme
    for output in ("EndpointsTableName", "EndpointSecretsKeyArn"):
        assert output in readme, f"the README does not say where {output} goes"


# ----------------------------------------------------------------- operational notifications


def test_operational_notifications_reach_the_operator_webhook_and_the_bus(template: dict) -> None:
    """The operator webhook's URL and secret are parameters, the secret's
    ARN fetched from Secrets Manager at run time (never a value in the
    environment); the sender
    gets both, the api and the sweeper only the URL (they queue
    endpoint.enabled and delivery.dead_lettered for the sender); all
    publish on the stack's own EventBridge bus."""
    params = template["Parameters"]
    assert params["OpsWebhookUrl"]["Default"] == ""
    assert params["OpsWebhookSecretArn"]["Default"] == ""
    bus = resource(template, "OpsEventBus")
    assert bus["Type"] == "AWS::Events::EventBus"
    sender = function_properties(template, "SenderFunction")["Environment"]["Variables"]
    secret = sender["WEBHOOKS_OPS_WEBHOOK_SECRET_ARN"]["Fn::If"]
    assert secret[0] == "HasOpsWebhookSecret"
    assert ref(secret[1]) == "OpsWebhookSecretArn"
    api = function_properties(template, "ApiFunction")["Environment"]["Variables"]
    assert "WEBHOOKS_OPS_WEBHOOK_SECRET_ARN" not in api
    # The sweeper's redrive net emits delivery.dead_lettered, as the api
    # emits endpoint.enabled: queued for the sender, published on the bus.
    sweeper = function_properties(template, "SweeperFunction")["Environment"]["Variables"]
    assert "WEBHOOKS_OPS_WEBHOOK_SECRET_ARN" not in sweeper
    for env in (sender, api, sweeper):
        assert env["WEBHOOKS_OPS_WEBHOOK_URL"]["Fn::If"][0] == "HasOpsWebhook"
        assert ref(env["WEBHOOKS_OPS_EVENT_BUS"]) == "OpsEventBus"


# ----------------------------------------------------------------- dashboard


def test_dashboard_shows_the_pipeline_and_every_alarm(template: dict) -> None:
    props = resource(template, "OperationsDashboard")["Properties"]
    assert resource(template, "OperationsDashboard")["Type"] == "AWS::CloudWatch::Dashboard"
    text = props["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([A-Za-z0-9:.]+)\}", text))
    for n in names - {"AWS::Region"}:
        resource(template, n.split(".")[0])
    body = json.loads(re.sub(r"\$\{[^}]*\}", "x", text))
    widgets = body["widgets"]
    (alarms,) = [w for w in widgets if w["type"] == "alarm"]
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", text))
    assert shown == set(resources_of_type(template, "AWS::CloudWatch::Alarm")), "every alarm, and only alarms"
    assert len(alarms["properties"]["alarms"]) == len(shown)
    metrics = {tuple(m[:2]) for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]}
    for expected in [
        ("DevSphereWebhooks", "Attempts"),
        ("DevSphereWebhooks", "AttemptLatency"),
        ("DevSphereWebhooks", "DeadLetters"),
        ("DevSphereWebhooks", "QueueAgeAtReceipt"),
        ("DevSphereWebhooks", "FanoutLag"),
        ("DevSphereWebhooks", "SweeperDeliveriesCreated"),
        ("DevSphereWebhooks", "RedrivenMessages"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/SQS", "NumberOfMessagesSent"),
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/ApiGateway", "5xx"),
    ]:
        assert expected in metrics, expected


def test_sweep_grace_parameter_is_what_the_sweeper_accepts(template: dict, repo_root: Path) -> None:
    """SweepGrace takes 60 s to 60 min, the range the sweeper's
    parse_grace accepts (functions/sweeper/src/lib.rs): shorter could move a
    cursor over an event still to commit, longer leaves the net too late."""
    source = (repo_root / "functions" / "sweeper" / "src" / "lib.rs").read_text(encoding="utf-8")
    assert "MIN_GRACE: Duration = MIN_SETTLE_WINDOW" in source and "Duration::from_secs(3600)" in source
    event = (repo_root / "crates" / "domain" / "src" / "event.rs").read_text(encoding="utf-8")
    assert "MIN_SETTLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60)" in event
    pattern = re.compile(template["Parameters"]["SweepGrace"]["AllowedPattern"])
    for accepted in ["", "60s", "75s", "120s", "999s", "3599s", "3600s", "1m", "2m", "59m", "60m"]:
        assert pattern.fullmatch(accepted), f"SweepGrace refuses {accepted!r}"
    for refused in ["30s", "59s", "0s", "5s", "3601s", "4000s", "61m", "0m", "1h", "2 m", "120"]:
        assert not pattern.fullmatch(refused), f"SweepGrace accepts {refused!r}"


def test_an_ops_webhook_url_needs_its_secret(template: dict) -> None:
    """OpsWebhookUrl without OpsWebhookSecretArn would pass every parameter
    pattern and stop each sender start; a rule refuses the deploy instead."""
    rule = template["Rules"]["OpsWebhookNeedsItsSecret"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OpsWebhookUrl"}, ""]}]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "OpsWebhookSecretArn"}, ""]}]}
    for name in ["OpsWebhookUrl", "PublicBaseUrl"]:
        pattern = re.compile(template["Parameters"][name]["AllowedPattern"])
        assert pattern.fullmatch("https://ops.example.com/hooks"), name
        assert not pattern.fullmatch("http://ops.example.com/hooks"), f"{name} accepts plain http"
    assert re.compile(template["Parameters"]["OpsWebhookUrl"]["AllowedPattern"]).fullmatch("")


def test_the_sweeper_alarm_counts_orgs_a_sweep_could_not_finish(template: dict, repo_root: Path) -> None:
    """sweep() answers success with failed_orgs counted, so the alarm watches
    the SweeperFailedOrgs metric the sweeper emits, as well as its errors."""
    alarm = resource(template, "SweeperFailedInvocationsAlarm")["Properties"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    assert metrics["failedorgs"]["MetricStat"]["Metric"]["MetricName"] == "SweeperFailedOrgs"
    assert metrics["errors"]["MetricStat"]["Metric"]["MetricName"] == "Errors"
    assert "failedorgs" in metrics["failures"]["Expression"] and "errors" in metrics["failures"]["Expression"]
    source = (repo_root / "functions" / "sweeper" / "src" / "lib.rs").read_text(encoding="utf-8")
    assert '"SweeperFailedOrgs"' in source, "the sweeper no longer emits the metric the alarm watches"
