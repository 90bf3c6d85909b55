"""``synchro-sync run``, the embedded default: no server, start-up pass first, then live;
killed with -9 and restarted; scheduled full passes and session backups in the same process."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.process import wait_for


def test_run_killed_with_9_files_changed_while_down_then_restarted(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world = sync_world(None)
    app = world.root / "app1"
    (app / "keep").mkdir(parents=True)
    for n in range(30):
        (app / f"f{n}.txt").write_text(f"v1 {n}")
    (app / "keep" / "k.txt").write_text("k")
    run = world.start_run()
    world.wait_equal(5)
    for n in range(10):  # live edits, the process killed right in the middle of them
        (app / f"f{n}.txt").write_text(f"v2 {n}")
    run.kill()
    assert run.proc is not None and run.proc.returncode == -9
    # While it is down: edits, new files, a new folder, deletes, a rename.
    for n in range(10, 20):
        (app / f"f{n}.txt").write_text(f"v3 {n}")
    (app / "new").mkdir()
    (app / "new" / "a.txt").write_text("a")
    for n in range(20, 25):
        (app / f"f{n}.txt").unlink()
    os.rename(app / "keep" / "k.txt", app / "keep" / "renamed.txt")
    assert world.local_files() != world.store_files()
    world.restart(run, timeout=60)
    # "live" is printed after the start-up pass: equal right away, not eventually.
    world.wait_equal(1.0)
    (app / "after.txt").write_text("live again")
    world.wait_equal(2.0)


def test_run_scheduled_full_pass_repairs_the_store(sync_world: Callable[..., SyncWorld]) -> None:
    """A change the watcher cannot see (made in the store behind its back) is repaired by the
    periodic full pass."""
    world = sync_world(None, **{"SYNC__fullPassInterval": "1"})
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("a")
    world.start_run()
    world.wait_equal(2)
    (world.mirror / "app1" / "a.txt").unlink()
    (world.mirror / "app1" / "stray.txt").write_text("not in the folder")
    took = world.wait_equal(5)
    assert took <= 5


def test_run_scheduled_backup_prunes_and_restores(sync_world: Callable[..., SyncWorld]) -> None:
    from worker.backups.dest import open_destination
    from worker.backups.snapshots import list_snapshots, restore_snapshot
    from worker.stores.sessions import open_session_store
    from worker.stores.sessions.base import OnConflict

    world = sync_world(None)
    sessions_file = world.base / "sessions.json"
    dest = world.base / "snapshots"
    world.env.update({
        "SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
        "SYNCHRO__SESSIONSTORE__sessionStateFile": str(sessions_file),
        "SYNCHRO__BACKUP__interval": "0.5",
        "SYNCHRO__BACKUP__keep": "2",
        "SYNCHRO__BACKUP__dest": str(dest),
    })
    source = open_session_store(f"file:{sessions_file}")
    made = {source.create({"user": n}, ttl=3600).id: n for n in range(25)}
    source.close()
    run = world.start_run()
    wait_for(lambda: _count(run.log_path, "snapshot ") >= 4, 20, "four snapshots taken",
             details=run.tail)
    run.stop()
    snaps = list_snapshots(open_destination(str(dest)))
    assert len(snaps) == 2, ([s.id for s in snaps], run.tail())
    assert all(s.count == 25 for s in snaps)

    target = open_session_store(f"file:{world.base / 'restored.json'}")
    restore_snapshot("latest", open_destination(str(dest)), target, OnConflict.FAIL)
    restored = {s.id: s.state["user"] for s in target.iter_sessions()}
    assert restored == made


def _count(path: os.PathLike[str], needle: str) -> int:
    try:
        with open(path, errors="replace") as f:
            return f.read().count(needle)
    except OSError:
        return 0


def test_second_run_on_the_same_state_dir_is_refused(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None)
    world.start_run()
    env = {**os.environ, **{k: v for k, v in world.env.items() if k != "SYNCHRO__BROKER_URL"}}
    second = subprocess.run(
        [*CLI, "run"], env=env, cwd=world.base, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 1
    assert "another `synchro-sync run` uses STATE_DIR" in second.stderr
    assert "Traceback" not in second.stderr


def test_distributed_commands_need_a_broker(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None)
    env = {**os.environ, **world.env}
    for command in ("watch", "worker", "beat"):
        out = subprocess.run(
            [*CLI, command], env=env, cwd=world.base, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "BROKER_URL" in out.stderr


def test_run_retries_a_save_the_store_refused(sync_world: Callable[..., SyncWorld]) -> None:
    """The store goes down after start-up, then a save happens: the failure shows in status,
    the path is retried with a backoff, and lands once the store is up again (a moto S3
    started on the same endpoint)."""
    import sys
    import urllib.request
    import uuid

    from tests.servers.process import ServerProcess, free_port
    from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY
    from worker.coord.status import FileStatusStore

    port = free_port()
    store = {"provider": "amazon", "keyId": ACCESS_KEY, "key": SECRET_KEY,
             "endpoint": f"http://127.0.0.1:{port}"}
    app = f"retry-{uuid.uuid4().hex[:8]}"
    metrics_port = free_port()
    world = sync_world(None, store_settings=store, METRICS__port=str(metrics_port))
    world.containers = {app}
    (world.root / app).mkdir()
    moto = ServerProcess(
        "moto-late", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        healthy=lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
        .status == 200,
        workdir=world.base / "logs",
    )
    world.procs.append(moto)
    moto.workdir.mkdir(exist_ok=True)
    moto.start()
    world.start_run()  # the store answers at start-up (run refuses one that does not)
    moto.stop()
    (world.root / app / "a.txt").write_text("saved while the store is down")

    status = FileStatusStore(world.state)
    wait_for(lambda: any(f.get("path") == "a.txt" for f in status.read().get("failures", [])),
             30, "status shows the failed save", details=world.logs)
    moto.start()
    wait_for(lambda: world.read_store(f"{app}/a.txt") == b"saved while the store is down",
             40, "the save lands once the store is back", details=world.logs)
    data = status.read()
    assert data["retry_total"] >= 1
    assert any(f["container"] == app and f["path"] == "a.txt" for f in data["failures"])
    # The same retries and the failure, as Prometheus sees them.
    from tests.test_metrics import scrape, value

    samples = scrape(metrics_port)
    assert value(samples, "synchro_sync_retries_total", kind="sync_path") >= 1, samples
    assert value(samples, "synchro_sync_failures_total", kind="sync_path") >= 1, samples


def test_run_refuses_a_store_it_cannot_use_before_going_live(
    sync_world: Callable[..., SyncWorld],
) -> None:
    """No app folder yet, so no start-up pass would notice: the module store is checked as
    `config check` does, and `run` stops with one line (exit 1: it does not answer)."""
    from tests.servers.process import free_port

    dead = {"provider": "amazon", "keyId": "k", "key": "s",
            "endpoint": f"http://127.0.0.1:{free_port()}"}
    world = sync_world(None, store_settings=dead)
    env = {k: v for k, v in world.env.items() if k != "SYNCHRO__BROKER_URL"}
    out = subprocess.run([*CLI, "run"], env=env, cwd=world.base, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "module store" in lines[0] and "not starting" in lines[0], lines
    assert "live" not in out.stderr and "Traceback" not in out.stderr
    blocked = world.base / "not-a-folder"
    blocked.write_text("a file where the mirror should be")
    env["SYNCHRO__MODULESTORE_SERVICE"] = "FileModuleStore"
    env["SYNCHRO__MODULESTORE__directory"] = str(blocked)
    out = subprocess.run([*CLI, "run"], env=env, cwd=world.base, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and str(blocked) in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def _store_names(world: SyncWorld, app: str) -> set[str]:
    return {p.name for p in (world.mirror / app).iterdir()} if (world.mirror / app).is_dir() \
        else set()


def test_run_holds_live_deletes_to_max_delete_share(sync_world: Callable[..., SyncWorld]) -> None:
    """Deleting 90 of 100 files under `run` removes at most SYNC.maxDeleteShare (50 %) of the
    container's objects within SYNC.deleteWindow; the rest wait for `sync --force`.  A
    container emptied one file every 0.25 s keeps half of its objects."""
    world = sync_world(None)
    (world.root / "big").mkdir()
    (world.root / "drip").mkdir()
    for n in range(100):
        (world.root / "big" / f"f{n:03}.js").write_text(f"{n}")
    for n in range(30):
        (world.root / "drip" / f"d{n:02}.js").write_text(f"{n}")
    run = world.start_run()
    world.wait_equal(5)
    for n in range(90):
        (world.root / "big" / f"f{n:03}.js").unlink()
    for n in range(29):
        (world.root / "drip" / f"d{n:02}.js").unlink()
        time.sleep(0.25)  # pacing: one delete every 0.25 s is what is tested

    def handled(app: str) -> int:
        """Deleted paths of ``app`` whose sync has run (deleted or withheld: one line each)."""
        lines = run.log_path.read_text(errors="replace").splitlines()
        return len({line.split(" path=")[1].split()[0] for line in lines
                    if f"container={app} path=" in line and " synced in " in line})

    # Every delete has been synced (or withheld) once each app's deleted paths all have a line.
    wait_for(lambda: handled("big") >= 90 and handled("drip") >= 29, 20,
             "every deleted path synced or withheld", details=run.tail)
    big, drip = _store_names(world, "big"), _store_names(world, "drip")
    assert 50 <= len(big) <= 51, len(big)
    assert {f"f{n:03}.js" for n in range(90, 100)} <= big  # what is still there stays
    assert len(drip) == 15, len(drip)
    log = run.log_path.read_text()
    assert "SYNC.maxDeleteShare" in log and "withheld" in log
    # A forced pass then makes the store equal to the folder.
    forced = subprocess.run([*CLI, "sync", "--force"], env=world.env, capture_output=True,
                            text=True, timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert _store_names(world, "big") == {f"f{n:03}.js" for n in range(90, 100)}
    assert _store_names(world, "drip") == {"d29.js"}
