"""A `.syncignore` line that is not a valid pattern is one warning naming the file and line;
the file's other lines still apply, and mirroring goes on (`sync` and `run`)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.process import wait_for


def _tree(root: Path) -> None:
    app = root / "app1"
    (app / "build").mkdir(parents=True)
    (app / "main.js").write_text("main")
    (app / "build" / "out.js").write_text("built")
    (app / "skip.log").write_text("log")
    (app / ".syncignore").write_text("*.log\n\\\nbuild/\n")
    (root / ".syncignore").write_text("\\\n")
    (root / "app2").mkdir()
    (root / "app2" / "b.js").write_text("b")


def _passes(log: Path) -> int:
    """Full passes of app1 the log says are done ("container=app1 full pass (...) done")."""
    try:
        return len(re.findall(r"container=app1 full pass \([^)]*\) done", log.read_text()))
    except OSError:
        return 0


def test_sync_warns_of_a_bad_pattern_by_file_and_line(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None)
    _tree(world.root)
    out = subprocess.run([*CLI, "sync"], env=world.env, cwd=world.base, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "GitIgnorePatternError" not in out.stderr
    assert f"{world.root / 'app1' / '.syncignore'} line 2" in out.stderr
    assert f"{world.root / '.syncignore'} line 1" in out.stderr
    assert sorted(world.store_files()) == ["app1/main.js", "app2/b.js"]


def test_run_starts_and_mirrors_with_a_bad_pattern(sync_world: Callable[..., SyncWorld]) -> None:
    world = sync_world(None, SYNC__fullPassInterval="1")
    _tree(world.root)
    run = world.start_run()
    world_files = {"app1/main.js", "app2/b.js"}
    assert set(world.store_files()) == world_files
    passes = _passes(run.log_path)
    (world.root / "app2" / "c.js").write_text("c")
    (world.root / "app1" / "more.log").write_text("ignored")
    wait_for(lambda: "app2/c.js" in world.store_files(), 5, "app2/c.js mirrored",
             details=world.logs)
    # Two more full passes of app1 (so one started after the saves) leave more.log out too.
    wait_for(lambda: _passes(run.log_path) >= passes + 2, 20, "two scheduled full passes more",
             details=world.logs)
    assert set(world.store_files()) == world_files | {"app2/c.js"}, world.logs()
    log = run.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "full pass failed" not in log.lower()
    assert log.count(f"{world.root / 'app1' / '.syncignore'} line 2") == 1, log
