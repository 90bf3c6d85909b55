"""What passes and paths did, said for people and recorded for ``synchro-sync status``.

Each container's own figures of a full pass (:func:`record_pass`), a summary line per path,
and problems with local paths (a name that is not UTF-8, no permission, a symlink loop, the
root gone): one line each, by name, once per process (:func:`once`).
"""

from __future__ import annotations

import errno
import itertools
import logging
import threading
from typing import Any

from worker.coord.status import StatusStore, record_full_passes
from worker.mirror.results import Counts, PassResult

log = logging.getLogger("synchro_sync.jobs")
#: A full pass of at most this many containers logs a line for each; a bigger one logs those
#: that did something (this many at most) and a line for the whole pass.
EACH_UP_TO = 20

#: Problems already logged by this process ((container, path, what)): each is said once.
_said: set[tuple[str, str, str]] = set()
root_gone = threading.Event()


def once(level: int, container: str, path: str, what: str) -> None:
    """Log a problem of ``container``/``path`` unless this process already said one of it."""
    name = shown(path)
    if name.startswith("b'") and name.endswith("'"):  # a pass warning names bytes as b'...'
        name = name[2:-1]
    key = (container, name, "" if path else what)
    if key in _said:
        return
    _said.add(key)
    if not container:
        log.log(level, "%s", what)
    elif path:
        log.log(level, "container=%s path=%s %s", container, name, what)
    else:
        log.log(level, "container=%s %s", container, what)


def root_missing_said() -> None:
    """``run`` said at start that APP_ROOT_PATH is missing: full passes need not say it again."""
    root_gone.set()


def shown(path: str) -> str:
    """``path`` as a person can read it: bytes that are not UTF-8 as ``\\xff``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def local_problem(exc: BaseException) -> str:
    """One line for what went wrong reading a local path (no traceback)."""
    if isinstance(exc, UnicodeError):
        return "not mirrored: the name is not valid UTF-8, a store cannot hold it"
    if isinstance(exc, PermissionError):
        return "not mirrored: the file cannot be read (permission denied)"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "not mirrored: a symlink loop"
    return f"not mirrored: {exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"


def record_pass(
    store: StatusStore, result: PassResult, reason: str, took: float, whole: bool,
    say: bool = True,
) -> None:
    """Log and record for ``status`` each container's own figures of a pass (``run``'s and
    ``sync``'s).  A pass of the whole tree replaces every row, so a container gone from the
    folder (or the ``*`` row of a pass that found no app folders) does not linger.  ``say``:
    log the rows, each warning (once per process) and each failure (``sync`` prints its own)."""
    rows = per_container(result)
    if say:
        _say_rows(rows, reason, took)
        for line in result.warnings:  # each problem by name, once per process
            once(logging.WARNING, *_split_where(line))
        for failure in result.failures:
            log.error("full pass (%s): %s", reason, failure)
    seconds = round(took, 3)
    record_full_passes(store, {container: {**info, "reason": reason, "seconds": seconds}
                               for container, info in rows.items()}, whole=whole)


def _say_rows(rows: dict[str, dict[str, Any]], reason: str, took: float) -> None:
    """A line per container; past :data:`EACH_UP_TO` containers, a line for each of the first
    of those that did something (sent, copied, deleted, failed, withheld) and one for the pass:
    a scheduled pass of a thousand unchanged apps is one line, not a thousand."""
    def busy(info: dict[str, Any]) -> bool:
        return any(info[k] for k in ("uploaded", "copied", "deleted", "failures", "withheld"))

    each = rows if len(rows) <= EACH_UP_TO else \
        dict(itertools.islice(((c, i) for c, i in rows.items() if busy(i)), EACH_UP_TO))
    for container, info in each.items():
        log.info("container=%s full pass (%s) done in %.2fs: %s", container, reason, took,
                 human(info))
    if len(rows) > EACH_UP_TO:
        total = {k: sum(i[k] for i in rows.values()) for k in (
            "uploaded", "copied", "deleted", "unchanged", "bytes", "failures", "withheld")}
        changed = sum(busy(i) for i in rows.values())
        log.info("full pass (%s) done in %.2fs: %d containers, %d with something done%s: %s",
                 reason, took, len(rows), changed,
                 f" ({len(each)} said above)" if changed > len(each) else "", human(total))


def _split_where(line: str) -> tuple[str, str, str]:
    """(container, path, what) of a pass warning written ``container/path: what``; ("", "",
    line) when it is not written so."""
    where, sep, what = line.partition(": ")
    container, _, path = where.partition("/")
    if not sep or not container or " " in container:
        return "", "", line
    return container, path, what


def path_human(result: Any) -> str:
    """What ``sync_path`` did, as a person reads it ("uploaded, 2.1 kB")."""
    action = str(getattr(result, "action", "") or "done")
    if action == "folder":
        action = f"folder synced: uploaded {result.uploaded}, deleted {result.deleted}"
    nbytes = int(getattr(result, "bytes", 0) or 0)
    if nbytes:
        action += f", {nbytes / 1e3:.1f} kB" if nbytes < 1e6 else f", {nbytes / 1e6:.1f} MB"
    reason = getattr(result, "reason", "")
    return f"{action} ({reason})" if reason else action


def human(info: dict[str, Any]) -> str:
    text = (
        f"uploaded {info['uploaded']}, copied {info['copied']}, deleted {info['deleted']}, "
        f"unchanged {info['unchanged']}, {info['bytes'] / 1e6:.1f} MB"
    )
    if info["failures"]:
        text += f", {info['failures']} failed"
    if info["withheld"]:
        text += f", {info['withheld']} withheld"
    return text


def per_container(result: PassResult) -> dict[str, dict[str, Any]]:
    """Each container's own figures of a pass, its failures and withheld deletes matched by
    name; a pass that found no app folder at all is one row ``*``."""
    out: dict[str, dict[str, Any]] = {}
    names = list(result.containers) or ["*"]
    for name in names:
        counts = result.per.get(name, Counts()) if name != "*" else Counts(
            result.uploaded, result.copied, result.deleted, result.unchanged, result.bytes
        )
        mine = [str(f) for f in result.failures if name == "*" or f.concerns(name)]
        held = [w for w in result.withheld if name == "*" or w.concerns(name)]
        out[name] = {
            **vars(counts), "failures": len(mine), "errors": mine[:5],
            "withheld": len(held), "not_served": result.not_served.get(name, ""),
        }
    return out
