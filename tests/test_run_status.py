"""``synchro-sync status``: queue depth, pending paths, last full pass per container, last
snapshot, recent failures and retries -- as a user runs it, against real processes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

from tests.servers.celery_worker import CLI, SyncWorld, redis_db_url
from tests.servers.process import free_port, wait_for
from tests.servers.redis_server import RedisServer
from tests.servers.s3_server import S3Server


def status(
    world: SyncWorld, *args: str, embedded: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **world.env}
    if embedded:
        env.pop("SYNCHRO__BROKER_URL", None)
    return subprocess.run(
        [*CLI, "status", *args], env=env, cwd=world.base, capture_output=True, text=True,
        timeout=60,
    )


def status_json(world: SyncWorld, embedded: bool = False) -> dict[str, Any]:
    out = status(world, "--json", embedded=embedded)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_status_distributed(sync_world: Callable[..., SyncWorld], redis_server: RedisServer
                            ) -> None:
    from worker.config import load_settings
    from worker.live.dispatch import CeleryDispatcher
    from worker.queue.app import create_app

    world = sync_world(redis_db_url(redis_server), **{
        "BACKUP__dest": "snaps", "SESSIONSTORE_SERVICE": "FileSessionStore",
        "SESSIONSTORE__sessionStateFile": "sessions.json",  # the server's in-process
    })  # memory store cannot be snapshotted: a file store with one session instead
    (world.base / "sessions.json").write_text('{"s1": {"id": "s1"}}')
    app_dir = world.root / "app1"
    app_dir.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (app_dir / name).write_text(name)
    settings = load_settings(environ=world.env)
    app = create_app(settings)
    dispatcher = CeleryDispatcher(app, settings)
    for name in ("a.txt", "b.txt", "c.txt", "a.txt", "a.txt"):  # the repeats are coalesced
        dispatcher.submit("app1", name)
    assert dispatcher.sent == 3 and dispatcher.coalesced == 2
    app.send_task("tasks.sync_path", args=["..", "escape.txt"], queue=world.host_queue)

    report = status_json(world)
    assert report["mode"] == "distributed"
    assert report["queues"][world.host_queue] == 4
    assert report["pending_count"] == 3
    assert sorted(report["pending"]) == ["app1/a.txt", "app1/b.txt", "app1/c.txt"]
    assert report["full_passes"] == {} and report["snapshot"] is None

    world.start_worker("w1", concurrency=1)
    app.send_task("tasks.snapshot_sessions", queue="sessions")
    world.wait_equal(10)

    def settled() -> bool:
        r = status_json(world)
        return bool(r["snapshot"]) and "app1" in r["full_passes"] and r["failures"] != []

    wait_for(settled, 15, "status shows the pass, the snapshot and the failure", interval=0.2,
             details=world.logs)  # each check runs `synchro-sync status`: every 0.2 s
    report = status_json(world)
    assert report["queues"][world.host_queue] == 0
    assert report["pending_count"] == 0
    assert report["full_passes"]["app1"]["reason"] == "worker started"
    assert report["snapshot"]["sessions"] == 1 and report["snapshot"]["dest"] == "snaps"
    failure = report["failures"][0]
    assert (failure["task"], failure["container"], failure["path"]) == (
        "tasks.sync_path", "..", "escape.txt"
    )
    dispatcher.close()

    text = status(world).stdout
    for heading in ("queues:", "pending paths: 0", "last full pass:", "  app1: ",
                    "last snapshot: ", "recent failures: 1", "retries: 0"):
        assert heading in text, text


def test_status_shows_retries_of_a_failing_store(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """An S3 endpoint where nothing listens: the store retries, then the pass reports failure."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    dead = {"provider": "amazon", "keyId": "k", "key": "s", "endpoint": endpoint}
    world = sync_world(redis_db_url(redis_server), store_settings=dead)
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("a")
    world.start_worker("w1", concurrency=1)

    def retried() -> bool:
        r = status_json(world)
        return r["retry_total"] > 0 and "app1" in r["full_passes"]

    wait_for(retried, 60, "a retry recorded in status", interval=0.2, details=world.logs)
    report = status_json(world)
    assert report["retries"][0]["what"] == "full_pass"
    assert report["full_passes"]["app1"]["failures"] >= 1


