"""What ``config show`` prints, and what an error line may repeat: secrets never.

A secret is a value under a secret-looking name (``password``, ``key``, ``apiKey``,
``storageAccessKey``, ``connectionString``, ``SSL_KEY``, ``STUDIO_USERS``, ...) or the password
inside a URL; both are shown as ``****`` at any depth, in the worker's settings, in keys passed
through to the server's stores and in the server's own settings.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from pydantic import SecretStr

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


def text_of(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, ensure_ascii=False)
