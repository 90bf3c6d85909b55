"""The mirror's context and its full pass.

:class:`MirrorContext` is built once per worker process (``MirrorContext.from_settings``): it
holds the store, the index, the root and the ignore rules, so each task pays no start-up cost.

A full pass (``synchro-sync sync``): every container is a
:class:`~worker.mirror.stream.ContainerStream` (the tree walked in key order, merged with the
index rows and the store's listing, one listing request per 1,000 keys), a few merged at once;
what they yield goes to one pool of ``SYNC.transfers`` threads as it comes
(:mod:`worker.mirror.execute`), then the deletes in batches.  Memory does not grow with the
tree: no list of its files, rows or objects is ever made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from worker.coord.locks import PathLocks
from worker.errors import StoreError, SyncError, UnsafePath
from worker.mirror import apps, execute, localtree, transfer
from worker.mirror.execute import Gate
from worker.mirror.ignore import IgnoreRules
from worker.mirror.index import IndexEntry, MirrorIndex, store_identity
from worker.mirror.results import PassResult, PathResult, Progress
from worker.mirror.stream import ContainerStream
from worker.stores.modules import STORE_FILES, ContainerNotFound, ModuleStore, ObjectInfo

__all__ = ["MirrorContext", "PassResult", "PathResult", "Progress"]

log = logging.getLogger("synchro_sync.mirror")

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
        disk_prefix: str | None = None, record: bool = False,
    ) -> ContainerStream:
        """One container (or the folder ``prefix``, ending in '/') as a stream, its listing
        started (``stream.exists`` says whether the container exists)."""
        stream = ContainerStream(self, container, prefix, guard_empty=guard_empty,
                                 disk_prefix=disk_prefix, record=record)
        stream.open()
        return stream

    def execute(
        self, streams: list[ContainerStream], result: PassResult,
        progress: Progress | None = None, *, gate: Gate | None = None,
        dry_run: bool = False,
    ) -> None:
        """Send what the streams yield, then their deletes (see :mod:`worker.mirror.execute`)."""
        execute.execute(self, streams, result, progress, gate=gate, dry_run=dry_run,
                        ensure=None if dry_run else self._ensure, threads=self.plan_threads)

    def _ensure(self, stream: ContainerStream) -> Callable[[], None] | None:
        """What creates a missing container before its first send (None: it exists)."""
        if stream.exists:
            return None

        def make() -> None:
            try:
                self.store.ensure_container(stream.container)
            except StoreError as exc:
                raise StoreError(f"cannot create the container: {exc}") from exc
            stream.exists = True

        return make

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

        def open_one(name: str) -> ContainerStream | StoreError:
            try:
                return self.plan(name, record=dry_run)
            except StoreError as exc:  # other errors (configuration, SDK missing) end the pass
                return exc

        # Listings start side by side (a first page each).
        with ThreadPoolExecutor(max(1, min(len(wanted), self.plan_threads))) as pool:
            opened = list(pool.map(open_one, wanted))
        streams: list[ContainerStream] = []
        for name, outcome in zip(wanted, opened, strict=True):
            result.containers.append(name)
            if isinstance(outcome, StoreError):
                result.failures.append(f"{name}: {outcome}")
            elif not outcome.exists and self.store.bucket is not None:
                # The one bucket every container lives in is missing: one line for the pass,
                # not one failed upload per file.
                missing = (
                    f"MODULESTORE.bucket {self.store.bucket!r} does not exist in the "
                    f"{self.store.provider} store; create it (the worker never creates the bucket "
                    "it is given); nothing was sent"
                )
                if missing not in result.failures:
                    result.failures.append(missing)
            else:
                streams.append(outcome)

        def gate(stream: ContainerStream) -> str:
            share = stream.delete_share()
            if share <= self.max_delete_share or force:
                return ""
            return (
                f"{stream.container}: would delete {stream.delete_count()} of "
                f"{stream.remote_count} objects ({share:.0%} > SYNC.maxDeleteShare "
                f"{self.max_delete_share:.0%}); nothing deleted, use --force"
            )

        self.execute(streams, result, progress, gate=gate, dry_run=dry_run)
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


def _background(fn: Callable[..., ModuleStore], *args: Any) -> Future[ModuleStore]:
    fut: Future[ModuleStore] = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the store
            fut.set_exception(exc)

    threading.Thread(target=run, name="synchro-open-store", daemon=True).start()
    return fut
