"""One conformance suite for every module store: the same tests on file, amazon (moto server),
google (fake-gcs-server), azure (Azurite) and openstack (single-node Swift + Keystone v3)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.servers.process import clean_environ, unavailable
from worker.cli import main
from worker.config import OpenStackConfig, RackspaceConfig
from worker.errors import (
    AccessDenied,
    AlreadyExists,
    IntegrityError,
    InvalidName,
    NotFound,
    StoreError,
    TransientStoreError,
)
from worker.mirror.stream import list_together
from worker.stores.modules import ContainerNotFound, ModuleStore, names
from worker.stores.modules.base import SourceChanged, run_once, stream_md5
from worker.stores.modules.file import FileBackend
from worker.stores.sessions import OnConflict
from worker.stores.sessions.file import FileSessionStore

PROVIDERS = ["file", "amazon", "google", "azure", "openstack"]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _write_mib(path: Path, mib: bytes, count: int, tail: int) -> str:
    """Write ``count`` copies of ``mib`` and one byte ``tail``; returns the file's MD5."""
    digest = hashlib.md5()
    with open(path, "wb") as f:
        for piece in [mib] * count + [bytes([tail])]:
            f.write(piece)
            digest.update(piece)
    return digest.hexdigest()


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


@pytest.mark.parametrize("mode", ["default", "in-parts"])
def test_large_file_in_parts_streamed(
    store: ModuleStore, container: str, tmp_path: Path, mode: str
) -> None:
    """A file above 8 MiB: one request streamed from the file where the backend has such a
    path (amazon, azure, google, up to ``stream_put_limit``), else in parts; either way read
    from disk as it goes, and listed with its checksum."""
    if mode == "in-parts":
        if not hasattr(store.backend, "stream_put_limit"):
            pytest.skip("this store always uploads large files in parts")
        store.backend.stream_put_limit = 0
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


@pytest.mark.parametrize("hashed_here", [True, False])
def test_streamed_upload_of_a_file_edited_meanwhile_stores_nothing(
    store: ModuleStore, container: str, tmp_path: Path, hashed_here: bool
) -> None:
    """The one streamed request of a large file (amazon, azure, google) is cut short when the
    bytes read are not the content hashed before (by CRC-32 when the store hashed it, else by
    MD5): SourceChanged, and the object never appears."""

    if not hasattr(store.backend, "stream_put_limit"):
        pytest.skip("no streamed single-request upload in this store")
    src = tmp_path / "edited.bin"
    old = os.urandom(12 * 1024 * 1024)
    src.write_bytes(old)
    if hashed_here:
        with open(src, "rb") as f:
            md5 = stream_md5(f)  # remembers the CRC-32 of this content
    else:
        md5 = _md5(old)
    src.write_bytes(os.urandom(len(old)))  # saved again before the upload read it
    with open(src, "rb") as f, pytest.raises(SourceChanged) as err:
        store.backend.put(container, "edited.bin", f, len(old), md5, run_once)
    assert err.value.key == "edited.bin"
    assert [i.key for i in store.list(container)] == []


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
    # The error names the key as given and the store, and nothing was written.
    assert repr(key) in str(err.value) and store.provider in str(err.value)
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
    if hasattr(store.backend, "listing_page"):
        store.backend.listing_page = 100  # cross page boundaries with few objects
    keys = sorted(f"p/{i:04d}" for i in range(250))
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


