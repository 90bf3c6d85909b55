"""The Procfile, run with honcho against a private redis-server: a save is mirrored."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from tests.servers.celery_worker import SyncWorld, redis_db_url
from tests.servers.process import REPO, ServerProcess, wait_for
from tests.servers.redis_server import RedisServer


def test_procfile_names_the_three_processes() -> None:
    entries = dict(
        line.split(":", 1) for line in (REPO / "Procfile").read_text().splitlines() if line
    )
    assert {k: v.split()[:2] for k, v in entries.items()} == {
        "watcher": ["synchro-sync", "watch"],
        "worker": ["synchro-sync", "worker"],
        "beat": ["synchro-sync", "beat"],
    }


def test_procfile_with_honcho_mirrors_a_save(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    honcho = shutil.which("honcho")
    if honcho is None:
        pytest.fail("honcho is not installed (it is in the test extras)")
    world = sync_world(redis_db_url(redis_server))
    (world.root / "app1").mkdir()
    (world.root / "app1" / "old.js").write_text("there before")
    argv = [honcho, "-f", str(REPO / "Procfile"), "-d", str(world.base), "start"]
    proc = ServerProcess("honcho", argv, healthy=lambda: False, env=world.env,
                         cwd=str(world.base), workdir=world.base / "logs")
    (world.base / "logs").mkdir(exist_ok=True)

    def all_up() -> bool:
        text = proc.log_path.read_text(errors="replace")
        return all(s in text for s in ("synchro-sync: watching", "ready.", "beat lock taken"))

    proc.healthy = all_up
    world.procs.append(proc)
    proc.start(60)
    world.wait_equal(10)  # the start-up pass
    (world.root / "app1" / "index.js").write_text("saved while honcho runs")
    wait_for(lambda: world.read_store("app1/index.js") == b"saved while honcho runs", 2.0,
             "the save mirrored within 2 s", details=proc.tail)
    # The worker's log line (through honcho) names the container and the path.
    wait_for(lambda: "container=app1 path=index.js" in proc.log_path.read_text(errors="replace"),
             5, "the worker's line for app1/index.js", details=proc.tail)
    proc.stop()
