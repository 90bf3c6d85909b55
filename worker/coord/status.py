"""Where the worker records what ``synchro-sync status`` shows (read back by
:mod:`worker.ops.report`).

Recorded by the tasks and the embedded runner: the last full pass of each container, the last
session snapshot, recent failures and retries.  Where: in Redis when the broker is Redis (every
worker on every host writes to the same place), else in ``STATE_DIR/status.json`` (embedded mode,
or a RabbitMQ broker, where each host keeps its own).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worker import metrics
from worker.coord import redis as shared

if TYPE_CHECKING:
    from worker.config import Settings

#: How many failures and retries are kept.
KEEP_EVENTS = 50
_STATUS_KEY = shared.key("status")
_FAILURES_KEY = shared.key("failures")
_RETRIES_KEY = shared.key("retries")


class StatusStore(Protocol):
    """Where status records go; both stores keep the same JSON shapes."""

    def put(self, records: dict[str, dict[str, Any]], drop: Iterable[str] = ()) -> None: ...
    def names(self) -> list[str]: ...
    def push(self, kind: str, event: dict[str, Any]) -> None: ...
    def read(self) -> dict[str, Any]: ...


class FileStatusStore:
    """``STATE_DIR/status.json``, replaced atomically under an ``fcntl`` lock.  Each change
    rewrites the file, so a pass writes all its rows at once (:meth:`put`), and the JSON is
    written by the C encoder (compact): with a thousand containers the file is about 300 kB."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "status.json"

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            yield data
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")),
                           encoding="utf-8")
            os.replace(tmp, self.path)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def put(self, records: dict[str, dict[str, Any]], drop: Iterable[str] = ()) -> None:
        """Set ``records`` and remove the records named in ``drop``, in one write."""
        with self._locked() as data:
            kept = data.setdefault("records", {})
            for name in drop:
                kept.pop(name, None)
            kept.update(records)

    def names(self) -> list[str]:
        return list(self._load().get("records", {}))

    def push(self, kind: str, event: dict[str, Any]) -> None:
        with self._locked() as data:
            events = data.setdefault(kind, [])
            events.insert(0, event)
            del events[KEEP_EVENTS:]
            if kind == "retries":
                data["retry_total"] = int(data.get("retry_total", 0)) + int(event.get("count", 1))

    def read(self) -> dict[str, Any]:
        return self._load()


class RedisStatusStore:
    """The same records in Redis: a hash of JSON records and two capped lists."""

    def __init__(self, url: str) -> None:
        self.client = shared.client(url)

    def put(self, records: dict[str, dict[str, Any]], drop: Iterable[str] = ()) -> None:
        """Set ``records`` and remove ``drop`` in one round trip."""
        pipe = self.client.pipeline()
        if stale := list(drop):
            pipe.hdel(_STATUS_KEY, *stale)
        if records:
            pipe.hset(_STATUS_KEY, mapping={k: json.dumps(v) for k, v in records.items()})
        pipe.execute()

    def names(self) -> list[str]:
        return [k.decode() for k in self.client.hkeys(_STATUS_KEY)]

    def push(self, kind: str, event: dict[str, Any]) -> None:
        key = _FAILURES_KEY if kind == "failures" else _RETRIES_KEY
        pipe = self.client.pipeline()
        pipe.lpush(key, json.dumps(event))
        pipe.ltrim(key, 0, KEEP_EVENTS - 1)
        if kind == "retries":
            pipe.hincrby(_STATUS_KEY + ":counters", "retry_total", int(event.get("count", 1)))
        pipe.execute()

    def read(self) -> dict[str, Any]:
        records = {
            k.decode(): json.loads(v) for k, v in self.client.hgetall(_STATUS_KEY).items()
        }
        counters = self.client.hgetall(_STATUS_KEY + ":counters")
        return {
            "records": records,
            "failures": [json.loads(e) for e in self.client.lrange(_FAILURES_KEY, 0, -1)],
            "retries": [json.loads(e) for e in self.client.lrange(_RETRIES_KEY, 0, -1)],
            "retry_total": int(counters.get(b"retry_total", 0)),
        }


def open_status_store(settings: Settings) -> StatusStore:
    if shared.is_redis_url(settings.BROKER_URL):
        assert settings.BROKER_URL is not None
        return RedisStatusStore(settings.BROKER_URL)
    return FileStatusStore(settings.STATE_DIR)


# --- recording ------------------------------------------------------------------------------


def record_full_passes(
    store: StatusStore, rows: dict[str, dict[str, Any]], whole: bool = False,
) -> None:
    """One full-pass row per container of ``rows``, in one write whatever their number; with
    ``whole`` (a pass of the whole tree), the rows of containers not in ``rows`` go."""
    now = time.time()
    records = {f"full_pass:{container}": {"at": now, **info} for container, info in rows.items()}
    stale = [n for n in store.names() if n.startswith("full_pass:") and n not in records] \
        if whole else []
    store.put(records, drop=stale)


def record_snapshot(store: StatusStore, info: dict[str, Any]) -> None:
    metrics.snapshot_taken(info)
    store.put({"snapshot": {"at": time.time(), **info}})


def record_failure(
    store: StatusStore, task: str, error: str, container: str | None = None,
    path: str | None = None,
) -> None:
    metrics.failed(task)
    store.push(
        "failures",
        {"at": time.time(), "task": task, "container": container, "path": path, "error": error},
    )


def record_retry(
    store: StatusStore, what: str, error: str, count: int = 1,
    container: str | None = None, path: str | None = None,
) -> None:
    metrics.retried(what, count)
    store.push(
        "retries",
        {"at": time.time(), "what": what, "count": count, "container": container,
         "path": path, "error": error},
    )


def record_embedded_queue(store: StatusStore, pending: list[tuple[str, str]]) -> None:
    """The embedded runner's queue, written by ``run`` so that ``status`` can read it."""
    store.put({"embedded_queue": {
        "at": time.time(), "pid": os.getpid(), "depth": len(pending),
        "pending": [f"{c}/{p}" for c, p in pending[:100]]}})
