"""``openstack`` and ``rackspace``: OpenStack Swift through python-swiftclient + keystoneauth1.

Keys read (``openstack``): ``keystoneAuthVersion`` (``v3``), ``authUrl``, ``region``,
``tenantId`` (the project), ``username``, ``password``, ``domainId`` / ``domainName`` (the
user's and project's domain), ``bucket``.  ``rackspace``: ``username``, ``apiKey``, ``region``,
``authUrl`` (Rackspace's v2.0 identity with the ``RAX-KSKEY:apiKeyCredentials`` method; see
rackspace.py).
Tested against a single-node Swift with a Keystone v3 identity endpoint
(tests/servers/swift_server.py); Rackspace's own identity service cannot be reached from the
tests, only the same flow against the test identity endpoint.

One keystoneauth1 session (token cached, re-authenticated on 401) is shared; swiftclient
connections are not thread-safe, so each thread has its own, with swiftclient's retries off
(the store applies the one tenacity policy).  Uploads send the content's MD5 as ``ETag`` so
Swift refuses a body that does not match (422).  Files above 8 MiB become a Static Large
Object: 8 MiB segments in ``<container>_segments``, each verified by its ETag, and the
manifest, which makes the object visible, is written only after the whole file's hash matched.
A plain object's listed hash is its MD5; an SLO's is the manifest ETag, kept as ``etag``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, ClassVar, cast
from urllib.parse import quote

import requests
import urllib3
from keystoneauth1 import exceptions as kexc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from worker.errors import (
    AccessDenied,
    IntegrityError,
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
    checked_parts,
    given_md5,
)
from worker.stores.modules.http import tune_session
from worker.stores.modules.reader import ChunkReader

SEGMENTS_SUFFIX = "_segments"
#: Swift's largest listing page (container_listing_limit); fewer requests than 1,000.
LISTING_PAGE = 10_000
_TRANSIENT_STATUS = {408, 422, 429, 498, 499, 500, 502, 503, 504}


class SwiftBackend:
    """Swift through per-thread swiftclient connections sharing one keystoneauth1 session."""

    name: ClassVar[str] = "openstack"
    supports_bucket_creation: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True

    def __init__(
        self, session: ks_session.Session, region: str | None = None, timeout: float = 60.0
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.listing_page = LISTING_PAGE
        self.os_options: dict[str, Any] = {
            "service_type": "object-store",
            "interface": "public",
            "region_name": region,
        }
        self._local = threading.local()
        self._all: list[swift.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, *, timeout: float = 60.0) -> SwiftBackend:
        auth = v3.Password(
            auth_url=config.authUrl,
            username=config.username,
            password=config.password.get_secret_value(),
            user_domain_id=config.domainId,
            user_domain_name=config.domainName,
            project_id=config.tenantId,
            project_domain_id=config.domainId if not config.tenantId else None,
            project_domain_name=config.domainName if not config.tenantId else None,
        )
        return cls(ks_session.Session(auth=auth, timeout=timeout), config.region, timeout)

    @property
    def conn(self) -> swift.Connection:
        """This thread's connection (swiftclient's are not thread-safe)."""
        conn: swift.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _TunedConnection(
                session=self.session, os_options=self.os_options, retries=0,
                retry_on_ratelimit=False, timeout=self.timeout,
            )
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    # --- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(
        self, bucket: str | None = None, key: str | None = None, missing: str = "object"
    ) -> Iterator[None]:
        """The one place swiftclient's and keystoneauth1's exceptions become worker.errors."""
        where: dict[str, Any] = {"store": self.name, "container": bucket, "key": key}
        try:
            yield
        except ClientException as exc:
            status = int(exc.http_status or 0)
            text = f"{status or ''} {exc.http_reason or exc.msg}".strip()
            cls: type[StoreError] = StoreError
            if status == 404:
                cls = ContainerNotFound if missing == "bucket" or key is None else NotFound
            elif status in (401, 403):
                cls = AccessDenied
            elif status == 412:
                cls = IntegrityError  # If-Match on a resumed read: the object was replaced
            elif status in _TRANSIENT_STATUS or status == 0:
                cls = TransientStoreError
            raise cls(text, **where) from exc
        except kexc.Unauthorized as exc:
            raise AccessDenied(f"identity refused the credentials: {exc}", **where) from exc
        except (kexc.ConnectFailure, kexc.ConnectTimeout, kexc.RetriableConnectionFailure) as exc:
            raise TransientStoreError(f"identity unreachable: {exc}", **where) from exc
        except kexc.HttpError as exc:
            status = int(exc.http_status or 0)
            cls = TransientStoreError if status in _TRANSIENT_STATUS else StoreError
            raise cls(f"identity: {exc}", **where) from exc
        except kexc.ClientException as exc:
            raise StoreError(f"identity: {exc}", **where) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # A download's chunks come straight from urllib3 (a reset mid-body, say).
            raise TransientStoreError(f"{type(exc).__name__}: {exc}", **where) from exc

    # --- names -----------------------------------------------------------------------------

    def bucket_name_problem(self, bucket: str) -> str | None:
        problem = names.swift_container_problem(bucket)
        if problem is None and len(bucket.encode()) > 256 - len(SEGMENTS_SUFFIX):
            return f"leaves no room for its {SEGMENTS_SUFFIX!r} container (256 bytes)"
        return problem

    def key_problem(self, key: str) -> str | None:
        # Segment names are the key plus "/<upload>/<n>": keep room for them.
        return names.key_problem(key, 1024 - 50)

    # --- containers ------------------------------------------------------------------------

    def list_buckets(self) -> list[str]:
        with self._errors():
            _, containers = self.conn.get_account(full_listing=True)
        found = {c["name"] for c in containers}
        return sorted(
            n for n in found
            if not (n.endswith(SEGMENTS_SUFFIX) and n[: -len(SEGMENTS_SUFFIX)] in found)
        )

    def create_bucket(self, bucket: str) -> None:
        with self._errors(bucket):
            self.conn.put_container(bucket)  # Swift answers 202 when it exists: fine

    def delete_bucket(self, bucket: str) -> None:
        with self._errors(bucket):
            self.conn.delete_container(bucket)
        segments = bucket + SEGMENTS_SUFFIX
        with contextlib.suppress(StoreError):
            self._purge_segments(segments, [""])
            with self._errors(segments):
                self.conn.delete_container(segments)

    # --- listing ---------------------------------------------------------------------------

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page:
        with self._errors(bucket):
            _, entries = self.conn.get_container(
                bucket, prefix=prefix or None, marker=token, limit=self.listing_page
            )
        items = [_info(e) for e in entries if "subdir" not in e]
        return Page(items, entries[-1]["name"] if len(entries) == self.listing_page else None)

    def list_prefixes(self, bucket: str, prefix: str) -> list[str]:
        with self._errors(bucket):
            _, entries = self.conn.get_container(
                bucket, prefix=prefix or None, delimiter="/", full_listing=True
            )
        return [e["subdir"] for e in entries if "subdir" in e]

    # --- objects ---------------------------------------------------------------------------

    def open_read(
        self, bucket: str, key: str, offset: int = 0, version: str | None = None
    ) -> BinaryIO:
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if version:
            headers["If-Match"] = version
        with self._errors(bucket, key):
            found, chunks = self.conn.get_object(
                bucket, key, resp_chunk_size=1024 * 1024, headers=headers
            )
        reader = ChunkReader(chunks, lambda: self._errors(bucket, key))
        reader.version = found.get("etag")
        reader.size = offset + int(found.get("content-length", 0))
        return cast(BinaryIO, reader)

    def hashes_while_sending(self, size: int) -> bool:
        return False

    def put(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str | None,
        run: Runner,
    ) -> ObjectInfo:
        md5_hex = given_md5(md5_hex, self.name)
        if size > PART_SIZE:
            return self._put_slo(bucket, key, body, size, md5_hex, run)
        data = body.read(size)
        if len(data) != size:
            raise SourceChanged("the local file is shorter than it was", store=self.name)
        with self._errors(bucket, key, missing="bucket"):
            etag = self.conn.put_object(bucket, key, data, content_length=size, etag=md5_hex,
                                        content_type=names.content_type(key))
        return ObjectInfo(key, size, time.time(), md5_hex, _strip(etag))

    def _put_slo(
        self, bucket: str, key: str, body: BinaryIO, size: int, md5_hex: str, run: Runner
    ) -> ObjectInfo:
        segments = bucket + SEGMENTS_SUFFIX
        upload = f"{key}/{uuid.uuid4().hex[:16]}"
        run(self._ensure_segments, bucket, segments)
        manifest: list[dict[str, Any]] = []
        try:
            for chunk in checked_parts(body, size, PART_SIZE, md5_hex):
                part_md5 = hashlib.md5(chunk, usedforsecurity=False).hexdigest()
                name = f"{upload}/{len(manifest):08d}"
                run(self._put_segment, segments, name, chunk, part_md5, bucket, key)
                manifest.append({"path": f"/{segments}/{name}", "etag": part_md5,
                                 "size_bytes": len(chunk)})
            etag = run(self._put_manifest, bucket, key, manifest)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self._purge_segments(segments, [upload + "/"])
            if isinstance(exc, SourceChanged):
                exc.store, exc.container, exc.key = self.name, bucket, key
            raise
        # Segments of earlier uploads of this key are garbage now.
        with contextlib.suppress(StoreError):
            self._purge_segments(segments, [key + "/"], keep=upload + "/")
        return ObjectInfo(key, size, time.time(), md5_hex, etag)

    def _ensure_segments(self, bucket: str, segments: str) -> None:
        with self._errors(bucket):
            self.conn.head_container(bucket)  # an SLO never creates its container implicitly
        with self._errors(segments):
            self.conn.put_container(segments)

    def _put_segment(
        self, segments: str, name: str, chunk: bytes, md5: str, bucket: str, key: str
    ) -> None:
        with self._errors(bucket, key, missing="bucket"):
            self.conn.put_object(segments, name, chunk, content_length=len(chunk), etag=md5)

    def _put_manifest(self, bucket: str, key: str, manifest: list[dict[str, Any]]) -> str | None:
        with self._errors(bucket, key, missing="bucket"):
            etag = self.conn.put_object(
                bucket, key, json.dumps(manifest).encode(),
                query_string="multipart-manifest=put", content_type=names.content_type(key),
            )
        return _strip(etag)

    def delete_many(self, bucket: str, keys: Iterable[str]) -> None:
        batch = list(keys)
        if not batch:
            return
        # One bulk-delete request per 1,000 keys (the bulk middleware's batch).
        for start in range(0, len(batch), 1000):
            self._bulk_delete(bucket, batch[start : start + 1000])
        # Segments of large objects among them (deleting a manifest leaves its segments).
        with contextlib.suppress(ContainerNotFound):
            self._purge_segments(bucket + SEGMENTS_SUFFIX, [k + "/" for k in batch])

    def _bulk_delete(self, container: str, keys: list[str]) -> None:
        body = "\n".join(quote(f"/{container}/{k}") for k in keys).encode()
        result: dict[str, Any] = {}
        with self._errors(container):
            _, text = self.conn.post_account(
                headers={"Accept": "application/json", "Content-Type": "text/plain"},
                query_string="bulk-delete", data=body, response_dict=result,
            )
        report = json.loads(text or b"{}")
        errors = [e for e in report.get("Errors", []) if not str(e[1]).startswith("404")]
        status = str(report.get("Response Status", "200"))
        if status.startswith("404") and report.get("Number Not Found", 0) == 0:
            raise ContainerNotFound("no such container", store=self.name, container=container)
        if errors or not status.startswith(("200", "201", "202", "204", "404")):
            detail = errors[0] if errors else status
            cls = TransientStoreError if status[:1] == "5" else StoreError
            raise cls(f"bulk delete: {detail}", store=self.name, container=container)

    def _purge_segments(
        self, segments: str, prefixes: list[str], keep: str | None = None
    ) -> None:
        """Delete segments under any of ``prefixes`` (one listing of the segments container)."""
        try:
            with self._errors(segments):
                _, entries = self.conn.get_container(segments, full_listing=True)
        except NotFound:
            return
        doomed = [
            e["name"] for e in entries
            if any(e["name"].startswith(p) for p in prefixes)
            and not (keep and e["name"].startswith(keep))
            # a segment name is "<key>/<upload>/<n>": only whole uploads of that key
            and e["name"].count("/") >= 2
        ]
        for start in range(0, len(doomed), 1000):
            self._bulk_delete(segments, doomed[start : start + 1000])

    def copy(self, bucket: str, src_key: str, dst_key: str) -> ObjectInfo:
        with self._errors(bucket, src_key):
            self.conn.copy_object(bucket, src_key, destination=f"/{bucket}/{dst_key}")
            head = self.conn.head_object(bucket, dst_key)
        etag = _strip(head.get("etag"))
        modified = float(head.get("x-timestamp") or time.time())
        return ObjectInfo(dst_key, int(head.get("content-length", 0)), modified, etag, etag)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()


class _TunedConnection(swift.Connection):  # type: ignore[misc]
    """A swiftclient connection whose HTTP session resolves proxies and the CA bundle once
    (see http.py) instead of scanning the environment on every request."""

    def http_connection(self, url: str | None = None) -> Any:
        parsed, conn = super().http_connection(url)
        tune_session(conn.request_session, parsed.geturl(), 1)
        bundle = conn.request_session.verify
        if isinstance(bundle, str) and conn.requests_args.get("verify") is True:
            conn.requests_args["verify"] = bundle  # what trust_env would have used
        return parsed, conn


def _strip(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def _info(entry: dict[str, Any]) -> ObjectInfo:
    modified = datetime.fromisoformat(entry["last_modified"]).replace(tzinfo=UTC)
    if "slo_etag" in entry:
        # An SLO's hash is that of its manifest; its ETag (MD5 of the segments' MD5s, what
        # the upload returned) is listed as slo_etag.  Neither is the content's MD5.
        md5, etag = None, _strip(entry["slo_etag"])
    else:
        md5 = etag = _strip(entry.get("hash"))
    return ObjectInfo(entry["name"], int(entry["bytes"]), modified.timestamp(), md5, etag)
