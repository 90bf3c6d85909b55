"""Multipart uploads to S3 (files beyond one streamed PUT, or without the light path): one
8 MiB part in memory at a time, each part verified by its ETag, the whole file's hash checked
before the upload is completed; a completion whose answer was lost is recognised by the
object's multipart ETag."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from typing import Any, BinaryIO

from worker.errors import NotFound, StoreError, TransientStoreError
from worker.stores.modules import names
from worker.stores.modules.base import (
    PART_SIZE,
    ObjectInfo,
    Runner,
    SourceChanged,
    checked_parts,
)
from worker.stores.modules.s3_errors import STORE, mapped_errors


def put_multipart(
    client: Any, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str, run: Runner
) -> ObjectInfo:
    """Upload ``body`` as parts of :data:`PART_SIZE`, one in memory at a time, each verified
    by its ETag; the whole content is checked against ``md5_hex`` before the upload is
    completed (else it is aborted and :class:`SourceChanged` raised)."""

    def create() -> str:
        with mapped_errors(bucket, key):
            return str(client.create_multipart_upload(
                Bucket=bucket, Key=key, ContentType=names.content_type(key)
            )["UploadId"])

    upload_id = run(create)
    part_md5s: list[bytes] = []
    parts: list[dict[str, Any]] = []
    try:
        for chunk in checked_parts(body, size, PART_SIZE, md5_hex):
            digest = hashlib.md5(chunk, usedforsecurity=False)
            number = len(parts) + 1
            etag = run(_upload_part, client, bucket, key, upload_id, number, chunk, digest)
            part_md5s.append(digest.digest())
            parts.append({"PartNumber": number, "ETag": etag})
        expected = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
        expected += f"-{len(parts)}"
        etag = run(_complete, client, bucket, key, upload_id, parts, expected)
    except BaseException as exc:
        with contextlib.suppress(Exception), mapped_errors(bucket, key):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        if isinstance(exc, SourceChanged):
            exc.store, exc.container, exc.key = STORE, bucket, key
        raise
    return ObjectInfo(key, size, time.time(), md5_hex, etag)

def _upload_part(
    client: Any, bucket: str, key: str, upload_id: str, number: int, chunk: bytes, digest: Any
) -> str:
    with mapped_errors(bucket, key):
        resp = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk,
            ContentMD5=base64.b64encode(digest.digest()).decode(),
        )
    etag = strip_etag(resp.get("ETag"))
    if etag != digest.hexdigest():
        raise TransientStoreError(
            f"part {number} came back with ETag {etag}, sent {digest.hexdigest()}",
            store=STORE, container=bucket, key=key,
        )
    return f'"{etag}"'

def _complete(
    client: Any, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]], expected: str
) -> str:
    try:
        with mapped_errors(bucket, key):
            resp = client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        etag = strip_etag(resp.get("ETag"))
    except NotFound:
        # A retry after a completion whose response was lost: the upload is gone because
        # it was completed.  The object's ETag tells whether it is ours.
        with mapped_errors(bucket, key):
            etag = strip_etag(client.head_object(Bucket=bucket, Key=key).get("ETag"))
        if etag != expected:
            raise
    if etag != expected:
        raise StoreError(
            f"multipart ETag {etag} does not match the parts sent ({expected})",
            store=STORE, container=bucket, key=key,
        )
    return etag


def strip_etag(etag: str | None) -> str | None:
    """An ETag without its quotes."""
    return etag.strip('"') if etag else None
