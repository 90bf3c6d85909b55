"""One line for every bad input: a pydantic failure becomes a :class:`ConfigError` that names
the setting, its source (``not set; SECTION from ...`` for a value that is missing) and what is
allowed; a cross-field :class:`SettingProblem` names every field with its own source.  Inputs
are repeated only masked and short (:func:`~worker.config.show.shown`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ValidationError

from worker.config.fields import SettingProblem
from worker.config.settings import BackupSettings, SyncSettings
from worker.config.show import is_secret, shown
from worker.errors import ConfigError

Path_ = tuple[str, ...]

#: The worker's own sections below the top level: strict, with "did you mean".
SECTIONS: dict[str, type[BaseModel]] = {"SYNC": SyncSettings, "BACKUP": BackupSettings}


def to_config_error(
    exc: ValidationError, prefix: Path_, origins: Mapping[Path_, str], needs: str | None = None
) -> ConfigError:
    """The first problem of ``exc`` (all missing settings at once) as one line; ``prefix`` is
    where the validated model sits, ``needs`` what its provider needs."""
    errors = exc.errors(include_url=False)
    missing = [prefix + tuple(str(p) for p in e["loc"]) for e in errors if e["type"] == "missing"]
    if missing:
        names = ", ".join(".".join(p) for p in missing)
        problem = ("required setting is missing" if len(missing) == 1
                   else f"required settings are missing: {names}")
        if needs:
            problem += f" ({needs})"
        return ConfigError(".".join(missing[0]), section_origin(origins, missing[0]), problem)
    err = errors[0]
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, SettingProblem):
        return _problem_error(cause, prefix, origins)
    loc = tuple(str(p) for p in err["loc"])
    path = prefix + loc
    origin = section_origin(origins, path)
    if err["type"] == "extra_forbidden":
        parent = SECTIONS.get(path[0]) if len(path) == 2 else None
        valid = list(parent.model_fields) if parent else []
        return ConfigError(label(path), origin,
                           f"unknown setting {loc[-1]!r}{closest(loc[-1], valid)}")
    msg = err["msg"].removeprefix("Value error, ")
    if loc and "input" in err and not is_secret(path) and not isinstance(err["input"], bool):
        msg = f"{msg} (got {shown(err['input'])})"
    return ConfigError(label(path) or "settings", origin, msg)


def _problem_error(
    cause: SettingProblem, prefix: Path_, origins: Mapping[Path_, str]
) -> ConfigError:
    first, *others = cause.fields
    path = prefix + (first,)
    named = {f: f"{'.'.join(prefix + (f,))} ({section_origin(origins, prefix + (f,))})"
             for f in others}
    return ConfigError(label(path), section_origin(origins, path),
                       cause.problem.format(**named))


def section_origin(origins: Mapping[Path_, str], path: Path_) -> str:
    """The source of ``path`` (its own, or that of the object holding it); for a value that is
    not set, ``not set`` and where its section came from (never a sibling's source as if it
    were this value's)."""
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    for n in range(len(path) - 1, 0, -1):
        found = joined(o for k, o in origins.items() if k[:n] == path[:n])
        if found:
            return f"not set; {'.'.join(path[:n])} from {found}"
    return "default"


def match_key(key: str, choices: list[str], path: Path_, origin: str) -> str:
    """``key`` spelt as in ``choices`` (case-insensitively), else an error with the closest."""
    if key in choices:
        return key
    lowered = {c.lower(): c for c in choices}
    if key.lower() in lowered:
        return lowered[key.lower()]
    raise ConfigError(label(path), origin, f"unknown setting {key!r}{closest(key, choices)} "
                      f"(valid: {', '.join(choices)})")


def closest(name: str, choices: list[str]) -> str:
    """``; did you mean 'X'?`` for the choice closest to ``name``, or nothing."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return f"; did you mean {lowered[match[0]]!r}?" if match else ""


def joined(origins: Iterable[str]) -> str:
    return " + ".join(dict.fromkeys(origins))


def label(path: Path_) -> str:
    """A setting's dotted name for an error line, with control characters escaped (a key in a
    file is not allowed to move the terminal's cursor)."""
    return printable(".".join(path))


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
