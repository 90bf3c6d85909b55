"""Settings: the original Synchro server's names, layered file < environment < command line.

Each setting is taken from the first of: command-line options; ``SYNCHRO__`` environment
variables (``__`` between nested names, e.g. ``SYNCHRO__SESSIONSTORE__password``); the
configuration file (``-c/--config``, else ``$SYNCHRO_CONFIG``, else ``./config.json``); the
built-in defaults.  Keys are matched case-insensitively and stored under their canonical
spelling, so ``SYNCHRO__MODULESTORE__STORAGEACCOUNT`` and ``storageAccount`` are the same key.

Every source remembers where each value came from, so that a bad value is reported as one line
naming the setting, its source and what is allowed (:class:`~worker.errors.ConfigError`), and
``config show`` can print the origin of every effective value.  Settings are loaded by the CLI
or once per worker process, never at import time.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.errors import ConfigError

ENV_PREFIX = "SYNCHRO__"
CONFIG_ENV = "SYNCHRO_CONFIG"
DEFAULT_CONFIG_FILE = "config.json"

Path_ = tuple[str, ...]


class _Strict(BaseModel):
    """Unknown keys are errors (with the closest valid name), never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Port = Annotated[int, Field(ge=1, le=65535)]


# --- session stores -------------------------------------------------------------------------


class MemorySessionStoreConfig(_Strict):
    """``MemorySessionStore`` takes no configuration."""


class FileSessionStoreConfig(_Strict):
    sessionStateFile: str = "sessions.json"


class RedisSessionStoreConfig(_Strict):
    host: str = "localhost"
    port: Port = 6379
    password: SecretStr | None = None
    url: str | None = None
    db: Annotated[int, Field(ge=0)] = 0
    tls: bool = False
    #: None, as the Synchro server: a session is the key ``<id>`` itself.
    keyPrefix: str = ""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


SESSION_STORE_CONFIGS: dict[str, type[_Strict]] = {
    "MemorySessionStore": MemorySessionStoreConfig,
    "FileSessionStore": FileSessionStoreConfig,
    "RedisSessionStore": RedisSessionStoreConfig,
}


# --- module stores --------------------------------------------------------------------------


class FileModuleStoreConfig(_Strict):
    directory: str = "synchro-apps"


class _CloudConfig(_Strict):
    provider: str
    #: Put every container as a key prefix inside this one bucket instead of a bucket each.
    bucket: str | None = None


class AmazonConfig(_CloudConfig):
    provider: Literal["amazon"] = "amazon"
    keyId: str | None = None
    key: SecretStr | None = None
    region: str = "us-east-1"
    endpoint: str | None = None


class GoogleConfig(_CloudConfig):
    provider: Literal["google"] = "google"
    projectId: str | None = None
    keyFilename: str | None = None
    endpoint: str | None = None


class AzureConfig(_CloudConfig):
    provider: Literal["azure"] = "azure"
    storageAccount: str | None = None
    storageAccessKey: SecretStr | None = None
    connectionString: SecretStr | None = None
    endpoint: str | None = None

    def model_post_init(self, _context: Any) -> None:
        if self.connectionString is None and not (self.storageAccount and self.storageAccessKey):
            raise ValueError(
                "needs storageAccount and storageAccessKey, or connectionString"
            )


class OpenStackConfig(_CloudConfig):
    provider: Literal["openstack"] = "openstack"
    keystoneAuthVersion: Literal["v3"] = "v3"
    authUrl: str
    region: str | None = None
    tenantId: str | None = None
    username: str
    password: SecretStr
    domainId: str | None = None
    domainName: str | None = None


class RackspaceConfig(_CloudConfig):
    provider: Literal["rackspace"] = "rackspace"
    username: str
    apiKey: SecretStr
    region: str = "DFW"
    authUrl: str = "https://identity.api.rackspacecloud.com/v2.0/"


PROVIDER_CONFIGS: dict[str, type[_CloudConfig]] = {
    "amazon": AmazonConfig,
    "google": GoogleConfig,
    "azure": AzureConfig,
    "openstack": OpenStackConfig,
    "rackspace": RackspaceConfig,
}

MODULE_STORE_SERVICES = ("FileModuleStore", "PkgCloudModuleStore")

ModuleStoreConfig = FileModuleStoreConfig | _CloudConfig
SessionStoreConfig = MemorySessionStoreConfig | FileSessionStoreConfig | RedisSessionStoreConfig


# --- this worker's own settings -------------------------------------------------------------


