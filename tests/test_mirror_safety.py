"""Nothing outside the module directory is ever read or uploaded, even when the tree changes
between the scan and the upload (a folder or a file swapped for a symlink out of the root);
and nothing in the store is deleted because the tree could not be seen (the root moved away
during a pass) or because ``pull`` could not bring an object into the folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.passes import execute, full_pass, plan
from worker.mirror.pathsync import sync_path
from worker.mirror.pull import pull
from worker.mirror.results import PassResult

SECRET = b"root:x:0:0:outside the module directory\n"


@pytest.fixture(params=["file", "amazon"])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MirrorContext]:
    overrides: dict[str, Any] = {
        "APP_ROOT_PATH": str(tmp_path / "apps"), "STATE_DIR": str(tmp_path / "state"),
    }
    if request.param == "file":
        overrides["MODULESTORE"] = {"directory": str(tmp_path / "mirror")}
    else:
        server = request.getfixturevalue("amazon_store_server")
        overrides["MODULESTORE_SERVICE"] = "PkgCloudModuleStore"
        overrides["MODULESTORE"] = server.settings()
    (tmp_path / "apps").mkdir()
    context = MirrorContext.from_settings(load_settings(None, overrides, environ={}))
    yield context
    context.close()


def _outside(tmp: Path, names: list[str]) -> Path:
    """A folder outside the root holding files named like the ones the scan saw."""
    out = tmp / "outside"
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(SECRET)
    return out


def _objects(ctx: MirrorContext, app: str) -> dict[str, bytes]:
    return {i.key: ctx.store.read_bytes(app, i.key) for i in ctx.store.list(app)}


def _plan_then(ctx: MirrorContext, app: str, swap: Any) -> PassResult:
    """Plan the container, change the tree as an attacker would, then execute the plan."""
    stream = plan(ctx, app)
    stream.materialise()  # the walk and the merge happen now, the sends after the swap
    ctx.store.ensure_container(app)
    swap()
    result = PassResult()
    execute(ctx, [stream], result)
    return result


def test_folder_swapped_for_a_symlink_out_after_the_scan_is_not_followed(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    lib = ctx.root / app / "lib"
    lib.mkdir(parents=True)
    names = [f"m{i}.js" for i in range(20)]
    for name in names:
        (lib / name).write_text(f"inside {name}")
    (ctx.root / app / "main.js").write_text("main")
    out = _outside(tmp_path, names)

    def swap() -> None:
        lib.rename(ctx.root / app / "lib.moved")
        os.symlink(out, lib)

    result = _plan_then(ctx, app, swap)
    stored = _objects(ctx, app)
    assert SECRET not in stored.values(), "a file outside the root was uploaded"
    assert stored == {"main.js": b"main"}
    assert len(result.failures) == len(names)
    assert all("symlink" in str(f) and "lib" in str(f) for f in result.failures), result.failures
    assert result.uploaded == 1
    ctx.store.delete_container(app)


def test_file_swapped_for_a_symlink_out_after_the_scan_is_not_followed(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    (ctx.root / app).mkdir()
    (ctx.root / app / "a.js").write_text("a")
    (ctx.root / app / "b.js").write_text("b")
    out = _outside(tmp_path, ["passwd"])

    def swap() -> None:
        (ctx.root / app / "a.js").unlink()
        os.symlink(out / "passwd", ctx.root / app / "a.js")

    result = _plan_then(ctx, app, swap)
    assert _objects(ctx, app) == {"b.js": b"b"}
    assert len(result.failures) == 1 and "a.js" in str(result.failures[0])
    assert "outside" in str(result.failures[0])
    ctx.store.delete_container(app)


def test_fifo_and_in_root_symlink_swapped_in_after_the_scan(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    """A FIFO put where a file was never blocks the pass; a link to a file inside the root is
    still mirrored with the target's content, as the scan allows."""
    app = f"app-{uuid.uuid4().hex[:8]}"
    (ctx.root / app).mkdir()
    for name in ("fifo.js", "link.js", "target.js"):
        (ctx.root / app / name).write_text(name)

    def swap() -> None:
        (ctx.root / app / "fifo.js").unlink()
        os.mkfifo(ctx.root / app / "fifo.js")
        (ctx.root / app / "link.js").unlink()
        os.symlink("target.js", ctx.root / app / "link.js")

    result = _plan_then(ctx, app, swap)
    assert _objects(ctx, app) == {"link.js": b"target.js", "target.js": b"target.js"}
    assert len(result.failures) == 1 and "fifo.js" in str(result.failures[0])
    assert "not a regular file" in str(result.failures[0])
    ctx.store.delete_container(app)


