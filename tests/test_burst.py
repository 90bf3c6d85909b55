"""A burst of new files through the live path sends each file to the store once: the syncs of
their folder (two worker processes may run one each) and of the first paths one by one, all at
the same time, against moto behind a proxy that counts every request."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.fault_proxy import FaultProxy
from tests.servers.s3_server import S3Server
from worker.config import load_settings
from worker.mirror.context import MirrorContext
from worker.mirror.pathsync import sync_path

FILES = 300


@pytest.fixture()
def two_workers(
    tmp_path: Path, s3_server: S3Server, fault_proxy: FaultProxy
) -> Iterator[tuple[list[MirrorContext], str]]:
    """Two mirror contexts on one host's state (what two worker processes share: the index
    and the path locks), their store behind the proxy."""
    fault_proxy.upstream = s3_server.endpoint
    overrides: dict[str, Any] = {
        "APP_ROOT_PATH": str(tmp_path / "apps"), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "MODULESTORE": s3_server.settings(endpoint=fault_proxy.url),
    }
    app = f"burst-{uuid.uuid4().hex[:8]}"
    (tmp_path / "apps" / app).mkdir(parents=True)
    ctxs = [MirrorContext.from_settings(load_settings(None, overrides, environ={}))
            for _ in range(2)]
    ctxs[0].store.ensure_container(app)
    yield ctxs, app
    try:
        ctxs[0].store.delete_container(app)
    finally:
        for ctx in ctxs:
            ctx.close()


def _puts(proxy: FaultProxy, app: str) -> Counter[str]:
    prefix = f"/{app}/"
    return Counter(p.partition("?")[0][len(prefix):] for m, p in proxy.requests
                   if m == "PUT" and p.startswith(prefix) and len(p) > len(prefix))


def test_a_burst_sends_each_file_once(
    two_workers: tuple[list[MirrorContext], str], fault_proxy: FaultProxy
) -> None:
    (a, b), app = two_workers
    folder = a.root / app / "release"
    keys = []
    for i in range(FILES):
        sub = folder / f"pkg{i % 7}" / f"sub{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.js").write_text(f"module {i}\n" * (1 + i % 5))
        keys.append(f"release/pkg{i % 7}/sub{i % 3}/f{i:03d}.js")
    fault_proxy.clear()

    # At once, as a burst's hand-offs reach two workers: the folder on each, the burst's first
    # paths one by one on the first, and the folder's parent (the app folder) after them.
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(*syncs: tuple[MirrorContext, str]) -> None:
        try:
            start.wait(10)
            for ctx, path in syncs:
                sync_path(ctx, app, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=((a, "release"),)),
        threading.Thread(target=run, args=((b, "release"), (b, ""))),
        threading.Thread(target=run, args=tuple((a, k) for k in keys[:31])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    puts = _puts(fault_proxy, app)
    assert set(puts) == set(keys), sorted(set(keys) ^ set(puts))[:5]
    twice = {k: n for k, n in puts.items() if n > 1}
    assert not twice, f"{len(twice)} file(s) sent more than once: {sorted(twice.items())[:5]}"
    # No listing either: what the index does not vouch for is what is sent.
    assert fault_proxy.count("GET", r"list-type=2") == 0, fault_proxy.requests[:5]
    stored = {i.key: a.store.read_bytes(app, i.key) for i in a.store.list(app)}
    assert stored == {k: (a.root / app / k).read_bytes() for k in keys}

    # Synced again, nothing is sent.
    fault_proxy.clear()
    assert sync_path(b, app, "release").uploaded == 0
    assert _puts(fault_proxy, app) == Counter()


def test_a_folder_with_a_file_gone_is_planned_with_its_listing(
    two_workers: tuple[list[MirrorContext], str], fault_proxy: FaultProxy
) -> None:
    """The index knows of a file under the folder that is gone: the folder's sync lists it and
    deletes the object (within the live delete budget), and sends the new files once."""
    (a, _), app = two_workers
    lib = a.root / app / "lib"
    lib.mkdir()
    for name in ("a.js", "b.js", "c.js", "d.js"):
        (lib / name).write_text(name)
    assert sync_path(a, app, "lib").uploaded == 4
    (lib / "b.js").unlink()
    (lib / "e.js").write_text("e")
    fault_proxy.clear()
    r = sync_path(a, app, "lib")
    assert (r.action, r.uploaded, r.deleted) == ("folder", 1, 1)
    assert _puts(fault_proxy, app) == Counter({"lib/e.js": 1})
    assert fault_proxy.count("GET", r"list-type=2") >= 1
    assert sorted(i.key for i in a.store.list(app)) == [
        "lib/a.js", "lib/c.js", "lib/d.js", "lib/e.js"]