class SyncSettings(_Strict):
    """How module files are mirrored (``SYNC`` in config.json)."""

    #: Quiet period after the last event on a path before it is synced, in seconds.
    debounce: Annotated[float, Field(ge=0)] = 0.1
    #: A path that keeps changing is synced at least this often, in seconds.
    maxDelay: Annotated[float, Field(gt=0)] = 1.0
    #: Seconds between scheduled full passes (the watcher is a hint; the pass is the truth).
    fullPassInterval: Annotated[float, Field(gt=0)] = 600.0
    #: Extra ignore patterns, gitignore syntax, on top of the defaults and ``.syncignore``.
    ignore: list[str] = []
    #: A pass that would delete more than this share of a container needs ``--force``.
    maxDeleteShare: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: Use watchdog's polling observer (bind mounts, network filesystems).
    polling: bool = False
    #: Parallel transfers in a full pass.
    transfers: Annotated[int, Field(ge=1, le=256)] = 16


class BackupSettings(_Strict):
    """Scheduled session snapshots (``BACKUP`` in config.json)."""

    #: A folder, or ``modulestore:CONTAINER``.
    dest: str = "synchro-snapshots"
    #: Seconds between scheduled snapshots; 0 turns scheduled backups off.
    interval: Annotated[float, Field(ge=0)] = 3600.0
    #: How many verified snapshots to keep.
    keep: Annotated[int, Field(ge=1)] = 24


class Settings(BaseSettings):
    """The effective configuration.  Field names are the original server's."""

    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True)

    SESSIONSTORE_SERVICE: str = "MemorySessionStore"
    SESSIONSTORE: dict[str, Any] = {}
    MODULESTORE_SERVICE: str = "FileModuleStore"
    MODULESTORE: dict[str, Any] = {"directory": "synchro-mirror"}
    #: The local module directory the worker mirrors (one sub-folder per app container).
    APP_ROOT_PATH: str = "synchro-apps"
    #: A Redis or RabbitMQ URL; unset means the embedded, in-process default.
    BROKER_URL: str | None = None
    #: Where the worker keeps its index, embedded queue and status.
    STATE_DIR: str = ".synchro-sync"
    #: Queue for work that needs this host's files; default ``files.<hostname>``.
    HOST_QUEUE: str | None = None
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    SYNC: SyncSettings = SyncSettings()
    BACKUP: BackupSettings = BackupSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Layering (with provenance) is done by load_settings(); the model only validates.
        return (init_settings,)

    # Filled by load_settings(): the validated store configurations.
    _session_store: SessionStoreConfig | None = None
    _module_store: ModuleStoreConfig | None = None
    _origins: dict[Path_, str] = {}

    @property
    def session_store(self) -> SessionStoreConfig:
        assert self._session_store is not None
        return self._session_store

    @property
    def module_store(self) -> ModuleStoreConfig:
        assert self._module_store is not None
        return self._module_store

    def origin(self, *path: str) -> str:
        """Where the value at ``path`` came from (the nearest parent that has an origin)."""
        return _origin_of(self._origins, path)

    def host_queue(self) -> str:
        import socket

        return self.HOST_QUEUE or f"files.{socket.gethostname()}"


# --- sources --------------------------------------------------------------------------------


