#!/usr/bin/env python3
"""Fails when a workspace crate declares a dependency its code never names,
as cargo-machete does: each `[dependencies]`, `[dev-dependencies]` and
`[build-dependencies]` entry must appear (with `-` as `_`) in a `.rs` file of
the crate. Needs only python3."""

import re
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
workspace = tomllib.loads((root / "Cargo.toml").read_text())
# Dependencies used without a path in the code.
USED_WITHOUT_NAMING = {
    "tokio",  # #[tokio::main] / #[tokio::test] name it; kept for features
}
problems = []
for member in workspace["workspace"]["members"]:
    crate = root / member
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    files = [p for p in crate.rglob("*.rs") if "target" not in p.parts]
    # Modules brought in from elsewhere with #[path = "..."] count too.
    for f in list(files):
        for rel in re.findall(r'#\[path\s*=\s*"([^"]+)"\]', f.read_text(errors="replace")):
            included = (f.parent / rel).resolve()
            if included.is_file():
                files.append(included)
    source = "\n".join(p.read_text(errors="replace") for p in files)
    for table in ("dependencies", "dev-dependencies", "build-dependencies"):
        for name, spec in manifest.get(table, {}).items():
            # A renamed dependency (`alias = { package = "..." }`) is named by its alias.
            ident = name.replace("-", "_")
            if name in USED_WITHOUT_NAMING:
                continue
            if not re.search(r"\b" + re.escape(ident) + r"\b", source):
                problems.append(f"{member}/Cargo.toml: [{table}] {name} is not used by the crate's code")
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