def test_status_embedded(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None)
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("a")
    report = status_json(world, embedded=True)
    assert report["mode"] == "embedded"
    assert "synchro-sync run is not running" in report["problems"]
    run = world.start_run()
    wait_for(lambda: "app1" in status_json(world, embedded=True)["full_passes"], 10,
             "the start-up pass in status", interval=0.2, details=world.logs)
    report = status_json(world, embedded=True)
    assert report["queues"] == {"embedded": 0} and report["problems"] == []
    assert report["full_passes"]["app1"]["reason"] == "start-up"
    run.stop()


def test_status_with_the_broker_down_says_so(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(f"redis://127.0.0.1:{free_port()}/0")
    out = status(world)
    assert out.returncode == 1
    assert "problem: broker unreachable" in out.stdout
    assert "Traceback" not in out.stderr


def test_status_rows_are_each_containers_own_figures(sync_world: Callable[..., SyncWorld]) -> None:
    """`a` with 1 file and `b` with 3: each row its own counts; `sync` passes are recorded;
    the `*` row of a pass that found no app folder goes once there are apps."""
    world = sync_world(None)
    run = world.start_run()  # no app folder yet: an empty start-up pass
    wait_for(lambda: bool(status_json(world, embedded=True)["full_passes"]), 10,
             "the start-up pass in status", interval=0.2, details=world.logs)
    run.stop()
    (world.root / "a").mkdir()
    (world.root / "a" / "1.txt").write_text("1")
    (world.root / "b").mkdir()
    for n in range(3):
        (world.root / "b" / f"{n}.txt").write_text(str(n))
    first = subprocess.run([*CLI, "sync"], env=world.env, cwd=world.base, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    rows = status_json(world, embedded=True)["full_passes"]
    assert sorted(set(rows) - {"/"}) == ["a", "b"]  # "/": the store files at the top, if any
    assert (rows["a"]["uploaded"], rows["a"]["unchanged"]) == (1, 0)
    assert (rows["b"]["uploaded"], rows["b"]["unchanged"]) == (3, 0)
    assert rows["a"]["reason"] == "sync"
    (world.root / "b" / "0.txt").unlink()
    again = subprocess.run([*CLI, "sync"], env=world.env, cwd=world.base, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    rows = status_json(world, embedded=True)["full_passes"]
    assert (rows["a"]["uploaded"], rows["a"]["unchanged"], rows["a"]["deleted"]) == (0, 1, 0)
    assert (rows["b"]["uploaded"], rows["b"]["unchanged"], rows["b"]["deleted"]) == (0, 2, 1)
    text = status(world, embedded=True).stdout
    assert "  a: " in text and "unchanged 1" in text and "unchanged 2" in text


def test_retry_records_name_the_path_that_was_retried(
    sync_world: Callable[..., SyncWorld], s3_server: S3Server,
) -> None:
    """Retries of one upload in a full pass and of one live save: each status record names its
    own container and path."""
    import uuid

    from tests.servers.fault_proxy import Fault, FaultProxy
    from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY
    from worker.coord.status import FileStatusStore

    proxy = FaultProxy(s3_server.endpoint).start()
    try:
        app = f"retries-{uuid.uuid4().hex[:8]}"
        world = sync_world(None, store_settings={
            "provider": "amazon", "keyId": ACCESS_KEY, "key": SECRET_KEY, "endpoint": proxy.url})
        world.containers = {app}
        (world.root / app).mkdir()
        for name in ("a.txt", "b.txt", "d.txt"):
            (world.root / app / name).write_text(name)
        proxy.inject(Fault("status", method="PUT", path=r"/b\.txt", times=2))
        world.start_run()
        proxy.inject(Fault("status", method="PUT", path=r"/c\.txt", times=1))
        (world.root / app / "c.txt").write_text("live")
        world.wait_equal(20)
        retries = FileStatusStore(world.state).read().get("retries", [])
        where = {(r["what"], r["container"], r["path"]): r["count"] for r in retries}
        assert where.get(("full_pass", app, "b.txt")) == 2, retries
        assert where.get(("sync_path", app, "c.txt")) == 1, retries
        assert all(r["path"] in ("b.txt", "c.txt") for r in retries), retries
    finally:
        proxy.stop()
