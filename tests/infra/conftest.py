"""Fixtures shared by the infrastructure tests: where things are, and the
SAM template decoded the way cfn-lint decodes it (short-form intrinsics such as
`!Ref` and `!GetAtt` become their long forms, `{"Ref": ...}` and so on)."""

from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "infra" / "template.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def template_path() -> Path:
    assert TEMPLATE_PATH.is_file(), f"missing {TEMPLATE_PATH}"
    return TEMPLATE_PATH


@pytest.fixture(scope="session")
def template(template_path: Path) -> dict:
    return cfn_yaml.load(str(template_path))
