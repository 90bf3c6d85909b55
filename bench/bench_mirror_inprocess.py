"""No-change pass as the long-running worker runs it (in process: no interpreter start-up),
against the bare listing floor and rclone tuned, alternating, on one moto server.

    python bench/bench_mirror_inprocess.py [--files 10000] [--reps 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.bench_mirror import gen_tree  # noqa: E402
from bench.peers_cmd import PEERS, peer_env  # noqa: E402


def main() -> int:
    from tests.servers.s3_server import start_s3
    from worker.config import load_settings
    from worker.mirror.context import MirrorContext
    from worker.mirror.passes import full_pass

    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    srv = start_s3()
    work = Path(tempfile.mkdtemp(prefix="bench-inproc-"))
    try:
        gen_tree(work / "apps", args.files)
        srv.client().create_bucket(Bucket="bench")
        settings = load_settings(None, {
            "APP_ROOT_PATH": str(work / "apps"), "STATE_DIR": str(work / "state"),
            "MODULESTORE_SERVICE": "PkgCloudModuleStore",
            "MODULESTORE": srv.settings(bucket="bench"),
        }, environ={})
        ctx = MirrorContext.from_settings(settings)
        print("initial:", full_pass(ctx).summary())
        fast = ctx.store.backend.fast  # type: ignore[attr-defined]
        apps = sorted(p.name for p in (work / "apps").iterdir())

        def listing(app: str) -> int:
            token, n = None, 0
            while True:
                rows, token = fast.list_page("bench", app + "/", token)
                n += len(rows)
                if token is None:
                    return n

        env = peer_env("k", "s", srv.endpoint)
        argv = PEERS["rclone-tuned"]("noop", work / "apps", "bench", srv.endpoint, work)
        times: dict[str, list[float]] = {"ours in process": [], "listing only": [],
                                         "rclone tuned (CLI)": []}
        for _ in range(args.reps):
            t = time.monotonic()
            assert full_pass(ctx).unchanged == args.files
            times["ours in process"].append(time.monotonic() - t)
            t = time.monotonic()
            with ThreadPoolExecutor(len(apps)) as pool:
                assert sum(pool.map(listing, apps)) == args.files
            times["listing only"].append(time.monotonic() - t)
            t = time.monotonic()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            times["rclone tuned (CLI)"].append(time.monotonic() - t)
        ctx.close()
        for name, ts in times.items():
            print(f"{name}: median {statistics.median(ts):.2f} s "
                  f"[{min(ts):.2f}-{max(ts):.2f}] {[round(x, 2) for x in ts]}")
    finally:
        srv.server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
