"""Requests per pass, counted in the S3 server's own access log (moto): one listing page per
1,000 objects, one PUT per new or changed file, deletes batched, never a request per unchanged
object, and no re-reading of unchanged files."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.passes import full_pass

_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]"')


def _requests(log: Path, start: int) -> Counter[str]:
    time.sleep(0.3)  # moto writes its access log line after the response
    counts: Counter[str] = Counter()
    with open(log, "rb") as f:
        f.seek(start)
        for raw in f:
            m = _LINE.search(raw.decode("utf-8", "replace"))
            if not m:
                continue
            method, target = m.groups()
            path, _, query = target.partition("?")
            is_object = path.strip("/").count("/") >= 1
            if method == "GET":
                counts["GetObject" if is_object else "ListObjects"] += 1
            elif method == "POST" and "delete" in query:
                counts["DeleteObjects"] += 1
            else:
                counts[f"{method} {'object' if is_object else 'bucket'}"] += 1
    return counts


def _context(s3_server: Any, root: Path, state: Path, bucket: str) -> MirrorContext:
    """A mirror of ``root`` into ``bucket`` (``MODULESTORE.bucket``) of the test's moto."""
    return MirrorContext.from_settings(load_settings(None, {
        "APP_ROOT_PATH": str(root), "STATE_DIR": str(state),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "MODULESTORE": s3_server.settings(bucket=bucket),
    }, environ={}))


