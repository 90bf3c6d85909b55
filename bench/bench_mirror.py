"""Mirror benchmark: our `synchro-sync sync` against rclone, aws s3 sync and raw boto3, on one
moto server in the same run (see docs/benchmarks.md, section Mirror).

    python bench/bench_mirror.py [--files 10000] [--reps 1] [--tools ours,rclone-tuned,...]
    python bench/bench_mirror.py --files 8 --size-mib 64 --phases initial --reps 5

Data: N files of 1-8 KB (seeded) in 5 apps (``--apps``), app{1..5}/pkgNN/subNN/fNNNN.js, fixed
old mtimes; with ``--size-mib S``, N files of S MiB each (random bytes, seeded) spread over the
apps.
Layout: one bucket, a prefix per app (our MODULESTORE.bucket).  Per tool and repetition: moto
reset, a fresh copy of the tree, then the passes (default all three): initial; no change; after
100 changed (34 touched only, 33 rewritten with the same size, 33 with a new size) and 100
deleted.  Who goes first alternates: repetition r runs the tools in the order given rotated by
r, so with two tools each goes first in every other repetition.
Measured per pass: wall time, client CPU (wait4) and peak RSS (GNU time's %M: wait4's
ru_maxrss would include this benchmark's own size, see peers_cmd.own_peak_rss), moto CPU
(/proc), requests counted in moto's access log, the one-minute load average just before the
pass, and the bucket compared with the tree by key and MD5 (multipart ETags: the MD5 of the
part MD5s).  Every repetition is printed, never only the best.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.peers_cmd import PEERS, peer_env, run_measured  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"
OLD_MTIME = 1_700_000_000
_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]" (\d+)')


def gen_tree(root: Path, n: int, seed: int = 7, apps: int = 5) -> list[str]:
    rnd = random.Random(seed)
    keys = []
    for i in range(n):
        app = f"app{i % apps + 1}"
        rel = f"{app}/pkg{(i // apps) % 20:02d}/sub{(i // 100) % 6:02d}/f{i:05d}.js"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(rnd.randint(1024, 8192)))
        os.utime(path, (OLD_MTIME, OLD_MTIME))
        keys.append(rel)
    return keys


def gen_large(root: Path, n: int, size_mib: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    keys = []
    for i in range(n):
        rel = f"app{i % 5 + 1}/big/f{i:03d}.bin"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(size_mib):
                f.write(rnd.randbytes(1024 * 1024))
        os.utime(path, (OLD_MTIME, OLD_MTIME))
        keys.append(rel)
    return keys


def mutate(root: Path, keys: list[str], seed: int = 11) -> None:
    rnd = random.Random(seed)
    picked = rnd.sample(keys, 200)
    for i, rel in enumerate(picked[:100]):
        path = root / rel
        if i < 34:
            os.utime(path)  # touched only
        elif i < 67:
            path.write_bytes(rnd.randbytes(path.stat().st_size))  # same size, new content
        else:
            path.write_bytes(rnd.randbytes(rnd.randint(1024, 8192) + 1))
    for rel in picked[100:]:
        (root / rel).unlink()


class Moto:
    def __init__(self, workdir: Path) -> None:
        from tests.servers.process import free_port

        self.port = free_port()
        self.log_path = workdir / "moto.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - held for the server's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("moto did not start")
        self.warm()

    def warm(self) -> None:
        """One bucket, a PUT of 8 MiB and a listing before any tool runs: moto's S3 backend is
        set up on its first request (about a second), which would otherwise be charged to
        whichever tool goes first in repetition 0."""
        self.reset("warm")
        for method, path, body in (("PUT", "/warm/w", b"w" * (8 << 20)), ("GET", "/warm", None)):
            req = urllib.request.Request(self.url + path, data=body, method=method)
            urllib.request.urlopen(req, timeout=30).close()

    def warm_with(self, root: Path, keys: list[str]) -> None:
        """The large set PUT once, all at once, then dropped: moto's first pass of 512 MiB is
        slower than the next (its heap grows, its spool files are new), and repetition 0's
        first tool, always ``ours``, paid for it."""
        self.reset("warm")

        def put(rel: str) -> None:
            path = root / rel
            with open(path, "rb") as body:
                req = urllib.request.Request(
                    f"{self.url}/warm/{rel}", data=body, method="PUT",
                    headers={"Content-Length": str(path.stat().st_size),
                             "Content-Type": "application/octet-stream"},
                )
                urllib.request.urlopen(req, timeout=300).close()

        with ThreadPoolExecutor(len(keys)) as pool:
            list(pool.map(put, keys))

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset(self, bucket: str) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=30).close()
        req = urllib.request.Request(f"{self.url}/{bucket}", method="PUT")
        urllib.request.urlopen(req, timeout=30).close()

    def offset(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def requests(self, start: int) -> dict[str, int]:
        counts: Counter[str] = Counter()
        with open(self.log_path, "rb") as f:
            f.seek(start)
            for raw in f:
                m = _LINE.search(raw.decode("utf-8", "replace"))
                if m:
                    counts[_classify(m.group(1), m.group(2))] += 1
        return dict(sorted(counts.items()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _classify(method: str, target: str) -> str:
    path, _, query = target.partition("?")
    obj = path.strip("/").count("/") >= 1
    if method == "GET":
        if obj:
            return "GetObject"
        return "ListObjectsV2" if "list-type=2" in query else "ListObjects"
    if method == "PUT":
        return "PutObject/CopyObject" if obj else "CreateBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "HEAD":
        return "HeadObject" if obj else "HeadBucket"
    if method == "DELETE":
        return "DeleteObject" if obj else "DeleteBucket"
    return f"{method} other"


def check(moto: Moto, bucket: str, src: Path) -> str:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto.url, aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET, region_name="us-east-1")
    remote = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            remote[o["Key"]] = o["ETag"].strip('"')
    local = {}
    for dirpath, _d, files in os.walk(src):
        for name in files:
            full = os.path.join(dirpath, name)
            local[os.path.relpath(full, src)] = _etags(full)
    missing = sum(1 for k in local if k not in remote)
    extra = sum(1 for k in remote if k not in local)
    stale = sum(1 for k in local if k in remote and remote[k] not in local[k])
    return "ok" if not (missing or extra or stale) else (
        f"missing {missing}, extra {extra}, stale {stale}")


def _etags(path: str) -> set[str]:
    """The ETags the file may have in S3: its MD5, and the multipart form for part sizes the
    tools use (5, 8, 16, 32, 64 MiB)."""
    whole = hashlib.md5()
    parts: dict[int, list[bytes]] = {p: [] for p in (5, 8, 16, 32, 64)}
    current = {p: hashlib.md5() for p in parts}
    filled = dict.fromkeys(parts, 0)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            whole.update(chunk)
            for p in parts:
                current[p].update(chunk)
                filled[p] += len(chunk)
                if filled[p] == p * 1024 * 1024:
                    parts[p].append(current[p].digest())
                    current[p], filled[p] = hashlib.md5(), 0
    out = {whole.hexdigest()}
    for p, done in parts.items():
        digests = done + ([current[p].digest()] if filled[p] else [])
        out.add(hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}")
    return out


def run_tool(tool: str, phase: str, src: Path, bucket: str, moto: Moto, state: Path,
             env: dict[str, str]) -> dict[str, Any]:
    start_log, start_cpu = moto.offset(), moto.cpu()
    load = os.getloadavg()[0]
    run = run_measured(PEERS[tool](phase, src, bucket, moto.url, state), env)
    time.sleep(0.3)  # let moto flush its access log
    return {
        "tool": tool, "phase": phase, "wall": round(run.wall, 3), "load": round(load, 2),
        "at": time.strftime("%H:%M:%S", time.gmtime()), "exit": run.exit,
        "client_cpu": round(run.cpu, 2), "rss_mb": run.rss_mb, "rss_mb_wait4": run.rss_mb_wait4,
        "moto_cpu": round(moto.cpu() - start_cpu, 2),
        "requests": moto.requests(start_log),
        "check": check(moto, bucket, src),
        "tail": run.out.strip().splitlines()[-1:] if run.out.strip() else [],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--tools", default=",".join(PEERS))
    ap.add_argument("--size-mib", type=int, default=0,
                    help="files of this many MiB each instead of the 1-8 KB tree")
    ap.add_argument("--phases", default="initial,noop,changed")
    ap.add_argument("--apps", type=int, default=5, help="app folders the small tree spreads over")
    ap.add_argument("--out", default=str(HERE / "results" / "mirror.json"))
    args = ap.parse_args()
    tools = args.tools.split(",")
    phases = args.phases.split(",")
    if args.size_mib and "changed" in phases:
        ap.error("--size-mib: the changed phase needs the small tree")
    work = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
    moto = Moto(work)
    results: list[dict[str, Any]] = []
    env = peer_env(KEY, SECRET, moto.url)
    try:
        shared = work / "src-large"
        if args.size_mib:
            # read-only: one copy for all, on disk before anything is timed (no writeback of
            # it under repetition 0), and once through moto
            large = gen_large(shared, args.files, args.size_mib)
            os.sync()
            moto.warm_with(shared, large)
        for rep in range(args.reps):
            order = tools[rep % len(tools):] + tools[: rep % len(tools)]
            for tool in order:
                bucket = "bench"
                moto.reset(bucket)
                state = work / f"state-{tool}"
                shutil.rmtree(state, ignore_errors=True)
                if args.size_mib:
                    src, keys = shared, []
                else:
                    src = work / f"src-{tool}"
                    shutil.rmtree(src, ignore_errors=True)
                    keys = gen_tree(src, args.files, apps=args.apps)
                    os.sync()  # its writeback not under the pass
                for phase in phases:
                    if phase == "changed":
                        mutate(src, keys)
                    r = run_tool(tool, phase, src, bucket, moto, state, env)
                    r["rep"] = rep
                    results.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        moto.stop()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        shutil.rmtree(work, ignore_errors=True)
    print_table(results, tools)
    print()
    print_reps(results, tools, args.files * args.size_mib)
    return 0


def print_reps(results: list[dict[str, Any]], tools: list[str], mib: int) -> None:
    """Every repetition, in the order run, with the load average and (for the large set) the
    throughput; ratio = ours / the other tool's wall time in the same repetition."""
    rate = " MiB/s |" if mib else ""
    print(f"| rep | pass | tool (in the order run) | load | wall s |{rate} client CPU s | "
          "peak RSS MB | result | ours/other |")
    print("|---|---|---|---|---|" + ("---|" if mib else "") + "---|---|---|---|")
    for r in results:
        same = [x for x in results if x["rep"] == r["rep"] and x["phase"] == r["phase"]]
        ours = next((x["wall"] for x in same if x["tool"] == "ours"), None)
        ratio = f"{ours / r['wall']:.2f}" if ours and r["tool"] != "ours" else ""
        speed = f" {mib / r['wall']:.0f} |" if mib else ""
        print(f"| {r['rep']} | {r['phase']} | {r['tool']} | {r['load']:.1f} | "
              f"{r['wall']:.2f} |{speed} {r['client_cpu']:.2f} | {r['rss_mb']:.0f} | "
              f"{r['check']} | {ratio} |")


def print_table(results: list[dict[str, Any]], tools: list[str]) -> None:
    print("| tool | pass | wall s, median [min-max] | client CPU s | peak RSS MB | moto CPU s "
          "| requests (last rep) | result |")
    print("|---|---|---|---|---|---|---|---|")
    for tool in tools:
        for phase in ("initial", "noop", "changed"):
            rs = [r for r in results if r["tool"] == tool and r["phase"] == phase]
            if not rs:
                continue
            walls = [r["wall"] for r in rs]
            last = rs[-1]
            reqs = ", ".join(f"{k} {v}" for k, v in last["requests"].items())
            print(f"| {tool} | {phase} | {statistics.median(walls):.2f} "
                  f"[{min(walls):.2f}-{max(walls):.2f}] | "
                  f"{statistics.median(r['client_cpu'] for r in rs):.1f} | "
                  f"{max(r['rss_mb'] for r in rs):.0f} | "
                  f"{statistics.median(r['moto_cpu'] for r in rs):.1f} | {reqs} | "
                  f"{last['check']} |")


if __name__ == "__main__":
    sys.exit(main())
