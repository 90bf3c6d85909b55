"""Secrets (the Redis password, the S3 secret key, the Azure key; in the config file, in
SYNCHRO__ variables, inside URLs) never appear in `config show`, `status`, logs at any level
(`--debug` tracebacks and SDK error messages included), or any file under STATE_DIR."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.servers.celery_worker import CLI
from tests.servers.process import clean_environ

S3_SECRET = "s3-Secret-" + uuid.uuid4().hex
REDIS_SECRET = "redis-Secret-" + uuid.uuid4().hex
AZURE_SECRET = "QXp1cmVTZWNyZXQ" + uuid.uuid4().hex + "=="  # base64, and wrong


def _run(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--debug", *args, "-c", str(tmp / "config.json")],
                          env=clean_environ(**env), cwd=tmp, capture_output=True, text=True,
                          timeout=120)


def _no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"secret shown: ...{text[max(0, text.find(secret) - 80):][:200]}"


def _state_files_hold_no_secret(state: Path, *secrets: str) -> None:
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, path


def test_s3_secret_and_redis_password_never_shown(
    tmp_path: Path, amazon_store_server: Any, redis_server: Any
) -> None:
    (tmp_path / "apps" / "app1").mkdir(parents=True)
    (tmp_path / "apps" / "app1" / "a.js").write_text("a")
    store = amazon_store_server.settings()
    (tmp_path / "config.json").write_text(json.dumps({
        "APP_ROOT_PATH": str(tmp_path / "apps"), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "MODULESTORE": {k: v for k, v in store.items() if k != "key"},
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        # The password inside a URL in the file: wrong, so the SDK's error is printed.
        "SESSIONSTORE": {"url": f"redis://:{REDIS_SECRET}@127.0.0.1:{redis_server.port}/3"},
    }))
    # moto takes any key: the secret from the environment reaches the store and works.
    env = {"SYNCHRO__MODULESTORE__key": S3_SECRET}
    outputs = []
    for args in (["sync"], ["config", "show"], ["config", "check"], ["status"],
                 ["sessions", "snapshot"], ["sessions", "list"]):
        done = _run(tmp_path, env, *args)
        outputs.append(done)
        _no_secret(done.stdout + done.stderr, S3_SECRET, REDIS_SECRET)
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert outputs[2].returncode != 0  # the Redis password is wrong: said, not shown
    assert "session store" in outputs[2].stdout + outputs[2].stderr
    assert outputs[4].returncode != 0
    assert (tmp_path / "state" / "index.sqlite").is_file()
    _state_files_hold_no_secret(tmp_path / "state", S3_SECRET, REDIS_SECRET)


def test_azure_key_never_shown(tmp_path: Path, azure_store_server: Any) -> None:
    (tmp_path / "apps" / "app1").mkdir(parents=True)
    (tmp_path / "apps" / "app1" / "a.js").write_text("a")
    store = {**azure_store_server.settings(), "storageAccessKey": AZURE_SECRET}
    store.pop("connectionString", None)
    (tmp_path / "config.json").write_text(json.dumps({
        "APP_ROOT_PATH": str(tmp_path / "apps"), "STATE_DIR": str(tmp_path / "state"),
        "MODULESTORE_SERVICE": "PkgCloudModuleStore", "MODULESTORE": store,
    }))
    for args in (["sync"], ["config", "show"], ["config", "check"], ["status"]):
        done = _run(tmp_path, {}, *args)
        _no_secret(done.stdout + done.stderr, AZURE_SECRET)
        if args == ["sync"]:
            assert done.returncode == 1, done.stderr  # the wrong key is refused by Azurite
    _state_files_hold_no_secret(tmp_path / "state", AZURE_SECRET)
