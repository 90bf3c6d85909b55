"""The FileModuleStore lists a container in pages, in the store's key order (bytewise UTF-8 of
the whole key: a folder ``a`` sorts as ``a/``), each page resuming after the last key of the one
before, so a listing never holds a whole container."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.stores.modules.file import FileBackend

KEYS = [
    "a-b", "a.js", "a/x", "a/y/z", "a0", "b/", "é/1", "z/deep/er/k", "z/deep/k", "zz",
]


@pytest.fixture
def backend(tmp_path: Path) -> FileBackend:
    for key in KEYS:
        if key.endswith("/"):
            continue
        path = tmp_path / "c" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    (tmp_path / "c" / "b").mkdir()  # an empty folder lists nothing
    (tmp_path / "c" / ".synchro-tmp-x").write_bytes(b"partial")  # our temporary files neither
    return FileBackend(tmp_path)


def _all(backend: FileBackend, prefix: str = "") -> list[list[str]]:
    pages, token = [], None
    while True:
        page = backend.list_page("c", prefix, token)
        pages.append([i.key for i in page.items])
        if page.token is None:
            return pages
        assert page.token == page.items[-1].key
        token = page.token


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
def test_pages_come_in_key_order(backend: FileBackend, size: int) -> None:
    backend.listing_page = size
    pages = _all(backend)
    want = sorted(k for k in KEYS if not k.endswith("/"))
    assert want == sorted(want, key=lambda k: k.encode())
    assert [k for p in pages for k in p] == want
    assert all(len(p) <= size for p in pages)


def test_a_prefix_lists_only_what_starts_with_it(backend: FileBackend) -> None:
    backend.listing_page = 1
    assert [k for p in _all(backend, "a") for k in p] == ["a-b", "a.js", "a/x", "a/y/z", "a0"]
    assert [k for p in _all(backend, "a/") for k in p] == ["a/x", "a/y/z"]
    assert [k for p in _all(backend, "z/deep/") for k in p] == ["z/deep/er/k", "z/deep/k"]
    assert _all(backend, "nothing/") == [[]]


def test_a_page_resumes_after_its_token_even_if_that_key_is_gone(backend: FileBackend,
                                                                 tmp_path: Path) -> None:
    backend.listing_page = 3
    first = backend.list_page("c", "", None)
    assert [i.key for i in first.items] == ["a-b", "a.js", "a/x"]
    (tmp_path / "c" / "a" / "x").unlink()
    rest = backend.list_page("c", "", first.token)
    assert [i.key for i in rest.items] == ["a/y/z", "a0", "z/deep/er/k"]
