"""A new host: the first pass with an empty state folder against a store that already holds
the same files.  Ours against rclone tuned (``--checksum``), on one moto server in one run.

    python bench/bench_new_host.py [--files 10000] [--reps 4]

Per repetition: moto reset, the bucket filled once with the tree (by ``ours``, whose keys are
rclone's: one bucket, a prefix per app), then each tool syncs the same tree with nothing known
locally (ours: a new, empty STATE_DIR; rclone keeps no state).  Who goes first alternates.
Measured: wall time, client CPU, peak RSS, requests by kind in moto's access log (a PUT would be
an upload: there must be none), the load average before the pass.  Every repetition printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_mirror import KEY, SECRET, Moto, gen_tree, run_tool  # noqa: E402
from bench.peers_cmd import peer_env  # noqa: E402

TOOLS = ["ours", "rclone-tuned"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-newhost-"))
    moto = Moto(work)
    env = peer_env(KEY, SECRET, moto.url)
    results: list[dict[str, Any]] = []
    try:
        src = work / "src"
        gen_tree(src, args.files)
        for rep in range(args.reps):
            moto.reset("bench")
            prime = run_tool("ours", "initial", src, "bench", moto, work / "state-prime", env)
            assert prime["exit"] == 0 and prime["check"] == "ok", prime
            shutil.rmtree(work / "state-prime")
            order = TOOLS[rep % 2:] + TOOLS[: rep % 2]
            for tool in order:
                state = work / f"state-{tool}-{rep}"  # new and empty: a new host
                r = run_tool(tool, "newhost", src, "bench", moto, state, env)
                r["rep"] = rep
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| rep | tool (in the order run) | load | wall s | client CPU s | peak RSS MB | "
          "PUTs | requests | result | ours/rclone |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        other = next(x for x in results if x["rep"] == r["rep"] and x["tool"] != r["tool"])
        ratio = f"{r['wall'] / other['wall']:.2f}" if r["tool"] == "ours" else ""
        puts = sum(n for k, n in r["requests"].items() if k.startswith("PUT"))
        print(f"| {r['rep']} | {r['tool']} | {r['load']:.1f} | {r['wall']:.2f} | "
              f"{r['client_cpu']:.2f} | {r['rss_mb']:.0f} | {puts} | "
              f"{sum(r['requests'].values())} | {r['check']} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
