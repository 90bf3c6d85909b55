"""Bursts through the live path: N new small files appearing at once (an unpacked release, a
branch checkout), against one full pass over the same files (see docs/benchmarks.md, Live sync).

    python bench/bench_burst.py [--files 10000] [--reps 2] [--modes run-folder,run-s3,watch-s3]

Modes (each paired with its full pass, ``synchro-sync sync`` into an empty store of the same
kind):

* ``run-folder``: ``synchro-sync run`` (embedded), a ``FileModuleStore`` folder;
* ``run-s3``: ``synchro-sync run``, the store on a moto S3 server;
* ``watch-s3``: ``synchro-sync watch`` + ``celery -A worker worker -c 2`` on a private
  redis-server, the store on moto S3.

Method, per mode and repetition: the live contender is started on five empty app folders and an
empty store, and measured once it is live (its start-up full pass done).  Then the benchmark
writes the tree of N files of 1-8 KB (``bench_mirror``'s seeded tree: 5 apps, 100 new
sub-folders each, fixed old mtimes as ``tar`` sets them) as fast as it can, and measures from the
first write until the store holds every file with its content: a folder store is checked file by
file (bytes equal to the source), an S3 store by following moto's access log until every key
has been PUT, then by one listing compared with the tree by key and MD5.  The full pass is the
CLI run over the same tree already on disk, empty state, empty store, timed from its start to
its exit, checked the same way.  Who goes first alternates: repetition r runs live first when r
is even, the full pass first when it is odd.

Reported for every run: wall time, the one-minute load average just before it, CPU of the
contender's processes (the whole process group: the celery pool children included), store
requests counted in moto's access log from the first write until the store has been quiet for
a second (per file, and by kind), and the ratio live / full pass of the same repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.bench_latency import Target  # noqa: E402
from bench.bench_mirror import _LINE, KEY, SECRET, Moto, check, gen_tree  # noqa: E402
from bench.peers_cmd import ours_exe  # noqa: E402

APPS = [f"app{i}" for i in range(1, 6)]  # gen_tree's apps
BUCKET = "bench"
CLI = [ours_exe()]
BASELINE = {"run-folder": "sync-folder", "run-s3": "sync-s3", "watch-s3": "sync-s3"}


# --- settings --------------------------------------------------------------------------------


def env_for(base: Path, kind: str, moto: Moto | None) -> dict[str, str]:
    """The contender's settings (a user's defaults but for where things are)."""
    cfg = base / "config.json"
    cfg.write_text("{}")
    env = {
        "PYTHONPATH": str(REPO),
        "SYNCHRO_CONFIG": str(cfg),
        "SYNCHRO__APP_ROOT_PATH": str(base / "apps"),
        "SYNCHRO__STATE_DIR": str(base / "state"),
    }
    if kind == "folder":
        env["SYNCHRO__MODULESTORE__directory"] = str(base / "mirror")
    else:
        assert moto is not None
        env["SYNCHRO__MODULESTORE_SERVICE"] = "PkgCloudModuleStore"
        env["SYNCHRO__MODULESTORE"] = json.dumps({
            "provider": "amazon", "endpoint": moto.url, "keyId": KEY, "key": SECRET,
            "region": "us-east-1", "bucket": BUCKET,
        })
    return env


def store_kind(mode: str) -> str:
    return "folder" if mode.endswith("folder") else "s3"


# --- measuring -------------------------------------------------------------------------------


def group_cpu(pgids: list[int]) -> float:
    """CPU seconds of every live process in these process groups."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def keys_of(root: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


class FolderWait:
    """Until every source file is in the mirror folder with the same bytes."""

    def __init__(self, src: Path, mirror: Path, keys: list[str]) -> None:
        self.src, self.mirror = src, mirror
        self.left = set(keys)

    def poll(self) -> bool:
        for key in list(self.left):
            try:
                got = (self.mirror / key).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                continue
            if got == (self.src / key).read_bytes():
                self.left.discard(key)
        return not self.left


