"""Sending what container streams yield: on one pool of ``SYNC.transfers`` threads with a
bounded number in flight, then each container's deletes and dropped index rows.

Each :class:`~worker.mirror.stream.ContainerStream` is merged on a thread of its own (a few at
once: one's listing overlaps another's walk); what it yields is submitted to the shared pool,
and the merge waits while ``4 x transfers`` jobs are in flight, so memory does not grow with the
tree.  Files to hash first (:class:`~worker.mirror.plan.Check`) are hashed on the merging
thread when small (``INLINE_HASH``) and go to the pool in batches of 8 when large; small files
into a local folder are sent on the merging thread too (``INLINE_SEND``).  Results are counted
by the pool's threads as jobs end.
Deletes come after every upload of the pass (a rename's copy must exist before its source goes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.errors import StoreError, SyncError, UnsafePath
from worker.mirror import localtree, safeopen, transfer
from worker.mirror.index import IndexEntry
from worker.mirror.plan import Action, Check, Copy, Keep, Upload, judge
from worker.mirror.results import Failure, PassResult, Progress, failure_of
from worker.mirror.stream import ContainerStream

if TYPE_CHECKING:
    from worker.mirror.context import MirrorContext

#: Files hashed by one job (a new host's 10,000 are 1,250 jobs, not 10,000; a job sends what
#: differs itself, so a small batch keeps those sends side by side).
CHECK_BATCH = 8
#: A file to hash first up to this size is hashed on the thread that merges its container, and
#: only what must be sent goes to the pool: 10,000 small files hashed by 16 threads at once spend
#: more on handing the GIL over at every ``open`` and ``read`` (a million futex calls, a second of
#: system time) than on hashing.  Larger files are hashed on the pool (``hashlib`` lets go of the
#: GIL while it hashes them).
INLINE_HASH = 256 * 1024
#: Up to this size a file is also *sent* on the merging thread into a local folder
#: (``ModuleStore.writes_locally``): such a write is a few system calls with nothing to wait on,
#: and 16 threads handing the GIL over at each spent 2.5x the time of one.
INLINE_SEND = INLINE_HASH
#: Why a container's deletes must wait (the reason of the pass's ``withheld``), or "".
Gate = Callable[[ContainerStream], str]


@dataclass(frozen=True, slots=True)
class Sent:
    """One job's outcome for one key: ``kind`` is uploaded, copied, unchanged or gone."""

    key: str
    kind: str
    row: IndexEntry | None = None
    nbytes: int = 0


