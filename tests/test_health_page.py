"""``/healthz``, ``synchro-sync status --check`` and the status page, on real processes.

``synchro-sync run`` with ``METRICS.port``: healthy while it watches and the store answers; 503
with one line when the module directory goes away or the store fails for longer than
``METRICS.storeFailingAfter``; healthy again once things recover.  ``synchro-sync watch`` on a
real redis-server that is stopped: "broker away".  ``status --check`` says the same with its
exit code.  No secret in any reason.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.process import free_port
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_health(port: int, code: int, world: SyncWorld, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got, body = healthz(port)
        if got == code:
            assert body.endswith("\n") and body.count("\n") == 1, body  # one line
            return body.strip()
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz {got} {body!r}, expected {code}\n{world.logs()}")
        time.sleep(0.2)


def status_check(world: SyncWorld, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([*CLI, "status", "--check"], env={**world.env, **(env or {})},
                          cwd=world.base, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout.strip()


def test_run_healthz_and_status_check_follow_the_watcher_and_the_store(
    sync_world: Callable[..., SyncWorld],
) -> None:
    port = free_port()
    world = sync_world(None, METRICS__port=str(port), METRICS__storeFailingAfter="1")
    (world.root / "shop").mkdir()
    (world.root / "shop" / "a.js").write_text("a")
    env = {k: v for k, v in world.env.items() if k != "SYNCHRO__BROKER_URL"}
    world.env = env

    code, line = status_check(world)  # nothing runs yet
    assert code == 1 and line.startswith("unhealthy: synchro-sync run is not running"), line
    world.start_run()
    assert wait_health(port, 200, world) == "ok"
    assert status_check(world) == (0, "ok")

    # The store fails (a file where the container's folder must go): after 1 s, unhealthy.
    (world.mirror / "shop" / "lib").write_text("not a folder")
    (world.root / "shop" / "lib").mkdir()
    (world.root / "shop" / "lib" / "x.js").write_text("x")
    reason = wait_health(port, 503, world)
    assert reason.startswith("store failing for "), reason
    assert "(sync_path: StoreError)" in reason
    code, line = status_check(world)
    assert code == 1 and line.startswith("unhealthy: store failing for "), line
    assert line.endswith("(sync_path: StoreError)"), line
    # The store recovers: the next save it takes makes the process healthy again.
    (world.mirror / "shop" / "lib").unlink()
    (world.root / "shop" / "lib" / "x.js").write_text("x")
    assert wait_health(port, 200, world, timeout=20) == "ok"
    assert world.read_store("shop/lib/x.js") == b"x"

    # The watched folder goes away (an unmounted volume): not watching.
    world.root.rename(world.base / "apps-away")
    reason = wait_health(port, 503, world)
    assert reason == f"not watching: APP_ROOT_PATH {world.root} is missing"
    assert status_check(world) == (1, f"unhealthy: {reason}")
    (world.base / "apps-away").rename(world.root)
    assert wait_health(port, 200, world) == "ok"


def test_watch_healthz_says_broker_away_without_its_password(
    own_redis: RedisServer, sync_world: Callable[..., SyncWorld],
) -> None:
    port, worker_port = free_port(), free_port()
    world = sync_world(own_redis.url.rsplit("/", 1)[0] + "/1", METRICS__port=str(worker_port))
    (world.root / "shop").mkdir()
    world.start_worker("w1", concurrency=1)
    world.env["SYNCHRO__METRICS__port"] = str(port)
    world.start_watcher()
    assert wait_health(port, 200, world) == "ok"
    assert wait_health(worker_port, 200, world) == "ok"
    assert status_check(world) == (0, "ok")

    own_redis.stop()
    (world.root / "shop" / "a.js").write_text("saved while the broker is away")
    reason = wait_health(port, 503, world)
    assert reason == "broker away: saves wait for it (a full pass is owed)"
    code, line = status_check(world)
    assert code == 1 and line.startswith("unhealthy: broker unreachable"), line
    assert REDIS_PASSWORD not in line and REDIS_PASSWORD not in reason
    worker_reason = wait_health(worker_port, 503, world)
    assert worker_reason.startswith("broker away: "), worker_reason
    assert REDIS_PASSWORD not in worker_reason

    own_redis.start()
    assert wait_health(port, 200, world, timeout=30) == "ok"
    assert wait_health(worker_port, 200, world, timeout=30) == "ok"
    assert status_check(world) == (0, "ok")
