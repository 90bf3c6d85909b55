"""The mirror pass end to end against real stores: a local folder, moto (S3) and, as their
fixtures exist, fake-gcs-server, Azurite and Swift.  After every pass the store must equal the
tree by checksum."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.passes import full_pass
from worker.mirror.pull import pull

BIG = 20 * 1024 * 1024

_CLOUDS = {
    "amazon": "tests.servers.s3_server",
    "google": "tests.servers.gcs_server",
    "azure": "tests.servers.azure_server",
    "openstack": "tests.servers.swift_server",
}
PROVIDERS = ["file"] + [p for p, mod in _CLOUDS.items() if importlib.util.find_spec(mod)]
if "amazon" in PROVIDERS:
    PROVIDERS.append("amazon-bucket")  # MODULESTORE.bucket: one bucket, a prefix per app


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_tree(app: Path, big: bool = True) -> None:
    """Nested folders, spaces and unicode names, an empty file, a 20 MiB file, junk."""
    write(app / "index.js", b"console.log('hi')\n")
    write(app / "lib" / "deep" / "er" / "util.js", b"module.exports = 1\n" * 50)
    write(app / "with space" / "a file.txt", b"spaces\n")
    write(app / unicodedata.normalize("NFD", "ünïcödé") / "日本語.json", b'{"k": 1}\n')
    write(app / "empty.txt", b"")
    if big:
        write(app / "assets" / "big.bin", os.urandom(BIG))
    for junk in ["node_modules/pkg/index.js", ".git/HEAD", ".index.js.swp", "notes.txt~",
                 "4913", ".#index.js", ".DS_Store"]:
        write(app / junk, b"junk")


def local_tree(app: Path) -> dict[str, str]:
    from worker.mirror.ignore import IgnoreRules
    from worker.mirror.localtree import scan

    rules = IgnoreRules(app.parent)
    return {
        f.key: md5((app / f.relpath).read_bytes())
        for f in scan(app.parent.resolve(), app.name, rules)[0]
    }


class Harness:
    """One test's app root, state folder and store settings."""

    def __init__(self, tmp: Path, provider: str, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self.root = tmp / "apps"
        self.root.mkdir()
        self.app = f"app-{uuid.uuid4().hex[:10]}"
        overrides: dict[str, Any] = {
            "APP_ROOT_PATH": str(self.root),
            "STATE_DIR": str(tmp / "state"),
            "SYNC.transfers": 8,
        }
        if provider == "file":
            overrides["MODULESTORE"] = {"directory": str(tmp / "mirror")}
        else:
            cloud = provider.split("-")[0]
            server = request.getfixturevalue(f"{cloud}_store_server")
            bucket = None
            if provider.endswith("-bucket"):
                bucket = f"bkt-{uuid.uuid4().hex[:10]}"
                server.client().create_bucket(Bucket=bucket)
            overrides["MODULESTORE_SERVICE"] = "PkgCloudModuleStore"
            overrides["MODULESTORE"] = server.settings(bucket=bucket)
        self.overrides = overrides
        self.contexts: list[MirrorContext] = []

    def settings(self, **extra: Any) -> Any:
        return load_settings(None, {**self.overrides, **extra}, environ={})

    def context(self, **extra: Any) -> MirrorContext:
        ctx = MirrorContext.from_settings(self.settings(**extra))
        self.contexts.append(ctx)
        return ctx

    @property
    def app_dir(self) -> Path:
        return self.root / self.app

    def store_tree(self, ctx: MirrorContext) -> dict[str, str]:
        """Every object's MD5, computed from its downloaded content."""
        out = {}
        for info in ctx.store.list(self.app):
            out[info.key] = md5(ctx.store.read_bytes(self.app, info.key))
        return out

    def close(self) -> None:
        for ctx in self.contexts:
            with contextlib.suppress(Exception):
                ctx.store.delete_container(self.app)
            ctx.close()


@pytest.fixture(params=PROVIDERS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path, request.param, request)
    yield harness
    harness.close()


def test_sync_equals_tree_through_edits_deletes_renames(h: Harness) -> None:
    build_tree(h.app_dir)
    ctx = h.context()
    first = full_pass(ctx)
    assert first.ok, first.failures
    assert first.uploaded == 6 and first.deleted == 0
    assert h.store_tree(ctx) == local_tree(h.app_dir)

    again = full_pass(ctx)
    assert (again.uploaded, again.copied, again.deleted, again.unchanged) == (0, 0, 0, 6)

    a = h.app_dir
    (a / "index.js").write_bytes(b"console.log('HI')\n")  # same size, other content
    (a / "empty.txt").write_bytes(b"now with content")
    (a / "lib" / "deep" / "er" / "util.js").unlink()
    shutil.move(a / "with space", a / "moved folder")  # a rename of a folder
    write(a / "new" / "folder" / "n.js", b"new\n")
    os.utime(a / "assets" / "big.bin")  # touched only: must not be sent again
    third = full_pass(ctx)
    assert third.ok, third.failures
    assert h.store_tree(ctx) == local_tree(h.app_dir)
    assert third.deleted == 2  # util.js and the folder's old key
    if ctx.store.supports_server_side_copy:
        assert third.copied == 1 and third.uploaded == 3
    else:
        assert third.uploaded == 4
    assert third.bytes < BIG  # the touched 20 MiB file was not uploaded

    fourth = full_pass(ctx)
    assert (fourth.uploaded, fourth.copied, fourth.deleted) == (0, 0, 0)


def test_emptied_source_deletes_nothing_and_missing_root_fails(h: Harness) -> None:
    build_tree(h.app_dir, big=False)
    ctx = h.context()
    assert full_pass(ctx).ok
    before = h.store_tree(ctx)
    for child in h.app_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    result = full_pass(ctx)
    assert result.deleted == 0 and any("empty" in w for w in result.warnings)
    assert h.store_tree(ctx) == before
    h.app_dir.rmdir()
    assert full_pass(ctx).deleted == 0
    shutil.rmtree(h.root)
    from worker.errors import SyncError

    with pytest.raises(SyncError, match="does not exist"):
        full_pass(ctx)
    assert h.store_tree(ctx) == before


def test_dry_run_changes_nothing(h: Harness) -> None:
    build_tree(h.app_dir, big=False)
    ctx = h.context()
    plan_only = full_pass(ctx, dry_run=True)
    assert sum(len(p.uploads) for p in plan_only.plans) == 5
    assert h.app not in ctx.store.containers() or h.store_tree(ctx) == {}
    assert full_pass(ctx).uploaded == 5
    (h.app_dir / "index.js").unlink()
    write(h.app_dir / "added.js", b"added")
    before = h.store_tree(ctx)
    dry = full_pass(ctx, dry_run=True)
    assert [d for p in dry.plans for d in p.deletes] == ["index.js"]
    assert [u.file.key for p in dry.plans for u in p.uploads] == ["added.js"]
    assert h.store_tree(ctx) == before
    assert dry.uploaded == 0 and dry.deleted == 0


def test_pull_then_sync_uploads_nothing(h: Harness) -> None:
    build_tree(h.app_dir)
    ctx = h.context()
    assert full_pass(ctx).ok
    # A new server: another module directory and another state folder, same store.
    new_root = h.tmp / "new-server"
    other = h.context(APP_ROOT_PATH=str(new_root), STATE_DIR=str(h.tmp / "state2"))
    pulled = pull(other, [h.app])
    assert pulled.ok, pulled.failures
    assert pulled.uploaded == 6
    assert local_tree(new_root / h.app) == local_tree(h.app_dir)
    after = full_pass(other)
    assert after.ok and (after.uploaded, after.copied, after.deleted) == (0, 0, 0)
    assert after.unchanged == 6


def test_more_deletes_than_share_need_force(h: Harness) -> None:
    for i in range(10):
        write(h.app_dir / f"f{i}.js", f"file {i}".encode())
    ctx = h.context(**{"SYNC.maxDeleteShare": 0.3})
    assert full_pass(ctx).uploaded == 10
    for i in range(4):
        (h.app_dir / f"f{i}.js").unlink()
    held = full_pass(ctx)
    assert not held.ok and held.deleted == 0 and "--force" in str(held.withheld[0])
    assert len(h.store_tree(ctx)) == 10
    forced = full_pass(ctx, force=True)
    assert forced.ok and forced.deleted == 4
    assert h.store_tree(ctx) == local_tree(h.app_dir)


def test_file_changed_during_upload_is_uploaded_again(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(h.app_dir / "hot.js", b"version 1")
    ctx = h.context()
    real_put: Callable[..., Any] = ctx.store.put_file
    calls: list[str] = []

    def put_then_edit(container: str, key: str, source: Any, md5_hex: str | None = None) -> Any:
        info = real_put(container, key, source, md5_hex=md5_hex)
        calls.append(key)
        if len(calls) == 1:  # the user saves again while the first upload finishes
            (h.app_dir / key).write_bytes(b"version 2, longer")
        return info

    monkeypatch.setattr(ctx.store, "put_file", put_then_edit)
    result = full_pass(ctx)
    assert result.ok and calls == ["hot.js", "hot.js"]
    assert h.store_tree(ctx) == {"hot.js": md5(b"version 2, longer")}
    monkeypatch.undo()
    assert full_pass(ctx).uploaded == 0  # and the index holds the second version


def test_ignored_objects_stay_and_unsafe_keys_are_not_pulled(h: Harness) -> None:
    build_tree(h.app_dir, big=False)
    ctx = h.context()
    assert full_pass(ctx).ok
    # Objects a pattern ignores are never deleted (adding a pattern deletes nothing).
    ctx.store.put_bytes(h.app, "node_modules/left/over.js", b"old")
    (h.root / ".syncignore").write_text(f"/{h.app}/with space/\n")
    result = full_pass(ctx)
    assert result.ok and result.deleted == 0
    names = {i.key for i in ctx.store.list(h.app)}
    assert "node_modules/left/over.js" in names and "with space/a file.txt" in names
    if h.overrides.get("MODULESTORE", {}).get("provider") != "amazon" or ctx.store.bucket:
        return
    # A key that would escape the folder on pull is refused, never written outside it.
    raw = h.contexts[0].store.backend.client
    for bad in ("../../evil.js", "a/../../evil2.js"):
        raw.put_object(Bucket=h.app, Key=bad, Body=b"evil")
    new_root = h.tmp / "fresh"
    other = h.context(APP_ROOT_PATH=str(new_root), STATE_DIR=str(h.tmp / "state-fresh"))
    pulled = pull(other, [h.app])
    assert sum("escapes" in w for w in pulled.warnings) == 2
    assert not (h.tmp / "evil.js").exists() and not (h.tmp / "evil2.js").exists()
    assert not any(p.name.startswith("evil") for p in h.tmp.rglob("*"))
    assert (new_root / h.app / "index.js").exists()
