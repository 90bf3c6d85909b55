"""Prometheus metrics, scraped from real processes during real saves.

``synchro-sync run`` (embedded) with ``METRICS.port``: the counters move exactly as the saves
say (uploads, bytes, deletes, coalesced events, full passes, a verified snapshot's figures), and
``synchro-sync watch`` + ``celery -A worker worker`` on a real redis-server: the worker's prefork
children add up through prometheus-client's multiprocess mode.  No secret in any of it.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers.celery_worker import SyncWorld, redis_db_url
from tests.servers.process import free_port, wait_for
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return str(response.read().decode())


def scrape(port: int) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(scrape_text(port)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_value(port: int, name: str, at_least: float, world: SyncWorld, timeout: float = 10,
               **labels: str) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if value(samples, name, **labels) >= at_least:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} = {value(samples, name, **labels)}, expected >= "
                        f"{at_least}\n{scrape_text(port)}\n{world.logs()}")
        time.sleep(0.1)  # poll interval


def world_with_sessions(sync_world: Callable[..., SyncWorld]) -> tuple[SyncWorld, int]:
    """A world served on a metrics port, whose file session store holds 7 sessions backed up
    every second."""
    from worker.stores.sessions import open_session_store

    port = free_port()
    world = sync_world(None, METRICS__port=str(port))
    sessions_file = world.base / "sessions.json"
    world.env.update({
        "SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
        "SYNCHRO__SESSIONSTORE__sessionStateFile": str(sessions_file),
        "SYNCHRO__BACKUP__interval": "1",
        "SYNCHRO__BACKUP__dest": str(world.base / "snapshots"),
    })
    source = open_session_store(f"file:{sessions_file}")
    for n in range(7):
        source.create({"user": n}, ttl=3600)
    source.close()
    return world, port


def wait_store(world: SyncWorld, relpath: str, expected: bytes | None) -> None:
    wait_for(lambda: world.read_store(relpath) == expected, 5, f"{relpath} {expected!r:.40}",
             details=world.logs)


def test_run_counts_saves_deletes_passes_and_snapshots(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world, port = world_with_sessions(sync_world)
    shop = world.root / "shop"
    shop.mkdir()
    (shop / "old.js").write_text("there before")
    world.start_run()

    before = scrape(port)  # the start-up pass uploaded old.js
    assert value(before, "synchro_sync_full_passes_total", container="shop") == 1
    assert value(before, "synchro_sync_uploads_total", container="shop") == 1
    assert value(before, "synchro_sync_uploaded_bytes_total", container="shop") == 12
    assert value(before, "synchro_sync_full_pass_last_timestamp_seconds",
                 container="shop") > time.time() - 60
    assert value(before, "synchro_sync_save_to_visible_seconds_count") == 0

    sizes = {"a.js": 10, "b.js": 200, "c.js": 3000}
    for name, size in sizes.items():
        (shop / name).write_bytes(b"x" * size)
        wait_store(world, f"shop/{name}", b"x" * size)
    after = wait_value(port, "synchro_sync_uploads_total", 4, world, container="shop")
    assert value(after, "synchro_sync_uploads_total", container="shop") == 4
    assert value(after, "synchro_sync_uploaded_bytes_total", container="shop") == 12 + 3210
    assert value(after, "synchro_sync_save_to_visible_seconds_count") == 3
    # Each save was visible within the promised two seconds: all three in the 2 s bucket.
    assert value(after, "synchro_sync_save_to_visible_seconds_bucket", le="2.0") == 3
    assert 0 < value(after, "synchro_sync_save_to_visible_seconds_sum") < 6
    assert value(after, "synchro_sync_watcher_events_total") >= 3
    assert value(after, "synchro_sync_deletes_total", container="shop") == 0

    (shop / "a.js").unlink()
    wait_store(world, "shop/a.js", None)
    gone = wait_value(port, "synchro_sync_deletes_total", 1, world, container="shop")
    assert value(gone, "synchro_sync_uploads_total", container="shop") == 4

    # A burst on one path: the debounce window merges the events into few uploads.
    merged_before = value(gone, "synchro_sync_watcher_events_coalesced_total")
    for n in range(50):
        (shop / "hot.js").write_text(f"v{n}")
    wait_store(world, "shop/hot.js", b"v49")
    burst = scrape(port)
    uploads = value(burst, "synchro_sync_uploads_total", container="shop") - 4
    assert 1 <= uploads < 50
    assert value(burst, "synchro_sync_watcher_events_coalesced_total") - merged_before >= 25
    assert value(burst, "synchro_sync_watcher_events_dropped_total") == 0
    assert value(burst, "synchro_sync_pending_paths") == 0

    # The scheduled snapshot: its time, count and size once verified.
    snap = wait_value(port, "synchro_sync_snapshot_sessions", 7, world)
    assert value(snap, "synchro_sync_snapshot_last_verified_timestamp_seconds") > time.time() - 60
    assert value(snap, "synchro_sync_snapshot_bytes") > 7 * 10
    assert value(snap, "synchro_sync_failures_total", kind="sync_path") == 0


def test_workers_add_up_through_multiprocess_mode(
    redis_server: RedisServer, sync_world: Callable[..., SyncWorld]
) -> None:
    world = sync_world(redis_db_url(redis_server))
    assert REDIS_PASSWORD and REDIS_PASSWORD in world.env["SYNCHRO__BROKER_URL"]
    watch_port, worker_port = free_port(), free_port()
    (world.root / "shop").mkdir()
    # The folder of a worker killed with kill -9 (its pid ended) is removed at the next start.
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = world.state / f"metrics-{ended.pid}-x1y2"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"\0" * 16)
    world.env["SYNCHRO__METRICS__port"] = str(worker_port)
    world.start_worker("w1", concurrency=3)
    assert not stale.exists()
    world.env["SYNCHRO__METRICS__port"] = str(watch_port)
    world.start_watcher()
    # The start-up passes (asked by the worker and by the watcher) first, so that the saves
    # below are live syncs, each timed from its save.
    wait_value(worker_port, "synchro_sync_full_passes_total", 2, world, container="shop")
    files = {f"f{n}.js": f"content {n}".encode() for n in range(30)}
    for name, data in files.items():
        (world.root / "shop" / name).write_bytes(data)
    world.wait_equal(10)
    samples = wait_value(worker_port, "synchro_sync_uploads_total", 30, world, container="shop")
    assert value(samples, "synchro_sync_uploads_total", container="shop") == 30
    assert value(samples, "synchro_sync_uploaded_bytes_total", container="shop") == sum(
        map(len, files.values()))
    assert value(samples, "synchro_sync_save_to_visible_seconds_count") == 30
    assert value(samples, "synchro_sync_save_to_visible_seconds_bucket", le="2.0") == 30
    # More than one child did the work, and the sum is served by the main process.
    children = {p.name for p in Path(world.state).glob("metrics-*/counter_*.db")}
    assert len(children) >= 2, children
    watched = scrape(watch_port)
    assert value(watched, "synchro_sync_watcher_events_total") >= 30
    assert value(watched, "synchro_sync_pending_paths") == 0
    for port in (watch_port, worker_port):
        assert REDIS_PASSWORD not in scrape_text(port)
