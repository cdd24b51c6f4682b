"""The deploy path a stranger follows: samconfig.toml deploys no example
values, and README's Deploying section creates the secrets whose ARNs the
template takes and names every parameter a first deploy must answer."""

from __future__ import annotations

import re
from pathlib import Path


def samconfig(repo_root: Path) -> dict:
    import tomllib

    return tomllib.loads((repo_root / "samconfig.toml").read_text(encoding="utf-8"))


def test_samconfig_deploys_no_placeholder_values(repo_root: Path) -> None:
    """A committed parameter_overrides would deploy someone's example issuer or
    subscribe an example address; `sam deploy --guided` asks instead. The one
    exception is Architecture, in the global section that `sam build` and
    `sam deploy` both read, so the two agree on it."""
    text = (repo_root / "samconfig.toml").read_text(encoding="utf-8")
    config = samconfig(repo_root)
    assert config["default"]["global"]["parameters"]["parameter_overrides"] == "Architecture=arm64"
    for command, section in config["default"].items():
        params = section.get("parameters", {})
        if command != "global":
            assert "parameter_overrides" not in params, f"samconfig.toml [{command}] sets parameter_overrides"
        assert "region" not in params, f"samconfig.toml [{command}] pins a region"
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"example\.(com|org|net)|placeholder", code, re.I)


def test_samconfig_points_at_the_template_and_its_build(repo_root: Path) -> None:
    config = samconfig(repo_root)["default"]
    assert config["build"]["parameters"]["template_file"] == "infra/template.yaml"
    assert config["validate"]["parameters"]["template_file"] == "infra/template.yaml"
    build_dir = config["build"]["parameters"]["build_dir"]
    assert config["deploy"]["parameters"]["template_file"] == f"{build_dir}/template.yaml"
    assert "/" + build_dir.split("/")[0] + "/" + build_dir.split("/")[1] in (repo_root / ".gitignore").read_text()
    assert (repo_root / "infra" / "template.yaml").is_file()


def deploying_section(repo_root: Path) -> str:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Deploying")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def test_readme_creates_each_secret_and_passes_its_arn(template: dict, repo_root: Path) -> None:
    """The README's create-secret commands make the six secrets as plain
    SecretStrings (the functions use the whole SecretString, so key/value
    JSON would become the secret) and print their ARNs, and it says which
    `*SecretArn` parameter each ARN is given as."""
    section = deploying_section(repo_root)
    commands = re.findall(
        r"aws secretsmanager create-secret --name (\S+) (?:\\\s*\n\s*)?--secret-string ('[^']*'|\"[^\"]*\"|\S+)"
        r"(?:\s*\\\s*\n\s*|\s+)--query ARN --output text",
        section,
    )
    assert len({name for name, _ in commands}) == 6, f"README creates {commands}"
    for name, value in commands:
        assert not value.lstrip("'\"").startswith("{"), f"{name}: a JSON SecretString would not be the secret"
    arn_parameters = [k for k in template["Parameters"] if k.endswith("SecretArn")]
    # The four providers' secrets, the portal's signing key and the
    # operator webhook's secret.
    assert len(arn_parameters) == 6
    for name in arn_parameters:
        assert f"`{name}`" in section, f"README's Deploying section does not say what to give {name}"


def test_readme_names_every_parameter_a_deploy_must_answer(template: dict, repo_root: Path) -> None:
    section = deploying_section(repo_root)
    without_default = [k for k, p in template["Parameters"].items() if "Default" not in p]
    assert without_default
    for name in without_default + ["Architecture", "AlarmEmail"]:
        assert f"`{name}`" in section, f"README's Deploying section does not say what to give {name}"
    for topic in ("sam deploy --guided", "Subscription Confirmation", "sam delete", "LocalStack", "Architecture=x86_64", "ROLLBACK_COMPLETE", "schedule-key-deletion"):
        assert topic in section, f"README's Deploying section says nothing of {topic!r}"
