"""Save-to-visible latency of the live sync, embedded and distributed, against lsyncd in the
same run (see docs/benchmarks.md, section Live sync).

    python bench/bench_latency.py [--saves 200] [--interval 0.1] [--modes embedded,...] [--reps 1]

Modes: ``embedded`` (``synchro-sync run``, folder store, the default debounce), ``embedded-d0``
(debounce 0), ``redis-moto`` (``synchro-sync watch`` + ``celery -A worker worker -c 2`` on a
private redis-server, the store on a moto S3 server), ``redis-moto-d0``, and the peer, lsyncd
(when ``lsyncd`` is installed; skipped otherwise): ``lsyncd-direct`` and ``lsyncd-rsync`` at
lsyncd's own default delay (``default.direct`` 1 s, ``default.rsync`` 15 s), and
``lsyncd-direct-d0.1``, ``default.direct`` with ``delay = 0.1``: the same delay as our
``SYNC.debounce`` default, so that row compares like with like.

Method: 20 files in one app, mirrored before measuring.  SAVES saves are made at a steady pace
(one every INTERVAL seconds, so each file is saved every 20 x INTERVAL seconds), each writing
``save K`` plus padding.  A monitor thread reads the store continuously; save K is visible when
the store holds save K of its file or a later save of the same file (a later save supersedes
it: the last save wins).  Latency = visible time - the time the save's ``close()`` returned.
With ``--reps R`` the modes run R times, repetition r in the given order rotated by r (so who
goes first alternates); every repetition is printed with the one-minute load average taken just
before its saves began.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers_cmd import ours_exe  # noqa: E402
from tests.servers.process import ServerProcess  # noqa: E402

FILES = 20
APP = "bench"
CLI = [ours_exe()]


def _log_has(proc: ServerProcess, needle: str) -> Callable[[], bool]:
    return lambda: needle in proc.log_path.read_text(errors="replace")


@dataclass
class Target:
    """One contender: how to start it and how to read the store it writes."""

    name: str
    base: Path
    procs: list[ServerProcess] = field(default_factory=list)
    reader: Callable[[str], bytes | None] | None = None

    @property
    def root(self) -> Path:
        return self.base / "apps"

    def read(self, key: str) -> bytes | None:
        assert self.reader is not None
        return self.reader(key)

    def spawn(self, name: str, argv: list[str], ready: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> ServerProcess:
        if env and "SYNCHRO__METRICS__port" in env:  # each process its own metrics port
            from tests.servers.process import free_port

            env = {**env, "SYNCHRO__METRICS__port": str(free_port())}
        proc = ServerProcess(name, argv, healthy=lambda: False, env=env, cwd=str(self.base),
                             workdir=self.base / "logs")
        proc.workdir.mkdir(exist_ok=True)
        proc.healthy = _log_has(proc, ready)
        self.procs.append(proc)
        return proc.start(timeout)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def folder_reader(mirror: Path) -> Callable[[str], bytes | None]:
    def read(key: str) -> bytes | None:
        try:
            return (mirror / APP / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    return read


def base_env(target: Target, debounce: float | None) -> dict[str, str]:
    cfg = target.base / "config.json"
    cfg.write_text("{}")
    env = {
        "PYTHONPATH": str(REPO),
        "SYNCHRO_CONFIG": str(cfg),
        "SYNCHRO__APP_ROOT_PATH": str(target.root),
        "SYNCHRO__STATE_DIR": str(target.base / "state"),
        "SYNCHRO__LOG_LEVEL": "WARNING",
    }
    if debounce is not None:
        env["SYNCHRO__SYNC__debounce"] = str(debounce)
    return {**env, **MODE_ENV}


def start_embedded(target: Target, debounce: float | None) -> None:
    env = base_env(target, debounce)
    env["SYNCHRO__MODULESTORE__directory"] = str(target.base / "mirror")
    target.spawn("run", [*CLI, "run"], "synchro-sync: live:", env)
    target.reader = folder_reader(target.base / "mirror")


def start_distributed(target: Target, debounce: float | None, servers: dict[str, Any]) -> None:
    s3 = servers["s3"]
    s3.reset()  # an empty S3 for each mode
    env = base_env(target, debounce)
    env.update({
        "SYNCHRO__BROKER_URL": servers["redis"].url,
        "SYNCHRO__HOST_QUEUE": f"files.bench-{uuid.uuid4().hex[:6]}",
        "SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
        **{f"SYNCHRO__MODULESTORE__{k}": str(v) for k, v in s3.settings().items()},
    })
    target.spawn("worker", [sys.executable, "-m", "celery", "-A", "worker", "worker", "-l",
                            "INFO", "-c", "2", "--without-mingle", "--without-gossip"],
                 "ready.", env)
    target.spawn("watch", [*CLI, "watch"], "synchro-sync: watching", env)
    client = s3.client()

    def read(key: str) -> bytes | None:
        try:
            return bytes(client.get_object(Bucket=APP, Key=key)["Body"].read())
        except (client.exceptions.NoSuchKey, client.exceptions.NoSuchBucket):
            return None

    target.reader = read


def start_lsyncd(target: Target, mode: str, delay: float | None) -> None:
    """lsyncd ``default.<mode>`` into a folder; ``delay`` None keeps lsyncd's own default."""
    mirror = target.base / "mirror"
    mirror.mkdir()
    conf = target.base / "lsyncd.lua"
    log, status = target.base / "lsyncd.log", target.base / "lsyncd.status"
    conf.write_text(
        f"settings {{ nodaemon = true, logfile = '{log}', statusFile = '{status}' }}\n"
        f"sync {{ default.{mode}, source = '{target.root}', target = '{mirror}'"
        + (f", delay = {delay}" if delay is not None else "")
        + " }\n"
    )
    target.spawn("lsyncd", ["lsyncd", str(conf)], "", None)
    target.reader = folder_reader(mirror)


