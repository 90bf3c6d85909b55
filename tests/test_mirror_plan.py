"""The pure parts of the mirror: planner rules, index, ignore rules, tree scan, path checks."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
import unicodedata
from pathlib import Path

import pytest

from worker.errors import SyncError, UnsafePath
from worker.mirror.ignore import IgnoreRules
from worker.mirror.index import RACY_NS, IndexEntry, MirrorIndex
from worker.mirror.localtree import LocalFile, ScanResult, resolve_key, scan, walk
from worker.mirror.plan import OutOfOrder, merge, plan_container, remote_matches
from worker.mirror.stream import KeySpool
from worker.stores.modules.base import ObjectInfo

OLD = 1_600_000_000 * 10**9  # an mtime long before any hash
LATER = OLD + 10 * RACY_NS


def lf(key: str, size: int = 10, mtime: int = OLD, inode: int = 1) -> LocalFile:
    return LocalFile(key, size, mtime, mtime, inode)


def entry(f: LocalFile, md5: str, etag: str | None = None) -> IndexEntry:
    return IndexEntry.of(f, md5, etag if etag is not None else md5, LATER)


def obj(key: str, size: int = 10, md5: str | None = "m", etag: str | None = None) -> ObjectInfo:
    return ObjectInfo(key, size, 0.0, md5, etag if etag is not None else md5)


# --- planner --------------------------------------------------------------------------------


def test_unchanged_files_need_no_hash_and_no_request() -> None:
    files = [lf(f"k{i}", inode=i) for i in range(100)]
    index = {f.key: entry(f, f"m{i}") for i, f in enumerate(files)}
    remote = {f.key: obj(f.key, md5=f"m{i}") for i, f in enumerate(files)}
    plan = plan_container("app", files, index, remote)
    assert (plan.unchanged, plan.uploads, plan.deletes, plan.to_hash) == (100, [], [], [])
    assert plan.refresh == {}


def test_new_keys_upload_without_hashing_first() -> None:
    plan = plan_container("app", [lf("a"), lf("b", inode=2)], {}, {})
    assert [u.file.key for u in plan.uploads] == ["a", "b"]
    assert all(u.md5 is None for u in plan.uploads)
    assert plan.to_hash == []


def test_changed_stat_same_size_is_hashed_then_compared() -> None:
    old = lf("a")
    touched = lf("a", mtime=OLD + 5)
    remote = {"a": obj("a", md5="m1")}
    plan = plan_container("app", [touched], {"a": entry(old, "m1")}, remote)
    assert plan.to_hash == ["a"]
    # touched only: same content -> no upload, the index row is refreshed
    plan = plan_container("app", [touched], {"a": entry(old, "m1")}, remote, {"a": "m1"})
    assert plan.uploads == [] and plan.unchanged == 1 and "a" in plan.refresh
    # rewritten with the same size: different MD5 -> upload (size alone never decides)
    plan = plan_container("app", [touched], {"a": entry(old, "m1")}, remote, {"a": "m2"})
    assert [u.md5 for u in plan.uploads] == ["m2"]


def test_changed_size_uploads_without_hashing() -> None:
    plan = plan_container("app", [lf("a", size=11)], {"a": entry(lf("a"), "m1")},
                          {"a": obj("a", md5="m1")})
    assert [u.file.key for u in plan.uploads] == ["a"] and plan.to_hash == []


def test_racy_index_row_is_not_trusted() -> None:
    f = lf("a", mtime=LATER - RACY_NS // 2)  # modified just before it was hashed
    plan = plan_container("app", [f], {"a": entry(f, "m1")}, {"a": obj("a", md5="m1")})
    assert plan.to_hash == ["a"]


def test_listing_without_md5_matches_our_etag_only() -> None:
    f = lf("big")
    idx = {"big": entry(f, "m1", etag="multi-3")}
    same = plan_container("app", [f], idx, {"big": obj("big", md5=None, etag="multi-3")})
    assert same.unchanged == 1
    other = plan_container("app", [f], idx, {"big": obj("big", md5=None, etag="multi-4")})
    assert [u.file.key for u in other.uploads] == ["big"]
    assert not remote_matches(10, "m1", obj("x", md5=None, etag="e"), None)


def test_deletes_and_guard_for_empty_source() -> None:
    remote = {"a": obj("a"), "b": obj("b")}
    plan = plan_container("app", [lf("a")], {"a": entry(lf("a"), "m")}, remote)
    assert plan.deletes == ["b"] and plan.delete_share() == 0.5
    empty = plan_container("app", [], {}, remote)
    assert empty.deletes == [] and empty.empty_source


def test_rename_by_inode_is_a_copy_without_reading() -> None:
    old = lf("old/a.js", inode=42)
    moved = LocalFile("new/a.js", old.size, old.mtime_ns, old.ctime_ns + 1, 42)
    plan = plan_container(
        "app", [moved], {"old/a.js": entry(old, "m9")}, {"old/a.js": obj("old/a.js", md5="m9")},
        can_copy=True,
    )
    assert [(c.src, c.file.key) for c in plan.copies] == [("old/a.js", "new/a.js")]
    assert plan.uploads == [] and plan.to_hash == [] and plan.deletes == ["old/a.js"]
    assert plan.delete_share() == 0.0  # a rename is not a loss


def test_copy_of_same_content_after_hash_and_no_copy_without_support() -> None:
    remote = {"x": obj("x", md5="m5")}
    plan = plan_container("app", [lf("y", inode=7)], {}, remote, can_copy=True)
    assert plan.to_hash == ["y"]
    plan = plan_container("app", [lf("y", inode=7)], {}, remote, {"y": "m5"}, can_copy=True)
    assert [c.src for c in plan.copies] == ["x"]
    plan = plan_container("app", [lf("y", inode=7)], {}, remote, can_copy=False)
    assert [u.file.key for u in plan.uploads] == ["y"] and plan.copies == []


# --- index ----------------------------------------------------------------------------------


def _writer(path: str, n: int, tag: str) -> None:
    idx = MirrorIndex(path, "store")
    for i in range(n):
        f = LocalFile(f"{tag}/{i}", i, i, i, i)
        idx.put("app", f.key, IndexEntry.of(f, "m", "e", 1))
    idx.close()


def _opener(base: str, folders: int, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    for n in range(folders):
        MirrorIndex(os.path.join(base, f"state{n}"), "store").close()


def test_processes_opening_a_new_index_at_once_all_open_it(tmp_path: Path) -> None:
    """Two `sync` started together on a new host once failed with "database is locked": the
    switch of a new database to WAL takes a lock SQLite does not wait for.  Three processes
    open the same 300 new indexes one after another, in step: every open succeeds."""
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.0  # after the children have imported (spawn)
    procs = [spawn.Process(target=_opener, args=(str(tmp_path), 300, start_at))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]


def test_a_damaged_index_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "index.sqlite").write_bytes(b"not a database, " * 512)
    with pytest.raises(SyncError, match=r"index\.sqlite \(under STATE_DIR\) cannot be opened: "
                       r"file is not a database"):
        MirrorIndex(tmp_path, "store")

def test_index_is_shared_by_processes_in_wal_mode(tmp_path: Path) -> None:
    procs = [
        multiprocessing.get_context("spawn").Process(target=_writer, args=(str(tmp_path), 200, t))
        for t in ("p1", "p2", "p3")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    idx = MirrorIndex(tmp_path, "store")
    assert len(idx.load("app")) == 600
    assert len(idx.load("app", "p2/")) == 200
    assert idx._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert MirrorIndex(tmp_path, "other-store").load("app") == {}
    idx.forget("app", ["p1/0"])
    assert idx.get("app", "p1/0") is None and idx.has_under("app", "p1/")


# --- ignore rules and the tree scan -----------------------------------------------------------


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_default_and_user_ignores(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for rel in ["index.js", "node_modules/x/y.js", ".git/HEAD", ".index.js.swp", "a.js~", "4913",
                ".#lock", ".DS_Store", "build/out.js", "logs/a.log", "keep/b.tmp", "keep/c.js",
                "sub/.syncignore"]:
        _touch(app / rel)
    (tmp_path / ".syncignore").write_text("/app/build/\n")
    (app / ".syncignore").write_text("*.log\n")
    rules = IgnoreRules(tmp_path, ["*.tmp"])
    keys = sorted(f.key for f in scan(tmp_path, "app", rules)[0])
    assert keys == ["index.js", "keep/c.js"]
    assert rules.ignored_path("app", "node_modules/a/b.js")
    assert not rules.ignored_path("app", "src/node_modules.js")


def test_scan_nfc_symlinks_and_bad_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    app = root / "app"
    nfd = unicodedata.normalize("NFD", "café ü.js")
    _touch(app / nfd, b"1")
    _touch(app / "in.js", b"inside")
    _touch(tmp_path / "secret.txt", b"outside")
    os.symlink(app / "in.js", app / "link-in.js")
    os.symlink(tmp_path / "secret.txt", app / "link-out.txt")
    os.symlink(tmp_path, app / "dir-out")
    os.symlink(app / "missing", app / "dangling")
    (app / b"bad-\xff.js".decode("utf-8", "surrogateescape")).write_bytes(b"b")
    files, result = scan(root.resolve(), "app", IgnoreRules(root))
    by_key = {f.key: f for f in files}
    assert set(by_key) == {unicodedata.normalize("NFC", nfd), "in.js", "link-in.js"}
    assert by_key["link-in.js"].size == len(b"inside")
    text = "\n".join(result.problems)
    assert "link-out.txt" in text and "dir-out" in text and "dangling" in text
    assert "not valid UTF-8" in text


def test_walk_yields_keys_in_the_stores_order(tmp_path: Path) -> None:
    """Bytewise UTF-8 of the whole key, as S3 and the others list: a folder "a" sorts as "a/",
    after the file "a-b" and before "a0" (os.walk's order per folder would not)."""
    root = tmp_path / "root"
    names = ["a-b", "a/x.js", "a/y/z.js", "a0", "a.js", "A.js", "a b", "é.js", "z/é/1",
             "z/e/1", "}", "b/" + "\U0001f600.js", "b/\uffff.js", "!"]
    for name in names:
        _touch(root / "app" / name)
    nfd = unicodedata.normalize("NFD", "ü/k.js")
    _touch(root / "app" / nfd)
    result = ScanResult()
    keys = [f.key for f in walk(root.resolve(), "app", IgnoreRules(root), result)]
    expected = sorted([*names, unicodedata.normalize("NFC", nfd)],
                      key=lambda k: k.encode("utf-8"))
    assert keys == expected
    assert not result.problems


def test_merge_pairs_keys_and_refuses_unsorted_streams() -> None:
    row = entry(lf("b"), "m")
    merged = list(merge([lf("a"), lf("b")], [("b", row), ("c", row)], [obj("a"), obj("d")]))
    assert [(k, f is not None, e is not None, r is not None) for k, f, e, r in merged] == [
        ("a", True, False, True), ("b", True, True, False), ("c", False, True, False),
        ("d", False, False, True),
    ]
    with pytest.raises(OutOfOrder, match="store listing"):
        list(merge([lf("a")], [], [obj("b"), obj("a-b")]))
    with pytest.raises(OutOfOrder, match="index"):
        list(merge([], [("x", row), ("x", row)], []))


def test_key_spool_keeps_order_past_its_memory_batch() -> None:
    spool = KeySpool(batch=3)
    for i in range(10):
        spool.add(f"k{i}")
    assert len(spool) == 10
    assert [k for batch in spool.batches() for k in batch] == [f"k{i}" for i in range(10)]
    assert max(len(b) for b in spool.batches()) == 3
    spool.close()


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a\x00b", ".."])
def test_resolve_key_refuses_escapes(bad: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_key(bad)


def test_resolve_key_tidies() -> None:
    assert resolve_key("./a//b/") == "a/b"
    assert resolve_key(unicodedata.normalize("NFD", "é")) == "é"


def test_index_row_vouches_only_for_same_stat() -> None:
    f = lf("a")
    e = IndexEntry.of(f, "m", "e", time.time_ns())
    assert e.vouches_for(f)
    assert not e.vouches_for(LocalFile("a", 10, OLD, OLD + 1, 1))  # ctime moved (chmod, write)
    assert not e.vouches_for(lf("a", inode=2))


def test_ignore_patterns_as_one_expression_decide_as_pathspec_does() -> None:
    """An include-only spec (the defaults, ``SYNC.ignore``, a ``.syncignore`` without ``!``) is
    matched as one regular expression; every decision equals pathspec's own, for files and
    folders, and a spec with a ``!`` pattern is left to pathspec."""
    import pathspec

    from worker.mirror import ignore

    extra = ["build/", "*.log", "/dist", "**/tmp/*.txt", "a/**/b", "[Dd]ocs/*.md", "x?y",
             "deep/er/", "\\#literal", "*.min.*", "/only-top.js"]
    names = ["index.js", "node_modules", ".git", "x.swp", ".x.swp", "a~", "4913", ".#a", "#a#",
             ".DS_Store", "._a", "Thumbs.db", ".syncignore", ".synchro-tmp-1", "build", "b.log",
             "dist", "tmp", "t.txt", "a", "b", "docs", "Docs", "r" + ".md", "xzy", "x/y", "deep",
             "er", "#literal", "a.min.js", "only-top.js", "ü.js", "sp ace", "CVS", "__pycache__"]
    paths = {"/".join(p) for p in itertools.product(names, repeat=2)} | set(names)
    paths |= {f"{p}/{n}" for p in ("a/c", "q/tmp", "deep/er", "lib/a/z") for n in names}
    for lines in ([*ignore.DEFAULT_PATTERNS], [*ignore.DEFAULT_PATTERNS, *extra], extra):
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        fast = ignore.Matcher(spec)
        assert fast.one is not None or ignore._SET_ENGINE
        for path in sorted(paths):
            for candidate in (path, path + "/"):
                assert fast.match_file(candidate) == bool(spec.match_file(candidate)), \
                    (lines[-1], candidate)
    negated = ignore.Matcher(pathspec.GitIgnoreSpec.from_lines(["*.log", "!keep.log"]))
    assert negated.one is None
    assert negated.match_file("a.log") and not negated.match_file("keep.log")
