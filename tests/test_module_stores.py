"""One conformance suite for every module store: the same tests on file, amazon (moto server),
google (fake-gcs-server), azure (Azurite) and openstack (single-node Swift + Keystone v3)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.errors import InvalidName, NotFound
from worker.stores.modules import ContainerNotFound, ModuleStore
from worker.stores.modules.file import FileBackend

PROVIDERS = ["file", "amazon", "google", "azure", "openstack"]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def make_store(provider: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[
    object
]:
    """A factory: make_store(bucket=None) -> ModuleStore for this test's provider."""
    made: list[ModuleStore] = []

    def make(bucket: str | None = None) -> ModuleStore:
        if provider == "file":
            store = ModuleStore(FileBackend(tmp_path / "store"), bucket=bucket)
        else:
            server = request.getfixturevalue(f"{provider}_store_server")
            store = server.module_store(bucket=bucket)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture()
def store(make_store: object) -> ModuleStore:
    return make_store()  # type: ignore[operator,no-any-return]


@pytest.fixture()
def container(store: ModuleStore) -> Iterator[str]:
    name = f"app-{uuid.uuid4().hex[:10]}"
    store.ensure_container(name)
    yield name
    store.delete_container(name)


def test_containers_create_list_delete(store: ModuleStore) -> None:
    name = f"app-{uuid.uuid4().hex[:10]}"
    assert name not in store.containers()
    store.ensure_container(name)
    store.ensure_container(name)  # exists already: fine
    assert name in store.containers()
    store.put_bytes(name, "index.js", b"x")
    store.delete_container(name)
    assert name not in store.containers()


def test_put_list_get_roundtrip(store: ModuleStore, container: str) -> None:
    files = {"index.js": b"console.log(1)\n", "lib/util.js": b"u" * 5000, "lib/deep/a.json": b"{}"}
    returned = {key: store.put_bytes(container, key, data) for key, data in files.items()}
    listed = {info.key: info for info in store.list(container)}
    assert set(listed) == set(files)
    for key, data in files.items():
        info = listed[key]
        assert info.size == len(data)
        assert abs(info.modified - time.time()) < 300
        assert returned[key].md5 == _md5(data)
        # Either the listing reports the content MD5 or the ETag the upload returned matches.
        assert info.md5 == _md5(data) or (info.md5 is None and info.etag == returned[key].etag)
        with store.open(container, key) as f:
            assert f.read() == data
    assert [i.key for i in store.list(container, "lib/")] == ["lib/deep/a.json", "lib/util.js"]
    assert [i.key for i in store.list(container, "lib/d")] == ["lib/deep/a.json"]


def test_overwrite_changes_checksum(store: ModuleStore, container: str) -> None:
    first = store.put_bytes(container, "a.js", b"one")
    second = store.put_bytes(container, "a.js", b"two")
    (info,) = list(store.list(container))
    assert second.md5 == _md5(b"two") != first.md5
    assert info.md5 == _md5(b"two") or info.etag == second.etag
    assert store.read_bytes(container, "a.js") == b"two"