@dataclass
class Result:
    mode: str
    latencies: list[float]
    missing: int
    load: float = 0.0

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        if not lat:
            return {"mode": self.mode, "saves": 0, "missing": self.missing, "load": self.load}

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

        return {
            "mode": self.mode, "saves": len(lat), "missing": self.missing,
            "p50_ms": round(pct(50) * 1000, 1), "p90_ms": round(pct(90) * 1000, 1),
            "p99_ms": round(pct(99) * 1000, 1), "max_ms": round(lat[-1] * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1), "load": self.load,
        }


def measure(target: Target, saves: int, interval: float, tail: float) -> Result:
    pending: dict[int, tuple[str, float]] = {}
    visible: dict[int, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set():
            with lock:
                files = sorted({f for f, _ in pending.values()})
            if not files:
                time.sleep(0.0005)
                continue
            for name in files:
                data = target.read(name)
                now = time.monotonic()
                if not data or not data.startswith(b"save "):
                    continue
                k_seen = int(data.split()[1])
                with lock:
                    for k, (f, _) in list(pending.items()):
                        if f == name and k <= k_seen:
                            visible[k] = now
                            del pending[k]

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    written: dict[int, float] = {}
    load = round(os.getloadavg()[0], 2)
    start = time.monotonic() + 0.5
    for k in range(saves):
        delay = start + k * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = f"f{k % FILES}.js"
        with open(target.root / APP / name, "w") as f:
            f.write(f"save {k} " + "x" * 1024 + "\n")
        t = time.monotonic()
        written[k] = t
        with lock:
            pending[k] = (name, t)
    deadline = time.monotonic() + tail
    while time.monotonic() < deadline:
        with lock:
            if not pending:
                break
        time.sleep(0.05)
    done.set()
    thread.join()
    lat = [visible[k] - written[k] for k in sorted(visible)]
    return Result(target.name, lat, saves - len(visible), load)


def prepare_tree(target: Target) -> None:
    (target.root / APP).mkdir(parents=True)
    for n in range(FILES):
        (target.root / APP / f"f{n}.js").write_text("save -1 initial\n")


def wait_initial(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for n in range(FILES):
        while target.read(f"f{n}.js") is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: the initial files never appeared")
            time.sleep(0.05)


#: Settings of the mode's ``+`` flags: ``+metrics`` (METRICS.port on, each process its own),
#: ``+noevents`` (METRICS.taskEvents false), e.g. ``embedded+metrics``, ``redis-moto+noevents``.
MODE_FLAGS = {"metrics": {"SYNCHRO__METRICS__port": "0"},
              "noevents": {"SYNCHRO__METRICS__taskEvents": "false"}}
MODE_ENV: dict[str, str] = {}


def run_mode(mode: str, saves: int, interval: float, servers: dict[str, Any]) -> Result:
    label = mode
    mode, *flags = mode.split("+")
    MODE_ENV.clear()
    for flag in flags:
        MODE_ENV.update(MODE_FLAGS[flag])
    base = Path(tempfile.mkdtemp(prefix=f"bench-latency-{mode}-"))
    target = Target(label, base)
    prepare_tree(target)
    tail = 10.0
    try:
        if mode == "embedded":
            start_embedded(target, None)
        elif mode == "embedded-d0":
            start_embedded(target, 0.0)
        elif mode == "redis-moto":
            start_distributed(target, None, servers)
        elif mode == "redis-moto-d0":
            start_distributed(target, 0.0, servers)
        elif mode in ("lsyncd-direct", "lsyncd-rsync"):
            start_lsyncd(target, mode.split("-")[1], None)
            tail = 40.0
        elif mode.startswith("lsyncd-direct-d"):
            start_lsyncd(target, "direct", float(mode.removeprefix("lsyncd-direct-d")))
            tail = 40.0
        else:
            raise SystemExit(f"unknown mode {mode}")
        wait_initial(target, 60)
        time.sleep(0.5)
        return measure(target, saves, interval, tail)
    finally:
        target.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument(
        "--modes",
        default="embedded,embedded-d0,redis-moto,redis-moto-d0,lsyncd-direct-d0.1,"
                "lsyncd-direct,lsyncd-rsync",
    )
    parser.add_argument("--reps", type=int, default=1,
                        help="repetitions; repetition r runs the modes rotated by r")
    parser.add_argument("--json", help="Write the results to this file too.")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not shutil.which("lsyncd"):
        modes = [m for m in modes if not m.startswith("lsyncd")]
        print("lsyncd not installed: the peer is skipped", file=sys.stderr)
    servers: dict[str, Any] = {}
    if any(m.startswith("redis") for m in modes):
        from tests.servers.redis_server import start_redis
        from tests.servers.s3_server import start_s3

        servers = {"redis": start_redis(password=None), "s3": start_s3()}
    rows = []
    try:
        for rep in range(args.reps):
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]
            for mode in order:
                row = {"rep": rep, **run_mode(mode, args.saves, args.interval, servers).row()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for srv in servers.values():
            srv.server.cleanup()
    print("\n| rep | mode (in the order run) | load | saves | p50 | p90 | p99 | max | not seen |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rep']} | {r['mode']} | {r['load']:.1f} | {r['saves']} | {r.get('p50_ms')} ms"
              f" | {r.get('p90_ms')} ms | {r.get('p99_ms')} ms | {r.get('max_ms')} ms | "
              f"{r['missing']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
