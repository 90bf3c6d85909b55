"""The module store as the Synchro server reads it, checked with the server's own client
library (npm pkgcloud 1.x) and with Node's fs for a FileModuleStore (tests/node/): app
containers are the folders whose package.json has engines.synchro, modules are their .js files
outside node_modules, and the store files (apps.json) sit at the root of a FileModuleStore or
in the MODULESTORE.configRoot container of a cloud store."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.servers.celery_worker import CLI, SyncWorld
from tests.servers.process import clean_environ, unavailable, wait_for

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO / ".test-servers" / "node" / "node_modules"
READER = REPO / "tests" / "node" / "synchro_modules.js"
APPS_JSON = '{"hello": "hello-app", "ünïcode": "ok"}\n'

pytestmark = pytest.mark.node
if not (NODE_MODULES / "pkgcloud").is_dir() or shutil.which("node") is None:
    unavailable("node and its pkgcloud are missing: scripts/install-test-servers installs them")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tree(root: Path, tag: str) -> dict[str, dict[str, str]]:
    """A module directory beside a Synchro server: one app, one Node package that is not an
    app, one folder without package.json, apps.json at the root.  Returns what the server
    must see: {container: {module: md5}}."""
    app, pkg, plain = f"hello-{tag}", f"lib-{tag}", f"plain-{tag}"
    files = {
        f"{app}/package.json": '\ufeff{"name": "hello", "engines": {"synchro": "*"}}',
        f"{app}/main.js": "exports.View = {title: 'Hello'};\n",
        f"{app}/lib/util.js": "module.exports = 42; // ünïcode\n",
        f"{app}/README.md": "not a module\n",
        f"{app}/node_modules/dep/index.js": "installed by the server, not mirrored\n",
        f"{pkg}/package.json": '{"name": "lib", "engines": {"node": ">=6"}}',
        f"{pkg}/index.js": "module.exports = 1;\n",
        f"{plain}/x.js": "x\n",
        "apps.json": APPS_JSON,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return {app: {k: _md5(files[f"{app}/{k}"].encode()) for k in ("main.js", "lib/util.js")}}


def _read_as_the_server(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    out = subprocess.run(["node", str(READER), json.dumps(spec)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _sync(tmp: Path, store: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environ()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps({
        "APP_ROOT_PATH": str(tmp / "apps"), "STATE_DIR": str(tmp / "state"),
        # The server's own settings sit in the same file, untouched.
        "PORT": 1337, "APPS": {"hello": {"container": "hello"}}, **store,
    }))
    return subprocess.run([*CLI, *args, "-c", str(tmp / "config.json")], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=180)


def _pkgcloud_options(provider: str, server: Any) -> dict[str, Any]:
    keys = server.store_keys(None)
    if provider == "amazon":
        return {"provider": "amazon", "keyId": keys["keyId"], "key": keys["key"],
                "region": keys["region"], "endpoint": keys["endpoint"],
                "forcePathBucket": True}
    return {"provider": "openstack", "keystoneAuthVersion": "v3", "authUrl":
            keys["authUrl"].removesuffix("/v3"), "region": keys["region"],
            "tenantId": keys["tenantId"], "username": keys["username"],
            "password": keys["password"], "domainId": keys["domainId"]}


def test_file_module_store_reads_as_the_server_reads_it(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    want = _tree(tmp_path / "apps", tag)
    done = _sync(tmp_path, {"MODULESTORE": {"directory": str(tmp_path / "mirror")}}, "sync")
    assert done.returncode == 0, done.stderr
    # The folders a server will not serve are named, with the reason.
    assert f"lib-{tag}" in done.stderr and "engines.synchro" in done.stderr
    assert f"plain-{tag}" in done.stderr and "no package.json" in done.stderr
    seen = _read_as_the_server({"service": "file", "directory": str(tmp_path / "mirror")})
    assert seen["apps"] == want
    assert seen["storeFile"] == APPS_JSON
    assert not (tmp_path / "mirror" / f"hello-{tag}" / "node_modules").exists()

    # pull brings the store files back to the root of a new folder.
    fresh = tmp_path / "fresh"
    pulled = _sync(fresh, {"MODULESTORE": {"directory": str(tmp_path / "mirror")}}, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (fresh / "apps" / "apps.json").read_text(encoding="utf-8") == APPS_JSON
    assert (fresh / "apps" / f"hello-{tag}" / "lib" / "util.js").is_file()


@pytest.mark.parametrize("provider", ["amazon", "openstack"])
def test_cloud_module_store_reads_as_the_server_reads_it(
    provider: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(f"{provider}_store_server")
    tag = uuid.uuid4().hex[:6]
    config_root = f"synchro-config-{tag}"
    want = _tree(tmp_path / "apps", tag)
    store = {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
             "MODULESTORE": {**server.settings(), "configRoot": config_root}}
    done = _sync(tmp_path, store, "sync")
    assert done.returncode == 0, done.stderr
    seen = _read_as_the_server({"service": "pkgcloud", "configRoot": config_root,
                                "client": _pkgcloud_options(provider, server)})
    mine = {name: mods for name, mods in seen["apps"].items() if name.endswith(tag)}
    assert mine == want
    assert seen["storeFile"] == APPS_JSON
    if provider == "amazon":
        head = server.client().head_object(Bucket=f"hello-{tag}", Key="main.js")
        assert head["ContentType"] in ("text/javascript", "application/javascript")
        head = server.client().head_object(Bucket=config_root, Key="apps.json")
        assert head["ContentType"] == "application/json"


def test_store_files_without_config_root_are_named_once(
    tmp_path: Path, amazon_store_server: Any
) -> None:
    tag = uuid.uuid4().hex[:6]
    _tree(tmp_path / "apps", tag)
    store = {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
             "MODULESTORE": amazon_store_server.settings()}
    done = _sync(tmp_path, store, "sync")
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stderr.splitlines() if "apps.json" in x]
    assert len(lines) == 1 and "MODULESTORE.configRoot" in lines[0], done.stderr


def test_apps_only_mirrors_apps_and_a_folder_joins_live(
    sync_world: Callable[..., SyncWorld],
) -> None:
    world = sync_world(None, **{"SYNC__appsOnly": "true"})
    tag = uuid.uuid4().hex[:6]
    _tree(world.root, tag)
    run = world.start_run()
    app = world.mirror / f"hello-{tag}"
    wait_for((app / "lib" / "util.js").exists, 10, "the app mirrored", details=run.tail)
    assert not (world.mirror / f"lib-{tag}").exists()  # a Node package, not an app
    assert (world.mirror / "apps.json").read_text(encoding="utf-8") == APPS_JSON
    # A live save of apps.json reaches the store like any module.
    (world.root / "apps.json").write_text('{"changed": true}\n')
    # The package becomes an app: all of it follows, without a restart.
    (world.root / f"lib-{tag}" / "package.json").write_text('{"engines": {"synchro": "*"}}')
    joined = world.mirror / f"lib-{tag}" / "index.js"
    wait_for(lambda: joined.exists() and "changed" in (world.mirror / "apps.json").read_text(),
             10, "the new app and apps.json mirrored", details=run.tail)
    assert (world.mirror / "apps.json").read_text() == '{"changed": true}\n'


def test_status_names_the_folders_a_server_will_not_serve(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    _tree(tmp_path / "apps", tag)
    store = {"MODULESTORE": {"directory": str(tmp_path / "mirror")}}
    assert _sync(tmp_path, store, "sync").returncode == 0
    shown = _sync(tmp_path, store, "status")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(i for i, x in enumerate(lines) if x.strip().startswith(f"plain-{tag}:"))
    assert "will not serve it: no package.json" in lines[at + 1]
    at = next(i for i, x in enumerate(lines) if x.strip().startswith(f"lib-{tag}:"))
    assert 'engines.synchro' in lines[at + 1]
    assert not any("will not serve" in x for x in lines
                   if x.strip().startswith(f"hello-{tag}:"))


def test_store_files_in_bucket_mode_go_under_the_config_root_prefix(
    tmp_path: Path, amazon_store_server: Any
) -> None:
    tag = uuid.uuid4().hex[:6]
    bucket = f"one-bucket-{tag}"
    amazon_store_server.client().create_bucket(Bucket=bucket)
    _tree(tmp_path / "apps", tag)
    store = {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
             "MODULESTORE": {**amazon_store_server.settings(bucket=bucket),
                             "configRoot": "config"}}
    done = _sync(tmp_path, store, "sync")
    assert done.returncode == 0, done.stderr
    raw = amazon_store_server.client()
    keys = {o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "config/apps.json" in keys and f"hello-{tag}/main.js" in keys
    assert raw.get_object(Bucket=bucket, Key="config/apps.json")["Body"].read().decode() \
        == APPS_JSON
    pulled = _sync(tmp_path / "fresh", store, "pull")  # APP_ROOT_PATH: fresh/apps
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "fresh" / "apps" / "apps.json").read_text(encoding="utf-8") == APPS_JSON
    assert not (tmp_path / "fresh" / "apps" / "config").exists()  # not an app folder