def test_live_sync_of_a_path_under_a_swapped_folder_is_refused(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    from worker.errors import UnsafePath

    app = f"app-{uuid.uuid4().hex[:8]}"
    (ctx.root / app / "keep.js").parent.mkdir(parents=True)
    (ctx.root / app / "keep.js").write_text("keep")
    out = _outside(tmp_path, ["passwd"])
    os.symlink(out, ctx.root / app / "etc")
    with pytest.raises(UnsafePath):
        sync_path(ctx, app, "etc/passwd")
    assert ctx.listing(app) is None  # nothing was sent, not even the container made


# --- the tree moving away under a pass never reads as "everything was deleted" ---------------


def _many(ctx: MirrorContext, app: str, folders: int = 40, files: int = 5) -> int:
    for d in range(folders):
        for f in range(files):
            p = ctx.root / app / f"d{d:03}" / f"f{f}.js"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{d}/{f}")
    return folders * files


def test_root_renamed_away_during_the_scan_deletes_nothing(
    ctx: MirrorContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.mirror import localtree

    app = f"app-{uuid.uuid4().hex[:8]}"
    total = _many(ctx, app)
    assert full_pass(ctx).uploaded == total
    real_visit = localtree._visit
    seen = [0]

    def visit_then_move(*args: Any) -> None:
        seen[0] += 1
        if seen[0] == total:  # `mv synchro-apps gone` late in the scan (80 % of files seen)
            ctx.root.rename(tmp_path / "gone")
        real_visit(*args)

    monkeypatch.setattr(localtree, "_visit", visit_then_move)
    result = full_pass(ctx)
    assert result.deleted == 0
    assert len(list(ctx.store.list(app))) == total
    assert any("vanished" in w for w in result.warnings), result.warnings
    monkeypatch.undo()
    (tmp_path / "gone").rename(ctx.root)
    again = full_pass(ctx)
    assert (again.uploaded, again.deleted, again.unchanged) == (0, 0, total)
    ctx.store.delete_container(app)


def test_root_replaced_between_the_scan_and_the_deletes_deletes_nothing(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    """The root is checked again just before any delete: moved away and replaced by a copy
    that lacks most files (a remount, a restore in progress) deletes nothing."""
    app = f"app-{uuid.uuid4().hex[:8]}"
    total = _many(ctx, app, folders=4)
    assert full_pass(ctx).uploaded == total
    for d in range(1, 4):
        for f in (ctx.root / app / f"d{d:03}").iterdir():
            f.unlink()  # a real delete of 15 of 20 files, so the plan holds deletes

    def swap() -> None:
        ctx.root.rename(tmp_path / "gone")
        (ctx.root / app).mkdir(parents=True)

    result = _plan_then(ctx, app, swap)
    assert result.deleted == 0 and len(list(ctx.store.list(app))) == total
    assert any("gone or was replaced" in str(f) for f in result.failures), result.failures
    ctx.store.delete_container(app)



# --- what pull cannot bring here is never deleted by a later pass ----------------------------


def test_what_pull_skips_is_never_deleted_by_a_later_sync(
    ctx: MirrorContext, tmp_path: Path
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    (ctx.root / app).mkdir()
    (ctx.root / app / "main.js").write_text("main")
    (ctx.root / app / "back\\slash.js").write_text("a name pull refuses")
    assert full_pass(ctx).uploaded == 2
    keys = {i.key for i in ctx.store.list(app)}
    assert keys == {"main.js", "back\\slash.js"}

    # A new server: an empty folder, filled from the store, then mirrored back.
    fresh = MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(tmp_path / "fresh"), "STATE_DIR": str(tmp_path / "state2"),
        **_store_overrides(ctx, tmp_path),
    }))
    try:
        pulled = pull(fresh, [app])
        assert pulled.uploaded == 1
        assert [w for w in pulled.warnings if "slash.js" in w and "not pulled" in w]
        again = full_pass(fresh)
        assert again.deleted == 0 and again.ok, again.failures
        assert {i.key for i in fresh.store.list(app)} == keys
        assert any("pull could not bring" in w for w in again.warnings), again.warnings
        # A real delete in the new folder still deletes.
        (fresh.root / app / "main.js").unlink()
        (fresh.root / app / "other.js").write_text("o")
        third = full_pass(fresh, force=True)
        assert {i.key for i in fresh.store.list(app)} == {"other.js", "back\\slash.js"}
        assert third.deleted == 1
    finally:
        fresh.close()
    ctx.store.delete_container(app)


def _store_overrides(ctx: MirrorContext, tmp: Path) -> dict[str, Any]:
    if ctx.store.provider == "file":
        return {"MODULESTORE": {"directory": str(tmp / "mirror")}}
    backend: Any = ctx.store.backend
    return {"MODULESTORE_SERVICE": "PkgCloudModuleStore", "MODULESTORE": {
        "provider": "amazon", "keyId": "test", "key": "test", "region": "us-east-1",
        "endpoint": backend.client.meta.endpoint_url,
    }}


# --- a hostile tree: every odd entry reported once by name, the rest mirrored ----------------


def _independent_listing(ctx: MirrorContext, app: str, tmp: Path,
                         request: pytest.FixtureRequest) -> set[str]:
    """The container's keys as another client sees them (boto3 itself, or os.walk)."""
    if ctx.store.provider == "file":
        base = tmp / "mirror" / app
        return {
            os.path.relpath(os.path.join(d, f), base)
            for d, _, files in os.walk(base) for f in files if not f.startswith(".synchro-tmp")
        }
    client = request.getfixturevalue("amazon_store_server").client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=app)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_hostile_names_and_file_kinds(
    ctx: MirrorContext, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import socket

    app = f"app-{uuid.uuid4().hex[:8]}"
    base = ctx.root / app
    base.mkdir()
    good = {
        "plain.js": b"p",
        "back\\slash.js": b"b",
        ("n" * 251) + ".js": b"255 bytes",
        "sp ace/ünï.js": b"u",
    }
    for name, data in good.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    out = _outside(tmp_path, ["passwd"])
    bad = {
        "new\nline.js": "newline",
        "latin-\udce9.js": "UTF-8",
        "fifo.js": "regular file",
        "sock": "regular file",
        "loop.js": "symlink",
        "etc": "symlink",
        "out.js": "symlink",
    }
    (base / "new\nline.js").write_bytes(b"n")
    with open(os.path.join(os.fsencode(base), b"latin-\xe9.js"), "wb") as f:
        f.write(b"l")
    os.mkfifo(base / "fifo.js")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(base / "sock"))
    os.symlink("loop.js", base / "loop.js")
    os.symlink(out, base / "etc")
    os.symlink(out / "passwd", base / "out.js")
    try:
        result = full_pass(ctx)
    finally:
        sock.close()
    store = _independent_listing(ctx, app, tmp_path, request)
    assert store == set(good), store ^ set(good)
    assert result.uploaded == len(good)
    for name, why in bad.items():
        fragment = name.split("\n")[0].split("\udce9")[0]  # as printed: escaped, or bytes
        lines = [w for w in result.warnings + [str(f) for f in result.failures] if fragment in w]
        assert len(lines) == 1, (name, lines, result.warnings)
        assert why.lower() in lines[0].lower() or "cannot" in lines[0], lines[0]
    again = full_pass(ctx)
    assert (again.uploaded, again.deleted) == (0, 0)
    ctx.store.delete_container(app)


