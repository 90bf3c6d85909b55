"""The quick checksum that streamed uploads check against (worker.stores.modules.checksum)."""

import os
import zlib

import google_crc32c

from worker.stores.modules import checksum
from worker.stores.modules.base import crc32_of, stream_md5


def test_the_c_crc32c_is_used_when_installed() -> None:
    # google-crc32c comes with google-cloud-storage; its C build is ~10x cheaper than zlib's CRC-32.
    assert google_crc32c.implementation == "c"
    assert checksum.NAME == "CRC-32C"
    assert checksum.crc_extend(0, b"123456789") == 0xE3069283  # CRC-32C check value
    assert checksum.crc_extend(0, b"123456789") != zlib.crc32(b"123456789")


def test_extending_block_by_block_equals_one_pass_over_any_buffer_type() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    whole = checksum.crc_extend(0, data)
    assert whole == google_crc32c.value(data)
    crc = 0
    view = memoryview(bytearray(data))
    for start in range(0, len(data), 1 << 20):
        crc = checksum.crc_extend(crc, view[start : start + (1 << 20)])
    assert crc == whole
    assert checksum.crc_extend(0, bytearray(data)) == whole


def test_stream_md5_remembers_the_same_checksum_the_upload_recomputes(tmp_path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(2 * 1024 * 1024 + 5)
    path.write_bytes(data)
    with open(path, "rb") as f:
        md5 = stream_md5(f)
    assert crc32_of(md5) == checksum.crc_extend(0, data)