def test_small_containers_of_one_bucket_are_listed_together(make_store: object) -> None:
    """``list_together`` (a pass of many apps in ``MODULESTORE.bucket``): one listing of the
    bucket, page after page, gives each container whose keys it holds entirely; a page that
    completes none ends it; every listing given equals the container's own."""
    bucket = f"together-{uuid.uuid4().hex[:10]}"
    plain: ModuleStore = make_store()  # type: ignore[operator]
    plain.ensure_container(bucket)
    try:
        store: ModuleStore = make_store(bucket=bucket)  # type: ignore[operator]
        store.backend.listing_page = 4  # type: ignore[attr-defined]
        sizes = {"a1": 2, "a2": 2, "a3": 2, "a4": 2, "m-big": 7, "other": 1, "z1": 1,
                 "\u00e91": 2}
        for container, n in sizes.items():
            for i in range(n):
                store.put_bytes(container, f"k{i}.js", f"{container} {i}".encode())
        wanted = [c for c in sizes if c != "other"]  # "other" is in the store, not the tree
        got = list_together(store, wanted, max_pages=10)
        assert sorted(got) == sorted(wanted)
        for container in wanted:
            own = [(i.key, i.size, i.md5) for i in store.list(container)]
            assert [(i.key, i.size, i.md5) for i in got[container]] == own
            assert len(own) == sizes[container]

        # At most one page held: the containers it completed (a1 and not a2, whose last key
        # may follow on the next page).
        assert sorted(list_together(store, wanted, max_pages=1)) == ["a1"]
        # A first page that completes none of them (all its keys are a1's and a2's) ends it:
        # nothing is given, each container lists itself.
        assert list_together(store, ["m-big", "z1"], max_pages=10) == {}
        # Without a shared bucket, nothing is listed together.
        assert list_together(plain, [bucket], max_pages=10) == {}
    finally:
        plain.delete_container(bucket)


def test_check(store: ModuleStore) -> None:
    before = store.containers()
    assert "write, read and delete ok" in store.check()
    assert store.containers() == before


# --- through the command line: config check, snapshots to a module store ---------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _config(tmp_path: Path, store: dict[str, Any]) -> str:
    path = tmp_path / "synchro.json"
    path.write_text(json.dumps({
        "MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "MODULESTORE": store,
        "APP_ROOT_PATH": str(tmp_path / "apps"),
    }))
    return str(path)


def test_config_check_on_moto(s3_server: Any, clean_env: Path) -> None:
    ok = _cli("-c", _config(clean_env, s3_server.settings()), "config", "check")
    assert ok.exit_code == 0, ok.output
    line = [x for x in ok.output.splitlines() if "module store" in x]
    assert line and line[0].startswith("ok") and "write, read and delete ok" in line[0]
    assert "synchro-test-secret" not in ok.output
    # A configured bucket that does not exist: the write fails, check says so and exits 1.
    missing = s3_server.settings(bucket=f"no-such-{uuid.uuid4().hex[:8]}")
    bad = _cli("-c", _config(clean_env, missing), "config", "check")
    assert bad.exit_code == 1
    line = [x for x in bad.output.splitlines() if "module store" in x]
    assert line and line[0].startswith("FAIL") and "amazon" in line[0]


def test_config_check_as_subprocess(s3_server: Any, clean_env: Path) -> None:
    env = clean_environ()
    settings = s3_server.settings()
    env["SYNCHRO__MODULESTORE_SERVICE"] = "PkgCloudModuleStore"
    env["SYNCHRO__MODULESTORE"] = json.dumps({k: v for k, v in settings.items() if k != "key"})
    env["SYNCHRO__MODULESTORE__key"] = settings["key"]  # the secret from its own variable
    env["SYNCHRO__APP_ROOT_PATH"] = str(clean_env / "apps")
    exe = Path(sys.executable).with_name("synchro-sync")
    argv = [str(exe) if exe.exists() else "synchro-sync", "config", "check"]
    res = subprocess.run(argv, cwd=clean_env, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "module store (PkgCloudModuleStore): amazon" in res.stdout


def test_sessions_snapshot_to_modulestore_on_moto(s3_server: Any, clean_env: Path) -> None:

    batch = [(f"s{i}", json.dumps({"id": f"s{i}", "i": i}).encode(), None) for i in range(300)]
    FileSessionStore(clean_env / "live.json").write_raw([batch], OnConflict.FAIL)
    cfg = _config(clean_env, s3_server.settings())
    dest = f"modulestore:snaps-{uuid.uuid4().hex[:8]}"
    snap = _cli("-c", cfg, "sessions", "snapshot", "--from", "file:live.json", "--dest", dest)
    assert snap.exit_code == 0, snap.output
    assert "300 sessions" in snap.output and "verified" in snap.output
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=dest.split(":")[1]).get("Contents", [])}
    assert len(keys) == 2 and all(k.startswith("snapshots/") for k in keys)
    listing = _cli("-c", cfg, "sessions", "list", "--dest", dest)
    assert listing.exit_code == 0 and "300" in listing.output
    res = _cli("-c", cfg, "sessions", "restore", "latest", "--dest", dest,
               "--to", "file:restored.json")
    assert res.exit_code == 0, res.output
    assert "300 written" in res.output
    assert FileSessionStore(clean_env / "restored.json").count() == 300


