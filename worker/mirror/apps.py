"""Which app folders a Synchro server will serve.

The server lists as apps the containers whose ``package.json`` has an ``engines.synchro`` entry
(synchro-api's module stores, ``isSynchroApp``), read as UTF-8 with a byte-order mark removed.
Every folder is mirrored by default (a mirror copies what is there); :func:`not_served` says
why the server would pass a folder over, so that the summary and ``status`` can name it, and
``SYNC.appsOnly`` can leave such folders out.
"""

from __future__ import annotations

import json
from pathlib import Path

from worker.errors import UnsafePath
from worker.mirror import safeopen

PACKAGE_JSON = "package.json"
#: A package.json larger than this is not read (the server would read it; we need one key).
_MAX_PACKAGE_JSON = 1024 * 1024


def not_served(root: Path, container: str) -> str:
    """Why a Synchro server will not serve ``root/container`` as an app ("" if it will)."""
    try:
        with safeopen.open_file(root, f"{container}/{PACKAGE_JSON}") as f:
            raw = f.read(_MAX_PACKAGE_JSON + 1)
    except (FileNotFoundError, NotADirectoryError):
        return "no package.json"
    except UnsafePath as exc:
        return f"package.json cannot be read: {exc}"
    except OSError as exc:
        return f"package.json cannot be read: {exc.strerror or exc}"
    if len(raw) > _MAX_PACKAGE_JSON:
        return "package.json is larger than 1 MiB"
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
        definition = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return "package.json is not valid JSON"
    engines = definition.get("engines") if isinstance(definition, dict) else None
    if not isinstance(engines, dict):
        return 'package.json has no "engines" object'
    if not engines.get("synchro"):
        return 'package.json has no "engines.synchro"'
    return ""
