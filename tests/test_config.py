"""Configuration: layering, typing, provenance, masking, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.config import (
    FileSessionStoreConfig,
    RedisSessionStoreConfig,
    load_settings,
)
from worker.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in an empty folder with no SYNCHRO variables of the caller's."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("SYNCHRO"):
            monkeypatch.delenv(name)
    return tmp_path


def write_config(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- layering ------------------------------------------------------------------------------


def test_defaults_are_the_embedded_setup() -> None:
    s = load_settings(environ={})
    assert s.SESSIONSTORE_SERVICE == "MemorySessionStore"
    assert s.MODULESTORE_SERVICE == "FileModuleStore"
    assert s.APP_ROOT_PATH == "synchro-apps"
    assert s.module_store.directory == "synchro-mirror"  # type: ignore[union-attr]
    assert s.BROKER_URL is None
    assert s.origin("APP_ROOT_PATH") == "default"


def test_file_then_env_then_cli(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "c.json",
        {
            "SESSIONSTORE_SERVICE": "RedisSessionStore",
            "SESSIONSTORE": {"host": "redis.internal", "port": 6380, "keyPrefix": "s:"},
            "SYNC": {"debounce": 0.5},
        },
    )
    env = {"SYNCHRO__SESSIONSTORE__port": "6390", "SYNCHRO__SESSIONSTORE__password": "pw"}
    s = load_settings(cfg, {"SYNC.debounce": 0.05}, environ=env)
    store = s.session_store
    assert isinstance(store, RedisSessionStoreConfig)
    assert store.host == "redis.internal"  # file
    assert store.port == 6390  # env beats file, typed by the schema
    assert store.password is not None and store.password.get_secret_value() == "pw"
    assert store.keyPrefix == "s:"
    assert s.SYNC.debounce == 0.05  # command line beats file
    assert s.origin("SESSIONSTORE", "port") == "environment variable SYNCHRO__SESSIONSTORE__port"
    assert s.origin("SESSIONSTORE", "host").startswith("config file ")
    assert s.origin("SYNC", "debounce") == "command line"


def test_config_file_from_variable_and_from_cwd(tmp_path: Path) -> None:
    write_config(tmp_path / "config.json", {"APP_ROOT_PATH": "from-cwd"})
    assert load_settings(environ={}).APP_ROOT_PATH == "from-cwd"
    other = write_config(tmp_path / "other.json", {"APP_ROOT_PATH": "from-var"})
    assert load_settings(environ={"SYNCHRO_CONFIG": str(other)}).APP_ROOT_PATH == "from-var"


def test_env_names_match_case_insensitively_and_take_json() -> None:
    env = {
        "SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
        "SYNCHRO__SESSIONSTORE__SESSIONSTATEFILE": "state.json",
        "SYNCHRO__SYNC__ignore": '["*.log", "tmp/"]',
        "SYNCHRO__SYNC__polling": "true",
    }
    s = load_settings(environ=env)
    assert isinstance(s.session_store, FileSessionStoreConfig)
    assert s.session_store.sessionStateFile == "state.json"
    assert s.SYNC.ignore == ["*.log", "tmp/"]
    assert s.SYNC.polling is True


def test_cloud_module_store_keys() -> None:
    env = {
        "SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "SYNCHRO__MODULESTORE__provider": "azure",
        "SYNCHRO__MODULESTORE__storageAccount": "acct",
        "SYNCHRO__MODULESTORE__storageAccessKey": "c2VjcmV0",
    }
    s = load_settings(environ=env)
    assert s.module_store.provider == "azure"  # type: ignore[union-attr]


# --- bad input: exit 2, one line naming the setting and its source --------------------------

BAD_INPUTS: list[tuple[str, dict[str, str], Any, str, str]] = [
    # (id, environment, config file content or None, setting named, text expected)
    ("unknown session service", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisStore"}, None,
     "SESSIONSTORE_SERVICE", "did you mean 'RedisSessionStore'"),
    ("unknown module service", {"SYNCHRO__MODULESTORE_SERVICE": "S3ModuleStore"}, None,
     "MODULESTORE_SERVICE", "allowed: FileModuleStore, PkgCloudModuleStore"),
    ("port not a number", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
                           "SYNCHRO__SESSIONSTORE__port": "sixthousand"}, None,
     "SESSIONSTORE.port", "SYNCHRO__SESSIONSTORE__port"),
    ("port out of range", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore"},
     {"SESSIONSTORE": {"port": 70000}}, "SESSIONSTORE.port", "less than or equal to 65535"),
    ("misspelt store key", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
                            "SYNCHRO__SESSIONSTORE__pasword": "x"}, None,
     "SESSIONSTORE.pasword", "did you mean 'password'"),
    ("near miss in another store's keys", {}, {"SESSIONSTORE_SERVICE": "FileSessionStore",
                                               "SESSIONSTORE": {"hots": "x"}},
     "SESSIONSTORE.hots", "did you mean 'host'"),
    ("variable naming nothing", {"SYNCHRO__APP_ROOT": "x"}, None,
     "APP_ROOT", "did you mean 'APP_ROOT_PATH'"),
    ("empty name between separators", {"SYNCHRO__SYNC____debounce": "1"}, None,
     "SYNCHRO__SYNC____debounce", "empty name"),
    ("unknown top-level key in file", {}, {"MODULSTORE": {}}, "MODULSTORE",
     "did you mean 'MODULESTORE'"),
    ("invalid JSON file", {}, "{not json", "config file", "invalid JSON at line 1"),
    ("file not an object", {}, [1, 2], "config file", "must hold a JSON object"),
    ("wrong type bool", {"SYNCHRO__SYNC__polling": "perhaps"}, None,
     "SYNC.polling", "valid boolean"),
    ("negative debounce", {}, {"SYNC": {"debounce": -1}}, "SYNC.debounce", "greater than or equal"),
    ("share above one", {"SYNCHRO__SYNC__maxDeleteShare": "1.5"}, None,
     "SYNC.maxDeleteShare", "less than or equal to 1"),
    ("missing provider", {"SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore"}, None,
     "MODULESTORE.provider", "needs a provider"),
    ("unknown provider", {"SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
                          "SYNCHRO__MODULESTORE__provider": "amazn"}, None,
     "MODULESTORE.provider", "did you mean 'amazon'"),
    ("hp cloud is gone", {}, {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
                              "MODULESTORE": {"provider": "hp"}},
     "MODULESTORE.provider", "shut down"),
    ("openstack missing key", {}, {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
                                   "MODULESTORE": {"provider": "openstack", "tenantId": "p",
                                                   "authUrl": "http://k/v3", "username": "u"}},
     "MODULESTORE.password", "required setting is missing"),
    ("azure without credentials", {}, {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
                                       "MODULESTORE": {"provider": "azure"}},
     "MODULESTORE", "storageAccessKey, or connectionString"),
    ("bad redis url", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
                       "SYNCHRO__SESSIONSTORE__url": "http://h:1"}, None,
     "SESSIONSTORE.url", "redis://"),
    ("mirror onto itself", {"SYNCHRO__MODULESTORE__directory": "synchro-apps"}, None,
     "MODULESTORE.directory", "overlaps APP_ROOT_PATH"),
    ("bad log level", {"SYNCHRO__LOG_LEVEL": "LOUD"}, None, "LOG_LEVEL", "'DEBUG'"),
    ("invalid JSON in variable", {"SYNCHRO__SYNC__ignore": "[oops"}, None,
     "SYNCHRO__SYNC__ignore", "invalid JSON"),
    ("section given a scalar", {}, {"SYNC": 5}, "SYNC", "valid dictionary"),
]


@pytest.mark.parametrize(
    ("env", "content", "setting", "expected"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_one_line_naming_setting_and_source(
    tmp_path: Path, env: dict[str, str], content: Any, setting: str, expected: str
) -> None:
    args = ["config", "show"]
    if content is not None:
        cfg = tmp_path / "bad.json"
        cfg.write_text(content if isinstance(content, str) else json.dumps(content))
        args = ["-c", str(cfg), *args]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("synchro-sync: error: ")
    assert setting in line
    assert expected in line
    assert "Traceback" not in result.output
    # The source is named: the variable, or the file.
    if env and content is None:
        assert "environment" in line
    elif content is not None:
        assert "bad.json" in line


def test_at_least_fifteen_distinct_bad_inputs() -> None:
    assert len({case[0] for case in BAD_INPUTS}) >= 15


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "nope.json"), "config", "show"])
    assert result.exit_code == 2
    assert "nope.json" in result.output and "file not found" in result.output


def test_unreadable_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_settings(folder, environ={})


def test_secret_never_echoed_in_errors() -> None:
    env = {
        "SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
        "SYNCHRO__SESSIONSTORE__password": "hunter2-very-secret",
        "SYNCHRO__SESSIONSTORE__db": "-1",
    }
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == 2
    assert "hunter2" not in result.output


# --- config show -------------------------------------------------------------------------------


def test_show_masks_secrets_and_names_sources(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "config.json",
        {
            "SESSIONSTORE_SERVICE": "RedisSessionStore",
            "SESSIONSTORE": {"url": "redis://:filepass@cache:6379/2"},
            "MODULESTORE_SERVICE": "PkgCloudModuleStore",
            "MODULESTORE": {"provider": "amazon", "keyId": "AKIA1", "bucket": "apps"},
        },
    )
    env = {"SYNCHRO__MODULESTORE__key": "aws-secret-key-123"}
    result = CliRunner().invoke(main, ["-c", str(cfg), "config", "show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = {r["setting"]: r for r in map(json.loads, result.output.splitlines())}
    assert rows["MODULESTORE.key"]["value"] == "****"
    assert rows["MODULESTORE.key"]["source"] == "environment variable SYNCHRO__MODULESTORE__key"
    assert rows["SESSIONSTORE.password"]["value"] == "(unset)"
    assert rows["SESSIONSTORE.url"]["value"] == "redis://:****@cache:6379/2"
    assert rows["MODULESTORE.keyId"]["value"] == "AKIA1"
    assert "config.json" in rows["MODULESTORE.keyId"]["source"]
    assert rows["SYNC.debounce"]["source"] == "default"
    for secret in ("aws-secret-key-123", "filepass"):
        assert secret not in result.output


def test_show_as_a_user_runs_it(tmp_path: Path) -> None:
    """The installed console script, in a subprocess: table output, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SYNCHRO")}
    env["SYNCHRO__SESSIONSTORE_SERVICE"] = "FileSessionStore"
    exe = Path(sys.executable).with_name("synchro-sync")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "worker.cli"]
    out = subprocess.run(
        [*argv, "config", "show"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "SESSIONSTORE.sessionStateFile" in out.stdout
    assert "environment variable SYNCHRO__SESSIONSTORE_SERVICE" in out.stdout
    bad = subprocess.run(
        [*argv, "config", "show"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**env, "SYNCHRO__SESSIONSTORE__sessionStateFil": "x"},
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "did you mean 'sessionStateFile'" in bad.stderr
