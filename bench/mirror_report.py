"""Tables for docs/benchmarks.md from bench/bench_mirror.py's JSON results.

    python bench/mirror_report.py bench/results/mirror-3reps.json
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

PHASES = ("initial", "noop", "changed")


def main(path: str) -> None:
    with open(path) as f:
        results: list[dict[str, Any]] = json.load(f)
    tools = list(dict.fromkeys(r["tool"] for r in results))
    print("| tool | pass | wall s, median [min-max] | client CPU s | peak RSS MB | moto CPU s "
          "| requests (last rep) | bucket = tree |")
    print("|---|---|---|---|---|---|---|---|")
    for tool in tools:
        for phase in PHASES:
            rs = [r for r in results if r["tool"] == tool and r["phase"] == phase]
            walls = [r["wall"] for r in rs]
            reqs = ", ".join(f"{k} {v}" for k, v in rs[-1]["requests"].items())
            checks = {r["check"] for r in rs}
            print(f"| {tool} | {phase} | {statistics.median(walls):.2f} "
                  f"[{min(walls):.2f}-{max(walls):.2f}] | "
                  f"{statistics.median(r['client_cpu'] for r in rs):.2f} | "
                  f"{max(r['rss_mb'] for r in rs):.0f} | "
                  f"{statistics.median(r['moto_cpu'] for r in rs):.2f} | {reqs} | "
                  f"{', '.join(sorted(checks))} |")
    print()
    print("Ratio ours / rclone tuned, wall time, per repetition (same run, back to back):")
    print()
    print("| pass | " + " | ".join(f"rep {i}" for i in sorted({r['rep'] for r in results}))
          + " | median |")
    print("|---|" + "---|" * (len({r['rep'] for r in results}) + 1))
    for phase in PHASES:
        ratios = []
        for rep in sorted({r["rep"] for r in results}):
            ours = [r["wall"] for r in results
                    if r["tool"] == "ours" and r["phase"] == phase and r["rep"] == rep]
            peer = [r["wall"] for r in results
                    if r["tool"] == "rclone-tuned" and r["phase"] == phase and r["rep"] == rep]
            if ours and peer:
                ratios.append(ours[0] / peer[0])
        print(f"| {phase} | " + " | ".join(f"{x:.2f}" for x in ratios)
              + f" | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
