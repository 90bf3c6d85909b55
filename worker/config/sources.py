"""The sources of settings, each a :class:`Layer` of values that remembers every value's origin.

The configuration file (``-c/--config``, else ``$SYNCHRO_CONFIG``, else ``./config.json``),
``SYNCHRO__`` variables (``__`` between nested names) and command-line overrides.  Input is
bounded: a file over :data:`MAX_FILE_BYTES` or JSON nested deeper than :data:`MAX_DEPTH` is
refused with one line, never read into memory whole or recursed into.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

ENV_PREFIX = "SYNCHRO__"
CONFIG_ENV = "SYNCHRO_CONFIG"
DEFAULT_CONFIG_FILE = "config.json"
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32

Path_ = tuple[str, ...]


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


def leaves(data: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every (path, value) below ``data``; an empty object is a leaf of its own."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, prefix + (str(key),))
        else:
            yield prefix + (str(key),), value


def value_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """What makes a parsed value unusable, without recursion: objects or lists nested more than
    ``limit`` levels, or text that is not valid Unicode (a lone surrogate such as ``\\ud800``)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return f"nested more than {limit} levels deep"
        if isinstance(node, dict):
            stack.extend((k, depth + 1) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str) and not _is_unicode(node):
            return "holds text that is not valid Unicode (a lone surrogate escape like \\ud800)"
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json(text: str, setting: str, source: str) -> Any:
    """JSON text -> value, or one ConfigError (bad JSON, nested too deep)."""
    if text.startswith("\ufeff"):
        raise ConfigError(setting, source, "starts with a UTF-8 byte-order mark (BOM); "
                          "save it as UTF-8 without one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            setting, source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(setting, source, f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # Python's bound on the digits of an integer
        raise ConfigError(setting, source, "holds a number of more than 4,300 digits") from None
    problem = value_problem(value)
    if problem:
        raise ConfigError(setting, source, problem)
    return value


def file_layer(path: Path | None, chosen_by: str = "") -> Layer:
    """The configuration file as a layer (no file: an empty one); ``chosen_by`` says where its
    path came from (``-c/--config``, ``$SYNCHRO_CONFIG``), for the error lines."""
    if path is None:
        return Layer("no config file")
    where = f"{path}, from {chosen_by}" if chosen_by else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError("config file", where, "file not found") from None
    except IsADirectoryError:
        raise ConfigError("config file", where, "is a folder, not a file") from None
    except PermissionError:
        raise ConfigError("config file", where, "cannot read it: permission denied") from None
    except OSError as exc:
        raise ConfigError("config file", where, f"cannot read it: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("config file", where, "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("config file", where, "is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError("config file", where, _too_big(info.st_size))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("config file", where, f"cannot read it: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError("config file", where, _too_big(len(data)))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("config file", where,
                          f"is not UTF-8 text (byte {exc.start})") from None
    value = parse_json(text, "config file", where)
    if not isinstance(value, dict):
        raise ConfigError("config file", where, "must hold a JSON object")
    label = f"config file {path}"
    layer = Layer(label)
    for leaf, v in leaves(value):
        layer.set(leaf, v, label)
    return layer


def _too_big(size: int) -> str:
    return (f"is {size:,} bytes; a configuration file may hold at most {MAX_FILE_BYTES:,} "
            "bytes (1 MiB)")


def env_layer(environ: Mapping[str, str]) -> Layer:
    """``SYNCHRO__`` variables; a value starting with ``{`` or ``[`` is JSON, ``null`` is no
    value (unsets what the file says, as for the server)."""
    layer = Layer("environment")
    for name, raw in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
        origin = f"environment variable {shown}"
        if not (_is_unicode(name) and _is_unicode(raw)):
            raise ConfigError(shown, "environment", "is not valid UTF-8")
        parts = tuple(name[len(ENV_PREFIX):].split("__"))
        if not all(parts):
            raise ConfigError(shown, "environment", "empty name between '__' separators")
        value: Any = None if raw == "null" else raw  # as the server reads its variables
        stripped = raw.strip()
        if stripped[:1] in ("{", "["):
            value = parse_json(stripped, ".".join(parts), origin)
        if isinstance(value, dict) and value:
            for sub, leaf in leaves(value):
                layer.set(parts + sub, leaf, origin)
        else:
            layer.set(parts, value, origin)
    return layer


def cli_layer(overrides: Mapping[str, Any]) -> Layer:
    """Command-line overrides, as dotted setting paths (``SYNC.debounce``) mapped to values."""
    layer = Layer("command line")
    for dotted, value in overrides.items():
        if value is not None:
            layer.set(tuple(dotted.split(".")), value, "command line")
    return layer


def find_config_file(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """``-c/--config``, else ``$SYNCHRO_CONFIG``, else ``./config.json`` if there is one."""
    return choose_config_file(explicit, environ)[0]


def choose_config_file(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> tuple[Path | None, str]:
    """The configuration file and what chose it (``-c/--config``, ``$SYNCHRO_CONFIG``, or
    ``""`` for ./config.json found in the working directory)."""
    if explicit:
        return Path(explicit), "-c/--config"
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), f"${CONFIG_ENV}"
    default = Path(DEFAULT_CONFIG_FILE)
    return (default if default.exists() else None), ""
