"""``azure``: Azure Blob Storage through azure-storage-blob.

Keys read: ``storageAccount`` and ``storageAccessKey`` (shared key), or ``connectionString``;
``endpoint`` (default ``https://<storageAccount>.blob.core.windows.net``; Azurite's
``http://127.0.0.1:10000/devstoreaccount1``), ``bucket``.  Tested against Azurite
(tests/servers/azure_server.py).

The SDK's retry policy is off (``retry_total=0``; its default spent 17 s on one 503): the store
applies the one tenacity policy.  Every upload sets the blob's Content-MD5, which listings
report, so the checksum survives uploads in blocks; a single Put Blob also sends the body's
MD5 for the service to verify.  Files above 8 MiB and up to :data:`STREAM_PUT_LIMIT` go up as
one Put Blob streamed from the file (one 256 KiB send buffer; the service checks the whole body
against the content's MD5, and the bytes are checked against the hashed content before the
last block leaves, so a file edited meanwhile is never stored); larger files are staged as
2 MiB blocks read from disk, up to :data:`BLOCKS_IN_FLIGHT` at once, each verified by the
service, and the block list is committed only after the whole file's content matched what was
hashed (by CRC when the store hashed it just before, else MD5): an uncommitted block is
never visible.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, ClassVar, cast

import requests
from azure.core import MatchConditions
from azure.core import exceptions as aexc
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContentSettings
from azure.storage.blob._generated.models import BlobHTTPHeaders

from worker.errors import (
    AccessDenied,
    AlreadyExists,
    IntegrityError,
    InvalidName,
    NotFound,
    StoreError,
    TransientStoreError,
)
from worker.stores.modules import names
from worker.stores.modules.base import (
    PART_SIZE,
    ContainerNotFound,
    ObjectInfo,
    Page,
    Runner,
    SourceChanged,
    VerifyingReader,
    checked_parts,
    given_md5,
)
from worker.stores.modules.http import SEND_BLOCK, tune_session
from worker.stores.modules.reader import MappedReader

#: Blocks of one file staged at once (each held in memory while on the wire).
BLOCKS_IN_FLIGHT = 4
#: Bytes per staged block: small blocks let 4 files x 4 blocks go at once within the pass's
#: 32 MiB budget (against Azurite, 2 MiB blocks went 1.3-1.6x faster than 8 MiB ones).
BLOCK_SIZE = 2 * 1024 * 1024
#: Files above 8 MiB and up to this size go up as one Put Blob streamed from the file (Azure
#: takes up to 5,000 MiB in one); larger ones in blocks.
STREAM_PUT_LIMIT = 256 * 1024 * 1024
#: Azure's limit of blocks per blob (larger files get larger blocks).
_MAX_BLOCKS = 50_000

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TRANSIENT_CODES = {"Md5Mismatch", "ServerBusy", "OperationTimedOut", "InternalError"}
_INVALID_CODES = {"InvalidResourceName", "OutOfRangeInput", "InvalidUri"}


class AzureBackend:
    """Azure Blob through one shared BlobServiceClient (thread-safe; pooled HTTP session)."""

    name: ClassVar[str] = "azure"
    supports_bucket_creation: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True

    def __init__(self, service: BlobServiceClient, timeout: float = 60.0) -> None:
        self.service = service
        #: Blobs per listing request (Azure's maximum is 5,000).
        self.listing_page = 5000
        #: server-side timeout per request, seconds (the client's read timeout is set alike)
        self.timeout = max(1, int(timeout))
        #: Bytes per staged block of a file above :attr:`stream_put_limit`.
        self.block_size = BLOCK_SIZE
        #: Files above 8 MiB up to this size go up as one streamed Put Blob.
        self.stream_put_limit = STREAM_PUT_LIMIT

    @classmethod
    def from_config(
        cls, config: Any, *, pool: int = 32, timeout: float = 60.0
    ) -> AzureBackend:
        url = config.endpoint or f"https://{config.storageAccount}.blob.core.windows.net"
        session = tune_session(requests.Session(), url, pool)
        transport = RequestsTransport(
            session=session, session_owner=False,
            connection_timeout=min(10.0, timeout), read_timeout=timeout,
        )
        options: dict[str, Any] = {
            "retry_total": 0,
            "transport": transport,
            "max_single_put_size": PART_SIZE,
            "max_block_size": PART_SIZE,
        }
        if config.connectionString is not None:
            service = BlobServiceClient.from_connection_string(
                config.connectionString.get_secret_value(), **options
            )
        else:
            credential = {
                "account_name": config.storageAccount,
                "account_key": config.storageAccessKey.get_secret_value(),
            }
            service = BlobServiceClient(url, credential=credential, **options)
        return cls(service, timeout)

    # --- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
        """The one place azure-core's exceptions become worker.errors."""
        where: dict[str, Any] = {"store": self.name, "container": bucket, "key": key}
        try:
            yield
        except aexc.HttpResponseError as exc:
            raw_code = getattr(exc, "error_code", None) or ""
            code = str(getattr(raw_code, "value", raw_code))  # StorageErrorCode is an enum
            status = int(exc.status_code or 0)
            text = f"{code or status}: {exc.reason or ''}".rstrip(": ")
            cls: type[StoreError] = StoreError
            if code == "ContainerNotFound":
                cls = ContainerNotFound
            elif status == 404:
                cls = NotFound
            elif status in (401, 403) or isinstance(exc, aexc.ClientAuthenticationError):
                cls = AccessDenied
            elif status == 409 and "AlreadyExists" in code:
                cls = AlreadyExists
            elif status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES or _md5_mismatch(exc):
                # A body that does not match its MD5 was damaged on the way: send it again.
                cls = TransientStoreError
            elif code in _INVALID_CODES:
                cls = InvalidName
            elif status == 412:
                cls = IntegrityError  # a resumed read whose blob was replaced
            raise cls(text, **where) from exc
        except (aexc.ServiceRequestError, aexc.ServiceResponseError) as exc:
            raise TransientStoreError(f"{type(exc).__name__}: {exc}", **where) from exc
        except (aexc.IncompleteReadError, aexc.DecodeError) as exc:
            raise TransientStoreError(f"{type(exc).__name__}: {exc}", **where) from exc
        except requests.RequestException as exc:
            raise TransientStoreError(f"{type(exc).__name__}: {exc}", **where) from exc
        except aexc.AzureError as exc:
            raise StoreError(str(exc), **where) from exc

    # --- names -----------------------------------------------------------------------------

    def bucket_name_problem(self, bucket: str) -> str | None:
        return names.azure_container_problem(bucket)

    def key_problem(self, key: str) -> str | None:
        return names.azure_key_problem(key)

    # --- containers ------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        with self._errors():
            return [c.name for c in self.service.list_containers(timeout=self.timeout)]

    def create_bucket(self, bucket: str) -> None:
        with self._errors(bucket):
            self.service.create_container(bucket, timeout=self.timeout)

    def delete_bucket(self, bucket: str) -> None:
        with self._errors(bucket):
            self.service.delete_container(bucket, timeout=self.timeout)

    # --- listing ---------------------------------------------------------------------------

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page:
        with self._errors(bucket):
            pages = (
                self.service.get_container_client(bucket)
                .list_blobs(name_starts_with=prefix or None, results_per_page=self.listing_page,
                            timeout=self.timeout)
                .by_page(continuation_token=token)
            )
            items = [_info(b) for b in next(pages, [])]
            return Page(items, pages.continuation_token or None)  # type: ignore[attr-defined]

    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        with self._errors(bucket):
            walk = self.service.get_container_client(bucket).walk_blobs(
                name_starts_with=prefix or None, delimiter="/", timeout=self.timeout
            )
            return sorted(item.name for item in walk if isinstance(item, BlobPrefix))

    # --- objects ---------------------------------------------------------------------------

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        kwargs: dict[str, Any] = {}
        if offset:
            kwargs["offset"] = offset
        if version:
            kwargs["etag"] = version
            kwargs["match_condition"] = MatchConditions.IfNotModified
        with self._errors(bucket, key):
            # The downloader pins the ETag it saw first: an overwrite cannot mix versions.
            downloader = self.service.get_blob_client(bucket, key).download_blob(
                max_concurrency=1, timeout=self.timeout, **kwargs
            )
        reader = MappedReader(downloader, lambda: self._errors(bucket, key))
        reader.version = downloader.properties.etag
        reader.size = int(downloader.properties.size or 0)
        return cast(BinaryIO, reader)

    def hashes_while_sending(self, size: int) -> bool:
        return False

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        md5_hex = given_md5(md5_hex, self.name)
        blob = self.service.get_blob_client(bucket, key)
        settings = ContentSettings(
            content_md5=bytearray(bytes.fromhex(md5_hex)), content_type=names.content_type(key)
        )
        if size <= PART_SIZE:
            data = body.read(size)
            if len(data) != size:
                raise SourceChanged("the local file is shorter than it was", store=self.name)
            md5_b64 = base64.b64encode(bytes.fromhex(md5_hex)).decode()
            with self._errors(bucket, key):
                # Content-MD5: the service checks the body against it (the MD5 we have already,
                # rather than validate_content computing it again).
                resp = blob.upload_blob(
                    data, length=size, overwrite=True, content_settings=settings,
                    headers={"Content-MD5": md5_b64}, timeout=self.timeout,
                )
            return ObjectInfo(key, size, time.time(), md5_hex, _etag(resp.get("etag")))
        if size <= self.stream_put_limit:
            # One request streamed from the file (retried whole, from byte 0).
            return run(self._put_stream, blob, bucket, key, body, size, md5_hex)
        return self._put_blocks(blob, bucket, key, body, size, md5_hex, settings, run)

    def _put_stream(
        self, blob: Any, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str
    ) -> ObjectInfo:
        """One Put Blob of ``size`` bytes read from ``body`` as they are sent (one buffer of
        :data:`~worker.stores.modules.http.SEND_BLOCK`).  Its ``Content-MD5`` is the content's
        MD5, which the service checks the whole body against before it stores anything; the
        bytes are also checked (CRC of the hashed content, else MD5) before the last block
        leaves, so a file edited meanwhile is cut short (:class:`SourceChanged`) rather than
        sent."""
        md5 = bytes.fromhex(md5_hex)
        stream = VerifyingReader(body, size, md5_hex)
        stream.seek(0)
        headers = BlobHTTPHeaders(blob_content_type=names.content_type(key), blob_content_md5=md5)
        try:
            with self._errors(bucket, key):
                # The generated client: upload_blob would read the whole body into memory.
                resp = blob._client.block_blob.upload(
                    content_length=size, body=stream, transactional_content_md5=md5,
                    blob_http_headers=headers, timeout=self.timeout,
                    cls=lambda _response, _body, response_headers: response_headers,
                )
        except SourceChanged as exc:
            exc.store, exc.container, exc.key = self.name, bucket, key
            raise
        return ObjectInfo(key, size, time.time(), md5_hex, _etag(resp.get("ETag")))

    def _put_blocks(
        self, blob: Any, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str,
        settings: ContentSettings, run: Runner,
    ) -> ObjectInfo:
        block_ids: list[str] = []
        staging: deque[Future[None]] = deque()
        with ThreadPoolExecutor(BLOCKS_IN_FLIGHT, thread_name_prefix="azure-block") as pool:
            try:
                for chunk in checked_parts(body, size, self._block(size), md5_hex):
                    block_id = base64.b64encode(f"synchro-{len(block_ids):08d}".encode()).decode()
                    staging.append(
                        pool.submit(run, self._stage, blob, bucket, key, block_id, chunk)
                    )
                    block_ids.append(block_id)
                    del chunk
                    while len(staging) >= BLOCKS_IN_FLIGHT:
                        staging.popleft().result()  # at most BLOCKS_IN_FLIGHT blocks held
                while staging:
                    staging.popleft().result()
            except BaseException as exc:
                for future in staging:
                    future.cancel()
                if isinstance(exc, SourceChanged):
                    exc.store, exc.container, exc.key = self.name, bucket, key
                raise

        def commit() -> Any:
            with self._errors(bucket, key):
                return blob.commit_block_list(
                    block_ids, content_settings=settings, timeout=self.timeout
                )

        resp = run(commit)
        return ObjectInfo(key, size, time.time(), md5_hex, _etag(resp.get("etag")))

    def upload_memory(self, size: int) -> int:
        """Bytes of file content one upload of ``size`` holds at once (for the pass's budget):
        a streamed Put Blob one send buffer, an upload in blocks the blocks in flight."""
        if size <= PART_SIZE:
            return size
        if size <= self.stream_put_limit:
            return SEND_BLOCK
        return BLOCKS_IN_FLIGHT * self._block(size)

    def _block(self, size: int) -> int:
        return max(self.block_size, -(-size // _MAX_BLOCKS))

    def _stage(self, blob: Any, bucket: str, key: str, block_id: str, chunk: bytes) -> None:
        with self._errors(bucket, key):
            blob.stage_block(block_id, chunk, length=len(chunk), validate_content=True,
                             timeout=self.timeout)

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        container = self.service.get_container_client(bucket)
        for key in keys:
            try:
                with self._errors(bucket, key):
                    container.delete_blob(key, timeout=self.timeout)
            except NotFound as exc:
                if isinstance(exc, ContainerNotFound):
                    raise

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo:
        src = self.service.get_blob_client(bucket, src_key)
        dst = self.service.get_blob_client(bucket, dst_key)
        with self._errors(bucket, src_key):
            copy = dst.start_copy_from_url(src.url, requires_sync=True, timeout=self.timeout)
            if copy.get("copy_status") != "success":
                raise StoreError(
                    f"server-side copy ended {copy.get('copy_status')}", store=self.name,
                    container=bucket, key=src_key,
                )
            props = dst.get_blob_properties(timeout=self.timeout)
        return _info(props)

    def close(self) -> None:
        self.service.close()


def _md5_mismatch(exc: Exception) -> bool:
    """Azure says Md5Mismatch; Azurite says InvalidOperation "Provided contentMD5 doesn't
    match"."""
    text = str(getattr(exc, "message", "") or exc).lower()
    return "md5" in text and "match" in text


def _etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _info(props: Any) -> ObjectInfo:
    raw = props.content_settings.content_md5 if props.content_settings else None
    md5 = bytes(raw).hex() if raw else None
    modified = props.last_modified.timestamp() if props.last_modified else 0.0
    return ObjectInfo(props.name, int(props.size or 0), modified, md5, _etag(props.etag))