class S3Wait:
    """Until moto's access log shows a successful PUT of every key (then checked by listing)."""

    def __init__(self, moto: Moto, keys: list[str], start: int) -> None:
        self.moto = moto
        self.left = {f"/{BUCKET}/{k}" for k in keys}
        self.offset = start

    def poll(self) -> bool:
        self.moto.log.flush()
        with open(self.moto.log_path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        for raw in data[:cut].splitlines():
            m = _LINE.search(raw.decode("utf-8", "replace"))
            if m and m.group(1) == "PUT" and m.group(3) == "200":
                self.left.discard(m.group(2).partition("?")[0])
        return not self.left


def quiet_requests(moto: Moto, start: int, quiet: float = 1.0) -> dict[str, int]:
    """Requests since ``start``, once the store has had none for ``quiet`` seconds."""
    size = moto.offset()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = moto.offset()
        if now == size:
            break
        size = now
    counts: Counter[str] = Counter(moto.requests(start))
    return dict(sorted(counts.items()))


def folder_result(src: Path, mirror: Path) -> str:
    keys = keys_of(src)
    have = set(keys_of(mirror)) if mirror.is_dir() else set()
    missing = [k for k in keys if k not in have]
    stale = [k for k in keys if k in have and (mirror / k).read_bytes() != (src / k).read_bytes()]
    extra = have - set(keys)
    return "ok" if not (missing or stale or extra) else (
        f"missing {len(missing)}, stale {len(stale)}, extra {len(extra)}")


def uploads_logged(logs: list[Path]) -> int:
    """Files our processes logged as uploaded (one INFO line per synced path or a pass's sum)."""
    n = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if "synced in" in line and ": uploaded" in line:
                n += 1
    return n


# --- contenders ------------------------------------------------------------------------------


#: Where every contender's folders are made, and kept until the end of the run: on these
#: machines' ext4 (no journal) creating files within minutes of a mass delete is 2-5x slower,
#: which deleting each contender's 20,000 files charged to the next one (the writer included).
KEEP: list[Path] = []


def fresh(mode: str, moto: Moto | None) -> tuple[Path, dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix=f"bench-burst-{mode}-", dir=KEEP[0] if KEEP else None))
    (base / "logs").mkdir()
    for app in APPS:
        (base / "apps" / app).mkdir(parents=True)
    if moto is not None:
        moto.reset(BUCKET)
    return base, env_for(base, store_kind(mode), moto)


def run_live(mode: str, files: int, moto: Moto | None, redis_url: str | None) -> dict[str, Any]:
    base, env = fresh(mode, moto)
    target = Target(mode, base)
    try:
        if mode.startswith("run-"):
            target.spawn("run", [*CLI, "run"], "synchro-sync: live:", env, timeout=120)
        else:
            assert redis_url is not None
            env["SYNCHRO__BROKER_URL"] = redis_url
            env["SYNCHRO__HOST_QUEUE"] = f"files.burst-{uuid.uuid4().hex[:6]}"
            worker = target.spawn(
                "worker", [sys.executable, "-m", "celery", "-A", "worker", "worker", "-l", "INFO",
                           "-c", "2", "--without-mingle", "--without-gossip"], "ready.", env)
            target.spawn("watch", [*CLI, "watch"], "synchro-sync: watching", env)
            wait_passes_done(worker.log_path)
        time.sleep(1.0)  # the start-up pass's last log lines; nothing of the burst yet
        pgids = [p.proc.pid for p in target.procs if p.proc is not None]
        start_log = moto.offset() if moto else 0
        load = os.getloadavg()[0]
        cpu0 = group_cpu(pgids)
        t0 = time.monotonic()
        keys = gen_tree(base / "apps", files)
        wrote = time.monotonic() - t0
        waiter: FolderWait | S3Wait = (
            FolderWait(base / "apps", base / "mirror", keys) if moto is None
            else S3Wait(moto, keys, start_log))
        deadline = t0 + 1800
        while not waiter.poll():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: {len(waiter.left)} files never arrived")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        requests = quiet_requests(moto, start_log) if moto else {}
        cpu = group_cpu(pgids) - cpu0
        result = folder_result(base / "apps", base / "mirror") if moto is None else check(
            moto, BUCKET, base / "apps")
        logs = [p.log_path for p in target.procs]
        return row(mode, files, wall, load, cpu, requests, result, uploads_logged(logs),
                   wrote=round(wrote, 2))
    finally:
        target.stop()


