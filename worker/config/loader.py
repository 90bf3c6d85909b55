"""Load, layer and validate the settings; every bad input becomes one :class:`ConfigError`.

Top-level names are sorted into three kinds: the worker's own (matched case-insensitively and
strict: a near miss is "did you mean"), the Synchro server's (the known ones, and any other
UPPER_CASE name not close to one of the worker's: kept untouched for ``config show``), and
anything else, which is an error.  Inside ``SESSIONSTORE``/``MODULESTORE`` the keys of the
configured store are typed; other keys are passed through (the server hands the object on to
pkgcloud or the Redis client) unless they are a near miss of a known key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from worker.config.credentials import missing_credentials
from worker.config.messages import (
    SECTIONS,
    closest,
    joined,
    label,
    match_key,
    section_origin,
    to_config_error,
)
from worker.config.server import SERVER_SETTINGS
from worker.config.settings import Settings
from worker.config.shared_redis import refuse_shared_redis
from worker.config.show import shown
from worker.config.sources import (
    Layer,
    choose_config_file,
    cli_layer,
    env_layer,
    file_layer,
)
from worker.config.stores import (
    MODULE_STORE_SERVER_KEYS,
    MODULE_STORE_SERVICES,
    PROVIDER_CONFIGS,
    PROVIDER_NEEDS,
    SESSION_STORE_CONFIGS,
    SESSION_STORE_SERVER_KEYS,
    FileModuleStoreConfig,
)
from worker.errors import ConfigError

Path_ = tuple[str, ...]

#: With no MODULESTORE.directory given and APP_ROOT_PATH at the server's default folder, the
#: worker mirrors here (a FileModuleStore on the folder it watches would copy onto itself).
MIRROR_FALLBACK = "synchro-mirror"

_STORE_SECTIONS = ("SESSIONSTORE", "MODULESTORE")
#: What the store sections must be before their service's model reads them.
_RAW_SECTIONS: TypeAdapter[dict[str, dict[str, Any]]] = TypeAdapter(dict[str, dict[str, Any]])
_UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NEAR = 0.75


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, layer and validate the settings; raise :class:`ConfigError` on any bad input."""
    env = os.environ if environ is None else environ
    path, chosen_by = choose_config_file(config_file, env)
    server = Layer("server")
    layers = [
        _canonical_top(layer, server)
        for layer in (file_layer(path, chosen_by), env_layer(env), cli_layer(overrides or {}))
    ]
    session_service = _pick_service(layers, "SESSIONSTORE_SERVICE", list(SESSION_STORE_CONFIGS))
    module_service = _pick_service(layers, "MODULESTORE_SERVICE", list(MODULE_STORE_SERVICES))

    merged: dict[str, Any] = {}
    origins: dict[Path_, str] = {}
    for layer in layers:
        _deep_merge(merged, layer.values)
        origins.update(layer.origins)
    # The store sections are validated below, by the model of the service they are for.
    sections = {name: merged.pop(name) for name in _STORE_SECTIONS if name in merged}
    try:
        _RAW_SECTIONS.validate_python(sections)
        settings = Settings(**merged)
    except ValidationError as exc:
        raise to_config_error(exc, (), origins) from None
    settings._raw_stores = sections
    settings._origins = origins
    settings._server = server.values
    for key in server.values:
        settings._origins[(key,)] = joined(o for p, o in server.origins.items() if p[0] == key)
    _check_folders(settings)

    passed: dict[Path_, str] = {}
    session_cfg = sections.get("SESSIONSTORE", {})
    settings.SESSIONSTORE = _validate_store(
        SESSION_STORE_CONFIGS[session_service], session_service, session_cfg, ("SESSIONSTORE",),
        _family_keys(SESSION_STORE_CONFIGS.values(), SESSION_STORE_SERVER_KEYS), origins, passed,
        SESSION_STORE_SERVER_KEYS,
    )
    module_cfg = sections.get("MODULESTORE", {})
    module_keys = _family_keys(
        [FileModuleStoreConfig, *PROVIDER_CONFIGS.values()], MODULE_STORE_SERVER_KEYS
    )
    if module_service == "FileModuleStore":
        settings.MODULESTORE = _validate_store(
            FileModuleStoreConfig, module_service, module_cfg, ("MODULESTORE",), module_keys,
            origins, passed, MODULE_STORE_SERVER_KEYS,
        )
        _choose_mirror(settings)
    else:
        provider = _pick_provider(module_cfg, origins)
        settings.MODULESTORE = _validate_store(
            PROVIDER_CONFIGS[provider], f"provider {provider}", module_cfg, ("MODULESTORE",),
            module_keys, origins, passed, MODULE_STORE_SERVER_KEYS,
        )
        _check_credentials(provider, settings)
    settings._passed_through = passed
    refuse_shared_redis(settings)  # the worker's keys never go into the sessions' database
    return settings


