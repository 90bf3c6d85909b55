"""What this process's full passes did, recorded for ``synchro-sync status`` and the metrics.

One status store per process, opened on first use (:func:`status_store`), and one way to record
a pass into it (:func:`record_pass`), whoever ran the pass: a Celery task or the embedded
runtime (both through :mod:`worker.queue.jobs`), or ``synchro-sync sync``, which so records its
passes without loading the task layer (Celery, the backups).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker import metrics
from worker.coord.status import StatusStore, open_status_store
from worker.mirror import pass_log
from worker.mirror.results import PassResult

if TYPE_CHECKING:
    from worker.config import Settings

_status: StatusStore | None = None


def status_store(settings: Settings) -> StatusStore:
    """The process's status store, opened on first use."""
    global _status
    if _status is None:
        _status = open_status_store(settings)
    return _status


def forget_status_store() -> None:
    """The next :func:`status_store` opens the store again (a worker process's shutdown)."""
    global _status
    _status = None


def record_pass(
    settings: Settings, result: PassResult, reason: str, took: float, whole: bool,
    say: bool = True,
) -> None:
    """See :func:`worker.mirror.pass_log.record_pass` (into this process's status store); the
    pass's figures go to the metrics too."""
    pass_log.record_pass(status_store(settings), result, reason, took, whole, say)
    metrics.pass_done(pass_log.per_container(result), took)
