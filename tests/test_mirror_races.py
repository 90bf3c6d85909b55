"""Races a user makes without meaning to: files changing between the listing and the upload,
a file appended to all through a pass, two `sync` at once, `run` plus a manual `sync`.  The
store never holds a mix of two versions, and converges on the next pass."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.servers.celery_worker import CLI, SyncWorld
from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.passes import execute, full_pass, plan
from worker.mirror.results import PassResult


def _context(tmp: Path, server: Any) -> MirrorContext:
    return MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(tmp / "apps"), "STATE_DIR": str(tmp / "state"),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore", "MODULESTORE": server.settings(),
    }, environ={}))


def _versions(path: Path, writes: list[bytes]) -> set[str]:
    """MD5 of every state the file went through (each write appends one chunk)."""
    out, acc = set(), b""
    for chunk in writes:
        acc += chunk
        out.add(hashlib.md5(acc).hexdigest())
    return out


def test_deleted_truncated_appended_between_listing_and_upload(
    tmp_path: Path, amazon_store_server: Any
) -> None:
    app = f"race-{os.urandom(4).hex()}"
    base = tmp_path / "apps" / app
    base.mkdir(parents=True)
    for name in ("gone.js", "short.js", "long.js", "big.bin"):
        (base / name).write_bytes(b"x" * 1000)
    (base / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # in parts
    ctx = _context(tmp_path, amazon_store_server)
    try:
        stream = plan(ctx, app)
        stream.materialise()  # walked and merged now, sent after the changes below
        ctx.store.ensure_container(app)
        (base / "gone.js").unlink()
        (base / "short.js").write_bytes(b"cut")
        with open(base / "long.js", "ab") as f:
            f.write(b"appended")
        with open(base / "big.bin", "r+b") as f:
            f.truncate(5 * 1024 * 1024)
        result = PassResult()
        execute(ctx, [stream], result)
        stored = {i.key: ctx.store.read_bytes(app, i.key) for i in ctx.store.list(app)}
        local = {p.name: p.read_bytes() for p in base.iterdir()}
        # What was sent is exactly what the file held when it was sent: never a mix.
        assert stored == local, {k: len(v) for k, v in stored.items()}
        again = full_pass(ctx)
        assert (again.uploaded, again.deleted) == (0, 0)
    finally:
        ctx.store.delete_container(app)
        ctx.close()


def test_a_file_appended_to_all_through_a_pass(tmp_path: Path, amazon_store_server: Any) -> None:
    app = f"race-{os.urandom(4).hex()}"
    base = tmp_path / "apps" / app
    base.mkdir(parents=True)
    log = base / "grow.js"
    writes = [os.urandom(64 * 1024)]
    log.write_bytes(writes[0])
    for n in range(50):
        (base / f"f{n}.js").write_bytes(os.urandom(2048))
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            chunk = os.urandom(4096)
            with open(log, "ab") as f:
                f.write(chunk)
            writes.append(chunk)
            time.sleep(0.002)  # pacing: the file grows all through the pass

    ctx = _context(tmp_path, amazon_store_server)
    writer = threading.Thread(target=append)
    writer.start()
    try:
        first = full_pass(ctx)
    finally:
        stop.set()
        writer.join()
    try:
        stored = ctx.store.read_bytes(app, "grow.js") if "grow.js" in {
            i.key for i in ctx.store.list(app)} else None
        if stored is not None:  # one consistent state of the file, never a mix
            assert hashlib.md5(stored).hexdigest() in _versions(log, writes)
        else:  # it kept changing: reported, and the next pass sends it
            assert any("grow.js" in str(f) for f in first.failures), first.failures
        again = full_pass(ctx)
        assert again.ok, again.failures
        assert ctx.store.read_bytes(app, "grow.js") == log.read_bytes()
        assert full_pass(ctx).uploaded == 0
    finally:
        ctx.store.delete_container(app)
        ctx.close()


def _tree_equal(world: SyncWorld) -> bool:
    return world.local_files() == world.store_files()


def test_two_syncs_at_once_and_run_plus_a_manual_sync(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world = sync_world(None)
    for a in range(3):
        for n in range(200):
            p = world.root / f"app{a}" / f"d{n % 7}" / f"f{n}.js"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{a}/{n}")
    procs = [subprocess.Popen([*CLI, "sync"], env=world.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[1] for o in outs)
    assert _tree_equal(world)
    # run, and a manual sync while it is live and files change.
    run = world.start_run()
    for n in range(0, 200, 3):
        (world.root / "app1" / f"d{n % 7}" / f"f{n}.js").write_text(f"edited {n}")
    for n in range(1, 200, 9):
        (world.root / "app2" / f"d{n % 7}" / f"f{n}.js").unlink()
    manual = subprocess.run([*CLI, "sync"], env=world.env, capture_output=True, text=True,
                            timeout=120)
    assert manual.returncode == 0, manual.stderr
    world.wait_equal(10)
    assert run.proc is not None and run.proc.poll() is None
