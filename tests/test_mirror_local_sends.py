"""A pass into a local folder (FileModuleStore) sends small files on the thread that merges
their container, not on the pool (``sender.INLINE_SEND``): what each send did, or why it
failed, is counted the same way, and a failed send still keeps the container's deletes back."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.config import load_settings
from worker.mirror import sender, transfer
from worker.mirror.context import MirrorContext
from worker.mirror.passes import full_pass

OLD = 1_600_000_000


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path, MirrorContext]]:
    root, mirror = tmp_path / "apps", tmp_path / "mirror"
    root.mkdir()
    ctx = MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(root), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE": {"directory": str(mirror)},
    }, environ={}))
    yield root, mirror, ctx
    ctx.close()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def test_small_files_go_on_the_merging_thread_and_large_ones_on_the_pool(
    world: tuple[Path, Path, MirrorContext], monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, mirror, ctx = world
    small = {f"app/s/f{i:02d}.js": os.urandom(100 + i) for i in range(40)}
    large = {f"app/l/b{i}.bin": os.urandom(sender.INLINE_SEND + 1 + i) for i in range(2)}
    for rel, data in {**small, **large}.items():
        _write(root / rel, data)
    assert ctx.store.writes_locally
    threads: dict[str, str] = {}
    real_upload = transfer.upload

    def noting_upload(ctx: MirrorContext, container: str, up: transfer.Upload
                      ) -> tuple[str, object, int]:
        threads[f"{container}/{up.file.key}"] = threading.current_thread().name
        return real_upload(ctx, container, up)

    monkeypatch.setattr(transfer, "upload", noting_upload)
    result = full_pass(ctx)

    assert result.ok and result.uploaded == len(small) + len(large), result.failures
    assert result.of("app").uploaded == len(small) + len(large)
    assert set(threads) == set(small) | set(large)
    assert not any(threads[k].startswith("synchro-put") for k in small), threads
    assert all(threads[k].startswith("synchro-put") for k in large), threads
    for rel, data in {**small, **large}.items():
        assert hashlib.md5((mirror / rel).read_bytes()).digest() == hashlib.md5(data).digest()
    # What was sent on the merging thread is in the index: the next pass sends nothing.
    again = full_pass(ctx)
    assert (again.uploaded, again.unchanged) == (0, len(small) + len(large))


def test_a_send_that_fails_on_the_merging_thread_is_counted_and_holds_back_deletes(
    world: tuple[Path, Path, MirrorContext],
) -> None:
    root, mirror, ctx = world
    for i in range(5):
        _write(root / "app" / f"ok{i}.js", b"fine %d" % i)
    _write(root / "app" / "sub" / "x.js", b"cannot land: sub is a file in the store")
    _write(mirror / "app" / "sub", b"a file where the tree has a folder")
    _write(mirror / "app" / "stale.js", b"a pass without failures deletes this")

    result = full_pass(ctx)

    assert [f.container for f in result.failures] == ["app"], result.failures
    assert "sub/x.js" in str(result.failures[0]), result.failures
    assert result.uploaded == 5 and result.deleted == 0
    assert (mirror / "app" / "stale.js").exists()  # a failed upload keeps every delete back
    assert all((mirror / "app" / f"ok{i}.js").read_bytes() == b"fine %d" % i for i in range(5))


def test_the_store_files_are_uploaded_by_a_pass_and_by_a_live_save_and_never_deleted(
    world: tuple[Path, Path, MirrorContext],
) -> None:
    """The store files' container is "/" (their paths are "//apps.json" to the mirror): after
    an upload the path is checked again, and a wrong reading of that path once made every
    upload of apps.json look gone, so that a live save deleted it from the store."""
    from worker.mirror.pathsync import sync_path
    from worker.stores.modules import STORE_FILES

    root, mirror, ctx = world
    _write(root / "apps.json", b'{"apps": 1}\n')
    _write(root / "app" / "main.js", b"x")
    result = full_pass(ctx)
    assert result.ok and result.uploaded == 2, result.failures
    assert not [w for w in result.warnings if "gone" in w], result.warnings
    assert (mirror / "apps.json").read_bytes() == b'{"apps": 1}\n'

    (root / "apps.json").write_bytes(b'{"changed": true}\n')
    done = sync_path(ctx, STORE_FILES, "apps.json")
    assert done.action == "uploaded", done
    assert (mirror / "apps.json").read_bytes() == b'{"changed": true}\n'