def test_large_file_in_parts_streamed(store: ModuleStore, container: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(20 * 1024 * 1024 + 123)
    src.write_bytes(data)
    info = store.put_file(container, "assets/big.bin", src)
    assert info.md5 == _md5(data) and info.size == len(data)
    (listed,) = list(store.list(container, "assets/"))
    assert listed.size == len(data)
    assert listed.md5 == _md5(data) or listed.etag == info.etag
    digest = hashlib.md5()
    with store.open(container, "assets/big.bin") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == _md5(data)


def test_put_file_small_with_given_md5(store: ModuleStore, container: str, tmp_path: Path) -> None:
    src = tmp_path / "m.js"
    src.write_bytes(b"module.exports = 1\n")
    info = store.put_file(container, "m.js", src, md5_hex=_md5(b"stale content"))
    # The bytes actually sent count, not a stale hash the caller had.
    assert info.md5 == _md5(b"module.exports = 1\n")
    assert store.read_bytes(container, "m.js") == b"module.exports = 1\n"


def test_source_changing_during_upload_is_redone(
    store: ModuleStore, container: str, tmp_path: Path
) -> None:
    src = tmp_path / "live.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024))
    final = os.urandom(9 * 1024 * 1024 + 7)
    backend_put = store.backend.put
    calls = 0

    def put_then_edit(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        result = backend_put(*args, **kwargs)  # type: ignore[arg-type]
        if calls == 1:
            src.write_bytes(final)  # the user saves again while the first upload ran
        return result

    store.backend.put = put_then_edit  # type: ignore[method-assign]
    info = store.put_file(container, "live.bin", src)
    assert calls == 2
    assert info.md5 == _md5(final)
    assert _md5(store.read_bytes(container, "live.bin")) == _md5(final)


def test_delete_batched_and_missing_ok(store: ModuleStore, container: str) -> None:
    keys = [f"f/{i:03d}.js" for i in range(25)]
    for key in keys:
        store.put_bytes(container, key, key.encode())
    store.delete(container, keys[:20] + ["never/existed.js"])
    assert [i.key for i in store.list(container)] == keys[20:]
    with pytest.raises(NotFound):
        store.read_bytes(container, keys[0])


def test_copy(store: ModuleStore, container: str) -> None:
    store.put_bytes(container, "src/a.js", b"copy me")
    info = store.copy(container, "src/a.js", "dst/a.js")
    assert info.key == "dst/a.js" and info.size == 7
    assert store.read_bytes(container, "dst/a.js") == b"copy me"
    listed = {i.key: i for i in store.list(container)}
    assert listed["dst/a.js"].md5 in (None, _md5(b"copy me"))


def test_unicode_names_are_nfc(store: ModuleStore, container: str) -> None:
    nfd = unicodedata.normalize("NFD", "módulo/café.js")
    store.put_bytes(container, nfd, b"x")
    (info,) = list(store.list(container))
    assert info.key == unicodedata.normalize("NFC", "módulo/café.js")
    assert store.read_bytes(container, "módulo/café.js") == b"x"


@pytest.mark.parametrize(
    "key", ["../escape.js", "a//b.js", "/abs.js", "dir/", "bad\x00name", "a/./b", "x" * 5000]
)
def test_invalid_keys_are_refused_not_changed(
    store: ModuleStore, container: str, key: str
) -> None:
    with pytest.raises(InvalidName) as err:
        store.put_bytes(container, key, b"x")
    assert repr(key)[:40] in str(err.value) or "'" in str(err.value)
    assert list(store.list(container)) == []


def test_invalid_container_name(store: ModuleStore) -> None:
    with pytest.raises(InvalidName) as err:
        store.ensure_container("Bad/Name")
    assert "Bad/Name" in str(err.value)


def test_missing_object_and_container(store: ModuleStore, container: str) -> None:
    with pytest.raises(NotFound):
        store.read_bytes(container, "nope.js")
    with pytest.raises(ContainerNotFound):
        list(store.list(f"missing-{uuid.uuid4().hex[:8]}"))


def test_put_creates_missing_container(store: ModuleStore) -> None:
    name = f"app-{uuid.uuid4().hex[:10]}"
    try:
        store.put_bytes(name, "a.js", b"created on demand")
        assert store.read_bytes(name, "a.js") == b"created on demand"
    finally:
        store.delete_container(name)


def test_listing_pages(store: ModuleStore, container: str) -> None:
    keys = sorted(f"p/{i:04d}" for i in range(1001))
    errors: list[BaseException] = []

    def put(chunk: list[str]) -> None:
        try:
            for key in chunk:
                store.put_bytes(container, key, b"1")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [i.key for i in store.list(container, "p/")] == keys


def test_bucket_prefix_mode(make_store: object) -> None:
    bucket = f"shared-{uuid.uuid4().hex[:10]}"
    plain: ModuleStore = make_store()  # type: ignore[operator]
    plain.ensure_container(bucket)
    try:
        store: ModuleStore = make_store(bucket=bucket)  # type: ignore[operator]
        store.put_bytes("app1", "index.js", b"1")
        store.put_bytes("app2", "lib/x.js", b"2")
        assert store.containers() == ["app1", "app2"]
        assert [i.key for i in store.list("app2")] == ["lib/x.js"]
        assert {i.key for i in plain.list(bucket)} == {"app1/index.js", "app2/lib/x.js"}
        store.delete_container("app1")
        assert store.containers() == ["app2"]
        assert "ok" in store.check()
    finally:
        plain.delete_container(bucket)


def test_check(store: ModuleStore) -> None:
    before = store.containers()
    assert "write, read and delete ok" in store.check()
    assert store.containers() == before
