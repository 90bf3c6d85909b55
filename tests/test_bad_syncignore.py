"""A `.syncignore` line that is not a valid pattern is one warning naming the file and line;
the file's other lines still apply, and mirroring goes on (`sync` and `run`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.servers.celery_worker import CLI, SyncWorld


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
    (world.root / "app2" / "c.js").write_text("c")
    (world.root / "app1" / "more.log").write_text("ignored")
    deadline = time.monotonic() + 5
    while "app2/c.js" not in world.store_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # at least one scheduled full pass more
    assert set(world.store_files()) == world_files | {"app2/c.js"}, world.logs()
    log = run.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "full pass failed" not in log.lower()
    assert log.count(f"{world.root / 'app1' / '.syncignore'} line 2") == 1, log
