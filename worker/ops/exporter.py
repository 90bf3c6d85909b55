"""Celery workers' metrics: prometheus-client's multiprocess mode.

Celery workers use prometheus-client's multiprocess mode: the worker's main process points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder in ``STATE_DIR`` before its pool forks, each
child writes its counters there (memory-mapped files, no locks between processes), and the main
process serves their sum on ``METRICS.port``.  This fits prefork best: a child may be replaced
at any time, and a push gateway or a per-child port would lose or scatter its counts.
(``prometheus_client`` is imported where it is used: a process without metrics never loads it.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from worker import metrics
from worker.metrics import pid_alive
from worker.ops.web import serve

if TYPE_CHECKING:
    from worker.config import Settings


# --- Celery workers: multiprocess mode ------------------------------------------------------

_mp_dir: str | None = None


def worker_init(settings: Settings, files: bool = True) -> None:
    """In a worker's main process, before the pool forks: counters of every child go to one
    folder, served from here."""
    global _mp_dir
    if settings.METRICS.port is None or metrics.enabled():
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        state = Path(settings.STATE_DIR)
        state.mkdir(parents=True, exist_ok=True)
        _forget_dead_workers(state)
        _mp_dir = tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=state)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _mp_dir
    # prometheus-client picks its value class when first imported, which a Celery command
    # plugin (Flower's) may have done already: pick again, before our first metric is made.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    metrics.enable()
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # A worker of the shared queue alone (-Q sessions) needs no module files.
    serve(settings, registry=registry, role="worker" if files else "worker-sessions")


def _forget_dead_workers(state: Path) -> None:
    """Remove the folders of workers that ended without cleaning up (``kill -9``)."""
    for folder in state.glob("metrics-*-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def worker_process_exit(pid: int) -> None:
    if _mp_dir is not None or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def worker_shutdown() -> None:
    if _mp_dir is not None:
        shutil.rmtree(_mp_dir, ignore_errors=True)
