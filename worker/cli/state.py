"""What the command modules share: the group's state (settings loaded on demand), the exit code of
work that failed, and what the long-running commands (``run``, ``watch``) set up alike."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click

from worker.config import Settings, load_settings
from worker.logs import apply_format, formatter

#: The work failed (bad usage or configuration is 2: a SyncError's own exit code).
EXIT_FAILED = 1


@dataclass
class CliState:
    """What the group's options leave for the sub-commands: settings are loaded on demand."""

    config_file: str | None = None
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    def settings(self, **overrides: Any) -> Settings:
        """Load the settings once; command options are the top layer (``SYNC.debounce`` → value)."""
        if self._settings is None or overrides:
            merged = {**self.overrides, **{k: v for k, v in overrides.items() if v is not None}}
            self._settings = load_settings(self.config_file, merged)
            logging.getLogger("synchro_sync").setLevel(self._settings.LOG_LEVEL)
            apply_format(self._settings.LOG_FORMAT)
        return self._settings


pass_state = click.make_pass_decorator(CliState, ensure=True)


# --- the long-running commands ----------------------------------------------------------------


def live_overrides(debounce: float | None, polling: bool | None) -> dict[str, Any]:
    """The options ``run`` and ``watch`` share, as settings."""
    return {"SYNC.debounce": debounce, "SYNC.polling": polling}


def log_to_stderr(settings: Settings) -> None:
    """Our log lines (with container and path) on stderr at LOG_LEVEL."""
    logger = logging.getLogger("synchro_sync")
    logger.setLevel(settings.LOG_LEVEL)
    if not any(getattr(h, "_synchro", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._synchro = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    for each in logger.handlers:
        each.setFormatter(formatter(settings.LOG_FORMAT))


@contextmanager
def until_signal() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, with the previous handlers restored afterwards."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
