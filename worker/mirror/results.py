"""What a mirror pass reports: :class:`PassResult` (full pass, ``pull``), :class:`PathResult`
(``sync_path``) and the :class:`Progress` protocol the CLI's bar implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from worker.errors import StoreError
from worker.mirror.plan import ContainerPlan


class Progress(Protocol):
    """What a pass reports as it goes (the CLI draws a bar from it)."""

    def planned(self, files: int, nbytes: int) -> None: ...
    def advance(self, files: int, nbytes: int) -> None: ...


@dataclass(frozen=True)
class Failure:
    """Work that failed (or was held back): where, and why.  ``container`` is None for what
    concerns the whole pass; ``key`` is None for what concerns a whole container."""

    container: str | None
    key: str | None
    error: str

    def __str__(self) -> str:
        if self.container is None:
            return self.error
        where = f"{self.container}/{self.key}" if self.key else self.container
        return f"{where}: {self.error}"

    def concerns(self, container: str) -> bool:
        return self.container == container


def failure_of(container: str, exc: BaseException) -> Failure:
    """A store's error names its key (the store's own words kept, its key not repeated);
    anything else says it all."""
    if isinstance(exc, StoreError):
        error = f"{exc.store}: {exc.message}" if exc.store else exc.message
        return Failure(container, exc.key, error)
    return Failure(container, None, str(exc))


@dataclass
class Counts:
    """One container's share of a pass."""

    uploaded: int = 0
    copied: int = 0
    deleted: int = 0
    unchanged: int = 0
    bytes: int = 0


@dataclass
class PassResult:
    """What a full pass (or ``pull``) did."""

    containers: list[str] = field(default_factory=list)
    uploaded: int = 0
    copied: int = 0
    deleted: int = 0
    unchanged: int = 0
    bytes: int = 0
    seconds: float = 0.0
    #: Work that failed, what and why.
    failures: list[Failure] = field(default_factory=list)
    #: Deletes not done because they exceed SYNC.maxDeleteShare (needs --force).
    withheld: list[Failure] = field(default_factory=list)
    #: Skipped with a reason (unsafe symlinks, names a store cannot hold, empty sources).
    warnings: list[str] = field(default_factory=list)
    #: The plans (kept for --dry-run to print).
    plans: list[ContainerPlan] = field(default_factory=list)
    #: Each container's own figures (the totals above are their sums).
    per: dict[str, Counts] = field(default_factory=dict)
    #: App folders a Synchro server will not serve, and why (no package.json, no
    #: engines.synchro); mirrored all the same unless SYNC.appsOnly.
    not_served: dict[str, str] = field(default_factory=dict)
    #: Stopped by an interrupt (Ctrl-C): what was in flight finished, nothing more was sent
    #: (or fetched, by ``pull``), nothing was deleted; the next run does the rest.
    interrupted: bool = False

    def of(self, container: str) -> Counts:
        """``container``'s figures, started at zero."""
        return self.per.setdefault(container, Counts())

    @property
    def ok(self) -> bool:
        return not self.failures and not self.withheld

    def summary(self, verb: str = "uploaded", dry_run: bool = False) -> str:
        """One line: uploaded, deleted, unchanged, bytes, seconds (what a dry run would do)."""
        would = "would " if dry_run else ""
        mb = self.bytes / 1e6
        parts = [f"{would}{verb} {self.uploaded}"]
        if self.copied:
            parts.append(f"{would}{'copy' if dry_run else 'copied'} {self.copied}")
        parts += [f"{would}{'delete' if dry_run else 'deleted'} {self.deleted}",
                  f"unchanged {self.unchanged}", f"{mb:.1f} MB", f"{self.seconds:.2f} s"]
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        if self.interrupted:
            parts.append("interrupted (nothing deleted; the next run does the rest)")
        return ", ".join(parts)


@dataclass
class PathResult:
    """What ``sync_path`` did for one path."""

    container: str
    key: str
    #: "uploaded", "deleted", "unchanged", "folder" (contents synced), "skipped", or "withheld"
    #: (deletes above SYNC.maxDeleteShare over SYNC.deleteWindow; ``reason`` says why)
    action: str
    uploaded: int = 0
    deleted: int = 0
    bytes: int = 0
    reason: str = ""