# --- top level -------------------------------------------------------------------------------


def _canonical_top(layer: Layer, server: Layer) -> Layer:
    """Worker keys to their canonical names; the server's keys moved into ``server``."""
    out = Layer(layer.name)
    top = list(Settings.model_fields)
    for path, origin in layer.origins.items():
        value = _get(layer.values, path)
        key = _classify(path[0], top, path, origin)
        if key is None:
            server.set(path, value, origin)
            continue
        rest = path[1:]
        if key in SECTIONS and rest:
            fields = list(SECTIONS[key].model_fields)
            rest = (match_key(rest[0], fields, path, origin),) + rest[1:]
        out.set((key,) + rest, value, origin)
    return out


def _classify(key: str, top: list[str], path: Path_, origin: str) -> str | None:
    """The worker's canonical name for ``key``, or None for a setting of the server's."""
    if key in SERVER_SETTINGS:
        return None
    lowered = {c.lower(): c for c in top}
    if key.lower() in lowered:
        return lowered[key.lower()]
    hint = _near_worker_name(key, top)
    if hint:
        raise ConfigError(label(path), origin, f"unknown setting {key!r}; did you mean "
                          f"{hint!r}? (the worker's settings: {', '.join(top)})")
    if _UPPER.match(key):
        return None
    raise ConfigError(
        label(path), origin,
        f"unknown setting {key!r}{closest(key, [*top, *SERVER_SETTINGS])} (the worker's "
        f"settings: {', '.join(top)}; the Synchro server's are UPPER_CASE, e.g. PORT, APPS)",
    )


def _near_worker_name(key: str, top: list[str]) -> str | None:
    """A near miss of a worker setting: spelt with other separators, close, or a nested
    setting written flat (``SYNC_DEBOUNCE`` for ``SYNC.debounce``)."""
    norm = _norm(key)
    for name in top:
        if _norm(name) == norm:
            return name
    sections: dict[str, list[str]] = {s: list(m.model_fields) for s, m in SECTIONS.items()}
    sections["SESSIONSTORE"] = _family_keys(SESSION_STORE_CONFIGS.values(), ())
    sections["MODULESTORE"] = _family_keys(PROVIDER_CONFIGS.values(), ("directory",))
    for section, fields in sections.items():
        head, sep, tail = key.partition("_")
        if sep and _norm(head) == _norm(section) and tail:
            for f in fields:
                if _norm(f) == _norm(tail):
                    return f"{section}.{f}"
    match = difflib.get_close_matches(key.upper(), [n.upper() for n in top], n=1, cutoff=_NEAR)
    return next((n for n in top if match and n.upper() == match[0]), None)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick_service(layers: list[Layer], key: str, allowed: list[str]) -> str:
    for layer in reversed(layers):
        if key in layer.values:
            value = layer.values[key]
            origin = layer.origins.get((key,), layer.name)
            if not isinstance(value, str) or value not in allowed:
                hint = closest(value, allowed) if isinstance(value, str) else ""
                raise ConfigError(key, origin, f"unknown service {shown(value)}{hint} "
                                  f"(allowed: {', '.join(allowed)})")
            return value
    return allowed[0]


# --- stores ----------------------------------------------------------------------------------


def _family_keys(models: Iterable[type[BaseModel]], extra: Iterable[str]) -> list[str]:
    keys: dict[str, None] = {}
    for model in models:
        keys.update(dict.fromkeys(model.model_fields))
    keys.update(dict.fromkeys(extra))
    return list(keys)


