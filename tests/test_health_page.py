"""``/healthz``, ``synchro-sync status --check`` and the status page, on real processes.

``synchro-sync run`` with ``METRICS.port``: healthy while it watches and the store answers; 503
with one line when the module directory goes away or the store fails for longer than
``METRICS.storeFailingAfter``; healthy again once things recover.  ``synchro-sync watch`` on a
real redis-server that is stopped: "broker away".  ``status --check`` says the same with its
exit code.  No secret in any reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.process import free_port, wait_for
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer
from tests.test_metrics import world_with_sessions


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
        time.sleep(0.2)  # poll interval


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
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    failures = re.search(rb'^synchro_sync_failures_total\{kind="sync_path"\} (\S+)$', metrics,
                         re.M)
    assert failures and float(failures.group(1)) >= 1, metrics
    since = re.search(rb"^synchro_sync_store_failing_since_timestamp_seconds (\S+)$", metrics,
                      re.M)
    assert since and time.time() - 60 < float(since.group(1)) < time.time(), metrics
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Debian's headless Chromium (as root it needs --no-sandbox)."""
    assert CHROMIUM, "chromium missing: run scripts/install-test-servers"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def test_the_status_page_in_headless_chromium(sync_world: Callable[..., SyncWorld]) -> None:
    world, port = world_with_sessions(sync_world)
    for app in ("shop", "blog"):
        (world.root / app).mkdir()
        (world.root / app / "index.js").write_text(f"{app} v1")
    world.start_run()
    for n in range(5):  # real saves
        (world.root / "shop" / f"page{n}.js").write_text(f"page {n}")
    (world.mirror / "blog" / "lib").write_text("a file where a folder must go")
    (world.root / "blog" / "lib").mkdir()
    (world.root / "blog" / "lib" / "x.js").write_text("x")
    pages = [""]

    def page_shows_it_all() -> bool:
        pages[0] = html = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        return "7 sessions" in html and "blog/lib/x.js" in html and all(
            world.read_store(f"shop/page{n}.js") for n in range(5))

    wait_for(page_shows_it_all, 15, "the page with 7 sessions, blog/lib/x.js and the saves",
             interval=0.2, details=lambda: f"{pages[0]}\n{world.logs()}")
    html = pages[0]
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "<script" not in html

    profile = world.base / "chromium-profile"
    dom = chromium("--dump-dom", f"http://127.0.0.1:{port}/", profile=profile).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    text = re.sub(r"\s+", " ", text)
    assert "synchro-sync: embedded" in text
    # The store is failing for blog/lib/x.js, but for less than METRICS.storeFailingAfter.
    assert "health: ok" in text
    assert "Pending paths: 0" in text
    # Each container with its last pass (the start-up pass: one upload each).
    assert re.search(r"shop \d+s ago 1 0 0 0 0", text), text
    assert re.search(r"blog \d+s ago 1 0 0 0 0", text), text
    assert re.search(r"Recent failures: [1-9]", text), text
    assert "sync_path blog/lib/x.js" in text
    assert re.search(r"Last snapshot \d+s ago \S+ ?: 7 sessions, kept 24", text), text
    shot = Path(os.environ.get("SYNCHRO_SCREENSHOT") or world.base / "status-page.png")
    chromium(f"--screenshot={shot}", "--window-size=1100,900", f"http://127.0.0.1:{port}/",
             profile=profile)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_worker_healthz_needs_the_files_only_when_it_takes_the_hosts_queue(
    redis_server: RedisServer, sync_world: Callable[..., SyncWorld],
) -> None:
    from tests.servers.celery_worker import redis_db_url

    files_port, sessions_port = free_port(), free_port()
    world = sync_world(redis_db_url(redis_server), METRICS__port=str(files_port))
    world.root.rmdir()  # an unmounted volume
    world.start_worker("files", concurrency=1)
    world.env["SYNCHRO__METRICS__port"] = str(sessions_port)
    world.start_worker("sessions", concurrency=1, extra=("-Q", "sessions"))
    assert wait_health(files_port, 503, world) == f"APP_ROOT_PATH {world.root} is missing"
    assert wait_health(sessions_port, 200, world) == "ok"
    world.root.mkdir()
    assert wait_health(files_port, 200, world) == "ok"


def test_worker_healthz_says_when_its_consumer_stops_consuming(
    redis_server: RedisServer, sync_world: Callable[..., SyncWorld],
) -> None:
    """A worker connected to the broker but no longer fetching from its host's queue (Celery's
    remote control cancels its consumer here, as a stuck consumer would look): tasks wait, a
    process is free, none is taken: 503 after ``METRICS.consumerStalledAfter``; healthy again
    once it consumes, and the task waiting is run."""
    import socket

    from tests.servers.celery_worker import redis_db_url
    from worker.config import load_settings
    from worker.queue.app import create_app

    port = free_port()
    world = sync_world(redis_db_url(redis_server), METRICS__port=str(port),
                       METRICS__consumerStalledAfter="2")
    (world.root / "shop").mkdir()
    world.start_worker("w1", concurrency=1)
    assert wait_health(port, 200, world) == "ok"
    app = create_app(load_settings(environ=world.env))
    worker = [f"w1@{socket.gethostname()}"]
    replies = app.control.cancel_consumer(world.host_queue, destination=worker, reply=True)
    assert replies, "the worker did not answer the remote control"
    (world.root / "shop" / "a.js").write_text("handed off while nobody consumes")
    app.send_task("tasks.sync_path", args=["shop", "a.js"], queue=world.host_queue)
    # Waiting alone is not stalling: healthy until the tasks have waited long enough.
    assert healthz(port)[0] == 200
    reason = wait_health(port, 503, world, timeout=30)
    assert re.fullmatch(
        rf"consumer stalled: 1 task\(s\) wait in {re.escape(world.host_queue)}, none taken for "
        r"\d+ s with a process free \(restart the worker\)", reason), reason
    app.control.add_consumer(world.host_queue, destination=worker, reply=True)
    assert wait_health(port, 200, world, timeout=30) == "ok"
    world.wait_equal(30)
    app.close()
