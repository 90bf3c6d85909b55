"""Every effective setting with where it came from, as ``config show`` lists it."""

from __future__ import annotations

import difflib

from worker.config.server import SERVER_SETTINGS
from worker.config.settings import Settings
from worker.config.show import Row, masked, text_of
from worker.config.sources import leaves


def effective_items(settings: Settings) -> list[Row]:
    """Every effective setting as a :class:`Row`, secrets masked: the worker's own (each leaf),
    the keys of the stores passed through, and the server's settings (one row each)."""
    rows: list[Row] = []
    data = settings.model_dump(mode="python", exclude={"SESSIONSTORE", "MODULESTORE"})
    # The stores' keys after the others, as config show has always listed them.
    data["SESSIONSTORE"] = settings.SESSIONSTORE.model_dump(mode="python")
    data["MODULESTORE"] = settings.MODULESTORE.model_dump(mode="python")
    for path, value in leaves(data):
        rows.append(Row(".".join(path), text_of(masked(value, path)), settings.origin(*path),
                        settings._notes.get(path, "")))
    for path, note in settings._passed_through.items():
        value = settings.raw_store_value(*path)
        rows.append(Row(".".join(path), text_of(masked(value, path)), settings.origin(*path), note))
    for key, value in settings.server.items():
        rows.append(Row(key, text_of(masked(value, (key,))), settings.origin(key),
                        _server_note(key)))
    return rows


def _server_note(key: str) -> str:
    note = "the Synchro server's; left alone"
    if key in SERVER_SETTINGS:
        return note
    near = difflib.get_close_matches(key, SERVER_SETTINGS, n=1, cutoff=0.8)
    hint = f"; did you mean {near[0]}?" if near else " (an app's own, read with getConfig?)"
    return f"{note}; not a name the server is known to read{hint}"
