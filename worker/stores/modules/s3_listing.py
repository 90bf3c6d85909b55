"""ListObjectsV2 replies, parsed for the light request path (:mod:`.s3_put`): element by
element, keeping only what a listing needs; keys and prefixes decoded (``encoding-type=url``)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import unquote_plus
from xml.etree import ElementTree as ET

#: The namespace of S3's XML replies.
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class Listing:
    """An ``XMLParser`` target for a ListObjectsV2 reply: keeps only the fields a listing
    needs, element by element (no tree of ~7,000 elements per page)."""

    _FIELDS = frozenset(f"{NS}{n}" for n in (
        "Key", "ETag", "LastModified", "Size", "EncodingType", "IsTruncated",
        "NextContinuationToken", "Prefix",
    ))

    def __init__(self) -> None:
        self.items: list[tuple[str, int, float, str | None]] = []
        #: The ``CommonPrefixes`` of a listing with a delimiter.
        self.prefixes: list[str] = []
        self.top: dict[str, str] = {}
        self.next_token: str | None = None
        self._fields: dict[str, str] = {}
        self._text: list[str] | None = None
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        self._text = [] if tag in self._FIELDS else None

    def data(self, text: str) -> None:
        if self._text is not None:
            self._text.append(text)

    def end(self, tag: str) -> None:
        self._depth -= 1
        if tag == f"{NS}CommonPrefixes":
            self.prefixes.append(self._fields.pop("Prefix", ""))
        elif tag == f"{NS}Contents":
            f, self._fields = self._fields, {}
            stamp = f.get("LastModified", "").replace("Z", "+00:00")
            etag = f.get("ETag")
            self.items.append((
                f.get("Key", ""), int(f.get("Size") or 0),
                datetime.fromisoformat(stamp).timestamp() if stamp else 0.0,
                etag.strip('"') if etag else None,
            ))
        elif self._text is not None:
            name = tag[len(NS):]
            value = "".join(self._text)
            if self._depth == 1:  # a child of ListBucketResult, not of Contents
                self.top[name] = value
            else:
                self._fields[name] = value
            self._text = None

    def close(self) -> None:
        return None


def parse_listing(data: bytes) -> Listing:
    """A ListObjectsV2 reply: its rows, common prefixes and next token (keys decoded)."""
    target = Listing()
    parser = ET.XMLParser(target=target)
    parser.feed(data)
    parser.close()
    if target.top.get("EncodingType") == "url":
        target.items = [(unquote_plus(k), size, t, etag) for k, size, t, etag in target.items]
        target.prefixes = [unquote_plus(p) for p in target.prefixes]
    if target.top.get("IsTruncated", "false") == "true":
        target.next_token = target.top.get("NextContinuationToken")
    return target
