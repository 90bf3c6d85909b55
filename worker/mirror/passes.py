"""Executing mirror plans against a module store: the full pass, and the shared context.

:class:`MirrorContext` is built once per worker process (``MirrorContext.from_settings``): it
holds the store, the index, the root and the ignore rules, so each task pays no start-up cost.

A full pass (``synchro-sync sync``): for every container, scan the tree and list the store once
(one request per 1,000 keys), plan (:func:`worker.mirror.plan.plan_container`), then run every
container's uploads and copies on one pool of ``SYNC.transfers`` threads, then the deletes in
batches.  Index rows are written in batches from the calling thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.coord.locks import PathLocks
from worker.errors import StoreError, SyncError, UnsafePath
from worker.mirror import apps, localtree, safeopen, transfer
from worker.mirror.ignore import IgnoreRules
from worker.mirror.index import IndexEntry, MirrorIndex, store_identity
from worker.mirror.plan import ContainerPlan, plan_container
from worker.mirror.results import PassResult, PathResult, Progress
from worker.stores.modules import STORE_FILES, ContainerNotFound, ModuleStore, ObjectInfo

__all__ = ["MirrorContext", "PassResult", "PathResult", "Progress"]

log = logging.getLogger("synchro_sync.mirror")

#: Index rows are committed in batches of this size during a pass.
INDEX_BATCH = 1000


@dataclass
class _Work:
    """One container's plan being executed."""

    plan: ContainerPlan
    rows: dict[str, IndexEntry] = field(default_factory=dict)
    allow_deletes: bool = True


