"""Per-path debounce: a quiet period with a cap.

A path is flushed once it has had no event for ``quiet`` seconds, or once ``max_delay`` seconds
have passed since the first event of its current window, whichever comes first.  So an editor's
save (a handful of events within milliseconds) or a burst of writes becomes one flush, and a path
written continuously is still flushed ``max_delay`` seconds after its first write.

A path that is written again within ``max_delay`` of its last flush is *busy* and backs off:
each such window in a row multiplies its cap and its quiet period by ``backoff`` (the cap up to
``max_backoff`` x ``max_delay``, the quiet period up to ``max_delay``).  So a storm of writes to
a file costs a handful of uploads (after 1 s, then 2 s, then 4 s...), not one per ``max_delay``,
while an isolated save keeps the plain quiet period.  A pause longer than ``max_delay`` after a
flush ends the streak.

The quiet period adapts to each path's rhythm: a path whose writes keep coming every 50 ms
(a build writing, a log, a storm) has not gone quiet after 100 ms without one, so its quiet
period stretches to ``adapt`` times its usual gap between writes (never beyond ``max_delay``).
Events closer together than ``burst`` count as one write (an editor's save is a few events
within milliseconds), so a single save keeps the plain quiet period and its latency.  The rhythm
is carried to the path's next window only when that opens within ``max_delay`` of the last flush.

The logic is pure: time comes from an injectable clock, so tests drive it with a scripted event
source.  Only the path's identity is kept (not what happened to it): whoever receives a flush
syncs the path's state as it is when that work runs.  One thing about the window's history is
kept, because it changes the answer: a path that was *created* in the window and is gone again
at its end (an editor's temporary file renamed over its target) is flushed as ``transient``,
meaning the store never had a reason to hear of it.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

Clock = Callable[[], float]


class Change(Enum):
    """What an event says about a path, as far as debouncing cares."""

    #: The path did not exist just before (a create; not a rename onto it, which may overwrite).
    CREATED = "created"
    #: The path's content or existence may have changed.
    CHANGED = "changed"
    #: The path no longer exists (deleted, or renamed away).
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Flush(Generic[K]):
    """A path whose window closed: hand it off, unless ``transient``."""

    key: K
    #: Created and gone again within one window: nothing the store could have seen.
    transient: bool = False
    #: Events the window absorbed.
    events: int = 1
    #: The window's last event said the path is gone (a delete, a move away).
    gone: bool = False


class _Window:
    __slots__ = ("first", "last", "born", "gone", "events", "serial", "gap", "streak")

    def __init__(self, now: float, change: Change, serial: int, gap: float, streak: int) -> None:
        self.first = now
        self.last = now
        self.born = change is Change.CREATED
        self.gone = change is Change.GONE
        self.events = 1
        self.serial = serial
        #: Smoothed gap between this path's writes; 0.0 until a second write is seen.
        self.gap = gap
        #: Windows in a row that opened within ``max_delay`` of the previous flush.
        self.streak = streak


#: Weight of the newest gap in the smoothed gap, when it is longer / shorter than that.
GAP_RISE = 0.5
GAP_FALL = 0.1


class Debouncer(Generic[K]):
    """Windows of events per key; :meth:`due` returns the keys whose window has closed.

    Not thread-safe: the caller holds a lock around every call.  Cost: O(log n) per window for
    the deadline heap, O(1) per further event in an open window.
    """

    def __init__(
        self,
        quiet: float,
        max_delay: float,
        clock: Clock = time.monotonic,
        *,
        adapt: float = 4.0,
        burst: float = 0.005,
        backoff: float = 2.0,
        max_backoff: float = 8.0,
        memory: int = 10_000,
    ) -> None:
        if quiet < 0 or max_delay <= 0 or adapt < 0 or burst < 0:
            raise ValueError("quiet, adapt and burst must be >= 0 and max_delay > 0")
        if backoff < 1 or max_backoff < 1:
            raise ValueError("backoff and max_backoff must be >= 1")
        self.quiet = quiet
        self.max_delay = max_delay
        self.clock = clock
        # A quiet period of 0 asks for no debounce at all: then nothing adapts either.
        self.adapt = adapt if quiet > 0 else 0.0
        self.backoff = backoff if quiet > 0 else 1.0
        self.longest_cap = max_delay * max_backoff
        self.burst = burst
        self.memory = memory
        self._windows: dict[K, _Window] = {}
        # Rhythm of recently flushed paths: key -> (flushed at, smoothed gap, streak).
        self._rhythm: OrderedDict[K, tuple[float, float, int]] = OrderedDict()
        # (deadline, serial, key): a lower bound of when the window can close.  Entries are
        # lazily re-pushed with the real deadline when popped early, and dropped when stale.
        self._heap: list[tuple[float, int, K]] = []
        self._serials = itertools.count()

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, key: object) -> bool:
        return key in self._windows

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._windows))

    def record(self, key: K, change: Change = Change.CHANGED, now: float | None = None) -> None:
        """Note an event on ``key``; opens a window if none is open."""
        t = self.clock() if now is None else now
        win = self._windows.get(key)
        if win is None:
            serial = next(self._serials)
            gap, streak = 0.0, 0
            rhythm = self._rhythm.pop(key, None)
            if rhythm is not None and t - rhythm[0] <= self.max_delay:
                gap, streak = rhythm[1], rhythm[2] + 1
            self._windows[key] = _Window(t, change, serial, gap, streak)
            # A lower bound: the quiet period only ever stretches.
            heapq.heappush(self._heap, (t + min(self.quiet, self.max_delay), serial, key))
            return
        gap = t - win.last
        if gap > self.burst:
            # Rises fast and falls slowly: it tracks the longer pauses of an irregular writer,
            # which are the ones that would otherwise end its window early.
            weight = GAP_RISE if gap > win.gap else GAP_FALL
            win.gap = gap if win.gap == 0.0 else win.gap + weight * (gap - win.gap)
        win.last = max(win.last, t)
        win.events += 1
        win.gone = change is Change.GONE

    def _quiet(self, win: _Window) -> float:
        quiet = self.quiet * self.backoff**win.streak
        return min(max(quiet, self.adapt * win.gap), self.max_delay)

    def _cap(self, win: _Window) -> float:
        return min(self.max_delay * self.backoff**win.streak, self.longest_cap)

    def _deadline(self, win: _Window) -> float:
        return min(win.last + self._quiet(win), win.first + self._cap(win))

    def _close(self, key: K, win: _Window, now: float) -> Flush[K]:
        del self._windows[key]
        self._rhythm[key] = (now, win.gap, min(win.streak, 64))
        if len(self._rhythm) > self.memory:
            self._rhythm.popitem(last=False)
        return Flush(key, win.born and win.gone, win.events, win.gone)

    def next_deadline(self) -> float | None:
        """The earliest time a window may close (a lower bound), or None if none is open."""
        while self._heap:
            deadline, serial, key = self._heap[0]
            win = self._windows.get(key)
            if win is None or win.serial != serial:
                heapq.heappop(self._heap)
                continue
            return deadline
        return None

    def due(self, now: float | None = None) -> list[Flush[K]]:
        """Close and return every window whose quiet period or cap has passed, oldest first."""
        t = self.clock() if now is None else now
        out: list[Flush[K]] = []
        while self._heap and self._heap[0][0] <= t:
            _, serial, key = heapq.heappop(self._heap)
            win = self._windows.get(key)
            if win is None or win.serial != serial:
                continue
            deadline = self._deadline(win)
            if deadline <= t:
                out.append(self._close(key, win, t))
            else:
                heapq.heappush(self._heap, (deadline, serial, key))
        return out

    def drain(self) -> list[Flush[K]]:
        """Close every open window now (an orderly stop), oldest first."""
        wins = sorted(self._windows.items(), key=lambda kv: kv[1].first)
        self._windows.clear()
        self._heap.clear()
        return [Flush(k, w.born and w.gone, w.events, w.gone) for k, w in wins]
