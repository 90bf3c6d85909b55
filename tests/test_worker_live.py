"""A save is in the store within 2 s: edit, new file, new folder with files, rename, delete,
editor-style saves.  Against real processes: ``synchro-sync watch`` + ``celery -A worker worker``
on a private Redis with a folder store and with moto S3, and ``synchro-sync run`` (embedded)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable

import pytest

from tests.servers.celery_worker import SyncWorld, redis_db_url
from tests.servers.process import wait_for
from tests.servers.redis_server import RedisServer
from tests.servers.s3_server import S3Server

LIMIT = 2.0


def wait_store(world: SyncWorld, relpath: str, expected: bytes | None, limit: float = LIMIT
               ) -> float:
    """Seconds until ``relpath`` in the store is ``expected`` (None: absent); fail after limit."""
    started = time.monotonic()
    while True:
        got = world.read_store(relpath)
        elapsed = time.monotonic() - started
        if got == expected:
            return elapsed
        if elapsed > limit:
            pytest.fail(
                f"{relpath}: store has {got!r:.60}, expected {expected!r:.60} after {limit}s\n"
                f"{world.logs()}"
            )
        time.sleep(0.02)  # poll interval


def scenario(world: SyncWorld, app: str) -> dict[str, float]:
    """Every kind of save, each checked within LIMIT; returns the seconds each took."""
    root = world.root / app
    took: dict[str, float] = {}

    (root / "main.js").write_text("v2 edited")
    took["edit"] = wait_store(world, f"{app}/main.js", b"v2 edited")

    (root / "new.js").write_text("a new file")
    took["new file"] = wait_store(world, f"{app}/new.js", b"a new file")

    # A folder that already holds files when it appears (moved in from outside the root).
    outside = world.base / "outside" / "lib"
    (outside / "deep").mkdir(parents=True)
    (outside / "x.js").write_text("x")
    (outside / "deep" / "y.js").write_text("y")
    shutil.move(str(outside), str(root / "lib"))
    took["new folder"] = max(
        wait_store(world, f"{app}/lib/x.js", b"x"), wait_store(world, f"{app}/lib/deep/y.js", b"y")
    )
    (root / "made").mkdir()
    (root / "made" / "z.js").write_text("z")
    took["mkdir+write"] = wait_store(world, f"{app}/made/z.js", b"z")

    os.rename(root / "new.js", root / "renamed.js")
    took["rename"] = max(
        wait_store(world, f"{app}/renamed.js", b"a new file"),
        wait_store(world, f"{app}/new.js", None),
    )

    (root / "renamed.js").unlink()
    took["delete"] = wait_store(world, f"{app}/renamed.js", None)

    # Atomic save (VS Code, JetBrains, most tools): a temp file renamed over the target.
    tmp = root / ".main.js.tmp-1234"
    tmp.write_text("v3 atomic")
    os.replace(tmp, root / "main.js")
    took["atomic save"] = wait_store(world, f"{app}/main.js", b"v3 atomic")

    # vim: probe file 4913, rename the original to a backup, write anew, remove the backup.
    probe = root / "4913"
    probe.write_text("")
    probe.unlink()
    os.rename(root / "main.js", root / "main.js~")
    (root / "main.js").write_text("v4 vim")
    (root / "main.js~").unlink()
    took["vim save"] = wait_store(world, f"{app}/main.js", b"v4 vim")

    world.wait_equal(LIMIT)  # no probe, backup or temp file left in the store
    return took


def _prepare(world: SyncWorld, app: str) -> None:
    (world.root / app).mkdir(parents=True)
    (world.root / app / "main.js").write_text("v1")


def _run_distributed(world: SyncWorld, app: str) -> dict[str, float]:
    _prepare(world, app)
    world.start_worker("w1")
    world.start_watcher()
    wait_store(world, f"{app}/main.js", b"v1", limit=15)  # the watcher's start-up pass
    return scenario(world, app)


def test_saves_visible_within_2s_redis_folder_store(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    world = sync_world(redis_db_url(redis_server))
    took = _run_distributed(world, "app1")
    assert max(took.values()) <= LIMIT
    # The worker's log lines carry the container and the path.
    log = (world.base / "logs" / "w1.log").read_text()
    assert "container=app1 path=main.js" in log
    assert "container=app1 path=lib" in log


def test_saves_visible_within_2s_redis_s3_store(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer, s3_server: S3Server
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"  # a bucket of its own on the shared moto server
    world = sync_world(redis_db_url(redis_server), store_settings=s3_server.settings())
    world.containers = {app}
    took = _run_distributed(world, app)
    assert max(took.values()) <= LIMIT


def test_saves_visible_within_2s_embedded(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None)
    _prepare(world, "app1")
    world.start_run()
    # The initial full pass ran before "live" was printed.
    assert world.read_store("app1/main.js") == b"v1"
    took = scenario(world, "app1")
    assert max(took.values()) <= LIMIT


def test_duplicate_and_late_deliveries_leave_the_current_version(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """The same path sent many times, late (after two more saves): the store has the last."""
    from worker.config import load_settings
    from worker.queue.app import create_app

    world = sync_world(redis_db_url(redis_server))
    _prepare(world, "app1")
    world.start_worker("w1", concurrency=2)
    world.start_worker("w2", concurrency=2)
    app = create_app(load_settings(environ=world.env))
    path = world.root / "app1" / "main.js"
    for version in range(1, 6):
        path.write_text(f"v{version}")
        for _ in range(5):  # duplicates of every "event", all sent after the fact
            app.send_task("tasks.sync_path", args=["app1", "main.js"], queue=world.host_queue)
    wait_store(world, "app1/main.js", b"v5", limit=10)
    logs = [world.base / "logs" / f"{w}.log" for w in ("w1", "w2")]

    def runs() -> int:
        """sync_path tasks the two workers finished (Celery logs each one it ran)."""
        return sum(1 for log in logs for line in log.read_text(errors="replace").splitlines()
                   if "Task tasks.sync_path[" in line and " succeeded in " in line)

    wait_for(lambda: runs() >= 25, 30, "every one of the 25 deliveries ran",
             details=lambda: f"{runs()} ran\n{world.logs()}")
    assert world.read_store("app1/main.js") == b"v5"


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def test_saves_visible_within_2s_rabbitmq(sync_world: Callable[..., SyncWorld]) -> None:
    """The same with a RabbitMQ broker (the machine's RabbitMQ, see docs/testing.md)."""
    from tests.servers.process import port_open, unavailable

    if not port_open(5672):
        unavailable("no RabbitMQ on 127.0.0.1:5672")
    import kombu

    world = sync_world(RABBITMQ_URL)
    try:
        took = _run_distributed(world, "app1")
        assert max(took.values()) <= LIMIT
    finally:
        world.stop_all()
        with kombu.Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(world.host_queue)
