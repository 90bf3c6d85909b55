"""What ``synchro-sync status`` shows, and where the worker records it.

Recorded by the tasks and the embedded runner: the last full pass of each container, the last
session snapshot, recent failures and retries.  Where: in Redis when the broker is Redis (every
worker on every host writes to the same place), else in ``STATE_DIR/status.json`` (embedded mode,
or a RabbitMQ broker, where each host keeps its own).  Read back together with the live figures:
the depth of each queue (asked from the broker) and the paths waiting to be synced.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from worker.live.dispatch import REDIS_PREFIX
from worker.ops import metrics
from worker.stores.modules.names import STORE_FILES, STORE_FILES_LABEL

if TYPE_CHECKING:
    from worker.config import Settings

#: How many failures and retries are kept.
KEEP_EVENTS = 50
_STATUS_KEY = f"{REDIS_PREFIX}status"
_FAILURES_KEY = f"{REDIS_PREFIX}failures"
_RETRIES_KEY = f"{REDIS_PREFIX}retries"


class StatusStore(Protocol):
    """Where status records go; both stores keep the same JSON shapes."""

    def put(self, name: str, value: dict[str, Any]) -> None: ...
    def names(self) -> list[str]: ...
    def drop(self, names: list[str]) -> None: ...
    def push(self, kind: str, event: dict[str, Any]) -> None: ...
    def read(self) -> dict[str, Any]: ...


class FileStatusStore:
    """``STATE_DIR/status.json``, replaced atomically under an ``fcntl`` lock."""

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
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def put(self, name: str, value: dict[str, Any]) -> None:
        with self._locked() as data:
            data.setdefault("records", {})[name] = value

    def names(self) -> list[str]:
        return list(self._load().get("records", {}))

    def drop(self, names: list[str]) -> None:
        with self._locked() as data:
            records = data.setdefault("records", {})
            for name in names:
                records.pop(name, None)

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
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=2)

    def put(self, name: str, value: dict[str, Any]) -> None:
        self.client.hset(_STATUS_KEY, name, json.dumps(value))

    def names(self) -> list[str]:
        return [k.decode() for k in self.client.hkeys(_STATUS_KEY)]

    def drop(self, names: list[str]) -> None:
        if names:
            self.client.hdel(_STATUS_KEY, *names)

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
    from worker.queue.app import is_redis_url

    if is_redis_url(settings.BROKER_URL):
        assert settings.BROKER_URL is not None
        return RedisStatusStore(settings.BROKER_URL)
    return FileStatusStore(settings.STATE_DIR)


# --- recording ------------------------------------------------------------------------------


def record_full_pass(store: StatusStore, container: str, info: dict[str, Any]) -> None:
    store.put(f"full_pass:{container}", {"at": time.time(), **info})


def forget_full_passes(store: StatusStore, keep: set[str]) -> None:
    """Drop the full-pass rows of containers not in ``keep``."""
    stale = [n for n in store.names()
             if n.startswith("full_pass:") and n.split(":", 1)[1] not in keep]
    store.drop(stale)


def record_snapshot(store: StatusStore, info: dict[str, Any]) -> None:
    metrics.snapshot_taken(info)
    store.put("snapshot", {"at": time.time(), **info})


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
    store.put(
        "embedded_queue",
        {"at": time.time(), "pid": os.getpid(), "depth": len(pending),
         "pending": [f"{c}/{p}" for c, p in pending[:100]]},
    )


# --- reading --------------------------------------------------------------------------------


@dataclass
class StatusReport:
    mode: str
    queues: dict[str, int | None] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    pending_count: int = 0
    full_passes: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)
    retry_total: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect_status(settings: Settings, limit: int = 10) -> StatusReport:
    """Everything ``status`` shows; a broker that does not answer is reported, not raised."""
    from worker.queue.app import SESSIONS_QUEUE, is_redis_url

    mode = "distributed" if settings.BROKER_URL else "embedded"
    report = StatusReport(mode=mode)
    try:
        data = open_status_store(settings).read()
    except Exception as exc:  # a status command must say what it can
        report.problems.append(f"status store unreachable: {exc}")
        data = {}
    records: dict[str, Any] = data.get("records", {})
    report.full_passes = {
        k.split(":", 1)[1]: v for k, v in sorted(records.items()) if k.startswith("full_pass:")
    }
    report.snapshot = records.get("snapshot")
    report.failures = list(data.get("failures", []))[:limit]
    report.retries = list(data.get("retries", []))[:limit]
    report.retry_total = int(data.get("retry_total", 0))
    if not settings.BROKER_URL:
        queue = records.get("embedded_queue") or {}
        alive = _pid_alive(queue.get("pid"))
        report.queues = {"embedded": int(queue.get("depth", 0)) if alive else None}
        report.pending = list(queue.get("pending", []))[:limit] if alive else []
        report.pending_count = int(queue.get("depth", 0)) if alive else 0
        if not alive:
            report.problems.append("synchro-sync run is not running")
        return report
    names = [settings.host_queue(), SESSIONS_QUEUE]
    try:
        report.queues = queue_depths(settings.BROKER_URL, names)
    except Exception as exc:
        report.problems.append(f"broker unreachable: {exc.__class__.__name__}: {exc}")
        report.queues = {n: None for n in names}
    if is_redis_url(settings.BROKER_URL):
        try:
            report.pending, report.pending_count = _redis_pending(settings.BROKER_URL, limit)
        except Exception as exc:
            report.problems.append(f"pending paths unavailable: {exc}")
    return report


def queue_depths(url: str, names: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, asked from the broker (Redis or RabbitMQ)."""
    import kombu

    connection: Any = kombu.Connection  # type: ignore[attr-defined]
    out: dict[str, int | None] = {}
    with connection(url, connect_timeout=3, transport_options={"socket_timeout": 3}) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        for name in names:
            try:
                out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # a queue nobody declared yet holds nothing
                out[name] = 0
    return out


