"""What ``synchro-sync status`` (and the status page, and ``status --check``) shows: the records
of :mod:`worker.coord.status` read back with the live figures, the depth of each queue (asked
from the broker) and the paths waiting to be synced."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from worker import metrics
from worker.coord.pending import list_pending
from worker.coord.queues import SESSIONS_QUEUE, queue_depths
from worker.coord.redis import is_redis_url
from worker.coord.status import open_status_store
from worker.stores.modules.names import STORE_FILES, STORE_FILES_LABEL

if TYPE_CHECKING:
    from worker.config import Settings


class Cause(StrEnum):
    """What a problem of the report is about; who reads it decides by this, never by text."""

    BROKER = "broker"
    STATUS_STORE = "status store"
    NOT_RUNNING = "not running"
    PENDING = "pending paths"


#: The causes that make ``status`` exit 1 (the report itself could not be read).
UNREADABLE = frozenset({Cause.BROKER, Cause.STATUS_STORE})
#: The causes that make ``status --check`` unhealthy, the first named first.
UNHEALTHY = (Cause.BROKER, Cause.STATUS_STORE, Cause.NOT_RUNNING)


@dataclass(frozen=True)
class Problem:
    cause: Cause
    text: str

    def __str__(self) -> str:
        return self.text


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
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = [p.text for p in self.problems]
        return out

    def has(self, causes: Iterable[Cause]) -> list[Problem]:
        """The problems of these causes, in the order of ``causes``."""
        order = list(causes)
        return sorted((p for p in self.problems if p.cause in order),
                      key=lambda p: order.index(p.cause))


def collect_status(settings: Settings, limit: int = 10) -> StatusReport:
    """Everything ``status`` shows; a broker that does not answer is reported, not raised."""
    mode = "distributed" if settings.BROKER_URL else "embedded"
    report = StatusReport(mode=mode)
    try:
        data = open_status_store(settings).read()
    except Exception as exc:  # a status command must say what it can
        report.problems.append(Problem(Cause.STATUS_STORE, f"status store unreachable: {exc}"))
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
            report.problems.append(Problem(Cause.NOT_RUNNING, "synchro-sync run is not running"))
        return report
    names = [settings.host_queue(), SESSIONS_QUEUE]
    try:
        report.queues = queue_depths(settings.BROKER_URL, names)
    except Exception as exc:
        report.problems.append(
            Problem(Cause.BROKER, f"broker unreachable: {exc.__class__.__name__}: {exc}")
        )
        report.queues = {n: None for n in names}
    if is_redis_url(settings.BROKER_URL):
        try:
            report.pending, report.pending_count = list_pending(settings.BROKER_URL, limit)
        except Exception as exc:
            report.problems.append(Problem(Cause.PENDING, f"pending paths unavailable: {exc}"))
    return report


def _pid_alive(pid: Any) -> bool:
    return isinstance(pid, int) and metrics.pid_alive(pid)


def ago(ts: Any) -> str:
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
        lines.append(f"  {shown}: {ago(info.get('at'))}" + (f" ({what})" if what else ""))
        if info.get("not_served"):
            lines.append(f"    a Synchro server will not serve it: {info['not_served']}")
        lines += [f"    {e}" for e in info.get("errors", [])]
    snap = report.snapshot
    if snap:
        lines.append(
            f"last snapshot: {ago(snap.get('at'))} {snap.get('id', '')} "
            f"({snap.get('sessions', '?')} sessions, kept {snap.get('kept', '?')}) "
            f"-> {snap.get('dest', '')}"
        )
    else:
        lines.append("last snapshot: never")
    lines.append(f"recent failures: {len(report.failures)}")
    for f in report.failures:
        where = "/".join(x for x in (f.get("container"), f.get("path")) if x)
        lines.append(f"  {ago(f.get('at'))} {f.get('task')} {where}: {f.get('error')}")
    lines.append(f"retries: {report.retry_total}")
    for r in report.retries:
        where = "/".join(x for x in (r.get("container"), r.get("path")) if x)
        lines.append(f"  {ago(r.get('at'))} {r.get('what')} {where}: {r.get('error')}")
    lines += [f"problem: {p}" for p in report.problems]
    return "\n".join(lines)