class Dispatcher:
    """The pool, the bound on jobs in flight, and the bookkeeping of what they did."""

    def __init__(
        self, ctx: MirrorContext, result: PassResult, progress: Progress | None = None,
        dry_run: bool = False,
    ) -> None:
        self.ctx = ctx
        self.result = result
        self.progress = progress
        self.dry_run = dry_run
        self.pool = ThreadPoolExecutor(ctx.transfers, thread_name_prefix="synchro-put")
        self._slots = threading.BoundedSemaphore(ctx.transfers * 4)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        #: Set by :meth:`stop`: nothing more is sent.
        self.stopped = threading.Event()
        # The bar learns the total once every container is planned; what finished before is
        # added then.
        self._planned: tuple[int, int] | None = None
        self._sent = [0, 0]
        self._done = [0, 0]

    # --- feeding -------------------------------------------------------------------------

    def run(self, stream: ContainerStream, ensure: Callable[[], None] | None = None) -> None:
        """Consume the stream's actions into the pool; ``ensure`` (create the container) runs
        before the first send."""
        checks: list[Check] = []
        local = self.ctx.store.writes_locally
        for action in stream.actions():
            if self.stopped.is_set():
                return
            if ensure is not None:
                ensure()
                ensure = None
            with self._lock:
                self._sent[0] += 1
                self._sent[1] += action.file.size
            if isinstance(action, Check) and action.file.size <= INLINE_HASH:
                judged = self._hashed(stream, action)
                if isinstance(judged, Keep):
                    self._record(stream, [Sent(judged.key, "unchanged", judged.row)])
                elif judged is not None:
                    self._send(stream, judged, local)
            elif isinstance(action, Check):
                checks.append(action)
                if len(checks) >= CHECK_BATCH:
                    self._submit(stream, _bind_checks(self, stream, checks))
                    checks = []
            else:
                self._send(stream, action, local)
        if checks:
            self._submit(stream, _bind_checks(self, stream, checks))

    def _send(self, stream: ContainerStream, action: Upload | Copy, local: bool) -> None:
        """Send on this thread (:data:`INLINE_SEND`) or on the pool."""
        inline = local and action.file.size <= INLINE_SEND
        (self._settle if inline else self._submit)(stream, _bind_send(self, stream, action))

    def _submit(self, stream: ContainerStream, job: Callable[[], list[Sent]]) -> None:
        self._slots.acquire()
        try:
            if self.stopped.is_set():
                self._slots.release()
                return
            fut = self.pool.submit(job)
        except RuntimeError:  # the pool was shut down by stop() meanwhile
            self._slots.release()
            if self.stopped.is_set():
                return
            raise
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda f: self._collect(stream, f))

    def stop(self) -> None:
        """Send nothing more: jobs not started are dropped; those running finish (an upload
        is never visible half done, so none is cut short)."""
        self.stopped.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def planned(self) -> None:
        """Every stream is merged: the progress bar gets its totals."""
        if self.progress is None:
            return
        with self._lock:
            self._planned = (self._sent[0], self._sent[1])
            done = list(self._done)
        self.progress.planned(*self._planned)
        if done[0] or done[1]:
            self.progress.advance(*done)

    def wait(self) -> None:
        """Every job is done (an unexpected error of one is raised here)."""
        self.pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error

    # --- jobs ----------------------------------------------------------------------------

    def send(self, stream: ContainerStream, action: Upload | Copy) -> Sent:
        c = stream.container
        if self.dry_run:
            if stream.plan is not None:
                with self._lock:
                    stream.plan.add(action)
            return Sent(action.file.key, "planned")
        if isinstance(action, Copy):
            key, row, nbytes = transfer.copy(self.ctx, c, action.src, action.file, action.md5)
        else:
            key, row, nbytes = transfer.upload(self.ctx, c, action)
        if row is None:
            return Sent(key, "gone")
        return Sent(key, "copied" if nbytes < 0 else "uploaded", row, max(nbytes, 0))

    def check(self, stream: ContainerStream, checks: list[Check]) -> list[Sent]:
        """Hash each file, then keep it, send it, or copy it (a rename)."""
        out: list[Sent] = []
        for ch in checks:
            action = self._hashed(stream, ch)
            if isinstance(action, Keep):
                out.append(Sent(action.key, "unchanged", action.row))
            elif action is not None:
                out.append(self.send(stream, action))
        return out

    def _hashed(self, stream: ContainerStream, ch: Check) -> Upload | Copy | Keep | None:
        """The file hashed and judged again (None: gone or unreadable since the walk; the
        next pass sees it again)."""
        f = ch.file
        hashed_ns = time.time_ns()
        try:
            md5 = safeopen.md5(self.ctx.root, f"{stream.container}/{f.relpath}")
        except (OSError, UnsafePath):
            return None
        if ch.remote is None:
            action: Action | Keep = stream.renames.resolve(f, md5)
        else:
            action = judge(f, ch.entry, ch.remote, hashed_ns, md5)
        if isinstance(action, Check):  # cannot happen with a hash; upload it
            return Upload(f, md5)
        return action

    def _collect(self, stream: ContainerStream, fut: Future[list[Sent]]) -> None:
        self._slots.release()
        if fut.cancelled():  # dropped by stop()
            return
        self._settle(stream, fut.result)

    def _settle(self, stream: ContainerStream, job: Callable[[], list[Sent]]) -> None:
        """Count what ``job`` did, or its failure (a bug's error is raised by :meth:`wait`)."""
        c = stream.container
        result = self.result
        try:
            outcomes = job()
        except (SyncError, OSError) as exc:
            with self._lock:
                result.failures.append(failure_of(c, exc))
                stream.allow_deletes = False  # never delete after a failed upload (a source)
            return
        except BaseException as exc:  # a bug: the pass ends with it
            with self._lock:
                self._error = self._error or exc
                stream.allow_deletes = False
            return
        self._record(stream, outcomes)

    def _record(self, stream: ContainerStream, outcomes: list[Sent]) -> None:
        """Count what one job (or one file hashed on the merging thread) did."""
        c = stream.container
        result = self.result
        files = nbytes = 0
        with self._lock:
            mine = result.of(c)
            for s in outcomes:
                if s.kind == "gone":
                    result.warnings.append(
                        f"{c}/{s.key}: gone before it was sent; left to the next pass")
                elif s.kind == "unchanged":
                    stream.unchanged += 1
                elif s.kind == "uploaded":
                    result.uploaded += 1
                    result.bytes += s.nbytes
                    mine.uploaded += 1
                    mine.bytes += s.nbytes
                elif s.kind == "copied":
                    result.copied += 1
                    mine.copied += 1
                if s.row is not None:
                    stream.row(s.key, s.row)
                files += 1
                nbytes += s.nbytes
            self._done[0] += files
            self._done[1] += nbytes
            show = self._planned is not None
        if show and self.progress is not None:
            self.progress.advance(files, nbytes)


def _bind_send(d: Dispatcher, stream: ContainerStream, action: Upload | Copy
               ) -> Callable[[], list[Sent]]:
    return lambda: [d.send(stream, action)]


def _bind_checks(d: Dispatcher, stream: ContainerStream, checks: list[Check]
                 ) -> Callable[[], list[Sent]]:
    return lambda: d.check(stream, checks)