def _validate_store(
    model: type[BaseModel],
    service: str,
    raw: Any,
    prefix: Path_,
    family: list[str],
    origins: dict[Path_, str],
    passed: dict[Path_, str],
    server_keys: tuple[str, ...] = (),
) -> Any:
    """``raw`` checked against ``model``; keys the worker does not use go to ``passed``
    (``family``: every key of the family's stores, including ``server_keys``, the ones only
    the server's stores read)."""
    if not isinstance(raw, dict):
        raise ConfigError(".".join(prefix), section_origin(origins, prefix),
                          f"must be an object of settings (got {shown(raw)})")
    fields = list(model.model_fields)
    own = {f.lower(): f for f in fields}
    known = {f.lower(): f for f in family}
    data: dict[str, Any] = {}
    for key, value in raw.items():
        path = prefix + (key,)
        origin = section_origin(origins, path)
        if key.lower() in own:
            canon = own[key.lower()]
            if canon != key:
                origins[prefix + (canon,)] = origin
            data[canon] = value
        elif key.lower() in known:
            passed[path] = ("passed through: not used by the worker"
                            if known[key.lower()] in server_keys else f"not used by {service}")
        elif (near := difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=_NEAR)):
            raise ConfigError(label(path), origin, f"unknown setting {key!r}; did you mean "
                              f"{known[near[0]]!r}? (valid: {', '.join(fields)})")
        else:
            passed[path] = "passed through: not used by the worker"
    try:
        return model(**data)
    except ValidationError as exc:
        raise to_config_error(exc, prefix, origins, needs=_needs(service)) from None


def _needs(service: str) -> str | None:
    provider = service.removeprefix("provider ")
    return f"{provider} needs {PROVIDER_NEEDS[provider]}" if provider in PROVIDER_NEEDS else None


def _pick_provider(cfg: Any, origins: Mapping[Path_, str]) -> str:
    provider = None
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key.lower() == "provider":
                provider = value
    origin = section_origin(origins, ("MODULESTORE", "provider"))
    if origin == "default":
        service = section_origin(origins, ("MODULESTORE_SERVICE",))
        origin = f"not set; MODULESTORE_SERVICE from {service}"
    allowed = list(PROVIDER_CONFIGS)
    if provider is None:
        raise ConfigError("MODULESTORE.provider", origin,
                          f"PkgCloudModuleStore needs a provider (allowed: {', '.join(allowed)})")
    if provider == "hp":
        raise ConfigError("MODULESTORE.provider", origin, "HP's public cloud was shut down in "
                          "2016; use openstack with your cloud's Keystone")
    if not isinstance(provider, str) or provider not in allowed:
        hint = closest(provider, allowed) if isinstance(provider, str) else ""
        raise ConfigError("MODULESTORE.provider", origin, f"unknown provider {shown(provider)}"
                          f"{hint} (allowed: {', '.join(allowed)})")
    return provider


def _check_credentials(provider: str, settings: Settings) -> None:
    """No credentials at all for a cloud provider: one line now, before any request."""
    found = missing_credentials(provider, settings.MODULESTORE)
    if found:
        field, problem = found
        raise ConfigError(f"MODULESTORE.{field}",
                          section_origin(settings._origins, ("MODULESTORE", field)), problem)


# --- folders ---------------------------------------------------------------------------------


def _check_folders(settings: Settings) -> None:
    for name in ("APP_ROOT_PATH", "STATE_DIR"):
        value = getattr(settings, name)
        p = Path(value)
        if p.exists() and not p.is_dir():
            raise ConfigError(name, settings.origin(name), f"{value!r} is a file, not a folder")


def _choose_mirror(settings: Settings) -> None:
    """The FileModuleStore destination: as given, else the server's default unless that is
    the folder the worker watches (then :data:`MIRROR_FALLBACK`); never the source itself."""
    store = settings.MODULESTORE
    assert isinstance(store, FileModuleStoreConfig)
    path = ("MODULESTORE", "directory")
    if settings.origin(*path) == "default" and _overlaps(store.directory, settings.APP_ROOT_PATH):
        settings._notes[path] = (f"the server's default {store.directory!r} is APP_ROOT_PATH, "
                                 "the folder the worker watches: the worker mirrors into "
                                 f"{MIRROR_FALLBACK!r} beside it")
        store.directory = MIRROR_FALLBACK
    if _overlaps(store.directory, settings.APP_ROOT_PATH):
        raise ConfigError(
            "MODULESTORE.directory", settings.origin(*path),
            f"{store.directory!r} overlaps APP_ROOT_PATH {settings.APP_ROOT_PATH!r} "
            f"({settings.origin('APP_ROOT_PATH')}); the mirror must be a different folder than "
            "the modules it mirrors",
        )


def _overlaps(a: str, b: str) -> bool:
    x, y = Path(a).resolve(), Path(b).resolve()
    return x == y or x.is_relative_to(y) or y.is_relative_to(x)


# --- helpers ---------------------------------------------------------------------------------


def _get(data: Mapping[str, Any], path: Path_) -> Any:
    node: Any = data
    for part in path:
        node = node[part]
    return node


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
