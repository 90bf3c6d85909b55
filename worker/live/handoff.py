"""Handing debounced paths to the dispatcher without losing any: the live path's one retry
mechanism and the one owner of "a full pass is owed".

A dispatcher's ``submit`` or ``request_full_pass`` that raises (a broker away) has not taken the
work: the path is kept, in order, and handed off again after the waits of
:data:`worker.retry.HANDOFF_RETRY` (1 s doubling up to 5 s: a hand-off is cheap to retry, and
saves should flow again within seconds of the broker's return).  After that policy's attempts
fail in a row the watcher stops insisting and owes a full pass instead, which finds every change
the kept paths stood for; the full-pass request is itself retried with the same waits until it
gets through.  While failing,
new paths join the kept ones without a call each (no timeout to wait out per path); their number
is bounded, a full pass being owed anyway.  :attr:`HandOff.failing` (kept paths or an owed pass)
is what ``watch``'s health check reports as "broker away".

Bursts of new paths in one app folder are handed off as the folder that holds them
(:mod:`worker.live.burst`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from worker.live.burst import Bursts, Key
from worker.live.debounce import Flush
from worker.retry import HANDOFF_RETRY

log = logging.getLogger("synchro_sync.watcher")

class Backoff(Protocol):
    """A retry policy as the hand-off uses it (:class:`worker.retry.OutagePolicy` is one)."""

    @property
    def attempts(self) -> int: ...

    def delay(self, attempt: int) -> float: ...


class PathDispatcher(Protocol):
    """Where debounced paths go (``worker.live.dispatch`` has the embedded and Celery ones).

    Both calls return once the work is handed over, and raise when it was not (a broker away):
    the hand-off keeps it and tries again.  Neither blocks for more than a few seconds.
    """

    def submit(self, container: str, relpath: str) -> None: ...

    def request_full_pass(self, reason: str) -> None: ...


@dataclass
class WatcherStats:
    """Counters for ``status``, logs and tests."""

    events: int = 0
    submitted: int = 0
    transient_dropped: int = 0
    submit_failures: int = 0
    #: New paths a burst covered by handing off their folder instead.
    burst_absorbed: int = 0
    full_passes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    restarts: int = 0


class HandOff:
    """Submits paths, keeps and retries the ones that fail, and owes full passes.

    :meth:`hand_off` and :meth:`tick` run on one thread (the watcher's); :meth:`owe` may be
    called from any thread and calls ``wake`` so that the owner thread acts on it.
    """

    #: Paths kept for retrying; beyond this a full pass is owed and new ones are dropped.
    retry_max_paths = 100_000
    #: How many handed-off paths are remembered (a transient path that was handed off before
    #: is handed off again: its earlier task may have copied the temporary content; and only
    #: paths not handed off recently count towards a burst).
    recent_max = 50_000

    def __init__(
        self,
        dispatcher: PathDispatcher,
        stats: WatcherStats,
        wake: Callable[[], None],
        policy: Backoff = HANDOFF_RETRY,
    ) -> None:
        self.dispatcher = dispatcher
        self.stats = stats
        self.policy = policy
        self.bursts = Bursts()
        self._wake = wake
        self._lock = threading.Lock()
        self._retry: OrderedDict[Key, None] = OrderedDict()
        self._attempts = 0
        self._retry_at = 0.0
        self._owed: list[str] = []
        self._pass_at = 0.0
        self._pass_attempts = 0
        self._recent: OrderedDict[Key, None] = OrderedDict()

    # --- what the watcher and health ask ------------------------------------------------------

    @property
    def retry_attempts(self) -> int:
        """Failed attempts in a row after which a full pass is owed instead."""
        return self.policy.attempts

    @property
    def failing(self) -> bool:
        """Paths wait for the dispatcher, or a full pass is owed."""
        with self._lock:
            return bool(self._retry or self._owed)

    def idle(self) -> bool:
        return not self.failing and not self.bursts.waiting()

    def kept(self) -> list[Key]:
        with self._lock:
            kept = list(self._retry)
        return kept + self.bursts.waiting()

    def next_time(self) -> float | None:
        """When :meth:`tick` has something to do, or None."""
        with self._lock:
            times = ([self._retry_at] if self._retry else []) + (
                [self._pass_at] if self._owed else []
            )
        burst = self.bursts.next_time()
        if burst is not None:
            times.append(burst)
        return min(times) if times else None

    def owe(self, reason: str) -> None:
        """A full pass is needed (from any thread)."""
        with self._lock:
            if reason not in self._owed:
                self._owed.append(reason)
        self._wake()

    # --- on the owner thread ------------------------------------------------------------------

    def hand_off(self, flushes: list[Flush[Key]], now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        for flush in flushes:
            key = flush.key
            if key not in self._recent:
                if flush.transient:
                    self.stats.transient_dropped += 1
                    continue
                # Deletes never join a burst: each counts against the live delete budget.
                if not flush.gone and self.bursts.absorb(key, t):
                    self.stats.burst_absorbed += 1
                    self._remember(key)
                    continue
            self._give(key)
        self._give_bursts(t)

    def tick(self, now: float) -> None:
        """Retry kept paths, hand off bursting folders and request owed passes when due."""
        if self._retry and now >= self._retry_at:
            self._retry_round()
        self._give_bursts(now)
        if self._owed and now >= self._pass_at:
            self._request_pass()

    def finish(self) -> None:
        """At stop: one more try for whatever is kept or owed."""
        for key in self.bursts.drain():
            self._give(key)
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

    def _give_bursts(self, now: float) -> None:
        for key, first in self.bursts.due(now):
            log.log(logging.INFO if first else logging.DEBUG,
                    "container=%s path=%s burst of new paths: the folder is synced as a whole "
                    "(%d absorbed so far)", key[0], key[1] or "/", self.stats.burst_absorbed)
            self._give(key)

    def _give(self, key: Key) -> None:
        if self._retry:  # failing: keep order, and do not wait out a timeout per path
            self._keep(key)
        else:
            self._submit(key)

    def _submit(self, key: Key) -> bool:
        try:
            self.dispatcher.submit(*key)
        except Exception as exc:
            self.stats.submit_failures += 1
            log.warning("container=%s path=%s not handed off (%s); will retry", *key, exc)
            self._keep(key)
            self._failed(exc)
            return False
        self.stats.submitted += 1
        log.debug("container=%s path=%s handed off", *key)
        self._remember(key)
        return True

    def _remember(self, key: Key) -> None:
        self._recent[key] = None
        self._recent.move_to_end(key)
        if len(self._recent) > self.recent_max:
            self._recent.popitem(last=False)

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
        return self.policy.delay(attempts)

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
        if self._pass_attempts or self._attempts:
            log.warning("broker is back; full pass queued (%s)", reason)
        else:
            log.warning("full pass requested: %s", reason)
        self.stats.full_passes.append(reason)
        self._pass_attempts = 0
        with self._lock:
            self._owed = [r for r in self._owed if r not in reasons]
            if self._attempts >= self.retry_attempts:
                # The pass covers every kept path; new failures start counting afresh.
                self._retry.clear()
                self._attempts = 0
