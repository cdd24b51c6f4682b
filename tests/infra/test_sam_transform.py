"""The template after the SAM transform, as CloudFormation will see it.

`sam deploy` hands CloudFormation a template with `Transform:
AWS::Serverless-2016-10-31`; CloudFormation runs the SAM translator and deploys
its output. These tests run the same translator (aws-sam-translator, pinned in
requirements-test.txt) with no AWS account: a fake loader answers the AWS
managed policy look-up (the template attaches none), and the functions' local
CodeUri is swapped for an S3 URI as `sam package` would. cfn-lint then checks
the generated resources (stage, event source mappings, rules, permissions),
which a lint of the SAM source alone only sees through cfn-lint's own
transform.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from samtranslator.translator.transform import transform

from test_template import FUNCTIONS, cfn_lint_command


class NoManagedPolicies:
    """Stands in for samtranslator's ManagedPolicyLoader, which asks IAM for
    the ARNs of AWS managed policies: the template's functions have explicit
    roles, so any look-up is a mistake."""

    calls = 0

    def load(self) -> dict[str, str]:
        NoManagedPolicies.calls += 1
        return {}


PARAMETERS = {
    "JwtIssuer": "https://issuer.invalid/",
    "JwtAudience": "devsphere-webhooks",
    "PublicBaseUrl": "https://webhooks.invalid",
}


@pytest.fixture(scope="module")
def transformed(template: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    # The translator reads the region from a boto3 session; give it one without
    # reading any AWS configuration of the machine.
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_CONFIG_FILE", "/dev/null")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    try:
        source = json.loads(json.dumps(template))  # plain dicts, not cfn-lint's node types
        source["Globals"]["Function"]["CodeUri"] = "s3://devsphere-webhooks-artifacts/functions.zip"
        output = transform(copy.deepcopy(source), dict(PARAMETERS), NoManagedPolicies())
    finally:
        mp.undo()
    return output


def resources_of(transformed: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in transformed["Resources"].items() if v["Type"] == type_}


def test_transform_leaves_no_serverless_resources(transformed: dict) -> None:
    assert "Transform" not in transformed
    left = {k: v["Type"] for k, v in transformed["Resources"].items() if v["Type"].startswith("AWS::Serverless::")}
    assert not left, f"untransformed SAM resources: {left}"
    # Every function became a Lambda function on its own explicit role.
    functions = resources_of(transformed, "AWS::Lambda::Function")
    assert set(functions) == set(FUNCTIONS.values())
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Architectures"] == [{"Ref": "Architecture"}], logical_id
        assert props["Role"] == {"Fn::GetAtt": [f"{logical_id}Role", "Arn"]}, logical_id
    assert NoManagedPolicies.calls == 0, "the transform looked up AWS managed policies"
    # No role of SAM's making: each was written in the template.
    roles = resources_of(transformed, "AWS::IAM::Role")
    assert set(roles) == {f"{f}Role" for f in FUNCTIONS.values()}


def test_cfn_lint_finds_nothing_in_the_transformed_template(transformed: dict, tmp_path: Path) -> None:
    path = tmp_path / "transformed.json"
    path.write_text(json.dumps(transformed, indent=1), encoding="utf-8")
    run = subprocess.run(
        [*cfn_lint_command(), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = (run.stdout + run.stderr).strip()
    # Exit code bits: 2 errors, 4 warnings, 8 informational, 1 a crash.
    assert run.returncode in (0, 8), f"cfn-lint exited {run.returncode} on the transformed template:\n{output}"


def test_stage_throttles_every_inbound_route(transformed: dict) -> None:
    (stage,) = resources_of(transformed, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    inbound = {"POST /inbound/stripe", "POST /inbound/twilio", "GET /inbound/whatsapp", "POST /inbound/whatsapp"}
    assert set(props["RouteSettings"]) == inbound
    for key, settings in props["RouteSettings"].items():
        assert settings == {
            "ThrottlingRateLimit": {"Ref": "InboundThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "InboundThrottlingBurstLimit"},
        }, key
    # The route keys name routes the API really has (an unknown key fails the
    # deploy: "Unable to find Route by key").
    (api,) = resources_of(transformed, "AWS::ApiGatewayV2::Api").values()
    paths = api["Properties"]["Body"]["paths"]
    routes = {f"{method.upper()} {path}" for path, methods in paths.items() for method in methods}
    assert inbound <= routes


def test_sweeper_rule_and_async_config_bound_lateness(transformed: dict) -> None:
    rules = resources_of(transformed, "AWS::Events::Rule")
    (rule,) = rules.values()
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["SweeperFunction", "Arn"]}
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 60
    (invoke,) = resources_of(transformed, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke["Properties"]["FunctionName"] == {"Ref": "SweeperFunction"}
    assert invoke["Properties"]["MaximumEventAgeInSeconds"] == 60
    assert invoke["Properties"]["MaximumRetryAttempts"] == 0


def test_event_source_mappings_report_partial_batch_failures(transformed: dict) -> None:
    mappings = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"]
        for m in resources_of(transformed, "AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == {"FanoutFunction", "SenderFunction"}
    for function, props in mappings.items():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], function
    assert mappings["FanoutFunction"]["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FanoutFailureQueue", "Arn"]
    }


def test_only_the_inbound_health_and_portal_page_routes_skip_the_authorizer(transformed: dict) -> None:
    (api,) = resources_of(transformed, "AWS::ApiGatewayV2::Api").values()
    open_routes = set()
    for path, methods in api["Properties"]["Body"]["paths"].items():
        for method, operation in methods.items():
            if operation.get("security") == [{"NONE": []}] or operation.get("security") == []:
                open_routes.add(f"{method.upper()} {path}")
    assert open_routes == {
        "GET /healthz",
        "POST /inbound/stripe",
        "POST /inbound/twilio",
        "GET /inbound/whatsapp",
        "POST /inbound/whatsapp",
        # The portal's page and assets: public by design. Its API calls
        # carry a portal session token, which the api checks itself (no
        # authorizer can trust an issuer this same API serves).
        "GET /portal",
        "GET /portal/{proxy+}",
        "X-AMAZON-APIGATEWAY-ANY-METHOD /portal-api/v1/{proxy+}",
    }
