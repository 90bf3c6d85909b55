"""``synchro-sync sessions ...`` through click's runner and as a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.servers.process import clean_environ, wait_for
from tests.servers.redis_server import REDIS_PASSWORD, RedisServer
from worker.cli import main
from worker.config import load_settings
from worker.queue import jobs
from worker.queue.app import celery_config
from worker.stores.sessions import OnConflict, Session, backup_note, open_session_store
from worker.stores.sessions.file import FileSessionStore


@pytest.fixture(autouse=True)
def _isolated(clean_env: Path) -> Iterator[None]:
    """No config.json or SYNCHRO__ variable from the surroundings (``clean_env``: the test runs
    in its empty ``tmp_path``); no status store of the jobs module kept from one test's
    settings to the next."""
    jobs.close_context()
    yield
    jobs.close_context()


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _redis_url(srv: RedisServer, prefix: str) -> str:
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{srv.port}/0?keyPrefix={prefix}"


def _fill_file(path: Path, n: int) -> FileSessionStore:
    store = FileSessionStore(path)
    batch = [(f"s{i}", json.dumps({"id": f"s{i}", "i": i}).encode(),
              None if i % 2 else 4_000_000_000_000) for i in range(n)]

    store.write_raw([batch], OnConflict.FAIL)
    return store


def _ids(store: Any) -> set[str]:
    return {s.id for s in store.iter_sessions()}


# --- through the runner -------------------------------------------------------------------


def test_export_then_import(tmp_path: Path) -> None:
    _fill_file(tmp_path / "a.json", 30)
    out = run("sessions", "export", "--store", "file:a.json", "-o", "out.jsonl")
    assert out.exit_code == 0, out.output
    assert "exported 30 sessions" in out.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 30
    first = json.loads(lines[0])
    assert set(first) == {"id", "state", "expires_at"}
    res = run("sessions", "import", "out.jsonl", "--store", "file:b.json")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1].startswith("imported 30 sessions into file:b.json")
    assert _ids(FileSessionStore(tmp_path / "b.json")) == {f"s{i}" for i in range(30)}


def test_export_to_stdout_and_import_from_stdin(tmp_path: Path) -> None:
    _fill_file(tmp_path / "a.json", 5)
    out = run("sessions", "export", "--store", "file:a.json")
    assert out.exit_code == 0
    assert len(out.stdout.splitlines()) == 5  # only sessions on stdout; summary on stderr
    res = run("sessions", "import", "-", "--store", "file:c.json", input=out.stdout)
    assert res.exit_code == 0, res.output
    assert len(_ids(FileSessionStore(tmp_path / "c.json"))) == 5


def test_snapshot_list_restore_from_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    url = _redis_url(redis_server, f"cli{uuid.uuid4().hex[:6]}:")
    store = open_session_store(url)
    for i in range(1500):
        store.put(Session(f"r{i}", {"i": i}))
    snap = run("sessions", "snapshot", "--from", url, "--dest", "snaps")
    assert snap.exit_code == 0, snap.output
    summary = snap.stdout.strip()
    assert summary.startswith("snapshot ") and "1500 sessions" in summary and "verified" in summary
    assert REDIS_PASSWORD not in snap.output
    snap_id = summary.split()[1].rstrip(":")

    listing = run("sessions", "list", "--dest", "snaps")
    assert listing.exit_code == 0
    row = [line for line in listing.stdout.splitlines() if line.startswith(snap_id)]
    assert row and "1500" in row[0]
    as_json = run("sessions", "list", "--dest", "snaps", "--json")
    assert json.loads(as_json.stdout.splitlines()[0])["count"] == 1500

    res = run("sessions", "restore", "latest", "--dest", "snaps", "--to", "file:r.json")
    assert res.exit_code == 0, res.output
    assert "1500 written" in res.stdout
    assert len(_ids(FileSessionStore(tmp_path / "r.json"))) == 1500

    again = run("sessions", "restore", snap_id, "--dest", "snaps", "--to", "file:r.json")
    assert again.exit_code == 1
    assert again.stderr.count("\n") == 1 and "nothing was written" in again.stderr
    skip = run("sessions", "restore", snap_id, "--dest", "snaps", "--to", "file:r.json",
               "--on-conflict", "skip")
    assert skip.exit_code == 0 and "1500 skipped" in skip.stdout


def test_configured_store_and_backup_dest(tmp_path: Path) -> None:
    _fill_file(tmp_path / "live.json", 12)
    (tmp_path / "config.json").write_text(json.dumps({
        "SESSIONSTORE_SERVICE": "FileSessionStore",
        "SESSIONSTORE": {"sessionStateFile": "live.json"},
        "BACKUP": {"dest": "backups"},
    }))
    assert run("sessions", "snapshot").exit_code == 0
    assert len(list((tmp_path / "backups").glob("*.manifest.json"))) == 1
    listing = run("sessions", "list")
    assert "1 snapshots in backups" in listing.stdout
    res = run("sessions", "restore", "latest", "--to", "file:copy.json")
    assert res.exit_code == 0 and "12 written" in res.stdout


def test_copy(redis_server: RedisServer, tmp_path: Path) -> None:
    _fill_file(tmp_path / "a.json", 40)
    url = _redis_url(redis_server, f"cp{uuid.uuid4().hex[:6]}:")
    res = run("sessions", "copy", "--from", "file:a.json", "--to", url)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("copied 40 sessions from file:a.json to redis://:****@")
    assert _ids(open_session_store(url)) == {f"s{i}" for i in range(40)}


@pytest.mark.parametrize("args", [
    ["sessions", "copy", "--from", "nope", "--to", "memory:"],
    ["sessions", "export", "--store", "redis://:pw@127.0.0.1:notaport"],
    ["sessions", "snapshot", "--from", "file:", "--dest", "x"],
    ["sessions", "restore", "latest", "--on-conflict", "maybe"],
    ["sessions", "copy", "--from", "memory:"],
    ["sessions", "import", "missing.jsonl", "--store", "memory:"],
])
def test_bad_usage_exits_2_with_one_line(args: list[str]) -> None:
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert "pw" not in res.stderr.replace("password", "")


def test_unknown_snapshot_and_empty_dest_exit_1(tmp_path: Path) -> None:
    res = run("sessions", "restore", "latest", "--dest", "empty", "--to", "memory:")
    assert res.exit_code == 1 and "no snapshots" in res.stderr
    _fill_file(tmp_path / "a.json", 1)
    run("sessions", "snapshot", "--from", "file:a.json", "--dest", "d")
    res = run("sessions", "restore", "2001", "--dest", "d", "--to", "memory:")
    assert res.exit_code == 1 and "no snapshot '2001'" in res.stderr
    assert "no snapshots in empty" in run("sessions", "list", "--dest", "empty").stdout


# --- as a subprocess ----------------------------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    exe = Path(sys.executable).with_name("synchro-sync")
    argv = [str(exe) if exe.exists() else "synchro-sync", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_subprocess_snapshot_list_restore(redis_server: RedisServer, tmp_path: Path) -> None:
    url = _redis_url(redis_server, f"sp{uuid.uuid4().hex[:6]}:")
    store = open_session_store(url)
    for i in range(2100):
        store.put(Session(f"p{i}", {"i": i, "s": "é"}))
    snap = cli("sessions", "snapshot", "--from", url, "--dest", "snaps", cwd=tmp_path)
    assert snap.returncode == 0, snap.stderr
    assert len(snap.stdout.strip().splitlines()) == 1 and "2100 sessions" in snap.stdout
    listing = cli("sessions", "list", "--dest", "snaps", cwd=tmp_path)
    assert listing.returncode == 0 and "2100" in listing.stdout
    res = cli("sessions", "restore", "latest", "--dest", "snaps", "--to", "file:out.json",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    restored = FileSessionStore(tmp_path / "out.json")
    assert restored.count() == 2100 and restored.get("p7").state == {"id": "p7", "i": 7, "s": "é"}


def test_subprocess_errors_are_one_line(tmp_path: Path) -> None:
    bad = cli("sessions", "copy", "--from", "ftp://x", "--to", "memory:", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    (tmp_path / "broken.json").write_text('{"sessions": {"a": ')
    corrupt = cli("sessions", "export", "--store", "file:broken.json", cwd=tmp_path)
    assert corrupt.returncode == 1
    assert "broken.json" in corrupt.stderr and "left as it was" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
    assert (tmp_path / "broken.json").read_text() == '{"sessions": {"a": '


def test_subprocess_progress_on_a_terminal(tmp_path: Path) -> None:
    """With stderr on a terminal a rich progress line is drawn; stdout keeps the summary."""
    import pty

    _fill_file(tmp_path / "a.json", 3000)
    master, slave = pty.openpty()
    env = clean_environ()
    exe = Path(sys.executable).with_name("synchro-sync")
    proc = subprocess.run(
        [str(exe) if exe.exists() else "synchro-sync", "sessions", "copy",
         "--from", "file:a.json", "--to", "file:b.json"],
        cwd=tmp_path, env={**env, "TERM": "xterm", "COLUMNS": "100"},
        stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120,
    )
    os.close(slave)
    drawn = b""
    try:
        while chunk := os.read(master, 65536):
            drawn += chunk
    except OSError:
        pass  # EIO once the terminal's other end is closed
    os.close(master)
    assert proc.returncode == 0
    assert proc.stdout.startswith("copied 3000 sessions from file:a.json to file:b.json")
    assert b"\x1b[" in drawn  # terminal control sequences of the progress display


def test_snapshot_to_a_module_store_container(tmp_path: Path) -> None:
    _fill_file(tmp_path / "live.json", 25)
    (tmp_path / "config.json").write_text(json.dumps({
        "MODULESTORE_SERVICE": "FileModuleStore",
        "MODULESTORE": {"directory": "mirror"},
    }))
    snap = run("sessions", "snapshot", "--from", "file:live.json", "--dest", "modulestore:bak")
    assert snap.exit_code == 0, snap.output
    assert snap.stdout.rstrip().endswith("-> modulestore:bak")
    stored = sorted(p.suffix for p in (tmp_path / "mirror" / "bak" / "snapshots").iterdir())
    assert stored == [".json", ".zst"]
    listing = run("sessions", "list", "--dest", "modulestore:bak")
    assert "1 snapshots in modulestore:bak" in listing.stdout
    res = run("sessions", "restore", "latest", "--dest", "modulestore:bak", "--to", "file:r.json")
    assert res.exit_code == 0 and "25 written" in res.stdout
    bad = run("sessions", "list", "--dest", "modulestore:")
    assert bad.exit_code == 2


# --- the server's stores: empty, skipped keys, the in-process memory store ----------------


def test_snapshot_of_an_empty_store_is_an_error_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("{}")
    res = run("sessions", "snapshot", "--from", "file:empty.json", "--dest", "snaps")
    assert res.exit_code == 1, res.output
    assert "holds no sessions" in res.stderr and "--allow-empty" in res.stderr
    assert "verified" not in res.output
    assert list((tmp_path / "snaps").glob("*")) == []  # nothing kept, not even a part
    assert "no snapshots" in run("sessions", "list", "--dest", "snaps").stdout
    ok = run("sessions", "snapshot", "--from", "file:empty.json", "--dest", "snaps",
             "--allow-empty")
    assert ok.exit_code == 0 and ": 0 sessions" in ok.stdout


def test_snapshot_reports_keys_that_are_not_sessions(own_redis: RedisServer) -> None:
    raw = own_redis.client()
    raw.set("s1", b'{"id":"s1"}')
    raw.set("junk", b"{not json")
    raw.set("celery-thing", b"[1]")
    raw.set(b"\xff", b'{"id":"x"}')
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{own_redis.port}/0"
    res = run("sessions", "snapshot", "--from", url, "--dest", "snaps")
    assert res.exit_code == 0, res.output
    assert "1 sessions" in res.stdout
    assert "keys skipped: 3 (" in res.stdout and "1 not JSON" in res.stdout
    assert "1 key not UTF-8" in res.stdout and "1 not an object" in res.stdout
    manifest = json.loads(next(Path("snaps").glob("*.manifest.json")).read_text())
    assert manifest["skipped"] == {"not JSON": 1, "not an object": 1, "key not UTF-8": 1}
    # Only junk: an empty snapshot, refused, naming what was skipped.
    raw.delete("s1")
    bad = run("sessions", "snapshot", "--from", url, "--dest", "snaps")
    assert bad.exit_code == 1 and "holds no sessions (keys skipped: 3" in bad.stderr
    assert REDIS_PASSWORD not in bad.output


@pytest.mark.parametrize("args", [["sessions", "snapshot"],
                                  ["sessions", "snapshot", "--from", "memory:"]])
def test_snapshot_of_the_servers_memory_store_says_it_cannot(args: list[str]) -> None:
    res = run(*args, "--dest", "snaps")
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    assert "inside the Synchro server's process" in res.stderr
    assert not Path("snaps").exists()


def test_no_scheduled_backups_of_the_memory_store(tmp_path: Path) -> None:

    memory = load_settings(None, environ={})
    assert "session-backup" not in celery_config(memory)["beat_schedule"]
    assert "MemorySessionStore" in (backup_note(memory) or "")
    filed = load_settings(None, environ={"SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore"})
    assert "session-backup" in celery_config(filed)["beat_schedule"]
    assert backup_note(filed) is None


def test_a_queued_backup_of_the_memory_store_says_why_it_is_not_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    settings = load_settings(None, environ={"SYNCHRO__BACKUP__dest": "backups"})
    with caplog.at_level("WARNING"):
        assert jobs.snapshot_sessions(settings) is None
    assert "inside the Synchro server's process" in caplog.text
    assert not (tmp_path / "backups").exists()


def test_scheduled_backup_of_an_empty_store_warns_and_keeps_the_old_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    _fill_file(tmp_path / "live.json", 3)
    env = {"SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
           "SYNCHRO__SESSIONSTORE__sessionStateFile": "live.json",
           "SYNCHRO__BACKUP__dest": "backups", "SYNCHRO__BACKUP__keep": "1"}
    settings = load_settings(None, environ=env)
    (tmp_path / "live.json").write_text(
        (tmp_path / "live.json").read_text().replace("{", '{"junk": 5,', 1))
    with caplog.at_level("INFO"):
        done = jobs.snapshot_sessions(settings, scheduled=True)
    assert done is not None and done["skipped"] == {"not an object": 1}
    assert "of 3 sessions" in caplog.text and "keys skipped: 1 (1 not an object)" in caplog.text
    caplog.clear()
    (tmp_path / "live.json").write_text("{}")
    with caplog.at_level("WARNING"):
        assert jobs.snapshot_sessions(settings, scheduled=True) is None
    assert "holds no sessions" in caplog.text and "older snapshots kept" in caplog.text
    manifests = list((tmp_path / "backups").glob("*.manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["count"] == 3


def test_copy_and_export_name_the_keys_that_are_not_sessions(own_redis: RedisServer) -> None:
    raw = own_redis.client()
    raw.set("s1", b'{"id":"s1"}')
    raw.set("x", b"{not json")
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{own_redis.port}/0"
    res = run("sessions", "copy", "--from", url, "--to", "file:out.json")
    assert res.exit_code == 0, res.output
    assert "copied 1 sessions" in res.stdout and "keys skipped: 1 (1 not JSON)" in res.stdout
    assert json.loads(Path("out.json").read_text()) == {"s1": {"id": "s1"}}
    exp = run("sessions", "export", "--store", url, "-o", "out.jsonl")
    assert "exported 1 sessions" in exp.stderr and "keys skipped: 1 (1 not JSON)" in exp.stderr


def test_run_with_the_memory_store_says_once_it_backs_nothing_up(sync_world: Any) -> None:

    world = sync_world(None, **{"BACKUP__interval": "0.3", "BACKUP__dest": "snaps",
                                "SYNC__fullPassInterval": "0.3"})
    (world.root / "app1").mkdir()
    (world.root / "app1" / "main.js").write_text("main")
    run_proc = world.start_run()

    def scheduled_passes() -> int:
        return run_proc.log_path.read_text(errors="replace").count(
            "container=app1 full pass (scheduled) done")

    # The timer that would run the backups requests the full passes too: three scheduled
    # passes done means it has been through several backup intervals.
    wait_for(lambda: scheduled_passes() >= 3, 30, "three scheduled full passes",
             details=world.logs)
    log = run_proc.log_path.read_text(errors="replace")
    run_proc.stop()
    assert log.count("no scheduled session backups: SESSIONSTORE_SERVICE "
                     "MemorySessionStore lives inside the Synchro server's process") == 1, log
    assert "snapshot" not in log.replace("no scheduled session backups", "")
    assert not (world.base / "snaps").exists()


def test_the_worker_s_own_keys_stay_out_of_the_sessions_database(
    own_redis: RedisServer, tmp_path: Path
) -> None:

    sessions_db = own_redis.client(0)
    for i in range(20):
        sessions_db.set(f"id-{i}", json.dumps({"id": f"id-{i}"}))
    base = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{own_redis.port}"
    settings = load_settings(None, environ={
        "SYNCHRO__BROKER_URL": f"{base}/1",
        "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SYNCHRO__SESSIONSTORE__url": f"{base}/0",
        "SYNCHRO__BACKUP__dest": "backups",
    })
    done = jobs.snapshot_sessions(settings, scheduled=True)  # takes its lock, records status
    assert done is not None and done["sessions"] == 20 and done["skipped"] == {}
    assert sorted(sessions_db.keys()) == sorted(f"id-{i}".encode() for i in range(20))
    assert own_redis.client(1).exists("synchro-sync:status")  # the worker's, beside


def test_ctrl_c_during_a_snapshot_leaves_no_snapshot(redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    """SIGINT while `sessions snapshot` reads 300,000 sessions: one line, exit 130 (click said
    "Aborted!" and exit 1), and no snapshot, whole or partial, in the destination."""
    import signal
    import time

    prefix = f"int{uuid.uuid4().hex[:6]}:"
    url = _redis_url(redis_server, prefix)
    store = open_session_store(url)
    body = json.dumps({"cart": "x" * 200}).encode()
    store.write_raw(([(f"i{b}-{i}", body, None) for i in range(10_000)] for b in range(30)),
                    OnConflict.OVERWRITE)
    store.close()
    watcher = redis_server.client()
    before = len(watcher.client_list())
    exe = Path(sys.executable).with_name("synchro-sync")
    proc = subprocess.Popen(
        [str(exe) if exe.exists() else "synchro-sync", "sessions", "snapshot", "--from", url,
         "--dest", "snaps"], cwd=tmp_path, env=clean_environ(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(watcher.client_list()) <= before:  # connected: the snapshot is reading
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    watcher.close()
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "synchro-sync: interrupted", err
    assert "Traceback" not in err and "Aborted" not in err
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())
    listing = cli("sessions", "list", "--dest", "snaps", cwd=tmp_path)
    assert "no snapshots" in listing.stdout, listing.stdout + listing.stderr
