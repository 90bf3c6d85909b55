"""The one error family of synchro-sync.

Everything the project raises on purpose derives from :class:`SyncError`.  Provider modules
translate their SDK's exceptions into these types; nothing outside a provider module ever sees
an SDK exception.  Whether an operation is retried is decided by type alone
(:class:`TransientStoreError` is retried, everything else fails at once).
"""

from __future__ import annotations

import signal

#: The exit code of a command stopped by Ctrl-C (SIGINT): 128 + the signal, as a shell says it.
EXIT_INTERRUPTED = 128 + signal.SIGINT


class SyncError(Exception):
    """Base of every error synchro-sync raises on purpose."""

    exit_code = 1


class ConfigError(SyncError, ValueError):
    """A bad setting: names the setting, where it came from and what is allowed."""

    exit_code = 2

    def __init__(self, setting: str, source: str, problem: str) -> None:
        self.setting = setting
        self.source = source
        self.problem = problem
        super().__init__(f"{setting} ({source}): {problem}")


class UsageError(SyncError):
    """Bad command-line usage that click itself cannot catch (e.g. a malformed store URL)."""

    exit_code = 2


class StoreError(SyncError):
    """A store operation failed; carries the store, container and key involved."""

    def __init__(
        self,
        message: str,
        *,
        store: str = "",
        container: str | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.store = store
        self.container = container
        self.key = key
        super().__init__(message)

    def __str__(self) -> str:
        where = [p for p in (self.store, self.container, self.key) if p]
        return f"{' / '.join(where)}: {self.message}" if where else self.message


class NotFound(StoreError, KeyError):
    """The container, object or session does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return StoreError.__str__(self)


class AccessDenied(StoreError):
    """Credentials were refused or lack a permission."""


class AlreadyExists(StoreError):
    """The thing to create exists already (or a restore conflict under --on-conflict fail)."""


class InvalidName(StoreError, ValueError):
    """A container or object name the store cannot hold; never silently changed."""


class TransientStoreError(StoreError):
    """Throttling, 5xx, timeouts, connection resets: worth retrying."""


class IntegrityError(StoreError):
    """A checksum or count did not match after a copy, or a file is corrupt."""


class StillChanging(IntegrityError):
    """A local file changed during every attempt to upload it: it is being written.  A full
    pass reports it; the live path leaves it to the event the file's next write makes."""


class CorruptFile(IntegrityError):
    """A file we must read (sessions.json, a snapshot) is unreadable; it is left as it was."""


class UnsafePath(SyncError, ValueError):
    """A path escapes the module directory (``..`` or a symlink out of the root)."""


class MissingDependency(SyncError, ImportError):
    """An optional SDK is not installed; names the extra to install."""

    exit_code = 2
