"""Checks of the scripts and requirement files the test command and the deploy
path run: every tool pinned, the sam build step wired in, portable shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REQUIREMENT = re.compile(r"^[A-Za-z0-9._-]+(\[[A-Za-z0-9_,-]+\])?==[0-9][A-Za-z0-9.+!-]*$")


def requirement_files(repo_root: Path) -> list[Path]:
    files = sorted(repo_root.glob("requirements*.txt"))
    assert files
    return files


def test_every_python_requirement_is_pinned(repo_root: Path) -> None:
    for path in requirement_files(repo_root):
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-r "):
                assert (repo_root / line[3:].strip()).is_file(), f"{path.name}:{number} includes a missing file"
                continue
            assert REQUIREMENT.fullmatch(line), f"{path.name}:{number}: {line!r} is not pinned as name==version"


def pinned(repo_root: Path, name: str) -> str:
    for path in requirement_files(repo_root):
        match = re.search(rf"^{re.escape(name)}==(\S+)", path.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1)
    pytest.fail(f"{name} is pinned in no requirements file")


def test_test_requirements_bring_the_sam_toolchain(repo_root: Path) -> None:
    test_requirements = (repo_root / "requirements-test.txt").read_text(encoding="utf-8")
    assert "-r requirements-lambda.txt" in test_requirements
    for name in ("aws-sam-cli", "aws-sam-translator", "cargo-lambda", "ziglang", "cfn-lint"):
        pinned(repo_root, name)


def test_installed_tools_are_the_pinned_versions(repo_root: Path) -> None:
    from importlib.metadata import version

    for name in ("aws-sam-cli", "aws-sam-translator", "cfn-lint", "cargo-lambda", "ziglang"):
        assert version(name) == pinned(repo_root, name), f".venv has another {name} than the pinned one"


def test_the_test_command_runs_sam_build(repo_root: Path) -> None:
    test_sh = (repo_root / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert re.search(r"^scripts/sam-build\.sh\s*$", test_sh, re.M), "scripts/test.sh does not run scripts/sam-build.sh"
    sam_build = (repo_root / "scripts" / "sam-build.sh").read_text(encoding="utf-8")
    assert "sam validate --lint" in sam_build
    assert re.search(r"sam build --parameter-overrides \"Architecture=\$arch\"", sam_build)


@pytest.mark.parametrize("script", ["build-lambdas.sh", "sam-build.sh", "test.sh", "venv.sh"])
def test_scripts_parse_and_avoid_gnu_only_stat(repo_root: Path, script: str) -> None:
    path = repo_root / "scripts" / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\bstat\s+(-c|--format|--printf)", code), f"{script} uses GNU-only stat -c"



class RecordingOSUtils:
    """aws_lambda_builders' OSUtils, recording the environment of each command
    instead of running `cargo lambda build` (a release build takes minutes;
    scripts/sam-build.sh runs the real one)."""

    def __init__(self) -> None:
        self.envs: list[dict] = []

    def popen(self, command, stdout=None, stderr=None, env=None, cwd=None):
        if command[1:3] == ["lambda", "build"]:
            self.envs.append(dict(env or {}))
            return subprocess.Popen(["true"], stdout=stdout, stderr=stderr)
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd)


@pytest.mark.parametrize("target_dir", ["unset", "absolute", "relative"])
def test_sam_rust_builder_builds_and_copies_from_cargo_target_dir(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target_dir: str
) -> None:
    """`sam build` runs cargo-lambda through aws_lambda_builders, then copies
    <target dir>/lambda/<bin>/bootstrap. With CARGO_TARGET_DIR set, both steps
    must use it (an older builder built there but copied from ./target)."""
    import shutil
    from types import SimpleNamespace

    from aws_lambda_builders.utils import which
    from aws_lambda_builders.workflow import BuildMode
    from aws_lambda_builders.workflows.rust_cargo.actions import RustCargoLambdaBuildAction, RustCopyAndRenameAction
    from aws_lambda_builders.workflows.rust_cargo.cargo_lambda import SubprocessCargoLambda

    venv_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    expected = {
        "unset": repo_root / "target",
        "absolute": tmp_path / "elsewhere",
        "relative": repo_root / "relative-target",
    }[target_dir]
    if target_dir == "unset":
        monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)
    else:
        monkeypatch.setenv("CARGO_TARGET_DIR", "relative-target" if target_dir == "relative" else str(expected))
    cargo = shutil.which("cargo")
    assert cargo, "cargo is not on PATH"
    binaries = {"cargo": SimpleNamespace(binary_path=cargo)}
    osutils = RecordingOSUtils()
    runner = SubprocessCargoLambda(which=which, osutils=osutils)

    RustCargoLambdaBuildAction(str(repo_root), binaries, BuildMode.RELEASE, runner, "provided.al2023", "x86_64", "api").execute()
    (env,) = osutils.envs
    built_into = Path(env.get("CARGO_TARGET_DIR", "target"))
    if not built_into.is_absolute():
        built_into = repo_root / built_into  # cargo-lambda runs in the source directory
    assert built_into.resolve() == expected.resolve()

    copy = RustCopyAndRenameAction(str(repo_root), str(tmp_path / "artifacts"), "api", binaries, runner)
    assert Path(copy.binary_path()).resolve() == (expected / "lambda" / "api" / "bootstrap").resolve()
