"""``amazon``: Amazon S3 and S3-compatible services (MinIO, Ceph, IBM COS, R2) through boto3.

Keys read: ``keyId``, ``key`` (else boto3's own credential chain), ``region``, ``endpoint``
(path-style addressing for anything that is not AWS), ``bucket``.  Tested against moto in
server mode (tests/servers/s3_server.py).

One client is shared by all threads (boto3 clients are thread-safe); botocore's retries are
off (``total_max_attempts=1``) because the store applies the one tenacity policy, and it only
computes checksums the API requires: we send ``Content-MD5`` ourselves so S3 verifies every
body.  Files above 8 MiB go up as one PUT streamed from the file through the light path
(:meth:`FastPut.put_stream`: one 1 MiB buffer, checked against the hashed content before its
last block is sent, so a file edited meanwhile is never stored), up to 5 GiB (S3's limit for
one request); beyond that, or without the light path, as a multipart upload, one 8 MiB part
in memory at a time, each part verified by its ETag, the whole file's hash checked before the
upload is completed.  A plain PUT's ETag is the content's MD5; a multipart ETag
(``md5-of-part-md5s-N``) is kept as :attr:`ObjectInfo.etag` and matched from the listing.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, ClassVar, cast

import botocore.exceptions as bce
from botocore.config import Config

from worker.stores.modules import names
from worker.stores.modules.base import (
    PART_SIZE,
    ObjectInfo,
    Page,
    Runner,
    SourceChanged,
    given_md5,
)
from worker.stores.modules.reader import ChunkReader
from worker.stores.modules.s3_errors import error_class, mapped_errors
from worker.stores.modules.s3_multipart import put_multipart, strip_etag
from worker.stores.modules.s3_put import STREAM_BUFFER, FastPut, StaticCredentials
from worker.stores.registry import load

#: Files up to this size go up as one streamed PUT on the light path (S3 takes up to 5 GiB in
#: one request); larger ones as a multipart upload.
STREAM_PUT_LIMIT = 5 * 1024**3

__all__ = ["STREAM_PUT_LIMIT", "S3Backend", "credential_chain_problem", "error_class"]

class S3Backend:
    """S3 through one shared boto3 client."""

    name: ClassVar[str] = "amazon"
    supports_bucket_creation: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True

    def __init__(
        self, client: Any, region: str = "us-east-1", *,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        self._client = client
        self._factory = factory
        self._client_lock = threading.Lock()
        self.region = region
        #: Keys per listing request (S3's maximum is 1,000).
        self.listing_page = 1000
        #: Light request path for single-request PUTs, listing pages and batched deletes
        #: (see s3_put.py); None: boto3 only.
        self.fast: FastPut | None = None
        #: Files above 8 MiB and up to this size go up as one streamed PUT (light path only).
        self.stream_put_limit = STREAM_PUT_LIMIT

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (a pass that only lists never needs it)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    assert self._factory is not None
                    self._client = self._factory()
        return self._client

    @classmethod
    def from_config(cls, config: Any, *, pool: int = 32, timeout: float = 30.0) -> S3Backend:
        secret = config.key.get_secret_value() if config.key is not None else None

        def make_session() -> Any:
            # boto3 (~0.1 s to import) only when the client is built: see the module doc.
            return load("boto3.session:Session", "amazon")(
                aws_access_key_id=config.keyId, aws_secret_access_key=secret
            )

        def make_client(session: Any = None) -> Any:
            botocore_config = Config(
                region_name=config.region,
                retries={"total_max_attempts": 1, "mode": "standard"},
                max_pool_connections=pool,
                connect_timeout=timeout,
                read_timeout=timeout,
                tcp_keepalive=True,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path" if config.endpoint else "auto"},
            )
            session = session or make_session()
            return session.client("s3", endpoint_url=config.endpoint, config=botocore_config)

        if config.keyId and secret:
            # Keys in the configuration: the light path signs with them, and the boto3 client
            # (a few hundred ms to build) waits until something needs it.
            backend = cls(None, config.region, factory=make_client)
            creds: Any = StaticCredentials(config.keyId, secret)
        else:
            session = make_session()
            backend = cls(make_client(session), config.region)
            creds = session.get_credentials()  # the credential chain's (refreshed as needed)
        if creds is not None:
            backend.fast = FastPut(config.endpoint, config.region, creds, timeout)
        return backend

    # --- errors ----------------------------------------------------------------------------

    def _errors(
        self, bucket: str | None = None, key: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """The one place botocore's exceptions become worker.errors (:mod:`.s3_errors`)."""
        return mapped_errors(bucket, key)

    # --- names -----------------------------------------------------------------------------

    def bucket_name_problem(self, bucket: str) -> str | None:
        return names.s3_bucket_problem(bucket)

    def key_problem(self, key: str) -> str | None:
        return names.key_problem(key, 1024)

    # --- buckets ---------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        with self._errors():
            return [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]

    def create_bucket(self, bucket: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with self._errors(bucket):
            self.client.create_bucket(**kwargs)

    def delete_bucket(self, bucket: str) -> None:
        with self._errors(bucket):
            self.client.delete_bucket(Bucket=bucket)

    # --- listing ---------------------------------------------------------------------------

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page:
        if self.fast is not None:
            rows, next_token = self.fast.list_page(bucket, prefix, token, self.listing_page)
            return Page([_info(*row) for row in rows], next_token)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": self.listing_page}
        if token:
            kwargs["ContinuationToken"] = token
        with self._errors(bucket):
            resp = self.client.list_objects_v2(**kwargs)
        items = [
            _info(o["Key"], o["Size"], o["LastModified"].timestamp(), o.get("ETag"))
            for o in resp.get("Contents", [])
        ]
        return Page(items, resp.get("NextContinuationToken") if resp.get("IsTruncated") else None)

    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        if self.fast is not None:
            return self.fast.list_prefixes(bucket, prefix)
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            with self._errors(bucket):
                resp = self.client.list_objects_v2(**kwargs)
            out.extend(p["Prefix"] for p in resp.get("CommonPrefixes", []))
            if not resp.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    # --- objects ---------------------------------------------------------------------------

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        if version:
            kwargs["IfMatch"] = f'"{version}"'
        with self._errors(bucket, key):
            resp = self.client.get_object(**kwargs)
        body = resp["Body"]
        # iter_chunks streams; ChunkReader maps a reset mid-body to a transient error.
        reader = ChunkReader(
            body.iter_chunks(1024 * 1024), lambda: self._errors(bucket, key), body.close
        )
        reader.version = strip_etag(resp.get("ETag"))
        reader.size = offset + int(resp.get("ContentLength", 0))
        return cast(BinaryIO, reader)

    def hashes_while_sending(self, size: int) -> bool:
        return False

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        md5_hex = given_md5(md5_hex, self.name)
        if size > PART_SIZE:
            if self.fast is not None and size <= self.stream_put_limit:
                # One request streamed from the file (retried whole, from byte 0).
                etag = run(self.fast.put_stream, bucket, key, body, size, md5_hex)
                return ObjectInfo(key, size, time.time(), md5_hex, etag)
            return put_multipart(self.client, bucket, key, body, size, md5_hex, run)
        data = body.read(size)
        if len(data) != size:
            raise SourceChanged("the local file is shorter than it was", store=self.name)
        if self.fast is not None:
            etag = self.fast.put(bucket, key, data, md5_hex)
            return ObjectInfo(key, size, time.time(), md5_hex, etag)
        with self._errors(bucket, key):
            resp = self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentMD5=_b64(md5_hex),
                ContentType=names.content_type(key),
            )
        etag = strip_etag(resp.get("ETag"))
        return ObjectInfo(key, size, time.time(), md5_hex, etag)

    def upload_memory(self, size: int) -> int:
        """Bytes of file content one upload of ``size`` holds at once (for the pass's budget):
        a streamed PUT holds its 1 MiB buffer, a multipart upload one part."""
        if size <= PART_SIZE:
            return size
        if self.fast is not None and size <= self.stream_put_limit:
            return STREAM_BUFFER
        return PART_SIZE

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        batch = list(keys)
        for start in range(0, len(batch), 1000):
            if self.fast is not None:
                chunk = batch[start : start + 1000]
                failed = [
                    (k, code) for k, code in self.fast.delete_batch(bucket, chunk)
                    if code != "NoSuchKey"
                ]
                if failed:
                    key, code = failed[0]
                    raise error_class(code, 0)(
                        f"{code}: delete failed", store=self.name, container=bucket, key=key
                    )
                continue
            objects = [{"Key": k} for k in batch[start : start + 1000]]
            with self._errors(bucket):
                resp = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
                )
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                fake = {"Error": first, "ResponseMetadata": {}}
                with self._errors(bucket, first.get("Key")):
                    raise bce.ClientError(fake, "DeleteObjects")  # type: ignore[arg-type]

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo:
        with self._errors(bucket, src_key):
            resp = self.client.copy_object(
                Bucket=bucket, Key=dst_key, CopySource={"Bucket": bucket, "Key": src_key}
            )
            head = self.client.head_object(Bucket=bucket, Key=dst_key)
        etag = strip_etag(resp.get("CopyObjectResult", {}).get("ETag") or head.get("ETag"))
        return _info(dst_key, head["ContentLength"], head["LastModified"].timestamp(), etag)

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        if self._client is not None:
            self._client.close()


def _b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


def _info(key: str, size: int, modified: float, etag: str | None) -> ObjectInfo:
    etag = strip_etag(etag)
    # A plain PUT's ETag is the MD5 of the content; a multipart one ends in "-<parts>".
    md5 = etag if etag and len(etag) == 32 and "-" not in etag else None
    return ObjectInfo(key, size, modified, md5, etag)


def credential_chain_problem() -> str | None:
    """None when botocore's credential chain finds credentials; "" when it finds none; what
    broke when the chain's own configuration is bad (a missing profile)."""
    import botocore.session  # ~0.1 s: only when the chain is asked

    try:
        found = botocore.session.Session().get_credentials()
    except Exception as exc:  # a broken profile or config file
        return f"the AWS credential chain failed: {str(exc)[:120]}"
    return None if found is not None else ""