# --- provider specifics ------------------------------------------------------------------------


def test_rackspace_identity_flow_against_test_identity(swift_server: Any) -> None:
    """The Rackspace code path (Swift + RAX-KSKEY API-key identity v2.0) against the tests'
    identity endpoint: Rackspace's own service cannot be reached from here."""
    from tests.servers.swift_server import RAX_API_KEY, RAX_USER
    from worker.stores.modules.rackspace import RackspaceBackend

    base = {"username": RAX_USER, "region": "DFW",
            "authUrl": f"http://127.0.0.1:{swift_server.identity_port}/v2.0/"}
    store = ModuleStore(RackspaceBackend.from_config(RackspaceConfig(**base, apiKey=RAX_API_KEY)))
    assert store.provider == "rackspace"
    name = f"rax-{uuid.uuid4().hex[:8]}"
    store.put_bytes(name, "a.js", b"cloud files")
    assert store.read_bytes(name, "a.js") == b"cloud files"
    store.delete_container(name)
    wrong = ModuleStore(RackspaceBackend.from_config(RackspaceConfig(**base, apiKey="wrong")))
    with pytest.raises(AccessDenied):
        wrong.containers()


def test_keystone_wrong_password_is_access_denied(swift_server: Any) -> None:
    from worker.stores.modules.swift import SwiftBackend

    cfg = {**swift_server.settings(), "password": "not-it"}
    store = ModuleStore(SwiftBackend.from_config(OpenStackConfig(**cfg)))
    with pytest.raises(AccessDenied):
        store.containers()


