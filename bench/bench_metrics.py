"""The cost of the metrics hooks per call, off and on (in-process and multiprocess mode).

    python bench/bench_metrics.py [--calls 200000]

Each hook the work calls (``path_synced`` for an upload, with its mtime ``stat``; ``coalesced``
for a watcher event; ``store_answered``; ``pass_done`` for a pass of one container) is timed over
CALLS calls in a fresh process: metrics off (the default), on (``run``/``watch``), and on in
prometheus-client's multiprocess mode (a Celery worker's pool process).  The end-to-end
figures are in docs/benchmarks.md (bench_latency.py, bench_watcher.py with metrics on and off).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(mode: str, calls: int) -> dict[str, float]:
    from worker import metrics
    from worker.config import load_settings
    from worker.mirror.pass_log import per_container
    from worker.mirror.results import Counts, PassResult, PathResult

    work = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    (work / "apps" / "shop").mkdir(parents=True)
    (work / "apps" / "shop" / "a.js").write_text("a")
    (work / "none.json").write_text("{}")
    settings = load_settings(environ={"SYNCHRO__APP_ROOT_PATH": str(work / "apps"),
                                      "SYNCHRO_CONFIG": str(work / "none.json")})
    if mode == "multiprocess":
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work)
    if mode != "off":
        metrics.enable()
    upload = PathResult("shop", "a.js", "uploaded", uploaded=1, bytes=1)
    passed = PassResult(containers=["shop"], per={"shop": Counts(1, 0, 0, 10, 100)})
    hooks = {
        "path_synced": lambda: metrics.path_synced(settings, upload),
        "coalesced": metrics.coalesced,
        "store_answered": lambda: metrics.store_answered("sync_path", None),
        "pass_done": lambda: metrics.pass_done(per_container(passed), 0.1),
    }
    out = {}
    for name, hook in hooks.items():
        n = calls if name != "pass_done" else calls // 10
        started = time.perf_counter()
        for _ in range(n):
            hook()
        out[name] = (time.perf_counter() - started) / n * 1e6
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          f"load average {os.getloadavg()[0]:.1f}")
    rows = {}
    for mode in ("off", "on", "multiprocess"):
        done = subprocess.run([sys.executable, __file__, "_child", mode, str(args.calls)],
                              capture_output=True, text=True, check=True)
        rows[mode] = json.loads(done.stdout)
    print("| hook | off | on | multiprocess |")
    print("|---|---|---|---|")
    for hook in rows["off"]:
        print(f"| `{hook}` | " + " | ".join(f"{rows[m][hook]:.2f} µs" for m in rows) + " |")


if __name__ == "__main__":
    main()
