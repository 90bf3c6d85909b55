"""The mirror's state in one worker process: the store, the index, the root, the ignore rules
and the path locks, with the limits from the settings.

Built once per process (:meth:`MirrorContext.from_settings`), so each task pays no start-up cost.
It only holds state and answers questions about it; what is done with it are functions that
take it: :func:`worker.mirror.passes.full_pass`, :func:`worker.mirror.pathsync.sync_path`,
:func:`worker.mirror.pull.pull`, :mod:`worker.mirror.transfer`.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from worker.coord.locks import PathLocks
from worker.errors import ConfigError, SyncError, UnsafePath
from worker.mirror import localtree
from worker.mirror.ignore import IgnoreRules
from worker.mirror.index import MirrorIndex, store_identity
from worker.stores.modules import (
    STORE_FILES,
    ContainerNotFound,
    ModuleStore,
    ObjectInfo,
    open_module_store,
)

__all__ = ["MirrorContext"]


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
        return_big_buffers_to_the_os()

    @classmethod
    def from_settings(cls, settings: Any, store: ModuleStore | None = None) -> MirrorContext:
        """Open the configured store and the index; refuse a store that is the source itself."""
        root = Path(settings.APP_ROOT_PATH).resolve()
        if settings.MODULESTORE_SERVICE == "FileModuleStore":
            dest = Path(settings.MODULESTORE.directory).resolve()
            if dest == root or root in dest.parents or dest in root.parents:
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

    def local_containers(self) -> list[str]:
        """The app folders under the root (sorted)."""
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


def _background(fn: Callable[..., ModuleStore], *args: Any) -> Future[ModuleStore]:
    fut: Future[ModuleStore] = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the store
            fut.set_exception(exc)

    threading.Thread(target=run, name="synchro-open-store", daemon=True).start()
    return fut


def return_big_buffers_to_the_os() -> None:
    """Make glibc hand file-sized buffers back to the OS when they are freed.

    glibc raises its mmap threshold each time a large block is freed, after which blocks of a
    few MiB come from per-thread heaps that keep the memory: 16 upload threads reading 7 MiB
    files then hold ~180 MB although only 32 MiB are ever in use.  A fixed threshold (128 KiB,
    glibc's default before it adapts) keeps the pass near 80 MB.  No-op elsewhere.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 128 * 1024)
