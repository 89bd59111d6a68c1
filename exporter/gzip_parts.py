"""One gzip member built from parts compressed at different times.

Gzipping the ~1.6 MB `/metrics` body of 1,200 indexes and every collector cost ~10 ms of CPU
per scrape, more than rendering it. The collectors' part changes only when a collector runs, so
it is compressed then (`deflate()`), and a scrape compresses only what it renders itself. Each
part comes from a fresh compressor (it refers to nothing before it) and ends with a sync flush
(on a byte boundary, not a final block), so the parts laid end to end are one valid deflate
stream. The gzip trailer needs the CRC-32 of the whole: `crc32_combine()` joins the parts'
CRCs from their lengths alone, as zlib's `crc32_combine()` does (Python does not expose it).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

# aiohttp's level (zlib's default), so a body compresses as it did before.
LEVEL = zlib.Z_DEFAULT_COMPRESSION
# gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown (as gzip.compress
# with mtime=0 writes it).
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final fixed-Huffman block holding nothing
_POLY = 0xEDB88320  # CRC-32, reflected


@dataclass(frozen=True)
class Deflated:
    """Raw deflate blocks of some bytes (no final block), their CRC-32 and length."""

    data: bytes
    crc: int
    size: int


EMPTY = Deflated(b"", 0, 0)


def raw_compressor() -> zlib._Compress:
    """A fresh compressor of raw deflate blocks (no zlib or gzip wrapper); end its part with
    `flush(zlib.Z_SYNC_FLUSH)`."""
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)


def deflate(data: bytes) -> Deflated:
    if not data:
        return EMPTY
    compressor = raw_compressor()
    blocks = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Deflated(blocks, zlib.crc32(data), len(data))


def joined(parts: Iterable[Deflated]) -> Deflated:
    """`parts` as one Deflated, as if their bytes had been deflated one after the other."""
    data, crc, size = [], 0, 0
    for part in parts:
        if part.size:
            data.append(part.data)
            crc = crc32_combine(crc, part.crc, part.size)
            size += part.size
    return Deflated(b"".join(data), crc, size)


def gzip_member(parts: Iterable[Deflated]) -> bytes:
    """One gzip member whose content is the parts' bytes, in order."""
    whole = joined(parts)
    trailer = struct.pack("<II", whole.crc, whole.size & 0xFFFFFFFF)
    return b"".join((_HEADER, whole.data, _FINAL_EMPTY_BLOCK, trailer))


def _multiply(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (bit-reflected, x^0 in the top bit)."""
    product = 0
    mask = 1 << 31
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


# x^(2^k) modulo the polynomial, for k = 0..31.
_X_POWERS = [1 << 30]
for _ in range(31):
    _X_POWERS.append(_multiply(_X_POWERS[-1], _X_POWERS[-1]))


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from crc1 = crc32(A), crc2 = crc32(B) and len(B): crc1 shifted over
    length2 zero bytes (x^(8 * length2)), plus crc2."""
    shift = 1 << 31  # x^0
    n, k = length2, 3  # 8 * length2 = length2 << 3
    while n:
        if n & 1:
            shift = _multiply(_X_POWERS[k & 31], shift)
        n >>= 1
        k += 1
    return _multiply(shift, crc1) ^ crc2