def test_requests_per_pass_at_the_server(s3_server: Any, tmp_path: Path,
                                         monkeypatch: Any) -> None:
    bucket = f"req-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    root = tmp_path / "apps"
    n = 1100
    for i in range(n):
        p = root / "app" / f"d{i % 7}" / f"f{i:04d}.js"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100 + i % 50))
        os.utime(p, (1_700_000_000, 1_700_000_000))
    log = s3_server.server.log_path
    ctx = _context(s3_server, root, tmp_path / "state", bucket)
    try:
        start = log.stat().st_size
        assert full_pass(ctx).uploaded == n
        assert _requests(log, start) == {"ListObjects": 1, "PUT object": n}

        # No change: two listing pages (1,100 objects), nothing else, and no file is read.
        reads: list[str] = []
        real_open = open

        def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith(".js"):  # the tree's files, not .syncignore
                reads.append(str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", counting_open)
        monkeypatch.setattr("io.open", counting_open)
        start = log.stat().st_size
        assert full_pass(ctx).unchanged == n
        assert _requests(log, start) == {"ListObjects": 2}
        assert reads == []
        monkeypatch.undo()

        # 30 changed (10 touched only, 10 same size, 10 new size) and 20 deleted.
        files = sorted((root / "app").rglob("*.js"))
        for i, p in enumerate(files[:30]):
            if i < 10:
                os.utime(p)
            elif i < 20:
                p.write_bytes(os.urandom(p.stat().st_size))
            else:
                p.write_bytes(b"new size")
        for p in files[30:50]:
            p.unlink()
        start = log.stat().st_size
        result = full_pass(ctx)
        assert (result.uploaded, result.deleted) == (20, 20)
        assert _requests(log, start) == {"ListObjects": 2, "PUT object": 20, "DeleteObjects": 1}
    finally:
        ctx.store.delete_container("app")
        ctx.close()


def test_a_new_host_hashes_and_sends_only_what_differs(s3_server: Any, tmp_path: Path,
                                                       monkeypatch: Any) -> None:
    """A first pass with an empty state folder against a store that holds the tree: every file
    is hashed (small ones on the merging thread, large ones on the pool), nothing equal is sent,
    a file of the same size but other content is, and the index learns every row (the next
    pass reads nothing)."""
    from worker.mirror import safeopen, sender

    bucket = f"host-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    root = tmp_path / "apps"
    small = [root / "app" / f"d{i % 3}" / f"f{i:03d}.js" for i in range(40)]
    large = [root / "app" / "big" / f"b{i}.bin" for i in range(3)]
    for i, p in enumerate(small + large):
        p.parent.mkdir(parents=True, exist_ok=True)
        size = sender.INLINE_HASH + 1000 * (i + 1) if p in large else 200 + i
        p.write_bytes(os.urandom(size))
        os.utime(p, (1_700_000_000, 1_700_000_000))  # not just written: the index may vouch

    def context(state: str) -> MirrorContext:
        return _context(s3_server, root, tmp_path / state, bucket)

    first = context("state-first")
    try:
        assert full_pass(first).uploaded == len(small) + len(large)
    finally:
        first.close()
    # Same sizes, other content, on the old host's files before the new host's first pass.
    for p in (small[5], large[1]):
        p.write_bytes(os.urandom(p.stat().st_size))
        os.utime(p, (1_700_000_100, 1_700_000_100))

    ctx = context("state-new")
    hashed: list[str] = []
    real_md5 = safeopen.md5

    def counting_md5(root: Path, relpath: str) -> str:
        hashed.append(relpath)
        return real_md5(root, relpath)

    monkeypatch.setattr(safeopen, "md5", counting_md5)
    try:
        log = s3_server.server.log_path
        start = log.stat().st_size
        result = full_pass(ctx)
        assert (result.uploaded, result.unchanged) == (2, len(small) + len(large) - 2)
        assert _requests(log, start) == {"ListObjects": 1, "PUT object": 2}
        assert len(hashed) == len(small) + len(large)
        store = ctx.store
        for p in (small[5], large[1]):
            key = p.relative_to(root / "app").as_posix()
            assert store.read_bytes("app", key) == p.read_bytes()

        hashed.clear()
        again = full_pass(ctx)
        assert (again.uploaded, again.unchanged, hashed) == (0, len(small) + len(large), [])
    finally:
        ctx.store.delete_container("app")
        ctx.close()


def test_many_small_apps_in_one_bucket_are_listed_in_one_request(s3_server: Any,
                                                                 tmp_path: Path) -> None:
    """30 app folders of 3 files in ``MODULESTORE.bucket``: each pass lists the bucket once
    for all of them (it was one listing per app: 30), and sends, deletes and keeps exactly what
    it did before; an app of the store that the tree has not (``gone``) is left as it is."""
    from worker.mirror import passes

    bucket = f"many-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    root = tmp_path / "apps"
    apps = [f"app{i:02d}" for i in range(30)]
    for app in apps:
        for i in range(3):
            p = root / app / f"f{i}.js"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(50 + i))
            os.utime(p, (1_700_000_000, 1_700_000_000))
    log = s3_server.server.log_path
    ctx = _context(s3_server, root, tmp_path / "state", bucket)
    try:
        ctx.store.put_bytes("gone", "old.js", b"kept")
        start = log.stat().st_size
        assert full_pass(ctx).uploaded == 90
        assert _requests(log, start) == {"ListObjects": 1, "PUT object": 90}

        start = log.stat().st_size
        assert full_pass(ctx).unchanged == 90
        assert _requests(log, start) == {"ListObjects": 1}

        # One file changed in app03, one deleted in each of app07 and app21.
        (root / "app03" / "f0.js").write_bytes(b"changed")
        (root / "app07" / "f1.js").unlink()
        (root / "app21" / "f2.js").unlink()
        start = log.stat().st_size
        result = full_pass(ctx)
        assert (result.uploaded, result.deleted, result.unchanged) == (1, 2, 87)
        assert _requests(log, start) == {"ListObjects": 1, "PUT object": 1, "DeleteObjects": 2}
        assert ctx.store.read_bytes("app03", "f0.js") == b"changed"
        assert [i.key for i in ctx.store.list("app07")] == ["f0.js", "f2.js"]
        assert [i.key for i in ctx.store.list("gone")] == ["old.js"]

        # Fewer apps than that: each lists itself, as before.
        start = log.stat().st_size
        assert full_pass(ctx, apps[:passes.LISTED_TOGETHER_FROM - 1]).unchanged == 21
        assert _requests(log, start) == {"ListObjects": passes.LISTED_TOGETHER_FROM - 1}
    finally:
        ctx.close()
