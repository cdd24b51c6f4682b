#!/usr/bin/env python3
"""Plots deliveries/s against endpoints per event from the benchmark's JSON.

    .venv/bin/python scripts/plot_bench.py [target/bench/results.json] [docs/bench-endpoints.png]

Reads the `e2e` section written by `webhooks-bench all` (medians of its runs)
and draws the pipeline next to the bare sign+POST ceiling of the same runs.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/bench/results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs/bench-endpoints.png"
    data = json.loads(src.read_text())
    results = sorted(data["e2e"]["results"], key=lambda r: r["endpoints_per_event"])
    if not results:
        print("no e2e results to plot", file=sys.stderr)
        return 1
    e = [r["endpoints_per_event"] for r in results]
    pipeline = [r["pipeline"]["deliveries_per_s"] for r in results]
    ceiling = [r["ceiling"]["posts_per_s"] for r in results]
    ratio = [r["ratio_pipeline_to_ceiling"] for r in results]
    events = results[0]["events"]
    runs = results[0]["runs"]
    machine = data.get("machine", {})

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(e, ceiling, "s--", color="#888888", label="ceiling: bare sign + POST")
    ax.plot(e, pipeline, "o-", color="#1f77b4", label="pipeline: API → fan-out → queue → sender")
    for x, p, q in zip(e, pipeline, ratio):
        ax.annotate(f"{p:,.0f} ({q:.0%} of ceiling)", (x, p), textcoords="offset points", xytext=(0, 8),
                    ha="center", fontsize=8, color="#1f77b4")
    ax.set_xticks(e)
    ax.set_xlim(min(e) - 0.6, max(e) + 0.6)
    ax.set_xlabel("endpoints per event")
    ax.set_ylabel("deliveries per second")
    ax.set_ylim(0, max(ceiling + pipeline) * 1.4)
    ax.set_title(
        f"webhooks dev (memory backend), {events:,} events of 1 KiB, median of {runs}\n"
        f"{machine.get('nproc', '?')} CPUs, {machine.get('cpu_model', '')}",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
