"""Real ``celery -A worker worker`` processes (and watcher, beat, ``run``) for the live-sync tests.

A :class:`SyncWorld` is one test's host: an ``APP_ROOT_PATH``, a module store (a folder, or a
bucket-per-container on the moto S3 server), a ``STATE_DIR``, and the environment every process
of the test gets (``SYNCHRO__...`` variables, as a user would set them).  It starts the real
commands as subprocesses in their own sessions, waits for the line that says each is ready, and
stops them on teardown.  Each world has its own ``HOST_QUEUE`` and its own Redis database, so
tests sharing the session's redis-server never see each other's work.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.process import REPO, ServerProcess, wait_for
from tests.servers.redis_server import RedisServer
from worker.coord.redis import REDIS_PREFIX

_TMP_PREFIX = ".synchro-tmp-"
#: The ``synchro-sync`` command (the console script when installed).
CLI = [shutil.which("synchro-sync") or sys.executable, *(
    [] if shutil.which("synchro-sync") else ["-c", "from worker.cli import main; main()"]
)]
_db_counter = iter(range(1, 16))


@dataclass
class SyncWorld:
    """One test's host: folders, settings in the environment, and its processes."""

    base: Path
    env: dict[str, str]
    store_settings: dict[str, Any] | None = None
    procs: list[ServerProcess] = field(default_factory=list)
    ready: dict[str, str] = field(default_factory=dict)
    #: With a shared S3 server: the containers (buckets) that belong to this world.
    containers: set[str] | None = None
    _store: Any = None

    @property
    def root(self) -> Path:
        return Path(self.env["SYNCHRO__APP_ROOT_PATH"])

    @property
    def state(self) -> Path:
        return Path(self.env["SYNCHRO__STATE_DIR"])

    @property
    def mirror(self) -> Path:
        return self.base / "mirror"

    @property
    def host_queue(self) -> str:
        return self.env["SYNCHRO__HOST_QUEUE"]

    # --- processes --------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], ready: str, timeout: float = 30.0,
               env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(
            name, argv, healthy=lambda: False, env=env or self.env, cwd=str(self.base),
            workdir=self.base / "logs",
        )
        proc.workdir.mkdir(exist_ok=True)
        self.ready[name] = ready
        self.procs.append(proc)
        return self.restart(proc, timeout)

    def start_worker(self, name: str = "w1", concurrency: int = 2,
                     extra: tuple[str, ...] = ()) -> ServerProcess:
        """``celery -A worker worker``, exactly as a user runs it."""
        argv = [
            sys.executable, "-m", "celery", "-A", "worker", "worker", "-l", "INFO",
            "-n", f"{name}@%h", "-c", str(concurrency), "--without-mingle", "--without-gossip",
            *extra,
        ]
        return self._start(name, argv, "ready.")

    def start_watcher(self, name: str = "watch") -> ServerProcess:
        return self._start(name, [*CLI, "watch"], "synchro-sync: watching")

    def start_beat(self, name: str = "beat", ready: str = "beat lock taken") -> ServerProcess:
        return self._start(name, [*CLI, "beat"], ready)

    def start_run(self, name: str = "run") -> ServerProcess:
        """``synchro-sync run``: the embedded mode (the world's BROKER_URL is left out)."""
        env = {k: v for k, v in self.env.items() if k != "SYNCHRO__BROKER_URL"}
        return self._start(name, [*CLI, "run"], "synchro-sync: live:", timeout=60, env=env)

    def restart(self, proc: ServerProcess, timeout: float = 30.0) -> ServerProcess:
        """Start a (stopped) process; ready when its log says so once more."""
        needle = self.ready[proc.name]
        count = _count(proc, needle)
        proc.healthy = lambda: _count(proc, needle) > count
        return proc.start(timeout)

    def stop_all(self) -> None:
        """Stop every process at once (each gets SIGTERM, then SIGKILL after 10 s)."""
        stoppers = [threading.Thread(target=p.stop, args=(10,)) for p in self.procs]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if self._store is not None:
            self._store.close()
            self._store = None

    def logs(self) -> str:
        """Each process's last lines, after its last warnings, errors and (re)connections
        (which the last lines of a busy log would not show)."""
        return "\n".join(f"--- {p.name} (notable)\n{_notable(p)}\n--- {p.name}\n{p.tail(40)}"
                         for p in self.procs)

    # --- the two sides ----------------------------------------------------------------------

    def local_files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for container in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in container.rglob("*"):
                if path.is_file():
                    rel = path.relative_to(container).as_posix()
                    try:
                        out[f"{container.name}/{rel}"] = path.read_bytes()
                    except FileNotFoundError:
                        continue
        return out

    def store_files(self) -> dict[str, bytes]:
        """Every object in the module store, read through the store's API."""
        if self.store_settings is None:  # a folder: read it directly (faster, same thing)
            out: dict[str, bytes] = {}
            if not self.mirror.is_dir():
                return out
            for path in self.mirror.rglob("*"):
                if path.is_file() and not path.name.startswith(_TMP_PREFIX):
                    try:
                        out[path.relative_to(self.mirror).as_posix()] = path.read_bytes()
                    except FileNotFoundError:
                        continue
            return out
        store = self.store()
        out = {}
        for container in store.containers():
            if self.containers is not None and container not in self.containers:
                continue  # other tests' buckets on the shared S3 server
            for info in store.list(container):
                out[f"{container}/{info.key}"] = store.read_bytes(container, info.key)
        return out

    def read_store(self, relpath: str) -> bytes | None:
        """One object (``container/key``), None when absent."""
        if self.store_settings is None:
            try:
                return (self.mirror / relpath).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
        from worker.errors import NotFound

        container, key = relpath.split("/", 1)
        try:
            return bytes(self.store().read_bytes(container, key))
        except NotFound:
            return None

    def store(self) -> Any:
        """The world's module store, opened once (closed by :meth:`stop_all`)."""
        if self._store is None:
            from worker.config import load_settings
            from worker.stores.modules import open_module_store

            self._store = open_module_store(load_settings(environ=self.env))
        return self._store

    def broker_held(self) -> tuple[dict[str, int], int]:
        """What the world's Redis broker holds: each queue's length (Redis drops an emptied
        list) and how many messages sit in the ``unacked`` hash, where Kombu keeps each message
        a worker took until the task is done."""
        import redis

        client = redis.Redis.from_url(self.env["SYNCHRO__BROKER_URL"], socket_timeout=5)
        try:
            # Lists of our own (the status records' capped retry and failure lists, written
            # when a store call was retried) are not queues: they stay after the work is done.
            queues = {k.decode(): client.llen(k) for k in client.scan_iter(count=1000)
                      if client.type(k) == b"list" and not k.startswith(OWN_PREFIX)}
            return queues, client.hlen("unacked")
        finally:
            client.close()

    def broker_idle(self) -> bool:
        """No task of this world waits in its broker or runs unacknowledged."""
        queues, unacked = self.broker_held()
        return not queues and not unacked

    def broker_state(self) -> str:
        """:meth:`broker_held` for a failure's message (tells a stalled consumer from lost
        work)."""
        if not self.env.get("SYNCHRO__BROKER_URL"):
            return "none (embedded)"
        import redis

        try:
            queues, unacked = self.broker_held()
        except redis.RedisError as exc:
            return f"unreachable ({exc})"
        return f"queues {queues}, unacked {unacked}"

    def wait_idle(self, timeout: float) -> float:
        """Seconds until :meth:`broker_idle`: every task sent so far has run to its end."""
        return wait_for(self.broker_idle, timeout, "the broker idle (no task queued or running)",
                        interval=0.05,
                        details=lambda: f"broker: {self.broker_state()}\n{self.logs()}")

    def wait_equal(self, timeout: float) -> float:
        """Seconds until the store equals the folder; fails with the difference and logs."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            local, remote = self.local_files(), self.store_files()
            if local == remote:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                missing = sorted(set(local) - set(remote))[:10]
                extra = sorted(set(remote) - set(local))[:10]
                differ = sorted(k for k in set(local) & set(remote) if local[k] != remote[k])[:10]
                pytest.fail(
                    f"store != folder after {timeout}s: missing {missing}, extra {extra}, "
                    f"different {differ}\nbroker: {self.broker_state()}\n{self.logs()}"
                )
            time.sleep(0.1)  # poll interval


OWN_PREFIX = REDIS_PREFIX.encode()

_NOTABLE = ("WARNING", "ERROR", "CRITICAL", "Connected to", "Traceback", "Error:")


def _notable(proc: ServerProcess, lines: int = 20) -> str:
    try:
        text = proc.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([ln for ln in text.splitlines() if any(n in ln for n in _NOTABLE)][-lines:])


def _count(proc: ServerProcess, needle: str) -> int:
    try:
        return proc.log_path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


def make_world(
    base: Path, broker_url: str | None, store_settings: dict[str, Any] | None = None,
    **settings: str,
) -> SyncWorld:
    """The environment of one test's processes (the settings a user would export)."""
    (base / "apps").mkdir(parents=True, exist_ok=True)
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SYNCHRO_CONFIG": str(base / "no-config.json"),
        "SYNCHRO__APP_ROOT_PATH": str(base / "apps"),
        "SYNCHRO__STATE_DIR": str(base / "state"),
        "SYNCHRO__HOST_QUEUE": f"files.test-{uuid.uuid4().hex[:8]}",
        "SYNCHRO__LOG_LEVEL": "INFO",
        "SYNCHRO__SYNC__debounce": "0.05",
    }
    (base / "no-config.json").write_text("{}")
    if broker_url:
        env["SYNCHRO__BROKER_URL"] = broker_url
    if store_settings is None:
        env["SYNCHRO__MODULESTORE__directory"] = str(base / "mirror")
    else:
        env["SYNCHRO__MODULESTORE_SERVICE"] = "PkgCloudModuleStore"
        for key, value in store_settings.items():
            env[f"SYNCHRO__MODULESTORE__{key}"] = str(value)
    for key, value in settings.items():
        env[f"SYNCHRO__{key}"] = value
    return SyncWorld(base, env, store_settings)


def redis_db_url(redis: RedisServer) -> str:
    """A fresh database of the session's redis-server for one test."""
    db = next(_db_counter, None)
    if db is None:  # more tests than databases: reuse one, flushed
        db = 15
    redis.client(db).flushdb()
    return redis.url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture()
def sync_world(tmp_path: Path) -> Iterator[Callable[..., SyncWorld]]:
    """Make worlds (``sync_world(broker_url, store_settings=None, **settings)``); stop them all."""
    worlds: list[SyncWorld] = []

    def make(broker_url: str | None, store_settings: dict[str, Any] | None = None,
             **settings: str) -> SyncWorld:
        world = make_world(tmp_path / f"world{len(worlds)}", broker_url, store_settings,
                           **settings)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop_all()
    if not os.environ.get("SYNCHRO_TEST_KEEP"):  # keep logs and folders for a post-mortem
        for world in worlds:
            shutil.rmtree(world.base, ignore_errors=True)
