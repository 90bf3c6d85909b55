"""The tenacity retry policies, defined once and applied at the store boundary.

Only :class:`~worker.errors.TransientStoreError` is retried.  Every retry is logged with the
store, container and key it concerns.  SDK-level retries are turned down in each provider so
the layers do not multiply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from worker.errors import TransientStoreError

log = logging.getLogger("synchro_sync.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff bounded by attempts and by elapsed time."""

    attempts: int = 6
    max_seconds: float = 60.0
    initial: float = 0.1
    max_wait: float = 5.0

    def retrying(self, what: str = "") -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "retry %d/%d in %.2fs after transient error%s: %s",
                state.attempt_number,
                self.attempts,
                wait,
                f" ({what})" if what else "",
                exc,
            )
            RETRY_COUNTER.add(str(exc), what)

        return Retrying(
            retry=retry_if_exception_type(TransientStoreError),
            # Exponential from `initial`, capped, plus up to `initial` of jitter so that many
            # clients retrying together spread out.
            wait=wait_exponential(multiplier=self.initial, max=self.max_wait)
            + wait_random(0, self.initial),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_seconds),
            before_sleep=before_sleep,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
        """Call ``fn`` under this policy; the last error is re-raised unchanged."""
        for attempt in self.retrying(what):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover


class _RetryCounter:
    """Process-wide count of retries, shown by ``synchro-sync status``, and the retries not
    yet recorded, each with what it concerned (``provider/container/key``)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None
        self._lock = threading.Lock()
        self._unrecorded: list[tuple[str, str]] = []

    def add(self, message: str, what: str = "") -> None:
        with self._lock:
            self.count += 1
            self.last = message
            if len(self._unrecorded) < 1000:
                self._unrecorded.append((what, message))

    def drain(self) -> list[tuple[str, str]]:
        """The (what, message) of each retry since the last drain, oldest first."""
        with self._lock:
            out, self._unrecorded = self._unrecorded, []
        return out


RETRY_COUNTER = _RetryCounter()

#: Network calls to stores (module stores, Redis session stores).
STORE_RETRY = RetryPolicy()
#: Long operations (a whole snapshot batch) that may ride out a short outage.
OUTAGE_RETRY = RetryPolicy(attempts=10, max_seconds=120.0, initial=0.2, max_wait=10.0)
