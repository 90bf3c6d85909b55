"""Configuration: layering, typing, provenance, masking, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from click.testing import CliRunner

from tests.servers.process import clean_environ
from worker.cli import main
from worker.config import (
    AmazonConfig,
    AzureConfig,
    FileModuleStoreConfig,
    FileSessionStoreConfig,
    GoogleConfig,
    RedisSessionStoreConfig,
    Settings,
    effective_items,
    load_settings,
)
from worker.errors import ConfigError

#: Each test runs in its empty tmp_path with no SYNCHRO variable of the caller's.
pytestmark = pytest.mark.usefixtures("clean_env")


def write_config(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- layering ------------------------------------------------------------------------------


def test_defaults_are_the_embedded_setup() -> None:
    s = load_settings(environ={})
    assert s.SESSIONSTORE_SERVICE == "MemorySessionStore"
    assert s.MODULESTORE_SERVICE == "FileModuleStore"
    assert s.APP_ROOT_PATH == "synchro-apps"
    assert s.MODULESTORE.directory == "synchro-mirror"  # type: ignore[union-attr]
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
    store = s.SESSIONSTORE
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
    assert isinstance(s.SESSIONSTORE, FileSessionStoreConfig)
    assert s.SESSIONSTORE.sessionStateFile == "state.json"
    assert s.SYNC.ignore == ["*.log", "tmp/"]
    assert s.SYNC.polling is True


def test_variables_null_unsets_and_log_level_any_case(tmp_path: Path) -> None:
    """``null`` in a variable is no value, as synchro-config.js reads it."""
    cfg = write_config(tmp_path / "c.json", {"BROKER_URL": "redis://h:1/0"})
    s = load_settings(cfg, environ={"SYNCHRO__BROKER_URL": "null", "SYNCHRO__LOG_LEVEL": "debug"})
    assert s.BROKER_URL is None
    assert s.LOG_LEVEL == "DEBUG"


def test_a_variable_in_other_case_beats_the_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.json", {"SESSIONSTORE_SERVICE": "RedisSessionStore",
                                             "SESSIONSTORE": {"host": "from-file"}})
    s = load_settings(cfg, environ={"SYNCHRO__SESSIONSTORE__HOST": "from-env"})
    assert s.SESSIONSTORE.host == "from-env"  # type: ignore[union-attr]
    assert s.origin("SESSIONSTORE", "host") == "environment variable SYNCHRO__SESSIONSTORE__HOST"


def test_cloud_module_store_keys() -> None:
    env = {
        "SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "SYNCHRO__MODULESTORE__provider": "azure",
        "SYNCHRO__MODULESTORE__storageAccount": "acct",
        "SYNCHRO__MODULESTORE__storageAccessKey": "c2VjcmV0",
    }
    s = load_settings(environ=env)
    assert s.MODULESTORE.provider == "azure"  # type: ignore[union-attr]


# --- bad input: exit 2, one line naming the setting and its source --------------------------


class Special(Enum):
    """Config paths that are not a plain file of JSON."""

    DIRECTORY = "a folder"
    SYMLINK_LOOP = "a symlink loop (unreadable)"
    FIFO = "a named pipe"
    HUGE = "2 MiB of JSON"
    DEEP = "100,000 levels of nesting"


class Bad(NamedTuple):
    id: str
    env: dict[str, str]
    content: Any  # the config file: JSON data, text, bytes, a Special, or None for no file
    setting: str
    expected: str
    #: Text of the source the line must name (a variable, or the file's name).
    source: str = ""
    #: A secret given in the input that must not appear in the output.
    secret: str | None = None


REDIS = {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore"}
CLOUD = {"SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore"}
AMAZON = {**CLOUD, "SYNCHRO__MODULESTORE__provider": "amazon"}
SECRET = "Pw-s3cret-9f2"

BAD_INPUTS: list[Bad] = [
    Bad("unknown session service", {"SYNCHRO__SESSIONSTORE_SERVICE": "RedisStore"}, None,
        "SESSIONSTORE_SERVICE", "did you mean 'RedisSessionStore'"),
    Bad("unknown module service", {"SYNCHRO__MODULESTORE_SERVICE": "S3ModuleStore"}, None,
        "MODULESTORE_SERVICE", "allowed: FileModuleStore, PkgCloudModuleStore"),
    Bad("port not a number", {**REDIS, "SYNCHRO__SESSIONSTORE__port": "sixthousand"}, None,
        "SESSIONSTORE.port", "valid integer", "SYNCHRO__SESSIONSTORE__port"),
    Bad("port out of range", REDIS, {"SESSIONSTORE": {"port": 70000}}, "SESSIONSTORE.port",
        "less than or equal to 65535"),
    Bad("port true is not 1", REDIS, {"SESSIONSTORE": {"port": True}}, "SESSIONSTORE.port",
        "must be a number, not true"),
    Bad("misspelt store key", {**REDIS, "SYNCHRO__SESSIONSTORE__pasword": SECRET}, None,
        "SESSIONSTORE.pasword", "did you mean 'password'", secret=SECRET),
    Bad("near miss in another store's keys", {}, {"SESSIONSTORE_SERVICE": "FileSessionStore",
                                                  "SESSIONSTORE": {"hots": "x"}},
        "SESSIONSTORE.hots", "did you mean 'host'"),
    Bad("near miss of configRoot", CLOUD, {"MODULESTORE": {"provider": "azure",
                                                          "connectionString": SECRET,
                                                          "confRoot": "c"}},
        "MODULESTORE.confRoot", "did you mean 'configRoot'", secret=SECRET),
    Bad("variable naming nothing", {"SYNCHRO__APP_ROOT": "x"}, None,
        "APP_ROOT", "did you mean 'APP_ROOT_PATH'", "SYNCHRO__APP_ROOT"),
    Bad("near miss of a worker name", {"SYNCHRO__BROKER_URI": "redis://h"}, None,
        "BROKER_URI", "did you mean 'BROKER_URL'"),
    Bad("nested setting written flat", {"SYNCHRO__SYNC_DEBOUNCE": "1"}, None,
        "SYNC_DEBOUNCE", "did you mean 'SYNC.debounce'"),
    Bad("server name in the wrong case", {}, {"port": 1337}, "port", "did you mean 'PORT'"),
    Bad("lower-case name of nobody's", {}, {"foo": 1}, "foo", "unknown setting 'foo'"),
    Bad("control characters in a key", {}, {"\u001b[2JX": 1}, "\\x1b[2JX",
        "unknown setting '\\x1b[2JX'"),
    Bad("empty name between separators", {"SYNCHRO__SYNC____debounce": "1"}, None,
        "SYNCHRO__SYNC____debounce", "empty name"),
    Bad("unknown top-level key in file", {}, {"MODULSTORE": {}}, "MODULSTORE",
        "did you mean 'MODULESTORE'"),
    Bad("worker section stays strict", {}, {"SYNC": {"debunce": 1}}, "SYNC.debunce",
        "did you mean 'debounce'"),
    Bad("invalid JSON file", {}, "{not json", "config file", "invalid JSON at line 1"),
    Bad("file not an object", {}, [1, 2], "config file", "must hold a JSON object"),
    Bad("UTF-8 byte-order mark", {}, b"\xef\xbb\xbf{}", "config file", "byte-order mark"),
    Bad("not UTF-8", {}, b'{"APP_ROOT_PATH": "\xff"}', "config file", "is not UTF-8"),
    Bad("config path is a folder", {}, Special.DIRECTORY, "config file", "is a folder"),
    Bad("config path unreadable", {}, Special.SYMLINK_LOOP, "config file", "cannot read it"),
    Bad("config path a named pipe", {}, Special.FIFO, "config file", "not a regular file"),
    Bad("config file too big", {}, Special.HUGE, "config file", "at most 1,048,576 bytes"),
    Bad("nested 100,000 levels", {}, Special.DEEP, "config file", "nested more than 32"),
    Bad("a number of 5,000 digits", {}, '{"SYNC": {"transfers": 1' + "0" * 5000 + "}}",
        "config file", "more than 4,300 digits"),
    Bad("a lone surrogate escape", {}, '{"STUDIO_TITLE": "\\ud800"}', "config file",
        "not valid Unicode"),
    Bad("variable not UTF-8", {"SYNCHRO__APP_ROOT_PATH": "apps\udcff"}, None,
        "SYNCHRO__APP_ROOT_PATH", "is not valid UTF-8"),
    Bad("NUL in a path", {}, {"APP_ROOT_PATH": "a\u0000b"}, "APP_ROOT_PATH", "NUL character"),
    Bad("list where an object belongs", {}, {"MODULESTORE": [1]}, "MODULESTORE",
        "valid dictionary"),
    Bad("section given a scalar", {}, {"SYNC": 5}, "SYNC", "valid dictionary"),
    Bad("wrong type bool", {"SYNCHRO__SYNC__polling": "perhaps"}, None,
        "SYNC.polling", "valid boolean"),
    Bad("wrong type string", {}, {"APP_ROOT_PATH": 5}, "APP_ROOT_PATH", "valid string"),
    Bad("whole number expected", {"SYNCHRO__SYNC__transfers": "4.5"}, None,
        "SYNC.transfers", "valid integer"),
    Bad("negative debounce", {}, {"SYNC": {"debounce": -1}}, "SYNC.debounce",
        "greater than or equal"),
    Bad("zero full-pass interval", {"SYNCHRO__SYNC__fullPassInterval": "0"}, None,
        "SYNC.fullPassInterval", "greater than 0"),
    Bad("infinite full-pass interval", {"SYNCHRO__SYNC__fullPassInterval": "inf"}, None,
        "SYNC.fullPassInterval", "finite number"),
    Bad("negative backup interval", {}, {"BACKUP": {"interval": -5}}, "BACKUP.interval",
        "greater than or equal to 0"),
    Bad("keep zero snapshots", {"SYNCHRO__BACKUP__keep": "0"}, None, "BACKUP.keep",
        "greater than or equal to 1"),
    Bad("share above one", {"SYNCHRO__SYNC__maxDeleteShare": "1.5"}, None,
        "SYNC.maxDeleteShare", "less than or equal to 1"),
    Bad("negative ping interval", {**REDIS, "SYNCHRO__SESSIONSTORE__pingInterval": "-1"}, None,
        "SESSIONSTORE.pingInterval", "greater than 0"),
    Bad("missing provider", CLOUD, None, "MODULESTORE.provider", "needs a provider"),
    Bad("unknown provider", {**CLOUD, "SYNCHRO__MODULESTORE__provider": "amazn"}, None,
        "MODULESTORE.provider", "did you mean 'amazon'"),
    Bad("hp cloud is gone", {}, {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
                                 "MODULESTORE": {"provider": "hp"}},
        "MODULESTORE.provider", "shut down"),
    Bad("third-party session store package", {"SYNCHRO__SESSIONSTORE_PACKAGE": "synchro-x"},
        None, "SESSIONSTORE_PACKAGE", "cannot load a third-party store"),
    Bad("third-party module store package", {}, {"MODULESTORE_PACKAGE": "./my-store"},
        "MODULESTORE_PACKAGE", "cannot load a third-party store"),
    Bad("amazon without any credentials", AMAZON, None, "MODULESTORE.keyId",
        "MODULESTORE.key", "not set"),
    Bad("amazon keyId without key", {**AMAZON, "SYNCHRO__MODULESTORE__keyId": "AKIA1"}, None,
        "MODULESTORE.key ", "MODULESTORE.keyId (environment variable "
        "SYNCHRO__MODULESTORE__keyId) is set"),
    Bad("amazon key without keyId", {**AMAZON, "SYNCHRO__MODULESTORE__key": SECRET}, None,
        "MODULESTORE.keyId", "MODULESTORE.key (environment variable", secret=SECRET),
    Bad("endpoint not a URL", {**AMAZON, "SYNCHRO__MODULESTORE__endpoint": "not a url"}, None,
        "MODULESTORE.endpoint", "is not a URL"),
    Bad("azure account without key", CLOUD, {"MODULESTORE": {"provider": "azure",
                                                             "storageAccount": "acct"}},
        "MODULESTORE.storageAccessKey", "storageAccount"),
    Bad("azure without credentials", CLOUD, {"MODULESTORE": {"provider": "azure"}},
        "MODULESTORE.storageAccount", "storageAccessKey, or connectionString"),
    Bad("azure key not base64", {**CLOUD, "SYNCHRO__MODULESTORE__storageAccessKey": SECRET},
        {"MODULESTORE": {"provider": "azure", "storageAccount": "acct"}},
        "MODULESTORE.storageAccessKey", "base64", "SYNCHRO__MODULESTORE__storageAccessKey",
        secret=SECRET),
    Bad("google key file missing", CLOUD, {"MODULESTORE": {"provider": "google",
                                                          "keyFilename": "gone.json"}},
        "MODULESTORE.keyFilename", "does not exist"),
    Bad("google without credentials", {**CLOUD, "SYNCHRO__MODULESTORE__provider": "google"},
        None, "MODULESTORE.keyFilename", "no credentials"),
    Bad("openstack without keys", CLOUD, {"MODULESTORE": {"provider": "openstack"}},
        "MODULESTORE.authUrl", "MODULESTORE.tenantId, MODULESTORE.username, "
        "MODULESTORE.password"),
    Bad("openstack missing password", {}, {"MODULESTORE_SERVICE": "PkgCloudModuleStore",
                                           "MODULESTORE": {"provider": "openstack",
                                                           "tenantId": "p",
                                                           "authUrl": "http://k/v3",
                                                           "username": "u"}},
        "MODULESTORE.password", "required setting is missing"),
    Bad("openstack auth URL not http", CLOUD, {"MODULESTORE": {
        "provider": "openstack", "tenantId": "p", "authUrl": "keystone:5000", "username": "u",
        "password": SECRET}}, "MODULESTORE.authUrl", "is not a URL", secret=SECRET),
    Bad("rackspace without apiKey", CLOUD, {"MODULESTORE": {"provider": "rackspace",
                                                           "username": "u"}},
        "MODULESTORE.apiKey", "rackspace needs username and apiKey"),
    Bad("redis url of another scheme", {**REDIS, "SYNCHRO__SESSIONSTORE__url":
                                        f"http://:{SECRET}@h:1/0"}, None,
        "SESSIONSTORE.url", "redis://", "SYNCHRO__SESSIONSTORE__url", secret=SECRET),
    Bad("redis url port not a number", {**REDIS, "SYNCHRO__SESSIONSTORE__url":
                                        f"redis://:{SECRET}@h:notaport/0"}, None,
        "SESSIONSTORE.url", "port", secret=SECRET),
    Bad("redis url with a broken IPv6 host", REDIS, {"SESSIONSTORE": {"url": "redis://[::1"}},
        "SESSIONSTORE.url", "invalid host or port"),
    Bad("redis url database not a number", REDIS, {"SESSIONSTORE": {"url": "redis://h/abc"}},
        "SESSIONSTORE.url", "database"),
    Bad("password in the URL and beside it", {**REDIS, "SYNCHRO__SESSIONSTORE__password": "a1"},
        {"SESSIONSTORE": {"url": f"redis://:{SECRET}@h:6379/0"}}, "SESSIONSTORE.url",
        "SESSIONSTORE.password (environment variable SYNCHRO__SESSIONSTORE__password)",
        secret=SECRET),
    Bad("broker URL as a JSON list", {"SYNCHRO__BROKER_URL": f'["redis://:{SECRET}@h:1/0"]'},
        None, "BROKER_URL", "valid string", secret=SECRET),
    Bad("broker URL of another scheme", {"SYNCHRO__BROKER_URL": "ftp://x"}, None, "BROKER_URL",
        "'ftp://' is not allowed"),
    Bad("broker URL not a URL", {"SYNCHRO__BROKER_URL": "notaurl"}, None, "BROKER_URL",
        "is not a broker URL"),
    Bad("empty APP_ROOT_PATH", {"SYNCHRO__APP_ROOT_PATH": ""}, None, "APP_ROOT_PATH",
        "must not be empty"),
    Bad("APP_ROOT_PATH is a file", {"SYNCHRO__APP_ROOT_PATH": "a-file"}, None, "APP_ROOT_PATH",
        "is a file, not a folder"),
    Bad("STATE_DIR is a file", {}, {"STATE_DIR": "a-file"}, "STATE_DIR",
        "is a file, not a folder"),
    Bad("empty HOST_QUEUE", {"SYNCHRO__HOST_QUEUE": " "}, None, "HOST_QUEUE", "must not be empty"),
    Bad("mirror onto itself", {"SYNCHRO__MODULESTORE__directory": "synchro-apps"}, None,
        "MODULESTORE.directory", "overlaps APP_ROOT_PATH"),
    Bad("bad log level", {"SYNCHRO__LOG_LEVEL": "LOUD"}, None, "LOG_LEVEL", "'DEBUG'"),
    Bad("bad ignore pattern", {}, {"SYNC": {"ignore": ["*.log", "\\"]}}, "SYNC.ignore",
        "pattern 2 ('\\\\') is not valid gitignore syntax"),
    Bad("invalid JSON in variable", {"SYNCHRO__SYNC__ignore": "[oops"}, None,
        "SYNC.ignore", "invalid JSON", "SYNCHRO__SYNC__ignore"),
    Bad("JSON object in variable, bad inside", {"SYNCHRO__SYNC": '{"transfers": 0}'}, None,
        "SYNC.transfers", "greater than or equal to 1", "SYNCHRO__SYNC"),
    Bad("negative database, password not echoed",
        {**REDIS, "SYNCHRO__SESSIONSTORE__password": SECRET, "SYNCHRO__SESSIONSTORE__db": "-1"},
        None, "SESSIONSTORE.db", "greater than or equal to 0", secret=SECRET),
]


def cli_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without its SYNCHRO or cloud settings, plus ``extra``: no
    credential chain to find (HOME is the test's folder, no instance metadata)."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("SYNCHRO", "AWS_", "GOOGLE_", "AZURE_"))}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true", NO_GCE_CHECK="True")
    return {**env, **extra}


def run_cli(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script, in a subprocess, as a user runs it."""
    exe = Path(sys.executable).with_name("synchro-sync")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                             "from worker.cli import main; main()"]
    return subprocess.run([*argv, *args], cwd=tmp_path, env=cli_env(tmp_path, env or {}),
                          capture_output=True, text=True, timeout=60)


