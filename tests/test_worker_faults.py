"""Faults never leave the mirror wrong once things recover, and the last save wins.

Real processes throughout: ``synchro-sync watch`` and ``celery -A worker worker`` processes on a
private redis-server, a folder module store watched while the test runs.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.servers.celery_worker import SyncWorld, redis_db_url
from tests.servers.process import wait_for
from tests.servers.redis_server import RedisServer
from tests.servers.s3_server import S3Server
from worker.coord.status import RedisStatusStore


def _burst(root: Path, changes: int, files: int, seed: int,
           at: dict[int, Callable[[], None]] | None = None, pause: float = 0.004) -> None:
    """``changes`` writes, creates and deletes over ``files`` paths (some in sub-folders)."""
    rnd = random.Random(seed)
    for i in range(changes):
        n = rnd.randrange(files)
        path = root / (f"sub{n % 7}/f{n}.txt" if n % 3 == 0 else f"f{n}.txt")
        if rnd.random() < 0.1 and path.exists():
            path.unlink()
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"{n} change {i} " + "x" * rnd.randrange(2000))
        if at and i in at:
            at[i]()
        time.sleep(pause)  # a burst spread over time, as an editor's saves are: pacing only


def test_kill_9_worker_in_a_burst_of_500_changes_then_restart(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    world = sync_world(redis_db_url(redis_server))
    (world.root / "app1").mkdir()
    worker = world.start_worker("w1", concurrency=2)
    world.start_watcher()
    killed: list[float] = []

    def kill() -> None:
        worker.kill()  # SIGKILL to the worker and its pool processes, mid-task
        killed.append(time.monotonic())

    _burst(world.root / "app1", 500, 120, seed=1, at={200: kill})
    assert killed and worker.proc is not None and worker.proc.poll() is not None
    world.restart(worker)
    took = world.wait_equal(60)
    # Redone by the restarted worker's own start-up pass, not after the visibility timeout.
    assert took < 60


def test_broker_stopped_10s_during_edits(
    sync_world: Callable[..., SyncWorld], own_redis: RedisServer
) -> None:
    world = sync_world(own_redis.url)
    (world.root / "app1").mkdir()
    world.start_worker("w1", concurrency=2)
    world.start_watcher()
    (world.root / "app1" / "before.txt").write_text("before")
    world.wait_equal(10)

    writer = threading.Thread(
        target=_burst, args=(world.root / "app1", 700, 80, 2), kwargs={"pause": 0.02}
    )
    synced = _count(world.base / "logs" / "w1.log", "synced in")
    writer.start()  # about 14 s of edits
    # The broker goes down while the burst is being synced, not before it has started.
    wait_for(lambda: _count(world.base / "logs" / "w1.log", "synced in") >= synced + 5, 10,
             "the worker syncing the burst's first edits", details=world.logs)
    own_redis.stop()
    stopped = time.monotonic()
    time.sleep(10)  # the outage under test: the broker stays down 10 s while edits go on
    own_redis.start()
    assert time.monotonic() - stopped >= 10
    writer.join()
    world.wait_equal(60)
    watch_log = (world.base / "logs" / "watch.log").read_text()
    # The hand-off kept the paths it could not hand off and retried them when the broker was
    # back (a full pass is owed only after its last attempt); wait_equal above proves none lost.
    assert "will retry" in watch_log
    # Reconnected with tasks running, the worker fetches at its full prefetch count again:
    # Celery's prefetch reduction (a reduced count waiting on acknowledgements that may never
    # come) is off, so it neither reduces nor says why it skipped reducing.
    worker_log = (world.base / "logs" / "w1.log").read_text()
    assert "Connected to" in worker_log.split("Connection to broker lost", 1)[1]
    assert "prefetch count" not in worker_log


def test_a_broker_that_comes_back_empty_gets_a_full_pass(
    sync_world: Callable[..., SyncWorld], own_redis: RedisServer
) -> None:
    """A Redis without persistence restarts with empty queues: whatever was handed off and not
    yet run is gone.  The worker's consumer asks for a full pass each time it reconnects, so
    such a path is synced when the broker is back rather than at the next scheduled pass."""
    world = sync_world(own_redis.url)
    (world.root / "app1").mkdir()
    world.start_worker("w1", concurrency=1)
    log = world.base / "logs" / "w1.log"
    wait_for(lambda: "full pass (worker started) done" in log.read_text(), 20,
             "the start-up full pass", details=world.logs)
    # No watcher runs: this save's hand-off is the one the broker lost.
    (world.root / "app1" / "lost.txt").write_text("handed off, then lost with the broker")
    own_redis.stop()
    own_redis.start()
    world.wait_equal(60)
    # The pass logs its line once it has recorded its figures, just after the last upload.
    wait_for(lambda: "full pass (broker connection restored) done" in log.read_text(), 20,
             "the full pass asked for on reconnecting", details=world.logs)


def _edits_never_go_back(world: SyncWorld, app_name: str, files: int, edits: int) -> None:
    """``edits`` random edits to ``files`` files with three workers; the store is read all
    along: no file ever shows an older version than one it showed before, and at the end
    store == folder."""
    app = world.root / app_name
    app.mkdir()
    for n in range(files):
        (app / f"f{n}.txt").write_text(f"{n} 0000")
    for i in range(3):
        world.start_worker(f"w{i + 1}", concurrency=1)
    world.start_watcher()
    world.wait_equal(20)

    seen: dict[int, list[int]] = {n: [0] for n in range(files)}
    stop = threading.Event()
    sweeps = [0]

    def observe() -> None:
        while not stop.is_set():
            sweeps[0] += 1
            for n in range(files):
                data = world.read_store(f"{app_name}/f{n}.txt")
                try:
                    version = int((data or b"").split()[1])
                except (IndexError, ValueError):
                    continue
                if version != seen[n][-1]:
                    seen[n].append(version)

    observer = threading.Thread(target=observe)
    observer.start()
    rnd = random.Random(3)
    final: dict[int, int] = {}
    try:
        for k in range(1, edits + 1):
            n = rnd.randrange(files)
            (app / f"f{n}.txt").write_text(f"{n} {k:04d} " + "y" * rnd.randrange(3000))
            final[n] = k
            time.sleep(0.003)  # pacing: edits spread over a few seconds, while tasks run
        world.wait_equal(60)
        # Keep observing after equality until no task is left that could still write (every
        # one sent has run), then two more whole sweeps: nothing may have moved back.
        world.wait_idle(60)
        after = sweeps[0]
        wait_for(lambda: sweeps[0] >= after + 2, 10, "two sweeps of the store after idle")
    finally:
        stop.set()
        observer.join()
    observed = sum(len(v) - 1 for v in seen.values())
    assert observed > edits // 5, f"the observer saw only {observed} changes"
    went_back = {n: versions for n, versions in seen.items() if versions != sorted(versions)}
    assert not went_back, f"files that went back to an older version: {went_back}"
    for n, k in final.items():
        assert seen[n][-1] == k
    for i in range(3):  # the three workers all took part
        assert "synced in" in (world.base / "logs" / f"w{i + 1}.log").read_text()


def test_three_workers_1000_random_edits_never_go_back(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """1,000 edits to 100 files, folder store (read directly: ~1 ms per sweep of 100 files)."""
    _edits_never_go_back(sync_world(redis_db_url(redis_server)), "app1", 100, 1000)


def test_three_workers_random_edits_never_go_back_s3(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer, s3_server: S3Server
) -> None:
    """The same on moto S3, smaller (each read is an HTTP GET): 300 edits to 30 files."""
    app_name = f"lsw-{uuid.uuid4().hex[:8]}"
    world = sync_world(redis_db_url(redis_server), store_settings=s3_server.settings())
    world.containers = {app_name}
    _edits_never_go_back(world, app_name, 30, 300)


def test_broker_idle_counts_queues_not_the_status_lists(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """The retry and failure records are capped Redis lists beside the queues; one store retry
    (moto slow under load) must not keep :meth:`SyncWorld.broker_idle` false for good, as it
    once did in CI, while a message waiting in a queue still does."""
    import redis

    world = sync_world(redis_db_url(redis_server))
    records = RedisStatusStore(world.env["SYNCHRO__BROKER_URL"])
    records.push("retries", {"message": "moto answered 503", "count": 1})
    records.push("failures", {"message": "gave up"})
    assert world.broker_held() == ({}, 0)
    assert world.broker_idle()
    client = redis.Redis.from_url(world.env["SYNCHRO__BROKER_URL"])
    client.lpush("files.waiting", b"{}")
    assert world.broker_held() == ({"files.waiting": 1}, 0)
    assert not world.broker_idle()
    client.close()

def test_task_of_a_killed_pool_process_is_delivered_again(
    sync_world: Callable[..., SyncWorld], redis_server: RedisServer
) -> None:
    """acks_late + task_reject_on_worker_lost: the pool process running a task is killed with
    -9; the message goes back to the queue and the task runs again to completion."""
    import os
    import re
    import signal

    from worker.config import load_settings
    from worker.coord.locks import PathLocks
    from worker.queue.app import create_app

    world = sync_world(redis_db_url(redis_server))
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("v1")
    worker = world.start_worker("w1", concurrency=1)
    world.wait_equal(10)
    (world.root / "app1" / "a.txt").write_text("v2")  # no watcher: only our task can sync it

    app = create_app(load_settings(environ=world.env))
    with PathLocks(world.state / "locks").hold("app1", "a.txt"):
        # The task blocks on the per-path lock this test holds: it is "in the middle".
        task_id = app.send_task("tasks.sync_path", args=["app1", "a.txt"],
                                queue=world.host_queue).id
        received = f"tasks.sync_path[{task_id}] received"
        wait_for(lambda: _count(worker.log_path, received) >= 1, 10, received,
                 details=worker.tail)
        assert worker.proc is not None
        main = worker.proc.pid
        children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        assert children, "no pool process"
        # The pool process is in the middle of the task: waiting for the lock the test holds.
        wait_for(lambda: bool(set(children) & _blocked_on_flock()), 10,
                 "the pool process blocked on the path lock", details=worker.tail)
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: _count(worker.log_path, received) >= 2, 30,  # same task id again
                 f"{received} a second time", details=worker.tail)
        assert world.read_store("app1/a.txt") == b"v1"
    world.wait_equal(5)  # lock released: the redelivered task completes
    log = worker.log_path.read_text()
    assert re.search(r"WorkerLostError|exited with 'signal 9", log)


def _blocked_on_flock() -> set[str]:
    """The pids waiting for an ``flock`` another process holds (``->`` lines of /proc/locks:
    ``1: -> FLOCK ADVISORY WRITE <pid> <dev:inode> 0 EOF``)."""
    out = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK":
            out.add(fields[5])
    return out


def _count(path: Path, needle: str) -> int:
    try:
        return path.read_text(errors="replace").count(needle)
    except OSError:
        return 0
