"""What ``config show`` prints, and what an error line may repeat: secrets never.

A secret is a value under a secret-looking name (``password``, ``key``, ``apiKey``,
``storageAccessKey``, ``connectionString``, ``SSL_KEY``, ``STUDIO_USERS``, ...) or the password
inside a URL; both are shown as ``****`` at any depth, in the worker's settings, in keys passed
through to the server's stores and in the server's own settings.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import SecretStr

from worker.config.server import SERVER_SETTINGS
from worker.config.sources import leaves

if TYPE_CHECKING:
    from worker.config.settings import Settings

Path_ = tuple[str, ...]
MASK = "****"
_SECRET_NAME = re.compile(
    r"^(key|ssl_key|studio_users)$|password|passwd|secret|token|apikey|accesskey"
    r"|connectionstring|credential|privatekey",
    re.IGNORECASE,
)
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:password|pass|pwd|key|secret|token)=)[^&;#]*")
_MAX_SHOWN = 80


def is_secret(path: Path_) -> bool:
    """Whether the value at ``path`` is a secret (judged by the names along the path)."""
    return any(_SECRET_NAME.search(part) for part in path)


def mask_url(url: str) -> str:
    """Hide the password of a URL such as ``redis://:secret@host:6379/0`` (and a password in
    its query); never fails, whatever the URL holds."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    return f"{scheme}://{netloc}{_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, tail)}"


def masked(value: Any, path: Path_ = ()) -> Any:
    """``value`` with every secret in it replaced by ``****``."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else "(empty)"
    if path and is_secret(path) and value not in (None, "", {}, []):
        return MASK
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: masked(v, path + (str(k),)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, path) for v in value]
    return value


def shown(value: Any, path: Path_ = ()) -> str:
    """A short, masked rendering of an input value for an error line."""
    text = repr(masked(value, path))
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class Row(NamedTuple):
    setting: str
    value: str
    source: str
    #: What the worker does with it: empty for its own settings.
    note: str = ""


def _text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, ensure_ascii=False)


def effective_items(settings: Settings) -> list[Row]:
    """Every effective setting as a :class:`Row`, secrets masked: the worker's own (each leaf),
    the keys of the stores passed through, and the server's settings (one row each)."""
    rows: list[Row] = []
    data = settings.model_dump(mode="python", exclude={"SESSIONSTORE", "MODULESTORE"})
    # The stores' keys after the others, as config show has always listed them.
    data["SESSIONSTORE"] = settings.SESSIONSTORE.model_dump(mode="python")
    data["MODULESTORE"] = settings.MODULESTORE.model_dump(mode="python")
    for path, value in leaves(data):
        rows.append(Row(".".join(path), _text(masked(value, path)), settings.origin(*path),
                        settings._notes.get(path, "")))
    for path, note in settings._passed_through.items():
        value = settings.raw_store_value(*path)
        rows.append(Row(".".join(path), _text(masked(value, path)), settings.origin(*path), note))
    for key, value in settings.server.items():
        rows.append(Row(key, _text(masked(value, (key,))), settings.origin(key),
                        _server_note(key)))
    return rows


def _server_note(key: str) -> str:
    note = "the Synchro server's; left alone"
    if key in SERVER_SETTINGS:
        return note
    near = difflib.get_close_matches(key, SERVER_SETTINGS, n=1, cutoff=0.8)
    hint = f"; did you mean {near[0]}?" if near else " (an app's own, read with getConfig?)"
    return f"{note}; not a name the server is known to read{hint}"
