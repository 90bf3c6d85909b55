"""The retry policies, one per kind, defined here once.

* :data:`STORE_RETRY` (a :class:`RetryPolicy`, tenacity): every call to a store, retried in
  place for up to a minute.  Only :class:`~worker.errors.TransientStoreError` is retried; every
  retry is logged with the store, container and key it concerns.  SDK-level retries are turned
  down in each provider so the layers do not multiply.
* :data:`OUTAGE_RETRY` (an :class:`OutagePolicy`): a whole task whose store stayed away longer
  than that is run again later, with an exponential, jittered countdown.  The Celery tasks take
  it as their ``autoretry`` options (:meth:`OutagePolicy.celery_options`); the embedded queue of
  ``synchro-sync run`` resubmits a path after :meth:`OutagePolicy.delay`.  After the last
  attempt the next full pass finds what is left.
* :data:`HANDOFF_RETRY` (an :class:`OutagePolicy`): the live path handing a path to the broker
  again (:mod:`worker.live.handoff`): 1 s doubling up to 5 s, no jitter (one watcher per
  host); after its attempts fail in a row a full pass is owed instead.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from worker.errors import TransientStoreError

if TYPE_CHECKING:
    from tenacity import RetryCallState, Retrying

log = logging.getLogger("synchro_sync.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class Where:
    """What a retried call concerned: the store, and the container and key when there are."""

    store: str
    container: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.store, self.container, self.key) if p)


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff bounded by attempts and by elapsed time."""

    attempts: int = 6
    max_seconds: float = 60.0
    initial: float = 0.1
    max_wait: float = 5.0

    def retrying(self, what: str | Where = "", spent: float = 0.0) -> Retrying:
        """A tenacity ``Retrying`` for this policy; ``spent``: seconds of the time bound that an
        attempt made before it already used.  tenacity is imported here, when a call first
        fails: a process whose calls all succeed never loads it (nor the Tornado support it
        imports where Tornado is installed, as Flower installs it: 20 ms of each start-up)."""
        from tenacity import (
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential,
            wait_random,
        )

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
            RETRY_COUNTER.add(str(exc), what if isinstance(what, Where) else None)

        return Retrying(
            retry=retry_if_exception_type(TransientStoreError),
            # Exponential from `initial`, capped, plus up to `initial` of jitter so that many
            # clients retrying together spread out.
            wait=wait_exponential(multiplier=self.initial, max=self.max_wait)
            + wait_random(0, self.initial),
            stop=stop_after_attempt(self.attempts)
            | stop_after_delay(max(self.max_seconds - spent, 0.0)),
            before_sleep=before_sleep,
            reraise=True,
        )

    def call(
        self, fn: Callable[..., T], *args: Any, what: str | Where = "", **kwargs: Any
    ) -> T:
        """Call ``fn`` under this policy; the last error is re-raised unchanged.

        The first attempt is a plain call: tenacity's machinery (15 us a call here, on every
        small file a pass uploads) is built only once it has failed, with that failure as its
        attempt 1 and the time it took counted against ``max_seconds``."""
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except TransientStoreError as exc:
            first: TransientStoreError | None = exc
        spent = time.monotonic() - started

        def again() -> T:
            nonlocal first
            if first is not None:  # attempt 1 is the call above: its error, as raised
                exc, first = first, None
                raise exc
            return fn(*args, **kwargs)

        for attempt in self.retrying(what, spent):
            with attempt:
                return again()
        raise AssertionError("unreachable")  # pragma: no cover


class _RetryCounter:
    """Process-wide count of retries, shown by ``synchro-sync status``, and the retries not
    yet recorded, each with what it concerned (a :class:`Where`, or None when the caller did
    not say)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None
        self._lock = threading.Lock()
        self._unrecorded: list[tuple[Where | None, str]] = []

    def add(self, message: str, where: Where | None = None) -> None:
        with self._lock:
            self.count += 1
            self.last = message
            if len(self._unrecorded) < 1000:
                self._unrecorded.append((where, message))

    def drain(self) -> list[tuple[Where | None, str]]:
        """The (where, message) of each retry since the last drain, oldest first."""
        with self._lock:
            out, self._unrecorded = self._unrecorded, []
        return out


RETRY_COUNTER = _RetryCounter()

@dataclass(frozen=True)
class OutagePolicy:
    """A task run again after an outage: ``first_delay`` seconds doubling up to ``max_delay``
    (whole seconds, as Celery counts them), at most ``attempts`` times; with ``jitter`` each
    countdown is drawn from [0, nominal] (as Celery's ``retry_jitter`` does) so that many
    retries after one outage spread out."""

    attempts: int = 8
    first_delay: int = 2
    max_delay: int = 120
    jitter: bool = True

    def nominal(self, attempt: int) -> float:
        """The countdown before retry number ``attempt`` (1-based), before jitter."""
        return float(min(self.first_delay * 2 ** (max(attempt, 1) - 1), self.max_delay))

    def delay(self, attempt: int) -> float:
        nominal = self.nominal(attempt)
        return random.uniform(0, nominal) if self.jitter else nominal

    def celery_options(self) -> dict[str, Any]:
        """The same policy as Celery task options (``autoretry_for`` and its backoff)."""
        return {
            "autoretry_for": (TransientStoreError,),
            "retry_backoff": self.first_delay,
            "retry_backoff_max": self.max_delay,
            "retry_jitter": self.jitter,
            "max_retries": self.attempts,
        }


#: Network calls to stores (module stores, Redis session stores).
STORE_RETRY = RetryPolicy()
#: A task (a path, a pass, a snapshot) whose store stayed away longer than STORE_RETRY rides out.
OUTAGE_RETRY = OutagePolicy()
#: Handing a path to the broker again: whole seconds, no jitter (one watcher per host).
HANDOFF_RETRY = OutagePolicy(attempts=6, first_delay=1, max_delay=5, jitter=False)
