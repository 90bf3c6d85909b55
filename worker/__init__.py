"""synchro-sync: mirror Synchro app modules into a module store; snapshot the session store.

``celery -A worker worker`` and ``celery -A worker beat`` find the Celery app as
``worker.celery``.  It is made on first access, from the settings of the environment and the
configuration file, so that importing ``worker.config`` (or anything else) neither imports
Celery nor loads settings.
"""

from __future__ import annotations

from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    # Only "celery": Celery's find_app asks for ``worker.app`` first (none here), then this.
    if name == "celery":
        global _app
        if _app is None:
            from worker.queue.app import create_app

            _app = create_app()
        return _app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
