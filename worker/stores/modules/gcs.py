"""``google``: Google Cloud Storage through google-cloud-storage.

Keys read: ``projectId``, ``keyFilename`` (a service-account JSON file; else application
default credentials; with an ``endpoint`` and no key file, anonymous credentials, as an
emulator wants), ``endpoint``, ``bucket``.  Tested against fake-gcs-server
(tests/servers/gcs_server.py).

Every call passes ``retry=None``: the store applies the one tenacity policy.  Each upload sends
the content's MD5 as the object's ``md5Hash`` so GCS refuses a body that does not match; files
above 8 MiB and up to :data:`STREAM_PUT_LIMIT` go as a resumable upload of one request streamed
from the file (one 256 KiB send buffer; the SDK would hold the whole request body in memory),
larger ones in 32 MiB chunks read from disk (one chunk in memory per upload); either way the
whole file's content is checked (CRC of the hashed content, else MD5) before the last
bytes, the ones that commit the object, are sent.  A file nobody hashed before goes as one
request without an MD5, read once and only CRC-32C'd: GCS's ``crc32c`` must match, and its
``md5Hash`` is then the content's (no client MD5, 1.7 ms per MB).  Listings carry ``md5Hash``
for every object we upload (only composed objects lack it); the etag is the object's generation.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, cast

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.oauth2 import service_account
from google.resumable_media import common as media_common

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
    HashingReader,
    ObjectInfo,
    Page,
    Runner,
    SourceChanged,
    VerifyingReader,
    given_md5,
)
from worker.stores.modules.checksum import IS_CRC32C
from worker.stores.modules.http import SEND_BLOCK, tune_session
from worker.stores.modules.reader import MappedReader

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
_FIELDS = "items(name,size,updated,md5Hash,generation),nextPageToken"


#: Resumable-upload chunk: see :attr:`GCSBackend.chunk_size`.
CHUNK_SIZE = 4 * PART_SIZE
#: Files above 8 MiB and up to this size go up as one request of a resumable upload, streamed
#: from the file; larger ones in chunks of :data:`CHUNK_SIZE`.
STREAM_PUT_LIMIT = 256 * 1024 * 1024


class GCSBackend:
    """GCS through one shared client (its HTTP session has a pool sized for our workers)."""

    name: ClassVar[str] = "google"
    supports_bucket_creation: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True

    def __init__(self, client: storage.Client, timeout: float = 60.0) -> None:
        self.client = client
        #: Objects per listing request (GCS's maximum is 1,000).
        self.listing_page = 1000
        #: (connect, read) seconds per request; a slow server past this is a transient error
        self.timeout = (min(10.0, timeout), timeout)
        #: Bytes per resumable-upload request (a multiple of 256 KiB), held in memory while
        #: sent; the chunks of one upload go one after another (the protocol is sequential).
        self.chunk_size = CHUNK_SIZE
        #: Files above 8 MiB up to this size go up streamed, in one request.
        self.stream_put_limit = STREAM_PUT_LIMIT

    def upload_memory(self, size: int) -> int:
        """Bytes of file content one upload of ``size`` holds at once (for the pass's budget):
        a streamed upload one send buffer, a chunked one a chunk."""
        if size <= PART_SIZE:
            return size
        if size <= self.stream_put_limit:
            return SEND_BLOCK
        return min(size, self.chunk_size)

    @classmethod
    def from_config(
        cls, config: Any, *, pool: int = 32, timeout: float = 60.0
    ) -> GCSBackend:
        options = {"api_endpoint": config.endpoint} if config.endpoint else None
        if config.keyFilename:
            credentials: Any = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                config.keyFilename, scopes=[_SCOPE]
            )
            project = config.projectId or credentials.project_id
        elif config.endpoint:
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
            project = config.projectId or "synchro-sync"
        else:
            credentials, found = google.auth.default(scopes=[_SCOPE])
            project = config.projectId or found
        http = _session(credentials, pool, config.endpoint or "https://storage.googleapis.com")
        client = storage.Client(
            project=project,
            credentials=credentials,
            _http=http,
            client_options=options,
        )
        # The client fetches each bucket's metadata in the background for tracing attributes
        # (a GET per bucket, even a missing one): requests we neither need nor want counted.
        client._bucket_metadata_cache = None
        return cls(client, timeout)

    # --- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(
        self, bucket: str | None = None, key: str | None = None, missing: str = "object"
    ) -> Iterator[None]:
        """The one place google's exceptions become worker.errors; ``missing`` says what a
        404 means for this call (``bucket`` where the object cannot be the missing part)."""
        where: dict[str, Any] = {"store": self.name, "container": bucket, "key": key}
        try:
            yield
        except gexc.GoogleAPICallError as exc:
            raise self._by_status(exc.code or 0, exc.message, missing, where) from exc
        except media_common.InvalidResponse as exc:
            status = int(getattr(exc.response, "status_code", 0) or 0)
            raise self._by_status(status, str(exc.args[0]), missing, where) from exc
        except media_common.DataCorruption as exc:
            raise TransientStoreError(f"data corrupted in transit: {exc}", **where) from exc
        except RefreshError as exc:
            raise AccessDenied(f"credentials refused: {exc}", **where) from exc
        except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
            raise TransientStoreError(f"{type(exc).__name__}: {exc}", **where) from exc
        except requests.exceptions.ChunkedEncodingError as exc:
            raise TransientStoreError(f"connection broken: {exc}", **where) from exc

    def _by_status(
        self, status: int, message: str, missing: str, where: dict[str, Any]
    ) -> StoreError:
        text = f"{status}: {message}"
        if status == 404:
            if missing == "bucket" or "bucket" in message.lower():
                return ContainerNotFound(text, **where)
            return NotFound(text, **where)
        if status in (401, 403):
            return AccessDenied(text, **where)
        if status == 409:
            return AlreadyExists(text, **where)
        if status in _TRANSIENT_STATUS:
            return TransientStoreError(text, **where)
        if status == 400 and "name" in message.lower():
            return InvalidName(text, **where)
        return StoreError(text, **where)

    # --- names -----------------------------------------------------------------------------

    def bucket_name_problem(self, bucket: str) -> str | None:
        return names.gcs_bucket_problem(bucket)

    def key_problem(self, key: str) -> str | None:
        return names.gcs_key_problem(key)

    # --- buckets ---------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        with self._errors():
            return [b.name for b in self.client.list_buckets(retry=None, timeout=self.timeout)]

    def create_bucket(self, bucket: str) -> None:
        with self._errors(bucket, missing="bucket"):
            self.client.create_bucket(bucket, retry=None, timeout=self.timeout)

    def delete_bucket(self, bucket: str) -> None:
        with self._errors(bucket, missing="bucket"):
            self.client.bucket(bucket).delete(retry=None, timeout=self.timeout)

    # --- listing ---------------------------------------------------------------------------

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page:
        with self._errors(bucket, missing="bucket"):
            iterator = self.client.list_blobs(
                bucket, prefix=prefix or None, page_token=token, page_size=self.listing_page,
                fields=_FIELDS, retry=None, timeout=self.timeout,
            )
            page = next(iterator.pages, None)
            blobs = list(page) if page is not None else []
            items = [_info(b) for b in blobs]
            return Page(items, iterator.next_page_token)

    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        with self._errors(bucket, missing="bucket"):
            iterator = self.client.list_blobs(
                bucket, prefix=prefix or None, delimiter="/", retry=None, timeout=self.timeout,
                fields="prefixes,nextPageToken",
            )
            for _ in iterator.pages:
                pass
            return sorted(iterator.prefixes)

    # --- objects ---------------------------------------------------------------------------

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        with self._errors(bucket, key):
            if version is None:
                blob = self.client.bucket(bucket).get_blob(key, retry=None, timeout=self.timeout)
                if blob is None:
                    raise NotFound("no such object", store=self.name, container=bucket, key=key)
            else:
                # That generation only: a replaced object is gone (404) rather than mixed in.
                blob = self.client.bucket(bucket).get_blob(
                    key, generation=int(version), retry=None, timeout=self.timeout
                )
                if blob is None:
                    raise IntegrityError(
                        "the object changed while it was read", store=self.name,
                        container=bucket, key=key,
                    )
            # Pinned to the generation just seen: a concurrent overwrite cannot mix versions.
            reader = blob.open("rb", chunk_size=PART_SIZE, retry=None)
            if offset:
                reader.seek(offset)
        mapped = MappedReader(reader, lambda: self._errors(bucket, key))
        mapped.version, mapped.size = str(blob.generation), int(blob.size or 0)
        return cast(BinaryIO, mapped)

    def hashes_while_sending(self, size: int) -> bool:
        # A one-request upload is MD5ed as it is sent; GCS reports the MD5 of what it stored.
        return PART_SIZE < size <= self.stream_put_limit

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        if PART_SIZE < size <= self.stream_put_limit:
            try:
                return run(self._put_stream, bucket, key, body, size, md5_hex)
            except SourceChanged as exc:
                exc.store, exc.container, exc.key = self.name, bucket, key
                raise
        md5_hex = given_md5(md5_hex, self.name)

        def upload() -> ObjectInfo:
            blob = self.client.bucket(bucket).blob(
                key, chunk_size=self.chunk_size if size > PART_SIZE else None
            )
            # GCS checks the body against this and refuses a mismatch.
            blob.md5_hash = base64.b64encode(bytes.fromhex(md5_hex)).decode()
            stream = body if size <= PART_SIZE else VerifyingReader(body, size, md5_hex)
            stream.seek(0)
            with self._errors(bucket, key, missing="bucket"):
                blob.upload_from_file(
                    stream, size=size, rewind=False, checksum=None, retry=None,
                    timeout=self.timeout, content_type=names.content_type(key),
                )
            return self._checked(blob, bucket, key, md5_hex)

        try:
            # Resumable uploads restart from byte 0 (emulators do not answer status queries).
            return run(upload)
        except SourceChanged as exc:
            exc.store, exc.container, exc.key = self.name, bucket, key
            raise

    def _put_stream(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None
    ) -> ObjectInfo:
        """A resumable upload whose one request carries the whole file, read as it is sent
        (one buffer of :data:`~worker.stores.modules.http.SEND_BLOCK`): the SDK would read
        each request's body into memory.  Given the content's MD5, it is the object's
        ``md5Hash``, which GCS checks, and the bytes are checked (CRC of the hashed content,
        else MD5) before the last block leaves.  Without it (the file was not hashed before:
        one read instead of two) the bytes are MD5ed as they are sent, the file's status is
        checked before the last block leaves (:class:`~worker.stores.modules.base.HashingReader`),
        and the ``md5Hash`` GCS computed of what it stored must equal that MD5.  Either way a
        file edited meanwhile never completes the upload."""
        blob = self.client.bucket(bucket).blob(key)
        if md5_hex is not None:
            blob.md5_hash = base64.b64encode(bytes.fromhex(md5_hex)).decode()
        content_type = names.content_type(key)
        with self._errors(bucket, key, missing="bucket"):
            url = blob.create_resumable_upload_session(
                content_type=content_type, size=size, timeout=self.timeout, checksum=None,
                retry=None,
            )
        stream = (
            HashingReader(body, size, crc_only=IS_CRC32C) if md5_hex is None
            else VerifyingReader(body, size, md5_hex)
        )
        stream.seek(0)
        headers = {"Content-Type": content_type, "Content-Length": str(size),
                   "Content-Range": f"bytes 0-{size - 1}/{size}"}
        with self._errors(bucket, key, missing="bucket"):
            resp = self.client._http.put(url, data=stream, headers=headers, timeout=self.timeout)
        if resp.status_code not in (200, 201):
            raise self._by_status(resp.status_code, resp.text[:200], "bucket",
                                  {"store": self.name, "container": bucket, "key": key})
        blob._set_properties(resp.json())
        if isinstance(stream, HashingReader):
            if stream.crc_only:  # what GCS stored is what was sent: its MD5 is theirs
                stream.check_crc32c(blob.crc32c, self.name, bucket, key)
            return self._checked(blob, bucket, key, stream.md5, reported=True)
        return self._checked(blob, bucket, key, md5_hex)

    def _checked(
        self, blob: Any, bucket: str, key: str, md5_hex: str | None, reported: bool = False
    ) -> ObjectInfo:
        """The uploaded object's info, if GCS holds the content's MD5 (else transient);
        ``reported``: GCS must report an MD5 (it does for every object uploaded whole).
        ``md5_hex`` None: we computed none (its CRC-32C was checked), GCS's is the content's."""
        info = _info(blob)
        differs = info.md5 is not None and md5_hex is not None and info.md5 != md5_hex
        if (info.md5 is None and reported) or differs:
            raise TransientStoreError(
                f"stored MD5 {info.md5} differs from the content's {md5_hex}",
                store=self.name, container=bucket, key=key,
            )
        return info

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        handle = self.client.bucket(bucket)
        for key in keys:
            try:
                with self._errors(bucket, key):
                    handle.delete_blob(key, retry=None, timeout=self.timeout)
            except NotFound as exc:
                if isinstance(exc, ContainerNotFound):
                    raise

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo:
        handle = self.client.bucket(bucket)
        with self._errors(bucket, src_key):
            new = handle.copy_blob(
                handle.blob(src_key), handle, dst_key, retry=None, timeout=self.timeout
            )
        return _info(new)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _session(credentials: Any, pool: int, endpoint: str) -> requests.Session:
    """The client's HTTP session (authorised unless anonymous), tuned for our threads."""
    session: requests.Session
    if isinstance(credentials, AnonymousCredentials):
        session = requests.Session()
    else:
        session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return tune_session(session, endpoint, pool)


def _info(blob: Any) -> ObjectInfo:
    md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
    # The resource's RFC 3339 string, parsed once with fromisoformat: Blob.updated goes
    # through strptime (about 60 us a call, most of a listing's CPU).
    stamp = getattr(blob, "_properties", {}).get("updated")
    if isinstance(stamp, str):
        modified = datetime.fromisoformat(stamp).timestamp()
    else:
        updated = blob.updated
        modified = updated.timestamp() if updated else 0.0
    etag = str(blob.generation) if blob.generation else blob.etag
    return ObjectInfo(blob.name, int(blob.size or 0), modified, md5, etag)


def credential_chain_problem() -> str | None:
    """None when Google's application default credentials are found; "" when they are not."""
    try:
        google.auth.default()
    except DefaultCredentialsError:
        return ""
    return None
