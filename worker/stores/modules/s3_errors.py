"""The ``amazon`` provider's one error table: S3 error codes, HTTP statuses and botocore's
exceptions -> :mod:`worker.errors`, for the boto3 path (:mod:`.s3`) and the light request path
(:mod:`.s3_put`) alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import botocore.exceptions as bce

from worker.errors import (
    AccessDenied,
    AlreadyExists,
    IntegrityError,
    InvalidName,
    NotFound,
    StoreError,
    TransientStoreError,
)
from worker.stores.modules.base import ContainerNotFound

STORE = "amazon"

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload", "NoSuchVersion"}
_DENIED = {
    "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
    "AccountProblem", "InvalidToken", "ExpiredToken", "Forbidden",
}
_EXISTS = {"BucketAlreadyExists", "BucketAlreadyOwnedByYou"}
_TRANSIENT = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "BadDigest", "RequestLimitExceeded",
    "OperationAborted", "TooManyRequests", "503", "500", "502", "504",
}
_INVALID = {"InvalidBucketName", "KeyTooLongError", "InvalidObjectName"}
_NETWORK = (
    bce.EndpointConnectionError,
    bce.ConnectionClosedError,
    bce.ReadTimeoutError,
    bce.ConnectTimeoutError,
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.HTTPClientError,
)


def error_class(code: str, status: int) -> type[StoreError]:
    """The worker.errors type for an S3 error code / HTTP status (the provider's one table)."""
    if code == "NoSuchBucket":
        return ContainerNotFound
    if code in _NOT_FOUND:
        return NotFound
    if code in _DENIED or status == 403:
        return AccessDenied
    if code in _EXISTS:
        return AlreadyExists
    if code in _TRANSIENT or status in (429, 500, 502, 503, 504):
        return TransientStoreError
    if code in _INVALID:
        return InvalidName
    if code == "PreconditionFailed" or status == 412:
        return IntegrityError  # If-Match on a resumed read: the object was replaced
    return StoreError


@contextlib.contextmanager
def mapped_errors(bucket: str | None = None, key: str | None = None) -> Iterator[None]:
    """The one place botocore's exceptions become worker.errors."""
    try:
        yield
    except bce.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"{code or status}: {err.get('Message') or exc}"
        cls = error_class(code, status)
        raise cls(message, store=STORE, container=bucket, key=key) from exc
    except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
        raise AccessDenied(str(exc), store=STORE, container=bucket, key=key) from exc
    except _NETWORK as exc:
        raise TransientStoreError(
            f"{type(exc).__name__}: {exc}", store=STORE, container=bucket, key=key
        ) from exc
    except bce.BotoCoreError as exc:
        raise StoreError(str(exc), store=STORE, container=bucket, key=key) from exc
