"""Flower, as an operator runs it (``celery -A worker flower``), sees a real worker's work.

A real redis-server, a real ``celery -A worker worker`` and ``synchro-sync watch``, and a real
Flower process on a free loopback port: after a save, Flower's HTTP API lists the worker, its
queues (the host's ``files.`` queue and ``sessions``) and the ``tasks.sync_path`` task with its
arguments (container, path) and its outcome.  Task events are on by default; with
``METRICS.taskEvents`` false the worker sends none, so Flower lists no task.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.servers.celery_worker import SyncWorld, redis_db_url
from tests.servers.process import free_port, unavailable
from tests.servers.process import wait_for as until
from tests.servers.redis_server import RedisServer

if importlib.util.find_spec("flower") is None:
    unavailable("flower is not installed (pip install -e '.[test]')")

AUTH = "operator:flower-test"


def flower_get(port: int, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_flower(world: SyncWorld) -> int:
    port = free_port()
    argv = [sys.executable, "-m", "celery", "-A", "worker", "flower", "--address=127.0.0.1",
            f"--port={port}", f"--basic-auth={AUTH}",
            # Flower would otherwise tell the workers to send events: the workers' own
            # setting is what is tested here.
            "--enable-events=false"]
    world._start("flower", argv, "Visit me at", timeout=60)
    return port


def wait_for(what: str, probe: Callable[[], Any], world: SyncWorld, timeout: float = 30.0,
             again: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:  # Flower still starting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if again is not None:
            again()
        time.sleep(0.5)  # poll interval (and the pace of the saves ``again`` makes)
    pytest.fail(f"{what}: not seen in {timeout}s (last: {last!r:.300})\n{world.logs()}")


class Probe:
    """Task events of a made-up ``tasks.sync_path`` task, sent to the world's broker as a
    worker sends them: seeing one in Flower proves Flower hears every event sent before."""

    def __init__(self, world: SyncWorld) -> None:
        from worker.config import load_settings
        from worker.queue.app import create_app

        self.world = world
        self.app = create_app(load_settings(environ=world.env))

    def send(self) -> str:
        path = f"probe-{uuid.uuid4().hex[:8]}.js"
        with self.app.connection_for_write() as conn:
            events = self.app.events.Dispatcher(conn, hostname="probe@test", enabled=True)
            events.send("task-received", uuid=str(uuid.uuid4()), name="tasks.sync_path",
                        args=repr(["probe", path]), kwargs="{}", retries=0, eta=None)
            events.close()
        return path

    def seen_by(self, port: int) -> None:
        paths: list[str] = []

        def seen() -> bool:
            paths.append(self.send())  # Flower hears only events sent after it subscribed
            return any(sync_tasks(port, p) for p in paths)

        until(seen, 30, "a probe task event in Flower", interval=0.2, details=self.world.logs)


def sync_tasks(port: int, path: str) -> list[dict[str, Any]]:
    tasks = flower_get(port, "/api/tasks?taskname=tasks.sync_path")
    return [t for t in tasks.values() if path in str(t.get("args"))]


def test_flower_lists_workers_queues_and_each_task_with_args_and_outcome(
    redis_server: RedisServer, sync_world: Callable[..., SyncWorld]
) -> None:
    world = sync_world(redis_db_url(redis_server))
    (world.root / "shop").mkdir()
    world.start_worker("w1")
    world.start_watcher()
    port = start_flower(world)

    def workers_with_queues() -> dict[str, Any]:
        # Flower fills a worker's entry one inspect reply at a time (stats, active_queues, ...):
        # an entry seen early may not hold its queues yet, so ask again until it does.
        found = flower_get(port, "/api/workers?refresh=1")
        return found if found and all("active_queues" in i for i in found.values()) else {}

    workers = wait_for("the worker and its queues in Flower", workers_with_queues, world)
    (name, info), = workers.items()
    assert name.startswith("w1@")
    queues = {q["name"] for q in info["active_queues"]}
    assert queues == {world.host_queue, "sessions"}

    saves = iter(range(1000))

    def save() -> None:  # Flower hears only events sent after it subscribed: save until it does
        (world.root / "shop" / "index.js").write_text(f"save {next(saves)}")

    save()
    tasks = wait_for("tasks.sync_path in Flower", lambda: [
        t for t in sync_tasks(port, "index.js") if t["state"] == "SUCCESS"], world, again=save)
    task = tasks[0]
    assert task["name"] == "tasks.sync_path"
    assert "'shop'" in task["args"] and "'index.js'" in task["args"]
    assert task["worker"] == name
    assert task["runtime"] is not None and task["runtime"] >= 0
    assert task["received"] and task["started"] and task["succeeded"]
    # The queue lengths come from the broker itself.
    lengths = flower_get(port, "/api/queues/length")
    assert {q["name"] for q in lengths["active_queues"]} >= {world.host_queue, "sessions"}


def test_task_events_can_be_turned_off(
    redis_server: RedisServer, sync_world: Callable[..., SyncWorld]
) -> None:
    world = sync_world(redis_db_url(redis_server), METRICS__taskEvents="false")
    (world.root / "shop").mkdir()
    world.start_worker("w1")
    world.start_watcher()
    port = start_flower(world)
    wait_for("the worker in Flower", lambda: flower_get(port, "/api/workers"), world)
    probe = Probe(world)
    probe.seen_by(port)  # Flower is listening to task events
    for n in range(3):
        (world.root / "shop" / "index.js").write_text(f"save {n}")
        synced = f"save {n}".encode()
        until(lambda: world.read_store("shop/index.js") == synced, 10,  # noqa: B023
              f"save {n} in the store", details=world.logs)
    # Every task has run (and a worker sends a task's last event as it finishes it); an event
    # sent after that reaches Flower after theirs would have.
    world.wait_idle(20)
    probe.seen_by(port)
    assert sync_tasks(port, "index.js") == []
    # Flower was listening all along: events turned on by hand show the next save.
    subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "control", "enable_events"],
                   env={**os.environ, **world.env}, cwd=world.base, check=True,
                   capture_output=True, timeout=60)
    saves = iter(range(10, 1000))

    def save() -> None:
        (world.root / "shop" / "index.js").write_text(f"save {next(saves)}")

    save()
    wait_for("tasks.sync_path in Flower once enabled", lambda: sync_tasks(port, "index.js"),
             world, again=save)