class MirrorContext:
    """Store, index, root and ignore rules of one worker process (see the module docstring)."""

    #: Containers planned at once (each: a tree scan and a listing).
    plan_threads = 8

    def __init__(
        self,
        store: ModuleStore | Future[ModuleStore],
        index: MirrorIndex,
        root: Path,
        rules: IgnoreRules,
        locks: PathLocks,
        *,
        transfers: int = 16,
        max_delete_share: float = 0.5,
        delete_window: float = 600.0,
        apps_only: bool = False,
    ) -> None:
        self._store = store
        self.index = index
        self.root = root
        self.rules = rules
        self.locks = locks
        self.transfers = transfers
        self.max_delete_share = max_delete_share
        self.delete_window = delete_window
        self.apps_only = apps_only
        transfer.return_big_buffers_to_the_os()

    @classmethod
    def from_settings(cls, settings: Any, store: ModuleStore | None = None) -> MirrorContext:
        """Open the configured store and the index; refuse a store that is the source itself."""
        from worker.stores.modules import open_module_store

        root = Path(settings.APP_ROOT_PATH).resolve()
        if settings.MODULESTORE_SERVICE == "FileModuleStore":
            dest = Path(settings.module_store.directory).resolve()
            if dest == root or root in dest.parents or dest in root.parents:
                from worker.errors import ConfigError

                raise ConfigError(
                    "MODULESTORE.directory",
                    settings.origin("MODULESTORE", "directory"),
                    f"{dest} overlaps APP_ROOT_PATH {root}; a folder cannot mirror onto itself",
                )
        state = Path(settings.STATE_DIR)
        index = MirrorIndex(state, store_identity(settings))
        return cls(
            # The store (an SDK import and client set-up, a few hundred ms) is opened in the
            # background while the first pass scans the tree and reads the index.
            store or _background(open_module_store, settings),
            index,
            root,
            IgnoreRules(root, settings.SYNC.ignore),
            PathLocks(state / "locks"),
            transfers=settings.SYNC.transfers,
            max_delete_share=settings.SYNC.maxDeleteShare,
            delete_window=settings.SYNC.deleteWindow,
            apps_only=settings.SYNC.appsOnly,
        )

    @property
    def store(self) -> ModuleStore:
        if isinstance(self._store, Future):
            self._store = self._store.result()
        return self._store

    def close(self) -> None:
        try:
            if isinstance(self._store, Future):
                try:
                    self._store = self._store.result()  # let the background open finish
                except Exception:
                    return  # it failed: nothing to close
            self._store.close()
        finally:
            self.index.close()

    def __enter__(self) -> MirrorContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- planning --------------------------------------------------------------------------

    def local_containers(self) -> list[str]:
        if not self.root.is_dir():
            raise SyncError(
                f"the module directory {self.root} (APP_ROOT_PATH) does not exist; nothing was "
                f"deleted. Create it with one folder per app (mkdir -p {self.root}/myapp) or "
                "set APP_ROOT_PATH (SYNCHRO__APP_ROOT_PATH or config.json) to your apps' folder"
            )
        return localtree.containers(self.root, self.rules)

    def listing(self, container: str, prefix: str = "") -> dict[str, ObjectInfo] | None:
        """The store's objects (one listing); None when the container does not exist."""
        try:
            return {info.key: info for info in self.store.list(container, prefix)}
        except ContainerNotFound:
            return None

    def plan(
        self, container: str, prefix: str = "", *, guard_empty: bool = True,
        disk_prefix: str | None = None,
    ) -> tuple[ContainerPlan, bool, list[str]]:
        """Plan one container (or the folder ``prefix``, ending in '/').

        Returns the plan, whether the container exists in the store, and warnings.
        """
        folder = localtree.folder_of(self.root, container)
        source = localtree.folder_id(folder)
        scan = localtree.scan(self.root, container, self.rules, prefix, disk_prefix)
        if source is None or localtree.folder_id(folder) != source:
            scan.unsure.add("")  # the app folder (or the root) moved away during the scan
        index = self.index.load(container, prefix)
        remote = self.listing(container, prefix)
        exists = remote is not None
        remote = remote or {}
        local_keys = {f.key for f in scan.files}
        # Objects that are not in the tree but are ignored there, lie where the scan could not
        # see, or that ``pull`` could not bring here (held), are never deleted.
        held = self.index.held(container, prefix)
        kept = [k for k in held if k in remote and k not in local_keys]
        for key in [k for k in remote if k not in local_keys]:
            if key in held or self.rules.ignored_path(container, key) or scan.is_unsure(key):
                del remote[key]
        if exists and len(kept) < len(held):
            self.index.release(container, [k for k in held if k not in kept])
        if scan.unsure:
            index = {k: v for k, v in index.items() if k in local_keys or not scan.is_unsure(k)}
        can_copy = self.store.supports_server_side_copy
        now = time.time_ns()
        plan = plan_container(container, scan.files, index, remote, can_copy=can_copy, now_ns=now)
        if plan.to_hash:
            where = {f.key: f.relpath for f in scan.files}
            hashes = self._hash(container, [where[k] for k in plan.to_hash])
            hashes = {localtree.nfc(k): v for k, v in hashes.items()}
            plan = plan_container(
                container, scan.files, index, remote, hashes, can_copy=can_copy, now_ns=now
            )
            # A file that vanished while hashed is left for the next pass.
            missing = set(plan.to_hash)
            plan.uploads = [u for u in plan.uploads if u.file.key not in missing]
            plan.to_hash = []
        if plan.empty_source and not guard_empty:
            plan.deletes = sorted(remote)
            plan.empty_source = False
        plan.source = source
        warnings = list(scan.problems)
        if scan.unsure:
            warnings.append(_unsure_warning(container, prefix, scan.unsure))
        if kept:
            warnings.append(
                f"{container}/{prefix}: kept {len(kept)} object(s) in the store that pull could "
                f"not bring into this folder (e.g. {kept[0]!r}: {held[kept[0]]}); never deleted"
            )
        if plan.empty_source and container != STORE_FILES:
            warnings.append(
                f"{container}/{prefix}: the local folder is empty; deleted nothing in the store"
            )
        return plan, exists, warnings

    def _hash(self, container: str, keys: list[str]) -> dict[str, str]:
        """MD5 of each file (a new host's first pass hashes the whole tree), in a few slices
        so that 10,000 small files are not 10,000 futures."""

        def some(chunk: list[str]) -> dict[str, str]:
            out = {}
            for key in chunk:
                # A file that cannot be read is left out of the plan; the upload reports why.
                with contextlib.suppress(OSError, UnsafePath):
                    out[key] = safeopen.md5(self.root, f"{container}/{key}")
            return out

        threads = min(self.transfers, 8)
        step = max(1, min(256, -(-len(keys) // threads)))
        hashed: dict[str, str] = {}
        with ThreadPoolExecutor(threads) as pool:
            for part in pool.map(some, [keys[i : i + step] for i in range(0, len(keys), step)]):
                hashed.update(part)
        return hashed

    # --- the full pass ---------------------------------------------------------------------

    def full_pass(
        self,
        containers: list[str] | None = None,
        dry_run: bool = False,
        force: bool = False,
        progress: Progress | None = None,
    ) -> PassResult:
        """One full mirror pass (``synchro-sync sync``); see the module docstring."""
        started = time.monotonic()
        result = PassResult()
        self.rules.reload()
        local = self.local_containers()
        names = containers if containers else local
        works: list[_Work] = []
        wanted: list[str] = []
        for name in (localtree.nfc(n) for n in names):
            if name not in local:
                result.failures.append(
                    f"{name}: no such app folder in {self.root} (nothing was deleted)"
                )
            elif name == self.store.config_root:
                result.failures.append(
                    f"{name}: this app folder has the name of MODULESTORE.configRoot, the "
                    "container of the server's store files; not mirrored"
                )
            elif self._serves(name, result):
                wanted.append(name)
        self._say_not_served(result)
        if not containers:
            self._add_store_files(wanted, result)

        def plan_one(name: str) -> tuple[ContainerPlan, bool, list[str]] | StoreError:
            try:
                return self.plan(name)
            except StoreError as exc:  # other errors (configuration, SDK missing) end the pass
                return exc

        # Containers are planned side by side: one's listing overlaps another's scan.
        with ThreadPoolExecutor(max(1, min(len(wanted), self.plan_threads))) as pool:
            planned = list(pool.map(plan_one, wanted))
        for name, outcome in zip(wanted, planned, strict=True):
            result.containers.append(name)
            if isinstance(outcome, StoreError):
                result.failures.append(f"{name}: {outcome}")
                continue
            plan, exists, warnings = outcome
            result.warnings += warnings
            result.plans.append(plan)
            work = _Work(plan, rows=dict(plan.refresh))
            share = plan.delete_share()
            if plan.deletes and share > self.max_delete_share and not force:
                work.allow_deletes = False
                result.withheld.append(
                    f"{name}: would delete {len(plan.deletes)} of {plan.remote_count} objects "
                    f"({share:.0%} > SYNC.maxDeleteShare {self.max_delete_share:.0%}); "
                    "nothing deleted, use --force"
                )
            if not exists and self.store.bucket is not None:
                # The one bucket every container lives in is missing: one line for the pass,
                # not one failed upload per file.
                missing = (
                    f"MODULESTORE.bucket {self.store.bucket!r} does not exist in the "
                    f"{self.store.provider} store; create it (the worker never creates the bucket "
                    "it is given); nothing was sent"
                )
                if missing not in result.failures:
                    result.failures.append(missing)
                continue
            if not exists and (plan.uploads or plan.copies) and not dry_run:
                try:
                    self.store.ensure_container(name)
                except StoreError as exc:
                    result.failures.append(f"{name}: cannot create the container: {exc}")
                    continue
            works.append(work)
            result.of(name).unchanged = plan.unchanged
        result.unchanged = sum(w.plan.unchanged for w in works)
        if dry_run:
            result.seconds = time.monotonic() - started
            return result
        self.execute(works, result, progress)
        result.seconds = time.monotonic() - started
        return result

    def _serves(self, container: str, result: PassResult) -> bool:
        """Whether to mirror an app folder; notes the folders a server will not serve."""
        why = apps.not_served(self.root, container)
        if not why:
            return True
        result.not_served[container] = why
        return not self.apps_only

    def _say_not_served(self, result: PassResult) -> None:
        """One line naming the folders a Synchro server will not serve, and why."""
        if not result.not_served:
            return
        names = sorted(result.not_served)
        shown = "; ".join(f"{n} ({result.not_served[n]})" for n in names[:10])
        more = f"; and {len(names) - 10} more" if len(names) > 10 else ""
        done = "not mirrored (SYNC.appsOnly)" if self.apps_only else (
            "mirrored all the same (SYNC.appsOnly leaves them out)"
        )
        result.warnings.append(
            f"{len(names)} folder(s) a Synchro server will not serve: {shown}{more}; {done}"
        )

    def _add_store_files(self, wanted: list[str], result: PassResult) -> None:
        """The server's store files (apps.json) join the pass where the store has a place for
        them; otherwise one warning names them."""
        if self.store.holds_store_files:
            wanted.append(STORE_FILES)
            return
        names = localtree.store_file_names(self.root)
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            result.warnings.append(
                f"{len(names)} store file(s) at the root of {self.root} ({shown}) are not "
                "mirrored: set MODULESTORE.configRoot to the container the server reads them from"
            )

    def execute(
        self, works: list[_Work], result: PassResult, progress: Progress | None = None
    ) -> None:
        """Uploads and copies of every plan on one pool, then deletes, then the index."""
        if progress is not None:
            files = sum(len(w.plan.uploads) + len(w.plan.copies) for w in works)
            progress.planned(files, sum(w.plan.upload_bytes for w in works))
        jobs: list[tuple[_Work, Callable[[], tuple[str, IndexEntry | None, int]]]] = []
        for w in works:
            c = w.plan.container
            for cp in w.plan.copies:
                jobs.append((w, _bind(transfer.copy, self, c, cp.src, cp.file, cp.md5)))
            for up in w.plan.uploads:
                jobs.append((w, _bind(transfer.upload, self, c, up)))
        self._run(jobs, result, progress)
        # Deletes come after every upload; containers' delete batches go out side by side.
        with ThreadPoolExecutor(max(1, min(len(works), 8))) as pool:
            for w, (deleted, failure) in zip(works, pool.map(self._finish, works), strict=True):
                result.deleted += deleted
                result.of(w.plan.container).deleted += deleted
                if failure:
                    result.failures.append(failure)

    def _run(
        self,
        jobs: list[tuple[_Work, Callable[[], tuple[str, IndexEntry | None, int]]]],
        result: PassResult,
        progress: Progress | None,
    ) -> None:
        if not jobs:
            return
        # Results come back through a queue filled by done-callbacks: the calling thread
        # sleeps on one lock instead of re-arming waiters on every pending future.
        results: queue.SimpleQueue[tuple[Future[Any], _Work]] = queue.SimpleQueue()
        in_flight = 0
        # Keep a bounded number of jobs in flight so memory does not grow with the tree.
        limit = self.transfers * 4
        with ThreadPoolExecutor(self.transfers, thread_name_prefix="synchro-put") as pool:
            for work, fn in jobs:
                while in_flight >= limit:
                    self._collect(*results.get(), result, progress)
                    in_flight -= 1
                fut = pool.submit(fn)
                fut.add_done_callback(functools.partial(_done, results, work))
                in_flight += 1
            while in_flight:
                self._collect(*results.get(), result, progress)
                in_flight -= 1

    def _collect(
        self,
        fut: Future[tuple[str, IndexEntry | None, int]],
        work: _Work,
        result: PassResult,
        progress: Progress | None,
    ) -> None:
        c = work.plan.container
        try:
            key, row, nbytes = fut.result()
        except (SyncError, OSError) as exc:
            result.failures.append(f"{c}: {exc}")
            work.allow_deletes = False  # never delete after a failed upload (a rename's source)
            return
        if row is None:
            result.warnings.append(f"{c}/{key}: gone before it was sent; left to the next pass")
        else:
            work.rows[key] = row
            if len(work.rows) >= INDEX_BATCH:
                self.index.put_many(c, work.rows)
                work.rows = {}
            mine = result.of(c)
            if nbytes >= 0:
                result.uploaded += 1
                result.bytes += nbytes
                mine.uploaded += 1
                mine.bytes += nbytes
            else:
                result.copied += 1
                mine.copied += 1
        if progress is not None:
            progress.advance(1, max(nbytes, 0))

    def _finish(self, work: _Work) -> tuple[int, str | None]:
        """Write the container's index rows, then its deletes: (deleted, failure)."""
        plan = work.plan
        c = plan.container
        self.index.put_many(c, work.rows)
        work.rows = {}
        deleted, failure = 0, None
        if plan.deletes and work.allow_deletes and (
            plan.source is None
            or localtree.folder_id(localtree.folder_of(self.root, c)) != plan.source
        ):
            # Checked again just before deleting: the root renamed away or remounted after the
            # scan must not read as "every file was deleted".
            return 0, (
                f"{c}: the folder {localtree.folder_of(self.root, c)} is gone or was replaced "
                "during the pass; "
                f"deleted nothing ({len(plan.deletes)} deletes left for the next pass)"
            )
        if plan.deletes and work.allow_deletes:
            try:
                self.store.delete(c, plan.deletes)
            except SyncError as exc:
                failure = f"{c}: delete failed: {exc}"
            else:
                deleted = len(plan.deletes)
                self.index.forget(c, plan.deletes)
        gone = set(plan.deletes)
        self.index.forget(c, [k for k in plan.forget if k not in gone])
        return deleted, failure

    def upload_file(
        self, container: str, key: str, md5: str | None = None,
        planned: localtree.LocalFile | None = None, relpath: str | None = None,
    ) -> tuple[IndexEntry, int] | None:
        """Upload the file as it is now (see :func:`worker.mirror.transfer.upload_file`)."""
        return transfer.upload_file(self, container, key, md5, planned, relpath)

    def withhold_live_delete(self, container: str, n: int) -> str:
        """Why ``n`` live deletes in ``container`` must wait for a full pass ("" if they may
        go ahead; then they are counted against the window)."""
        ok, recent, base = self.index.claim_live_delete(
            container, n, self.max_delete_share, self.delete_window
        )
        if ok:
            return ""
        return (
            f"{container}: {recent} object(s) deleted live in the last {self.delete_window:g} s; "
            f"{n} more would make {(recent + n) / base:.0%} of {base} "
            f"(> SYNC.maxDeleteShare {self.max_delete_share:.0%}); withheld: "
            "the next full pass re-checks, `synchro-sync sync --force` deletes them"
        )

    def check_path(self, container: str, relpath: str) -> str:
        """``relpath`` tidied (as on disk), refusing containers and paths that escape."""
        if container == STORE_FILES:
            name = localtree.tidy(relpath)
            if not name or "/" in name:
                raise UnsafePath(f"{relpath!r} is not a store file (a file at the root)")
            return name
        if not container or "/" in container or container in (".", ".."):
            raise UnsafePath(f"{container!r} is not an app folder name")
        return localtree.tidy(relpath)

    def sync_path(self, container: str, relpath: str) -> PathResult:
        """Sync one path's state as it is now (see :mod:`worker.mirror.pathsync`)."""
        from worker.mirror.pathsync import sync_path

        return sync_path(self, container, relpath)

    def pull(self, containers: list[str] | None = None,
             progress: Progress | None = None) -> PassResult:
        """Fill the local folder from the store (see :mod:`worker.mirror.pull`)."""
        from worker.mirror.pull import pull

        return pull(self, containers, progress)


def _unsure_warning(container: str, prefix: str, unsure: set[str]) -> str:
    where = sorted(unsure)
    first = ", ".join(f"{container}/{u}" for u in where[:3])
    more = f" and {len(where) - 3} more" if len(where) > 3 else ""
    return (
        f"{container}/{prefix}: {len(where)} path(s) vanished or could not be read during the "
        f"scan ({first}{more}); nothing under them was deleted"
    )


def _background(fn: Callable[..., ModuleStore], *args: Any) -> Future[ModuleStore]:
    fut: Future[ModuleStore] = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the store
            fut.set_exception(exc)

    threading.Thread(target=run, name="synchro-open-store", daemon=True).start()
    return fut


def _done(results: queue.SimpleQueue[tuple[Future[Any], _Work]], work: _Work,
          fut: Future[Any]) -> None:
    results.put((fut, work))


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)