def finish(ctx: MirrorContext, stream: ContainerStream, gate: Gate | None = None,
           dry_run: bool = False) -> tuple[int, Failure | None, Failure | None]:
    """Write the container's index rows, then its deletes, then drop the rows of keys gone:
    (deleted, failure, withheld)."""
    c = stream.container
    if dry_run:
        if stream.plan is not None and stream.delete_count():
            for batch in stream.deletes.batches():
                stream.plan.deletes.extend(batch)
        why = gate(stream) if gate is not None and stream.delete_count() else ""
        return 0, None, Failure(c, None, why) if why else None
    stream.flush()
    if "" in stream.scan.unsure:
        return 0, None, None  # the folder was not wholly seen: nothing is known to be gone
    withheld = gate(stream) if gate is not None and stream.delete_count() else ""
    deleted = 0
    if stream.delete_count() and stream.allow_deletes and not withheld:
        folder = localtree.folder_of(ctx.root, c)
        if stream.source is None or localtree.folder_id(folder) != stream.source:
            # Checked again just before deleting: the root renamed away or remounted after the
            # walk must not read as "every file was deleted".
            return 0, Failure(c, None, (
                f"the folder {folder} is gone or was replaced during the pass; deleted "
                f"nothing ({len(stream.deletes)} deletes left for the next pass)"
            )), None
        for batch in stream.deletes.batches():
            try:
                ctx.store.delete(c, batch)
            except SyncError as exc:
                return deleted, Failure(c, None, f"delete failed: {exc}"), None
            deleted += len(batch)
            ctx.index.forget(c, batch)
    for batch in stream.forgets.batches():
        ctx.index.forget(c, batch)
    return deleted, None, Failure(c, None, withheld) if withheld else None


def execute(
    ctx: MirrorContext, streams: list[ContainerStream], result: PassResult,
    progress: Progress | None = None, *, gate: Gate | None = None, dry_run: bool = False,
    ensure: Callable[[ContainerStream], Callable[[], None] | None] | None = None,
    admit: Callable[[ContainerStream], Failure | None] | None = None, threads: int = 1,
    stop: threading.Event | None = None,
) -> None:
    """Merge every stream (``threads`` at once) into one pool, wait, then finish each.

    Each stream is opened (its listing started) on the thread that merges it; ``admit`` may
    then refuse it (a line for the failures, once however many streams say it); ``ensure``
    gives what creates its container before its first send.  An interrupt (Ctrl-C in this
    thread, or ``stop`` set by another) ends the pass early: :attr:`PassResult.interrupted`."""
    dispatcher = Dispatcher(ctx, result, progress, dry_run)
    merged = threading.Event()
    if stop is not None:
        def watch_stop() -> None:
            while not merged.wait(0.1):
                if stop.is_set():
                    dispatcher.stop()
                    return

        threading.Thread(target=watch_stop, name="synchro-pass-stop", daemon=True).start()

    def feed(stream: ContainerStream) -> Failure | None:
        """Merge one stream into the pool; a line for the failures when it cannot be."""
        try:
            if not stream.opened:
                stream.open()  # here, not before: a listing page is held only while merged
            why = admit(stream) if admit is not None else None
            if why:
                return why
            dispatcher.run(stream, ensure(stream) if ensure is not None else None)
        except StoreError as exc:  # a listing page failed: this container, not the pass
            stream.allow_deletes = False
            return failure_of(stream.container, exc)
        return None

    planners = ThreadPoolExecutor(max(1, min(len(streams), threads)))
    try:
        fed = list(planners.map(feed, streams))
        dispatcher.planned()
        dispatcher.wait()  # here too, so that a Ctrl-C while the last jobs run is caught
    except KeyboardInterrupt:  # Ctrl-C: what is in flight finishes, nothing more is sent
        dispatcher.stop()
    finally:
        planners.shutdown(wait=True)  # each merge stops at its next action
        dispatcher.wait()
        merged.set()
    if dispatcher.stopped.is_set():
        result.interrupted = True
        if not dry_run:  # what was sent is remembered: the next pass does not hash it again
            for stream in streams:
                if stream.opened:
                    stream.flush()
        return
    for stream, failed in zip(streams, fed, strict=True):
        if failed is not None:
            if failed not in result.failures:
                result.failures.append(failed)
        else:
            result.warnings += stream.warnings()
            result.of(stream.container).unchanged = stream.unchanged
    result.unchanged = sum(s.unchanged for s, f in zip(streams, fed, strict=True) if f is None)

    # Deletes come after every upload; containers' delete batches go out side by side.
    def end(
        pair: tuple[ContainerStream, Failure | None],
    ) -> tuple[int, Failure | None, Failure | None]:
        stream, failed = pair
        if failed is not None:  # its rows are written, nothing else
            if not dry_run:
                stream.flush()
            return 0, None, None
        return finish(ctx, stream, gate, dry_run)

    with ThreadPoolExecutor(max(1, min(len(streams), 8))) as pool:
        done = list(pool.map(end, zip(streams, fed, strict=True)))
    for stream, failed, (deleted, failure, withheld) in zip(streams, fed, done, strict=True):
        if failed is None:
            result.deleted += deleted
            result.of(stream.container).deleted += deleted
            if failure:
                result.failures.append(failure)
            if withheld:
                result.withheld.append(withheld)
        if stream.plan is not None:
            stream.plan.unchanged = stream.unchanged
            stream.plan.remote_count = stream.remote_count
            stream.plan.empty_source = stream.empty_source
            result.plans.append(stream.plan)
        stream.close()
