#!/usr/bin/env python3
"""Summarizes a `perf report --no-children --sort dso,sym --stdio -q` listing
(scripts/profile.sh): the top functions and the top crates by self time.

A Rust symbol's crate is its first path segment (`<A as B>::f` counts for
A's crate); a symbol without one is named by what it is: the kernel, a
shared library, or C code linked into the binary (mimalloc, ring's
assembly).

    profile_summary.py profile.txt [TOP]
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")
HASH = re.compile(r"::h[0-9a-f]{16}$")


def crate_of(dso: str, kind: str, sym: str) -> str:
    if kind == "k" or dso.startswith("[kernel"):
        return "kernel"
    if dso.endswith(".so") or ".so." in dso:
        return dso
    s = sym.lstrip("<&*").removeprefix("const ").removeprefix("mut ").lstrip("<&*")
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", s)
    if m:
        return m.group(1)
    return "C code in the binary"


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: profile_summary.py profile.txt [TOP]", file=sys.stderr)
        return 2
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    functions: dict[str, float] = defaultdict(float)
    crates: dict[str, float] = defaultdict(float)
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
            sym = HASH.sub("", sym)
            crate = crate_of(dso, kind, sym)
            functions[f"{sym}  ({crate})"] += pct
            crates[crate] += pct
    if not functions:
        print(f"profile_summary: no samples in {sys.argv[1]}", file=sys.stderr)
        return 1
    print(f"-- top {top} functions, % of the webhooks process's samples (self time) --")
    for name, pct in sorted(functions.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{pct:6.2f}%  {name}")
    print(f"-- top {top} crates (self time of their functions) --")
    for name, pct in sorted(crates.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{pct:6.2f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