def wait_passes_done(log: Path, timeout: float = 120) -> None:
    """Every full pass the worker received has finished (the worker's and the watcher's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        got = text.count("Task tasks.full_pass[")
        received = sum(1 for line in text.splitlines()
                       if "Task tasks.full_pass[" in line and "received" in line)
        if received >= 1 and got >= 2 * received:
            return
        time.sleep(0.1)
    raise RuntimeError("the start-up full pass did not finish")


def run_pass(mode: str, files: int, moto: Moto | None) -> dict[str, Any]:
    name = BASELINE[mode]
    base, env = fresh(name, moto)
    gen_tree(base / "apps", files)
    start_log = moto.offset() if moto else 0
    load = os.getloadavg()[0]
    with open(base / "logs" / "sync.log", "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([*CLI, "sync"], env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, cwd=base)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{name}: sync failed:\n{(base / 'logs' / 'sync.log').read_text()}")
    requests = quiet_requests(moto, start_log) if moto else {}
    result = folder_result(base / "apps", base / "mirror") if moto is None else check(
        moto, BUCKET, base / "apps")
    return row(name, files, wall, load, usage.ru_utime + usage.ru_stime, requests, result,
               files)


def row(name: str, files: int, wall: float, load: float, cpu: float, requests: dict[str, int],
        result: str, uploads: int, **extra: Any) -> dict[str, Any]:
    total = sum(requests.values())
    return {
        "contender": name, "files": files, "wall": round(wall, 2), "load": round(load, 2),
        "cpu": round(cpu, 2), "requests": requests,
        "per_file": round(total / files, 3) if requests else None,
        "uploads": uploads, "result": result, "at": time.strftime("%H:%M:%S", time.gmtime()),
        **extra,
    }


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--modes", default="run-folder,run-s3,watch-s3")
    ap.add_argument("--json", help="write every row to this file too")
    args = ap.parse_args()
    modes = args.modes.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    KEEP.append(work)  # every contender's folders under it, removed at the end
    moto = Moto(work) if any(store_kind(m) == "s3" for m in modes) else None
    redis = None
    if any(m.startswith("watch") for m in modes):
        from tests.servers.redis_server import start_redis

        redis = start_redis(password=None)
    rows: list[dict[str, Any]] = []
    try:
        for rep in range(args.reps):
            for mode in modes:
                live_first = rep % 2 == 0
                pair: dict[str, dict[str, Any]] = {}
                for which in ("live", "pass") if live_first else ("pass", "live"):
                    s3 = moto if store_kind(mode) == "s3" else None
                    pair[which] = (
                        run_live(mode, args.files, s3, redis.url if redis else None)
                        if which == "live" else run_pass(mode, args.files, s3))
                    pair[which].update(rep=rep, pair=mode, first=live_first == (which == "live"))
                    print(json.dumps(pair[which]), flush=True)
                pair["live"]["ratio"] = round(pair["live"]["wall"] / pair["pass"]["wall"], 2)
                rows += [pair["live"], pair["pass"]] if live_first else [pair["pass"], pair["live"]]
    finally:
        if redis is not None:
            redis.server.cleanup()
        if moto is not None:
            moto.stop()
        shutil.rmtree(work, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print_table(rows)
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| rep | contender (in the order run) | load | wall s | CPU s | requests per file "
          "(by kind) | uploads | result | live / pass |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in r["requests"].items())
        per = f"{r['per_file']:.3f} ({kinds})" if r["per_file"] is not None else "n/a"
        print(f"| {r['rep']} | {r['contender']} | {r['load']:.1f} | {r['wall']:.2f} | "
              f"{r['cpu']:.1f} | {per} | {r['uploads']} | {r['result']} | "
              f"{r.get('ratio', '')} |")


if __name__ == "__main__":
    sys.exit(main())
