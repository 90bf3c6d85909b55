"""The quick checksum that confirms a streamed file is still the content hashed just before.

:func:`~worker.stores.modules.base.stream_md5` hashes a large file once (MD5, what the stores
verify and the index records) and computes this checksum in the same pass; a backend streaming
the file afterwards recomputes only this checksum, not a second MD5.  CRC-32C through
google-crc32c's C implementation costs about 0.06 ms per MB here, zlib's CRC-32 (the fallback
when that library or its C build is missing) about 0.5 ms per MB, MD5 1.7 ms.  One function is
chosen per process, so both passes always agree.
"""

from __future__ import annotations

import zlib

try:
    import google_crc32c

    _CRC32C = google_crc32c.implementation == "c"
except ImportError:  # pragma: no cover - google-crc32c comes with google-cloud-storage
    _CRC32C = False

#: The name of the checksum in use, for messages and benchmarks.
NAME = "CRC-32C" if _CRC32C else "CRC-32"
#: Whether :func:`crc_extend` is CRC-32C (Castagnoli), the checksum GCS reports as ``crc32c``.
IS_CRC32C = _CRC32C


#: google-crc32c takes only ``bytes``, so a block read into a reused buffer is copied to it in
#: slices this small: a 1 MiB ``bytes`` is a fresh ``mmap`` on a threaded process (256 page faults
#: per MiB, a third of a second of system time on 512 MiB), a 64 KiB one is reused heap.
_COPY_SLICE = 64 * 1024


def crc_extend(crc: int, data: bytes | bytearray | memoryview) -> int:
    """The checksum of what ``crc`` covered followed by ``data`` (start from 0)."""
    if not _CRC32C:
        return zlib.crc32(data, crc)
    if isinstance(data, bytes):
        return int(google_crc32c.extend(crc, data))
    view = memoryview(data)
    for start in range(0, len(view), _COPY_SLICE):
        crc = int(google_crc32c.extend(crc, bytes(view[start : start + _COPY_SLICE])))
    return crc