def test_pull_from_a_malicious_bucket_writes_nothing_outside(
    tmp_path: Path, amazon_store_server: Any
) -> None:
    app = f"evil-{uuid.uuid4().hex[:8]}"
    raw = amazon_store_server.client()
    raw.create_bucket(Bucket=app)
    hostile = ["../../x.js", "a/../../y.js", "/abs.js", "..\\\\w.js", "x", "x/y", "ok.js"]
    for key in hostile:
        raw.put_object(Bucket=app, Key=key, Body=f"from {key}".encode())
    fresh = MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(tmp_path / "deep" / "apps"), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore", "MODULESTORE": amazon_store_server.settings(),
    }, environ={}))
    try:
        result = pull(fresh, [app])
    finally:
        fresh.close()
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
               and "state" not in p.parts}
    assert written == {f"deep/apps/{app}/ok.js", f"deep/apps/{app}/x"} or written == {
        f"deep/apps/{app}/ok.js", f"deep/apps/{app}/x/y"}, written
    said = result.warnings + [str(f) for f in result.failures]
    listed = {o["Key"] for o in raw.list_objects_v2(Bucket=app)["Contents"]}
    for key in listed - {"x", "x/y", "ok.js"}:  # as the store keeps them (moto may tidy some)
        assert len([w for w in said if repr(key) in w]) == 1, (key, listed, said)
    clash = [w for w in said if f"{app}/x:" in w or f"{app}/x/y:" in w or "'x'" in w]
    assert len(clash) == 1, said
    for key in hostile:
        raw.delete_object(Bucket=app, Key=key)
    raw.delete_bucket(Bucket=app)
