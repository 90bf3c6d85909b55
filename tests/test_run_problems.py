"""`run` meets paths it cannot mirror -- a name that is not UTF-8, a symlink loop, a file it
cannot read, the root renamed away -- and says so in one line each, by name, once; no
traceback, and the rest is mirrored."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.servers.celery_worker import SyncWorld
from tests.servers.process import wait_for


def _count(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


def test_run_reports_each_unmirrorable_path_once(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None, SYNC__fullPassInterval="0.5")
    app = world.root / "app1"
    app.mkdir()
    (app / "good.txt").write_text("good")
    os.symlink("loopB", app / "loopA")
    os.symlink("loopA", app / "loopB")
    with open(os.fsencode(app) + b"/bad\xff.txt", "wb") as f:
        f.write(b"x")
    run = world.start_run()
    # Live: the same kinds of trouble while running.
    with open(os.fsencode(app) + b"/live\xfe.txt", "wb") as f:
        f.write(b"y")
    os.symlink("selfloop", app / "selfloop")
    unreadable = app / "locked.txt"
    unreadable.write_text("no")
    unreadable.chmod(0)
    (app / "later.txt").write_text("later")

    def log_has(needle: str, times: int = 1) -> bool:
        return _count(run.log_path.read_text(errors="replace"), needle) >= times

    # Several scheduled passes after the live saves: each says its trouble again, or not.
    passes = _count(run.log_path.read_text(errors="replace"), "full pass (scheduled) done")
    wait_for(lambda: log_has("full pass (scheduled) done", passes + 3), 20,
             "three scheduled passes", details=run.tail)
    os.rename(world.root, world.base / "gone")
    wait_for(lambda: log_has("is missing; no full pass"), 20, "the missing root said",
             details=run.tail)
    os.rename(world.base / "gone", world.root)
    wait_for(lambda: log_has("is back; full passes resume"), 20, "the root back said",
             details=run.tail)
    wait_for(lambda: log_has("full pass (scheduled) done", passes + 4), 20,
             "a scheduled pass after the root came back", details=run.tail)
    log = run.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log
    for name in ("bad\\xff.txt", "live\\xfe.txt", "loopA", "loopB", "selfloop"):
        assert _count(log, f"path={name} ") == 1, (name, log)
    assert _count(log, "is missing; no full pass") == 1, log
    if os.geteuid() != 0:  # root reads every file
        assert _count(log, "path=locked.txt ") == 1, log
    store = world.store_files()
    assert store["app1/good.txt"] == b"good" and store["app1/later.txt"] == b"later"
    assert not any("bad" in k or "live" in k or "loop" in k for k in store), sorted(store)