def test_missing_sdk_names_the_extra() -> None:

    code = (
        "import sys; sys.modules['azure'] = None\n"
        "from worker.stores.registry import module_backend_class\n"
        "try:\n    module_backend_class('azure')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert "MissingDependency" in out.stdout and "synchro-sync[azure]" in out.stdout


def test_s3_error_table_and_transient_mapping() -> None:
    from worker.stores.modules.s3 import error_class

    assert error_class("NoSuchBucket", 404) is ContainerNotFound
    assert error_class("NoSuchKey", 404) is NotFound
    assert error_class("AccessDenied", 403) is AccessDenied
    assert error_class("BucketAlreadyOwnedByYou", 409) is AlreadyExists
    assert error_class("SlowDown", 503) is TransientStoreError
    assert error_class("InternalError", 500) is TransientStoreError
    assert error_class("InvalidArgument", 400) is StoreError


def test_no_sdk_outside_provider_modules() -> None:
    """Only the provider modules import an SDK, so nothing else can see its exceptions."""

    root = Path(__file__).resolve().parents[1]
    providers = {
        "s3.py", "s3_errors.py", "s3_put.py", "gcs.py", "azure.py", "swift.py", "rackspace.py",
        "http.py",
    }
    sdk = re.compile(
        r"^\s*(from|import)\s+(boto3|botocore|google|azure|swiftclient|keystoneauth1)\b", re.M
    )
    offenders = [
        str(path.relative_to(root))
        for folder in ("worker", "tasks")
        for path in (root / folder).rglob("*.py")
        if sdk.search(path.read_text(encoding="utf-8"))
        and not (path.parent.name == "modules" and path.name in providers)
    ]
    assert offenders == []


def test_resumed_read_is_pinned_to_its_version(store: ModuleStore, container: str) -> None:
    """A read resumed after a broken transfer asks for the version it started on; if the
    object was replaced meanwhile, that is an IntegrityError, never a mix of two versions."""

    store.put_bytes(container, "v.js", b"version one")
    with store.backend.open_read(container, "v.js") as first:
        old = first.version  # type: ignore[attr-defined]
        assert first.size == len(b"version one")  # type: ignore[attr-defined]
    # A size of its own: the file store's version is its mtime and size, and a coarse clock
    # may give both writes one mtime.
    store.put_bytes(container, "v.js", b"version two!")
    with pytest.raises(IntegrityError):
        store.backend.open_read(container, "v.js", 8, old).close()
    with store.backend.open_read(container, "v.js") as current:
        new = current.version  # type: ignore[attr-defined]
    with store.backend.open_read(container, "v.js", 8, new) as rest:
        assert rest.read() == b"two!"


def test_copy_falls_back_to_download_and_upload(tmp_path: Path) -> None:
    """A store without server-side copy: the contract copies through a temporary file."""

    class NoCopyBackend(FileBackend):
        supports_server_side_copy = False

        def copy(self, bucket: str, src_key: str, dst_key: str) -> Any:
            raise AssertionError("server-side copy must not be used")

    store = ModuleStore(NoCopyBackend(tmp_path / "store"))
    assert store.supports_server_side_copy is False
    store.put_bytes("app", "a/src.js", b"copied the long way")
    info = store.copy("app", "a/src.js", "b/dst.js")
    assert info.key == "b/dst.js" and info.md5 == hashlib.md5(b"copied the long way").hexdigest()
    assert store.read_bytes("app", "b/dst.js") == b"copied the long way"


@pytest.mark.parametrize(
    ("check", "name", "ok"),
    [
        ("s3_bucket_problem", "my-app.modules", True),
        ("s3_bucket_problem", "ab", False),
        ("s3_bucket_problem", "My-App", False),
        ("s3_bucket_problem", "192.168.1.1", False),
        ("s3_bucket_problem", "a..b", False),
        ("s3_bucket_problem", "xn--app", False),
        ("gcs_bucket_problem", "my_app-1", True),
        ("gcs_bucket_problem", "goog-app", False),
        ("gcs_bucket_problem", "my-google-app", False),
        ("azure_container_problem", "my-app-1", True),
        ("azure_container_problem", "my--app", False),
        ("azure_container_problem", "my_app", False),
        ("swift_container_problem", "My App (2)", True),
        ("swift_container_problem", "a/b", False),
        ("swift_container_problem", "x" * 257, False),
        ("folder_problem", "app-é", True),
        ("folder_problem", ".hidden", False),
        ("folder_problem", "a\\b", False),
        ("gcs_key_problem", ".well-known/acme-challenge/x", False),
        ("azure_key_problem", "dir/file.", False),
        ("azure_key_problem", "dir\\file", False),
        ("file_key_problem", "a/" + "x" * 256, False),
        ("key_problem", "a/b/c.js", True),
        ("key_problem", "a\tb", False),
        ("key_problem", "\ud800", False),
    ],
)
def test_name_rules_per_store(check: str, name: str, ok: bool) -> None:

    problem = getattr(names, check)(name)
    assert (problem is None) is ok, problem


@pytest.mark.parametrize("cloud", ["azure", "google"])
def test_large_files_stream_in_one_pass_with_flat_memory(
    cloud: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """8 files of 40 MiB in one CLI pass to Azure or GCS: each goes up as one streamed request,
    all within the pass's byte budget at once, the listing holds every file's MD5, and the
    pass peaks under 100 MB of RSS (Azure's 2 MiB blocks and GCS's 32 MiB chunks held
    content in memory and took the files a few at a time)."""

    gnu_time = shutil.which("time") or "/usr/bin/time"
    if not os.path.exists(gnu_time):
        unavailable("GNU time (Debian package 'time') is not installed")
    server = request.getfixturevalue(f"{cloud}_store_server")
    app = tmp_path / "apps" / "big"
    app.mkdir(parents=True)
    mib = os.urandom(1024 * 1024)
    digests = {name: _write_mib(app / name, mib, 40, tail) for tail, name in
               enumerate(f"f{n}.bin" for n in range(8))}
    env = clean_environ()
    env.update({
        "SYNCHRO__APP_ROOT_PATH": str(tmp_path / "apps"),
        "SYNCHRO__STATE_DIR": str(tmp_path / "state"),
        "SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "SYNCHRO__MODULESTORE": json.dumps(server.settings()),
        "SYNCHRO__SYNC__transfers": "16",
    })
    run = subprocess.run([gnu_time, "-f", "peak-kb %M", "synchro-sync", "sync", "big"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("uploaded 8,"), run.stdout
    store = server.module_store()
    try:
        assert {i.key: i.md5 for i in store.list("big")} == digests
        store.delete_container("big")
    finally:
        store.close()
    peak_mb = int(run.stderr.strip().splitlines()[-1].split()[-1]) / 1024
    assert peak_mb <= 100, f"peak RSS {peak_mb:.0f} MB"
