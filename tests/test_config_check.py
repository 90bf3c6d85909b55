"""`synchro-sync config check`: each configured store is contacted and reported; exit 1 if not."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.servers.process import free_port
from tests.servers.redis_server import RedisServer
from worker.cli import main


@pytest.fixture()
def folder(clean_env: Path) -> Path:
    """The clean environment's folder, with the default app folder in it."""
    (clean_env / "synchro-apps").mkdir()
    return clean_env


def check(
    folder: Path, config: dict[str, object], env: dict[str, str] | None = None
) -> tuple[int, str]:
    cfg = folder / "config.json"
    cfg.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["-c", str(cfg), "config", "check"], env=env or {})
    return result.exit_code, result.output


def test_redis_session_store_with_password_from_the_environment(
    folder: Path, redis_server: RedisServer
) -> None:
    config = {
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SESSIONSTORE": {"host": "127.0.0.1", "port": redis_server.port},
    }
    env = {"SYNCHRO__SESSIONSTORE__password": redis_server.password or ""}
    code, out = check(folder, config, env)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("ok    session store (RedisSessionStore)")
    assert lines[1].startswith("ok    module store (FileModuleStore)")
    assert redis_server.password and redis_server.password not in out


def test_wrong_password_fails_with_exit_1_and_names_the_store(
    folder: Path, redis_server: RedisServer
) -> None:
    config = {
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SESSIONSTORE": {"host": "127.0.0.1", "port": redis_server.port, "password": "wrong"},
    }
    code, out = check(folder, config)
    assert code == 1
    assert out.startswith("FAIL  session store (RedisSessionStore): ")
    assert "ok    module store" in out  # the other store is still checked
    assert "wrong" not in out.split(":", 1)[1].replace("wrong password", "")


def test_nothing_listening_fails(folder: Path) -> None:

    config = {
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SESSIONSTORE": {"url": f"redis://127.0.0.1:{free_port()}/0"},
    }
    code, out = check(folder, config)
    assert code == 1 and out.startswith("FAIL  session store (RedisSessionStore)")


def test_corrupt_session_file_fails_and_is_left_as_it_was(folder: Path) -> None:
    state = folder / "sessions.json"
    state.write_bytes(b'{"sessions": {"a": {"state": {}')
    before = state.read_bytes()
    code, out = check(folder, {"SESSIONSTORE_SERVICE": "FileSessionStore"})
    assert code == 1
    assert "FAIL  session store (FileSessionStore)" in out and "sessions.json" in out
    assert state.read_bytes() == before


def test_embedded_default_is_all_ok(folder: Path) -> None:
    code, out = check(folder, {})
    assert code == 0, out
    assert "ok    session store (MemorySessionStore)" in out
    assert "ok    module store (FileModuleStore)" in out


def test_beside_a_synchro_server_its_keys_do_not_reach_the_redis_client(
    folder: Path, redis_server: RedisServer
) -> None:
    """The server's settings and the keys only its stores read load and stay out of the
    worker's Redis connection: config check connects with what the worker uses."""
    config = {
        "PORT": 1337,
        "APPS": {"samples": {"container": "samples"}},
        "LOG4JS_CONFIG": {"levels": {"[all]": "INFO"}},
        "SESSIONSTORE_PACKAGE": "synchro-api",
        "SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SESSIONSTORE": {"host": "127.0.0.1", "port": redis_server.port, "pingInterval": 30,
                         "sentinels": [{"host": "nowhere", "port": 1}]},
    }
    env = {"SYNCHRO__SESSIONSTORE__password": redis_server.password or ""}
    code, out = check(folder, config, env)
    assert code == 0, out
    assert out.startswith("ok    session store (RedisSessionStore)")


def test_missing_cloud_credentials_stop_check_before_any_request(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    listener = socket.create_server(("127.0.0.1", 0))  # the "store": must never be asked
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    config = {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
              "MODULESTORE": {"provider": "amazon", "endpoint": f"http://127.0.0.1:{port}"}}
    try:
        code, out = check(folder, config)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert code == 2, out
    assert out.count("\n") == 1 and "MODULESTORE.keyId" in out and "MODULESTORE.key" in out
