"""Name rules per store: which bucket/container names and object keys each one can hold.

Names are normalised to Unicode NFC (what macOS' NFD file names become everywhere else), then
checked; a name a store cannot hold is reported with the reason, never changed.  Each function
returns ``None`` when the name is fine, else a short reason.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import re
import unicodedata

#: The pseudo-container of the Synchro server's *store files* (``apps.json`` and any other file
#: at the root of the module directory): the root of a ``FileModuleStore``, the container named
#: by ``MODULESTORE.configRoot`` in a cloud store.  No app folder can have this name.
STORE_FILES = "/"
#: How people see it in ``status`` and on the status page.
STORE_FILES_LABEL = "/ (store files)"
#: How the names of temporary files begin: a FileModuleStore's (a put in progress) and
#: ``pull``'s (a download in progress).  No key may have a segment that begins so; the mirror
#: ignores such files in the tree.
TEMP_PREFIX = ".synchro-tmp-"

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
_AZURE_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
#: A C0 control character or DEL (checked on every key of every upload: one regex search, not a
#: Python loop over the characters).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def content_type(key: str) -> str:
    """The ``Content-Type`` of an object, from its key's extension (as ``aws s3 sync`` chooses
    it, with no charset claimed: a module file's bytes are sent as they are);
    ``application/octet-stream`` when the extension says nothing."""
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    if guessed is None or encoding is not None:
        return "application/octet-stream"
    return guessed


def nfc(name: str) -> str:
    """The NFC form of ``name``."""
    return unicodedata.normalize("NFC", name)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def s3_bucket_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return "S3 bucket names are 3 to 63 characters long"
    if not _S3_BUCKET.match(name):
        return (
            "S3 bucket names use lowercase letters, digits, '.' and '-', "
            "and begin and end with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "S3 bucket names have no '..', '.-' or '-.'"
    if _is_ip(name):
        return "S3 bucket names are not IP addresses"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        return "S3 reserves that prefix or suffix"
    return None


def gcs_bucket_problem(name: str) -> str | None:
    limit = 222 if "." in name else 63
    if not 3 <= len(name) <= limit:
        return "GCS bucket names are 3 to 63 characters long (222 with dots, 63 per part)"
    if not _GCS_BUCKET.match(name) or any(len(p) > 63 or not p for p in name.split(".")):
        return (
            "GCS bucket names use lowercase letters, digits, '-', '_' and '.', "
            "and begin and end with a letter or digit"
        )
    if _is_ip(name):
        return "GCS bucket names are not IP addresses"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return "GCS bucket names cannot begin with 'goog' or contain 'google'"
    return None


def azure_container_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63:
        return "Azure container names are 3 to 63 characters long"
    if not _AZURE_CONTAINER.match(name):
        return (
            "Azure container names use lowercase letters, digits and single '-', "
            "and begin and end with a letter or digit"
        )
    return None


def swift_container_problem(name: str) -> str | None:
    if not name or len(name.encode("utf-8", "surrogatepass")) > 256:
        return "Swift container names are 1 to 256 bytes long"
    if "/" in name:
        return "Swift container names cannot contain '/'"
    return _text_problem(name)


def folder_problem(name: str) -> str | None:
    """A sub-folder name (FileModuleStore container, or a container as a key prefix)."""
    if not name:
        return "the name is empty"
    if "/" in name or "\\" in name:
        return "the name cannot contain '/' or '\\'"
    if name in (".", "..") or name.startswith("."):
        return "the name cannot begin with '.'"
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "the name is longer than 255 bytes"
    return _text_problem(name)


def _text_problem(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid Unicode (a lone surrogate)"
    if _CONTROL.search(name):
        return "the name contains a control character"
    return None


def key_problem(key: str, max_bytes: int = 1024) -> str | None:
    """Rules every store shares: keys mirror relative file paths."""
    if not key:
        return "the key is empty"
    problem = _text_problem(key)
    if problem:
        return problem
    if len(key.encode("utf-8")) > max_bytes:
        return f"the key is longer than {max_bytes} bytes in UTF-8"
    if key.startswith("/") or key.endswith("/") or "//" in key:
        return "the key has an empty path segment (leading, trailing or double '/')"
    if any(part in (".", "..") for part in key.split("/")):
        return "the key has a '.' or '..' path segment"
    return None


def gcs_key_problem(key: str) -> str | None:
    if key.startswith(".well-known/acme-challenge/"):
        return "GCS reserves '.well-known/acme-challenge/'"
    return key_problem(key, 1024)


def azure_key_problem(key: str) -> str | None:
    if len(key) > 1024:
        return "Azure blob names are at most 1024 characters"
    if key.count("/") >= 254:
        return "Azure blob names have at most 254 path segments"
    if "\\" in key:
        return "Azure turns '\\' into '/' in blob names"
    if key.endswith("."):
        return "Azure blob names cannot end with '.'"
    return key_problem(key, 4096)


def file_key_problem(key: str) -> str | None:
    problem = key_problem(key, 4000)
    if problem:
        return problem
    for part in key.split("/"):
        if len(part.encode("utf-8")) > 255:
            return "a path segment is longer than 255 bytes"
        if part.startswith(TEMP_PREFIX):
            return f"'{TEMP_PREFIX}' names are the store's temporary files"
    return None