def make_config(path: Path, content: Any) -> None:
    if content is Special.DIRECTORY:
        path.mkdir()
    elif content is Special.SYMLINK_LOOP:
        path.symlink_to(path)
    elif content is Special.FIFO:
        os.mkfifo(path)
    elif content is Special.HUGE:
        path.write_text(json.dumps({"APPS": {f"app{i}": {"container": "x" * 40}
                                            for i in range(40_000)}}))
    elif content is Special.DEEP:
        path.write_text('{"APPS": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.id for case in BAD_INPUTS])
def test_bad_input_is_one_line_naming_setting_and_source(tmp_path: Path, case: Bad) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    args = ["config", "show"]
    if case.content is not None:
        make_config(tmp_path / "bad.json", case.content)
        args = ["-c", str(tmp_path / "bad.json"), *args]
    out = run_cli(tmp_path, args, case.env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("synchro-sync: error: ")
    assert case.setting in line
    assert case.expected in line
    assert "Traceback" not in out.stderr
    assert "\x1b" not in out.stderr
    if case.secret:
        assert case.secret not in out.stderr
    # The source is named: the variable, or the file.
    source = case.source or ("bad.json" if case.content is not None else "environment")
    assert source in line


def test_at_least_twenty_five_distinct_bad_inputs() -> None:
    assert len({case.id for case in BAD_INPUTS}) == len(BAD_INPUTS) >= 25


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "nope.json"), "config", "show"])
    assert result.exit_code == 2
    assert "nope.json" in result.output and "file not found" in result.output
    assert "from -c/--config" in result.output


