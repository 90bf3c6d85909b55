"""`run`'s log as people and machines read it: summary lines instead of Python dicts,
`LOG_FORMAT=json` (one object a line, container and path as fields), one line at Ctrl-C."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.servers.celery_worker import SyncWorld
from tests.servers.process import ServerProcess


def _wait_log(proc: ServerProcess, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = proc.log_path.read_text(errors="replace")
        if needle in text:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not in\n{text}"
        time.sleep(0.1)  # poll interval


def _interrupt(proc: ServerProcess) -> None:
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(30) == 0


def test_text_log_lines_are_for_people_and_ctrl_c_says_what_it_did(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world = sync_world(None)
    (world.root / "app1").mkdir()
    (world.root / "app1" / "a.txt").write_text("a")
    run = world.start_run()
    (world.root / "app1" / "b c.txt").write_text("b")
    _wait_log(run, "path=b c.txt synced")
    _interrupt(run)
    text = run.log_path.read_text(errors="replace")
    assert "{'" not in text, text  # no Python dicts
    assert "container=app1 full pass (start-up) done" in text
    assert "uploaded 1, copied 0, deleted 0, unchanged 0" in text
    stopped = [line for line in text.splitlines() if "stopped" in line]
    assert len(stopped) == 1, text
    assert stopped[0].startswith("synchro-sync: stopped: 1 save(s) mirrored and 1 full pass")
    assert "next start-up pass" in stopped[0]


def test_json_log_one_object_a_line_with_container_and_path(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world = sync_world(None, LOG_FORMAT="json")
    (world.root / "app1").mkdir()
    run = world.start_run()
    (world.root / "app1" / "x y.js").write_text("x")
    _wait_log(run, '"path": "x y.js"')
    _interrupt(run)
    records: list[dict[str, Any]] = []
    for line in run.log_path.read_text(errors="replace").splitlines():
        if line.startswith("synchro-sync: "):  # the CLI's own lines (live, stopped)
            continue
        records.append(json.loads(line))  # every log line is one JSON object
    synced = [r for r in records if r.get("path") == "x y.js"]
    assert synced and synced[0]["container"] == "app1" and synced[0]["level"] == "INFO"
    assert synced[0]["message"].startswith("synced in ") and "uploaded" in synced[0]["message"]
    passes = [r for r in records if r["message"].startswith("full pass (start-up)")]
    assert passes and passes[0]["container"] == "app1"


def test_ctrl_c_during_the_start_up_pass_stops_it_at_once(
    sync_world: Callable[..., SyncWorld],
) -> None:
    """SIGINT while `run`'s start-up pass of 20,000 files is sending: `run` ends within seconds
    (it used to finish the whole pass first), never goes live, deletes nothing, says in its one
    stopped line that a pass was stopped part way, and records no pass in status."""
    import os
    import subprocess

    from tests.servers.celery_worker import CLI

    world = sync_world(None)
    app = world.root / "app1"
    app.mkdir()
    files = 20_000  # enough that a busy machine cannot finish the pass before the signal lands
    for n in range(files):
        (app / f"f{n:05d}.js").write_text(f"file {n}\n" * 20)
    mirror = world.base / "mirror" / "app1"
    mirror.mkdir(parents=True)
    (mirror / "stale.js").write_text("a whole pass deletes this")
    env = {k: v for k, v in world.env.items() if k != "SYNCHRO__BROKER_URL"}
    log = world.base / "interrupted-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "run"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=world.base)
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(mirror)) < 10:  # the start-up pass is sending
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        sent_at = time.monotonic()
        assert proc.wait(30) == 0, log.read_text()
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert took < 10, text
    assert 10 <= len(os.listdir(mirror)) < files + 1 and (mirror / "stale.js").exists()
    assert "full pass (start-up) stopped early: uploaded" in text, text
    assert "synchro-sync: live:" not in text and "Traceback" not in text, text
    stopped = [line for line in text.splitlines() if line.startswith("synchro-sync: stopped:")]
    assert len(stopped) == 1, text
    assert "one more stopped part way: nothing deleted" in stopped[0], stopped[0]
    status = subprocess.run([*CLI, "status", "--json"], env=env, cwd=world.base,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode in (0, 1), status.stderr
    assert "app1" not in json.loads(status.stdout)["full_passes"], status.stdout
