"""Bursts: many new paths in one app folder at once become syncs of the folder that holds them.

An unpacked release or a branch checkout puts thousands of files in an app folder within a
second or two.  Handed off one by one, each would be a task (or an in-process job) syncing one
file; a full pass does the same work with one listing and its parallel transfers.  So once
:attr:`Bursts.threshold` paths of one container that were not handed off recently are flushed
within :attr:`Bursts.window` seconds, the container is *bursting*: its further new paths are not
handed off each but *absorbed*, and the folder that holds every absorbed path (their deepest
common parent; ``""`` is the whole app folder) is handed off instead, as one path.  The task
that syncs a folder walks it, merged with the index rows, and uploads what the index does not
vouch for on a pool of ``SYNC.transfers`` threads, each file under its lock with the index read
again there, and asks the store for no listing (:mod:`worker.mirror.pathsync`): so each file of
the burst is sent once, whichever sync (of the folder again, or of the path) reaches it first.
The dispatchers coalesce the folder like any path (queued once; synced once more if handed off
again while it runs).

Nothing is lost: a path absorbed at time t is followed by a hand-off of its folder at most
:attr:`Bursts.resend` seconds later, and that sync starts after it was handed off, so it sees
the path as it is after t.  While paths keep coming the folder is handed off again every
``resend`` seconds (a no-op while the previous hand-off still waits in the queue); the burst
ends after :attr:`Bursts.calm` seconds without a new path.  Paths handed off recently (a storm
of writes to a few files) never count: they keep the per-path debounce and its back-off.  Nor
do deletes: each is handed off on its own, so that the live delete budget
(``SYNC.maxDeleteShare``) deletes what it allows one by one instead of withholding a folder's
deletes as one block.

Pure logic with the time passed in, on the watcher's hand-off thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from worker.stores.modules.names import STORE_FILES

Key = tuple[str, str]  # (container, relpath)


@dataclass
class _Burst:
    folder: str
    last: float
    sent: float = float("-inf")
    absorbed: int = 0
    dirty: bool = True


def parent(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def common_folder(a: str, b: str) -> str:
    """The deepest folder that holds both folders (``""``: the app folder itself)."""
    pa, pb = a.split("/") if a else [], b.split("/") if b else []
    same = []
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        same.append(x)
    return "/".join(same)


class Bursts:
    """Which new paths a container's burst absorbs, and which folders to hand off when."""

    #: New paths of one container within ``window`` seconds that make it a burst.
    threshold = 32
    window = 1.0
    #: Seconds between two hand-offs of a bursting folder while paths keep coming.
    resend = 0.25
    #: Seconds without a new path after which a burst ends.
    calm = 1.0

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = {}
        self._active: dict[str, _Burst] = {}
        self.absorbed = 0

    def absorb(self, key: Key, now: float) -> bool:
        """Note a new path (one not handed off recently); True if its container's burst now
        covers it, False if it is to be handed off on its own."""
        container, relpath = key
        if container == STORE_FILES:
            return False
        burst = self._active.get(container)
        if burst is None:
            times = self._seen.get(container)
            if times is None:
                times = self._seen[container] = deque(maxlen=self.threshold)
            times.append(now)
            if len(times) < self.threshold or now - times[0] > self.window:
                return False
            del self._seen[container]
            burst = self._active[container] = _Burst(parent(relpath), now)
        burst.folder = common_folder(burst.folder, parent(relpath))
        burst.last = now
        burst.dirty = True
        burst.absorbed += 1
        self.absorbed += 1
        return True

    def due(self, now: float) -> list[tuple[Key, bool]]:
        """The folders to hand off now, each with whether it is its burst's first hand-off;
        ends the bursts that have been calm long enough."""
        out: list[tuple[Key, bool]] = []
        for container, burst in list(self._active.items()):
            if burst.dirty and now >= burst.sent + self.resend:
                out.append(((container, burst.folder), burst.sent == float("-inf")))
                burst.dirty, burst.sent = False, now
            elif not burst.dirty and now - burst.last >= self.calm:
                del self._active[container]
        if len(self._seen) > 1000:  # containers that never burst: forget the old ones
            self._seen = {c: t for c, t in self._seen.items() if now - t[-1] <= self.window}
        return out

    def next_time(self) -> float | None:
        """When :meth:`due` has something to do, or None."""
        times = [b.sent + self.resend if b.dirty else b.last + self.calm
                 for b in self._active.values()]
        return min(times) if times else None

    def drain(self) -> list[Key]:
        """At stop: every folder with absorbed paths not handed off yet."""
        out = [(c, b.folder) for c, b in self._active.items() if b.dirty]
        self._active.clear()
        return out

    def waiting(self) -> list[Key]:
        """The folders whose absorbed paths wait for their next hand-off."""
        return [(c, b.folder) for c, b in self._active.items() if b.dirty]