def test_config_file_from_the_variable_says_so(tmp_path: Path) -> None:
    out = run_cli(tmp_path, ["config", "show"], {"SYNCHRO_CONFIG": "gone.json"})
    assert out.returncode == 2
    assert out.stderr == ("synchro-sync: error: config file (gone.json, from $SYNCHRO_CONFIG): "
                          "file not found\n")


def test_a_folder_named_config_json_in_the_working_directory(tmp_path: Path) -> None:
    """A container volume mounted where the file should be (docker makes a folder)."""
    (tmp_path / "config.json").mkdir()
    out = run_cli(tmp_path, ["config", "show"])
    assert out.returncode == 2
    assert out.stderr == "synchro-sync: error: config file (config.json): is a folder, not a file\n"


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
    env = clean_environ(SYNCHRO__SESSIONSTORE_SERVICE="FileSessionStore")
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


# --- the Synchro server's own config.json ----------------------------------------------------

#: Every setting the Synchro server reads (synchro-config.js, app.js, synchro-api), as a
#: deployment beside a worker would write it.  Secrets come from SYNCHRO__ variables.
SYNCHRO_CONFIG: dict[str, Any] = {
    "CLIENT_VERSION": ">=1.2",
    "PROTOCOL": "https",
    "HOST": "api.example.com",
    "PORT": 1337,
    "NOFORK": False,
    "DEBUG_BASE_PORT": 6868,
    "HEALTH_CHECK_PATH": "/health",
    "API_PATH_PREFIX": "/api",
    "APP_PATH_PREFIX": "/app",
    "NOSTUDIO": False,
    "STUDIO_PATH_PREFIX": "/studio",
    "STUDIO_NOAUTH": False,
    "STUDIO_TITLE": "Synchro API Server",
    "STUDIO_SUBTITLE": "The following Synchro apps are being served here:",
    "STUDIO_USERS": {"admin": "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
    "API_URI_BASE": "https://api.example.com/api",
    "APP_RESOURCE_PREFIX": "https://cdn.example.com/resources/",
    "SERVER_URL_BASE": "https://api.example.com",
    "STATIC_CACHE_MAXAGE": 86400000,
    "NO_SYNCDEPS": True,
    "SSL_KEY_PATH": "/etc/ssl/private/synchro.key",
    "SSL_CERT_PATH": "/etc/ssl/certs/synchro.pem",
    "LOG4JS_CONFIG": {
        "appenders": [{"type": "console", "layout": {"type": "basic"}}],
        "replaceConsole": True,
        "levels": {"[all]": "INFO"},
    },
    "APPS": {"samples": {"container": "synchro-samples", "APP_RESOURCE_PREFIX": "/r/"}},
    "MY_APP_SETTING": {"anything": ["an app reads with Synchro.getConfig"]},
    "APP_ROOT_PATH": "synchro-apps",
    "SESSIONSTORE_PACKAGE": "synchro-api",
    "SESSIONSTORE_SERVICE": "RedisSessionStore",
    "SESSIONSTORE": {"host": "redis.internal", "port": 6380, "pingInterval": 60,
                     "sentinels": [{"host": "s1", "port": 26379}]},
    "MODULESTORE_PACKAGE": "synchro-api",
    "MODULESTORE_SERVICE": "PkgCloudModuleStore",
    "MODULESTORE": {"provider": "amazon", "keyId": "AKIAEXAMPLE", "region": "eu-west-1",
                    "configRoot": "synchro-config", "protocol": "https"},
}
SERVER_ONLY = [k for k in SYNCHRO_CONFIG
               if k not in ("APP_ROOT_PATH", "SESSIONSTORE", "SESSIONSTORE_PACKAGE",
                            "SESSIONSTORE_SERVICE", "MODULESTORE", "MODULESTORE_PACKAGE",
                            "MODULESTORE_SERVICE")]
SSL_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


def test_a_real_synchro_config_loads_and_show_masks_the_secrets(tmp_path: Path) -> None:
    write_config(tmp_path / "config.json", SYNCHRO_CONFIG)
    env = {
        "SYNCHRO__SESSIONSTORE__password": "redis-Pw-31337",
        "SYNCHRO__MODULESTORE__key": "aws-Secret-31337",
        "SYNCHRO__SSL_KEY": SSL_KEY,
        "SYNCHRO__SSL_CERT": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    }
    (tmp_path / "synchro-apps").mkdir()
    out = run_cli(tmp_path, ["config", "show", "--json"], env)
    assert out.returncode == 0, out.stderr
    rows = {r["setting"]: r for r in map(json.loads, out.stdout.splitlines())}
    for key in SERVER_ONLY:  # listed as the server's, untouched
        assert rows[key]["note"].startswith("the Synchro server's; left alone")
        assert "config.json" in rows[key]["source"]
        value = SYNCHRO_CONFIG[key]
        if key != "STUDIO_USERS":
            assert rows[key]["value"] == (value if isinstance(value, str) else json.dumps(value))
    assert rows["SSL_KEY"]["value"] == "****"
    assert rows["SSL_KEY"]["source"] == "environment variable SYNCHRO__SSL_KEY"
    assert rows["SSL_CERT"]["value"].startswith("-----BEGIN CERTIFICATE")
    assert rows["STUDIO_USERS"]["value"] == "****"  # password hashes
    assert rows["SESSIONSTORE.password"] == {
        "setting": "SESSIONSTORE.password", "value": "****", "note": "",
        "source": "environment variable SYNCHRO__SESSIONSTORE__password"}
    assert rows["MODULESTORE.key"]["value"] == "****"
    assert rows["SESSIONSTORE.pingInterval"]["value"] == "60.0"
    assert rows["MODULESTORE.configRoot"]["value"] == "synchro-config"
    assert "passed through" in rows["SESSIONSTORE.sentinels"]["note"]
    assert "passed through" in rows["MODULESTORE.protocol"]["note"]
    assert rows["SESSIONSTORE_PACKAGE"]["value"] == "synchro-api"
    for secret in ("redis-Pw-31337", "aws-Secret-31337", "MIIEvQIBADAN", "N9qo8uLOickgx2"):
        assert secret not in out.stdout + out.stderr
    # The table a person reads says the same.
    table = run_cli(tmp_path, ["config", "show"], env)
    assert table.returncode == 0, table.stderr
    assert "the Synchro server's; left alone" in table.stdout
    assert '"levels": {"[all]": "INFO"}' in table.stdout  # printed as given, not as markup
    assert "redis-Pw-31337" not in table.stdout and "MIIEvQIBADAN" not in table.stdout


def test_the_typed_model_of_a_synchro_config(tmp_path: Path) -> None:
    """What the sessions and modules code read: pingInterval, configRoot, the server's dict."""

    cfg = write_config(tmp_path / "config.json", SYNCHRO_CONFIG)
    s = load_settings(cfg, environ={"SYNCHRO__MODULESTORE__key": "k",
                                    "SYNCHRO__PORT": "8080",
                                    "SYNCHRO__APPS__more__container": "more"})
    assert isinstance(s.SESSIONSTORE, RedisSessionStoreConfig)
    assert s.SESSIONSTORE.pingInterval == 60
    assert isinstance(s.MODULESTORE, AmazonConfig)
    assert s.MODULESTORE.configRoot == "synchro-config"
    assert s.server["PORT"] == "8080"  # the variable wins, as in the server
    assert s.origin("PORT") == "environment variable SYNCHRO__PORT"
    notes = {r.setting: r.note for r in effective_items(s)}
    assert notes["PORT"] == "the Synchro server's; left alone"
    assert "an app's own" in notes["MY_APP_SETTING"]
    assert s.server["APPS"] == {"samples": SYNCHRO_CONFIG["APPS"]["samples"],
                                "more": {"container": "more"}}
    assert "PORT" not in type(s).model_fields  # the worker does not use it


def test_store_settings_are_public_discriminated_unions() -> None:
    """SESSIONSTORE and MODULESTORE are the typed models themselves, chosen by the service
    (and a cloud store's provider); the keys passed through to the server stay out of them."""

    s = load_settings(environ={
        "SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
        "SYNCHRO__MODULESTORE__provider": "azure",
        "SYNCHRO__MODULESTORE__storageAccount": "acct",
        "SYNCHRO__MODULESTORE__storageAccessKey": "a2V5",
        "SYNCHRO__MODULESTORE__nowatch": "true",
        "SYNCHRO__SESSIONSTORE_SERVICE": "FileSessionStore",
    })
    assert isinstance(s.MODULESTORE, AzureConfig)
    assert s.MODULESTORE.storageAccount == "acct"
    assert "nowatch" not in s.MODULESTORE.model_dump()
    rows = {r.setting: r for r in effective_items(s)}
    assert rows["MODULESTORE.nowatch"].value == "true"
    assert isinstance(s.SESSIONSTORE, FileSessionStoreConfig)
    # The same unions validate a section given to the model directly.
    direct = Settings(MODULESTORE={"provider": "google", "endpoint": "http://127.0.0.1:1"})
    assert isinstance(direct.MODULESTORE, GoogleConfig)
    assert isinstance(Settings().MODULESTORE, FileModuleStoreConfig)
    assert isinstance(Settings(SESSIONSTORE=RedisSessionStoreConfig()).SESSIONSTORE,
                      RedisSessionStoreConfig)


def test_repr_of_the_settings_masks_secrets(tmp_path: Path) -> None:
    """A log line or a --debug traceback that prints the settings shows no secret."""
    cfg = write_config(tmp_path / "synchro.json", SYNCHRO_CONFIG)
    s = load_settings(cfg, environ={"SYNCHRO__SESSIONSTORE__password": "redis-Pw-31337",
                                    "SYNCHRO__MODULESTORE__key": "aws-Secret-31337",
                                    "SYNCHRO__BROKER_URL": "redis://:broker-Pw-31337@b:6379/1"})
    text = f"{s!r} {s} {s.SESSIONSTORE!r} {s.MODULESTORE!r}"
    assert "SESSIONSTORE" in text and "****" in text
    for secret in ("redis-Pw-31337", "aws-Secret-31337", "broker-Pw-31337"):
        assert secret not in text
    assert s.BROKER_URL == "redis://:broker-Pw-31337@b:6379/1"  # the value itself is intact
    url = load_settings(environ={**REDIS, "SYNCHRO__SESSIONSTORE__url": "redis://:u-Pw-1@h/0"})
    assert "u-Pw-1" not in repr(url.SESSIONSTORE)


def test_near_miss_of_a_server_name_is_kept_and_flagged(tmp_path: Path) -> None:
    """The server ignores CLIENT_VERSON silently; the worker keeps it too, and says so."""
    s = load_settings(write_config(tmp_path / "c.json", {"CLIENT_VERSON": ">=1.2"}), environ={})
    notes = {r.setting: r.note for r in effective_items(s)}
    assert "did you mean CLIENT_VERSION?" in notes["CLIENT_VERSON"]


def test_store_package_by_path_is_synchro_api() -> None:
    s = load_settings(environ={"SYNCHRO__MODULESTORE_PACKAGE": "/srv/node_modules/synchro-api"})
    assert s.MODULESTORE_PACKAGE.endswith("synchro-api")


def test_credential_chain_counts_for_amazon(monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys in the configuration, but some in the AWS chain: accepted."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret")
    s = load_settings(environ={"SYNCHRO__MODULESTORE_SERVICE": "PkgCloudModuleStore",
                               "SYNCHRO__MODULESTORE__provider": "amazon"})
    assert s.MODULESTORE.keyId is None  # type: ignore[union-attr]


# --- FileModuleStore: the server's default folder, and the worker's destination --------------


def test_default_mirror_beside_the_watched_folder_is_explained(tmp_path: Path) -> None:
    s = load_settings(environ={})
    assert s.MODULESTORE.directory == "synchro-mirror"  # type: ignore[union-attr]
    rows = {r.setting: r for r in effective_items(s)}
    assert rows["MODULESTORE.directory"].source == "default"
    assert "the worker mirrors into 'synchro-mirror'" in rows["MODULESTORE.directory"].note


def test_elsewhere_the_default_is_the_servers_synchro_apps(tmp_path: Path) -> None:
    """APP_ROOT_PATH elsewhere: the worker mirrors into the server's own default store."""
    (tmp_path / "src").mkdir()
    s = load_settings(environ={"SYNCHRO__APP_ROOT_PATH": str(tmp_path / "src")})
    assert s.MODULESTORE.directory == "synchro-apps"  # type: ignore[union-attr]
    assert s.origin("MODULESTORE", "directory") == "default"


def test_show_names_no_sibling_as_source_of_a_default() -> None:
    s = load_settings(environ={"SYNCHRO__SESSIONSTORE_SERVICE": "RedisSessionStore",
                               "SYNCHRO__SESSIONSTORE__host": "cache"})
    rows = {r.setting: r for r in effective_items(s)}
    assert rows["SESSIONSTORE.host"].source == "environment variable SYNCHRO__SESSIONSTORE__host"
    assert rows["SESSIONSTORE.port"].source == "default"
    assert rows["SESSIONSTORE.keyPrefix"].source == "default"


def test_keys_of_another_store_are_accepted_and_marked(tmp_path: Path) -> None:
    """The server ignores SESSIONSTORE.host under FileSessionStore; so does the worker, visibly."""
    cfg = write_config(tmp_path / "c.json", {"SESSIONSTORE_SERVICE": "FileSessionStore",
                                             "SESSIONSTORE": {"host": "x", "password": "pw"}})
    rows = {r.setting: r for r in effective_items(load_settings(cfg, environ={}))}
    assert rows["SESSIONSTORE.host"].note == "not used by FileSessionStore"
    assert rows["SESSIONSTORE.password"].value == "****"


def test_config_file_size_is_capped_quickly(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("w") as f:
        f.write('{"APPS": "' + "x" * (50 << 20) + '"}')
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="at most 1,048,576 bytes"):
        load_settings(big, environ={})
    assert time.monotonic() - t0 < 1.0


def test_missing_sdk_hint_works_from_a_checkout(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['azure'] = None\n"
        "from worker.stores.registry import module_backend_class\n"
        "try:\n    module_backend_class('azure')\n"
        "except Exception as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert "pip install 'synchro-sync[azure]'" in out.stdout
    assert "pip install -e '.[azure]'" in out.stdout