def _redis_pending(url: str, limit: int) -> tuple[list[str], int]:
    import redis

    from worker.live.dispatch import pending_key

    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=2)
    paths: list[str] = []
    count = 0
    for key in client.scan_iter(match=pending_key("*"), count=100):
        count += int(client.hlen(key))
        if len(paths) < limit:
            paths += [f.decode() for f in client.hkeys(key)][: limit - len(paths)]
    return paths, count


def _pid_alive(pid: Any) -> bool:
    return isinstance(pid, int) and metrics.pid_alive(pid)


def _ago(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    secs = max(0.0, time.time() - ts)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def render(report: StatusReport) -> str:
    """The human-readable form of a report."""
    lines = [f"mode: {report.mode}"]
    lines.append("queues:")
    for name, depth in report.queues.items():
        lines.append(f"  {name}: {'unknown' if depth is None else depth}")
    lines.append(f"pending paths: {report.pending_count}")
    lines += [f"  {p}" for p in report.pending]
    lines.append("last full pass:")
    if not report.full_passes:
        lines.append("  never")
    for container, info in report.full_passes.items():
        what = ", ".join(
            f"{k} {info[k]}"
            for k in ("uploaded", "copied", "deleted", "unchanged", "failures")
            if k in info
        )
        shown = STORE_FILES_LABEL if container == STORE_FILES else container
        lines.append(f"  {shown}: {_ago(info.get('at'))}" + (f" ({what})" if what else ""))
        if info.get("not_served"):
            lines.append(f"    a Synchro server will not serve it: {info['not_served']}")
        lines += [f"    {e}" for e in info.get("errors", [])]
    snap = report.snapshot
    if snap:
        lines.append(
            f"last snapshot: {_ago(snap.get('at'))} {snap.get('id', '')} "
            f"({snap.get('sessions', '?')} sessions, kept {snap.get('kept', '?')}) "
            f"-> {snap.get('dest', '')}"
        )
    else:
        lines.append("last snapshot: never")
    lines.append(f"recent failures: {len(report.failures)}")
    for f in report.failures:
        where = "/".join(x for x in (f.get("container"), f.get("path")) if x)
        lines.append(f"  {_ago(f.get('at'))} {f.get('task')} {where}: {f.get('error')}")
    lines.append(f"retries: {report.retry_total}")
    for r in report.retries:
        where = "/".join(x for x in (r.get("container"), r.get("path")) if x)
        lines.append(f"  {_ago(r.get('at'))} {r.get('what')} {where}: {r.get('error')}")
    lines += [f"problem: {p}" for p in report.problems]
    return "\n".join(lines)
