"""`run` meets paths it cannot mirror -- a name that is not UTF-8, a symlink loop, a file it
cannot read, the root renamed away -- and says so in one line each, by name, once; no
traceback, and the rest is mirrored."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tests.servers.celery_worker import SyncWorld


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
    time.sleep(2.5)  # several scheduled passes
    os.rename(world.root, world.base / "gone")
    time.sleep(1.5)
    os.rename(world.base / "gone", world.root)
    time.sleep(1.5)
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
