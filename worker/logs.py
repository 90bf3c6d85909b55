"""How log lines look: for people (``LOG_FORMAT=text``, the default) or for machines
(``LOG_FORMAT=json``: one JSON object a line).

A line about one container or path carries them as fields: passed as ``extra={"container": ...,
"path": ...}``, or as the first arguments of a message that starts ``"container=%s path=%s "``
(or ``"container=%s "``), the form the text lines use.  In JSON they become the ``container``
and ``path`` keys and leave the message; the text form prints the message as written.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_BOTH = "container=%s path=%s "
_ONE = "container=%s "


def _fields(record: logging.LogRecord) -> tuple[Any, Any, str]:
    """(container, path, message without them) of a record."""
    container = getattr(record, "container", None)
    path = getattr(record, "path", None)
    msg, args = record.msg, record.args
    if isinstance(msg, str) and isinstance(args, tuple):
        for prefix, n in ((_BOTH, 2), (_ONE, 1)):
            if msg.startswith(prefix) and len(args) >= n:
                container = args[0] if container is None else container
                if n == 2 and path is None:
                    path = args[1]
                rest = msg[len(prefix):]
                return container, path, rest % args[n:] if args[n:] else rest
    return container, path, record.getMessage()


class JsonFormatter(logging.Formatter):
    """One object a line: time (UTC), level, logger, message, container and path where known."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)

    def format(self, record: logging.LogRecord) -> str:
        container, path, message = _fields(record)
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        if container is not None:
            out["container"] = str(container)
        if path is not None:
            out["path"] = str(path)
        out["message"] = message
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``LOG_FORMAT`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def apply_format(log_format: str) -> None:
    """Use ``log_format`` on every handler of the root logger and of ``synchro_sync``."""
    fmt = formatter(log_format)
    for name in ("", "synchro_sync"):
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(fmt)