@dataclass
class Layer:
    """One source of settings: nested values plus, per leaf path, a description of its origin."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[Path_, str] = field(default_factory=dict)

    def set(self, path: Path_, value: Any, origin: str) -> None:
        node = self.values
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
        self.origins[path] = origin


class JsonFileSource(PydanticBaseSettingsSource):
    """The configuration file: ``-c/--config``, else ``$SYNCHRO_CONFIG``, else ./config.json."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def layer(self) -> Layer:
        if self.path is None:
            return Layer("no config file")
        label = f"config file {self.path}"
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("config file", str(self.path), "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("config file", str(self.path), f"cannot read: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "config file", str(self.path), f"invalid JSON at line {exc.lineno}: {exc.msg}"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError("config file", str(self.path), "must hold a JSON object")
        layer = Layer(label)
        for path, value in _leaves(data):
            layer.set(path, value, label)
        return layer

    def __call__(self) -> dict[str, Any]:
        return self.layer().values


class SynchroEnvSource(PydanticBaseSettingsSource):
    """``SYNCHRO__`` variables; ``__`` separates nested names; values are typed by the schema."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def layer(self) -> Layer:
        layer = Layer("environment")
        for name, raw in sorted(self.environ.items()):
            if not name.upper().startswith(ENV_PREFIX):
                continue
            parts = tuple(name[len(ENV_PREFIX) :].split("__"))
            if not all(parts):
                raise ConfigError(name, "environment", "empty name between '__' separators")
            value: Any = raw
            stripped = raw.strip()
            if stripped[:1] in ("{", "["):
                try:
                    value = json.loads(stripped)
                except json.JSONDecodeError as exc:
                    raise ConfigError(name, "environment", f"invalid JSON: {exc.msg}") from None
            if isinstance(value, dict):
                for sub, leaf in _leaves(value):
                    layer.set(parts + sub, leaf, f"environment variable {name}")
            else:
                layer.set(parts, value, f"environment variable {name}")
        return layer

    def __call__(self) -> dict[str, Any]:
        return self.layer().values


class CliSource(PydanticBaseSettingsSource):
    """Command-line overrides, as dotted setting paths (``SYNC.debounce``) mapped to values."""

    def __init__(self, settings_cls: type[BaseSettings], overrides: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.overrides = overrides

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def layer(self) -> Layer:
        layer = Layer("command line")
        for dotted, value in self.overrides.items():
            if value is not None:
                layer.set(tuple(dotted.split(".")), value, "command line")
        return layer

    def __call__(self) -> dict[str, Any]:
        return self.layer().values


# --- loading --------------------------------------------------------------------------------


def find_config_file(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """``-c/--config``, else ``$SYNCHRO_CONFIG``, else ``./config.json`` if there is one."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, layer and validate the settings; raise :class:`ConfigError` on any bad input."""
    env = os.environ if environ is None else environ
    path = find_config_file(config_file, env)
    layers = [
        JsonFileSource(Settings, path).layer(),
        SynchroEnvSource(Settings, env).layer(),
        CliSource(Settings, overrides or {}).layer(),
    ]
    canonical = [_canonical_top(layer) for layer in layers]
    session_service = _pick_service(
        canonical, "SESSIONSTORE_SERVICE", list(SESSION_STORE_CONFIGS), "MemorySessionStore"
    )
    module_service = _pick_service(
        canonical, "MODULESTORE_SERVICE", list(MODULE_STORE_SERVICES), "FileModuleStore"
    )

    merged: dict[str, Any] = {}
    origins: dict[Path_, str] = {}
    for layer in canonical:
        _deep_merge(merged, layer.values)
        origins.update(layer.origins)
    # A store section from the defaults only applies to the default service.
    if module_service != "FileModuleStore" and "MODULESTORE" not in merged:
        merged["MODULESTORE"] = {}

    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise _to_config_error(exc, (), origins, merged) from None

    settings._origins = origins
    settings._session_store = _validate_store(
        SESSION_STORE_CONFIGS[session_service],
        merged.get("SESSIONSTORE", {}),
        ("SESSIONSTORE",),
        origins,
    )
    store_cfg = merged.get("MODULESTORE", {} if "MODULESTORE" in merged else None)
    if store_cfg is None:
        store_cfg = {"directory": "synchro-mirror"}
    if module_service == "FileModuleStore":
        settings._module_store = _validate_store(
            FileModuleStoreConfig, store_cfg, ("MODULESTORE",), origins
        )
        _check_not_source(settings)
    else:
        provider = _pick_provider(store_cfg, origins)
        settings._module_store = _validate_store(
            PROVIDER_CONFIGS[provider], store_cfg, ("MODULESTORE",), origins
        )
    return settings


def _check_not_source(settings: Settings) -> None:
    store = settings.module_store
    assert isinstance(store, FileModuleStoreConfig)
    dest = Path(store.directory).resolve()
    src = Path(settings.APP_ROOT_PATH).resolve()
    if dest == src or dest.is_relative_to(src) or src.is_relative_to(dest):
        raise ConfigError(
            "MODULESTORE.directory",
            settings.origin("MODULESTORE", "directory"),
            f"{store.directory!r} overlaps APP_ROOT_PATH {settings.APP_ROOT_PATH!r}; "
            "the mirror must be a different folder than the modules it mirrors",
        )


# --- helpers --------------------------------------------------------------------------------


def _leaves(data: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _closest(name: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not match:
        lowered = {c.lower(): c for c in choices}
        match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
        match = [lowered[m] for m in match]
    return f"; did you mean {match[0]!r}?" if match else ""


def _origin_of(origins: Mapping[Path_, str], path: Path_) -> str:
    """The source of ``path``: its own, else that of a value beside or below it in its section."""
    for n in range(len(path), 0, -1):
        prefix = path[:n]
        if prefix in origins:
            return origins[prefix]
        for key, origin in origins.items():
            if key[:n] == prefix:
                return origin
    return "default"


def _model_fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _canonical_top(layer: Layer) -> Layer:
    """Map top-level and worker-section keys to their canonical names; store sections later."""
    out = Layer(layer.name)
    top = _model_fields(Settings)
    sections: dict[str, type[BaseModel]] = {"SYNC": SyncSettings, "BACKUP": BackupSettings}
    for path, origin in layer.origins.items():
        value = _get(layer.values, path)
        key = _match(path[0], top, path, origin)
        rest = path[1:]
        if key in sections and rest:
            rest = (_match(rest[0], _model_fields(sections[key]), path, origin),) + rest[1:]
        out.set((key,) + rest, value, origin)
    return out


def _match(key: str, choices: list[str], path: Path_, origin: str) -> str:
    if key in choices:
        return key
    lowered = {c.lower(): c for c in choices}
    if key.lower() in lowered:
        return lowered[key.lower()]
    raise ConfigError(
        ".".join(path),
        origin,
        f"unknown setting {key!r}{_closest(key, choices)} (valid: {', '.join(choices)})",
    )


def _get(data: Mapping[str, Any], path: Path_) -> Any:
    node: Any = data
    for part in path:
        node = node[part]
    return node


def _pick_service(layers: list[Layer], key: str, allowed: list[str], default: str) -> str:
    for layer in reversed(layers):
        if key in layer.values:
            value = layer.values[key]
            origin = layer.origins.get((key,), layer.name)
            if not isinstance(value, str) or value not in allowed:
                hint = _closest(str(value), allowed) if isinstance(value, str) else ""
                raise ConfigError(
                    key,
                    origin,
                    f"unknown service {value!r}{hint} (allowed: {', '.join(allowed)})",
                )
            return value
    return default


def _pick_provider(cfg: Mapping[str, Any], origins: Mapping[Path_, str]) -> str:
    provider = None
    for key, value in cfg.items():
        if key.lower() == "provider":
            provider = value
    origin = _origin_of(origins, ("MODULESTORE", "provider"))
    if origin == "default":
        origin = _origin_of(origins, ("MODULESTORE_SERVICE",))
    allowed = list(PROVIDER_CONFIGS)
    if provider is None:
        raise ConfigError(
            "MODULESTORE.provider",
            origin,
            f"PkgCloudModuleStore needs a provider (allowed: {', '.join(allowed)})",
        )
    if provider == "hp":
        raise ConfigError(
            "MODULESTORE.provider",
            origin,
            "HP's public cloud was shut down in 2016; use openstack with your cloud's Keystone",
        )
    if not isinstance(provider, str) or provider not in allowed:
        hint = _closest(str(provider), allowed)
        raise ConfigError(
            "MODULESTORE.provider",
            origin,
            f"unknown provider {provider!r}{hint} (allowed: {', '.join(allowed)})",
        )
    return provider


def _validate_store(
    model: type[BaseModel], raw: Any, prefix: Path_, origins: dict[Path_, str]
) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(
            ".".join(prefix), _origin_of(origins, prefix), "must be an object of settings"
        )
    fields = _model_fields(model)
    data: dict[str, Any] = {}
    for key, value in raw.items():
        origin = _origin_of(origins, prefix + (key,))
        canon = _match(key, fields, prefix + (key,), origin)
        if canon != key and prefix + (key,) in origins:
            origins[prefix + (canon,)] = origins[prefix + (key,)]
        data[canon] = value
    try:
        return model(**data)
    except ValidationError as exc:
        raise _to_config_error(exc, prefix, origins, data) from None
    except ValueError as exc:  # model_post_init cross-field rules
        raise ConfigError(".".join(prefix), _origin_of(origins, prefix), str(exc)) from None


def _to_config_error(
    exc: ValidationError, prefix: Path_, origins: Mapping[Path_, str], data: Mapping[str, Any]
) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(str(p) for p in err["loc"])
    path = prefix + loc
    origin = _origin_of(origins, path)
    setting = ".".join(path)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required setting is missing"
    elif err["type"] == "extra_forbidden":
        return _match_error(loc, path, origin)
    if loc and "input" in err and err["type"] != "missing" and not _is_secret(path):
        msg = f"{msg} (got {err['input']!r})"
    return ConfigError(setting, origin, msg)


def _match_error(loc: Path_, path: Path_, origin: str) -> ConfigError:
    try:
        _match(loc[-1], [], path, origin)
    except ConfigError as err:
        return err
    raise AssertionError("unreachable")  # pragma: no cover


_SECRET_KEYS = {"password", "key", "storageaccesskey", "connectionstring", "apikey"}


def _is_secret(path: Path_) -> bool:
    return bool(path) and path[-1].lower() in _SECRET_KEYS


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``redis://:secret@host:6379/0``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def effective_items(settings: Settings) -> list[tuple[str, str, str]]:
    """Every effective leaf setting as (name, shown value, source), secrets masked."""
    rows: list[tuple[str, str, str]] = []
    data = settings.model_dump(mode="python")
    data["SESSIONSTORE"] = settings.session_store.model_dump(mode="python")
    data["MODULESTORE"] = settings.module_store.model_dump(mode="python", exclude_none=False)
    for path, value in _leaves(data):
        if isinstance(value, SecretStr):
            shown = "****" if value.get_secret_value() else "(empty)"
        elif value is None:
            shown = "(unset)"
        elif isinstance(value, str) and "://" in value:
            shown = mask_url(value)
        else:
            shown = json.dumps(value) if not isinstance(value, str) else value
        rows.append((".".join(path), shown, settings.origin(*path)))
    return rows
