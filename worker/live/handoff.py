"""Handing debounced paths to the dispatcher without losing any.

A dispatcher may fail (a broker away): the path is kept, in order, and handed off again after a
growing wait.  After ``retry_attempts`` failures in a row the watcher stops insisting and asks for
a full pass instead, which finds every change the kept paths stood for; the full-pass request is
itself retried until it gets through.  While failing, new paths join the kept ones without a call
each (no timeout to wait out per path); their number is bounded, a full pass being owed anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from worker.live.debounce import Flush

log = logging.getLogger("synchro_sync.watcher")

Key = tuple[str, str]  # (container, relpath)


class PathDispatcher(Protocol):
    """Where debounced paths go (``worker.live.dispatch`` has the embedded and Celery ones).

    ``submit`` may raise (a broker away): the path is kept and retried, then a full pass is
    asked for.  A ``submit`` that returns ``False`` has taken the path over as a full pass it owes.
    """

    def submit(self, container: str, relpath: str) -> object: ...

    def request_full_pass(self, reason: str) -> object: ...


@dataclass
class WatcherStats:
    """Counters for ``status``, logs and tests."""

    events: int = 0
    submitted: int = 0
    transient_dropped: int = 0
    refused: int = 0
    submit_failures: int = 0
    full_passes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    restarts: int = 0


class HandOff:
    """Submits paths, keeps and retries the ones that fail, and owes full passes.

    :meth:`hand_off` and :meth:`tick` run on one thread (the watcher's); :meth:`owe` may be
    called from any thread and calls ``wake`` so that the owner thread acts on it.
    """

    #: Attempts at handing a path off before a full pass is asked for instead.
    retry_attempts = 6
    #: First wait between attempts, doubled each time up to :attr:`retry_max_wait`.
    retry_base = 0.25
    retry_max_wait = 5.0
    #: Paths kept for retrying; beyond this a full pass is owed and new ones are dropped.
    retry_max_paths = 100_000
    #: How many handed-off paths are remembered (a transient path that was handed off before
    #: is handed off again: its earlier task may have copied the temporary content).
    recent_max = 50_000

    def __init__(
        self, dispatcher: PathDispatcher, stats: WatcherStats, wake: Callable[[], None]
    ) -> None:
        self.dispatcher = dispatcher
        self.stats = stats
        self._wake = wake
        self._lock = threading.Lock()
        self._retry: OrderedDict[Key, None] = OrderedDict()
        self._attempts = 0
        self._retry_at = 0.0
        self._owed: list[str] = []
        self._pass_at = 0.0
        self._pass_attempts = 0
        self._recent: OrderedDict[Key, None] = OrderedDict()

    # --- what the watcher asks ----------------------------------------------------------------

    def idle(self) -> bool:
        with self._lock:
            return not (self._retry or self._owed)

    def kept(self) -> list[Key]:
        with self._lock:
            return list(self._retry)

    def next_time(self) -> float | None:
        """When :meth:`tick` has something to do, or None."""
        with self._lock:
            times = ([self._retry_at] if self._retry else []) + (
                [self._pass_at] if self._owed else []
            )
        return min(times) if times else None

    def owe(self, reason: str) -> None:
        """A full pass is needed (from any thread)."""
        with self._lock:
            if reason not in self._owed:
                self._owed.append(reason)
        self._wake()

    # --- on the owner thread ------------------------------------------------------------------

    def hand_off(self, flushes: list[Flush[Key]]) -> None:
        for flush in flushes:
            key = flush.key
            if flush.transient and key not in self._recent:
                self.stats.transient_dropped += 1
                continue
            if self._retry:  # failing: keep order, and do not wait out a timeout per path
                self._keep(key)
                continue
            self._submit(key)

    def tick(self, now: float) -> None:
        """Retry kept paths and request owed passes when their time has come."""
        if self._retry and now >= self._retry_at:
            self._retry_round()
        if self._owed and now >= self._pass_at:
            self._request_pass()

    def finish(self) -> None:
        """At stop: one more try for whatever is kept or owed."""
        if self._retry:
            self._retry_round()
        if self._owed:
            self._request_pass()
        if self._retry or self._owed:
            log.warning(
                "%d paths not handed off and a full pass owed at stop; "
                "the start-up full pass will cover them",
                len(self._retry),
            )

    def _submit(self, key: Key) -> bool:
        try:
            accepted = self.dispatcher.submit(*key)
        except Exception as exc:
            self.stats.submit_failures += 1
            log.warning("container=%s path=%s not handed off (%s); will retry", *key, exc)
            self._keep(key)
            self._failed(exc)
            return False
        if accepted is False:
            self.stats.refused += 1  # the dispatcher owes a full pass for it
        else:
            self.stats.submitted += 1
            log.debug("container=%s path=%s handed off", *key)
        self._recent[key] = None
        self._recent.move_to_end(key)
        if len(self._recent) > self.recent_max:
            self._recent.popitem(last=False)
        return True

    def _keep(self, key: Key) -> None:
        with self._lock:
            if self._owed and len(self._retry) >= self.retry_max_paths:
                return  # a full pass is owed already and will find it
            self._retry[key] = None
            self._retry.move_to_end(key)
            overflowing = len(self._retry) > self.retry_max_paths
        if overflowing:
            self.owe(f"more than {self.retry_max_paths} paths waiting to be handed off")

    def _failed(self, exc: Exception) -> None:
        self._attempts += 1
        if self._attempts >= self.retry_attempts:
            self.owe(f"the dispatcher failed {self._attempts} times ({exc.__class__.__name__})")
        self._retry_at = time.monotonic() + self._wait(self._attempts)

    def _wait(self, attempts: int) -> float:
        return float(min(self.retry_base * 2 ** (attempts - 1), self.retry_max_wait))

    def _retry_round(self) -> None:
        while self._retry:
            with self._lock:
                key = next(iter(self._retry))
                del self._retry[key]
            if not self._submit(key):
                with self._lock:
                    self._retry.move_to_end(key, last=False)
                return
        self._attempts = 0

    def _request_pass(self) -> None:
        with self._lock:
            reasons = list(self._owed)
        reason = "; ".join(reasons)
        try:
            self.dispatcher.request_full_pass(reason)
        except Exception as exc:
            self._pass_attempts += 1
            self._pass_at = time.monotonic() + self._wait(self._pass_attempts)
            log.warning("full pass (%s) not requested (%s); will retry", reason, exc)
            return
        log.warning("full pass requested: %s", reason)
        self.stats.full_passes.append(reason)
        self._pass_attempts = 0
        with self._lock:
            self._owed = [r for r in self._owed if r not in reasons]
            if self._attempts >= self.retry_attempts:
                # The pass covers every kept path; new failures start counting afresh.
                self._retry.clear()
                self._attempts = 0
