"""One gzip member from parts deflated apart: what any gzip reader reads is the parts' bytes."""

from __future__ import annotations

import gzip
import zlib

from collector_helpers import gunzip_one_member
from hypothesis import given
from hypothesis import strategies as st

from exporter.gzip_parts import EMPTY, crc32_combine, deflate, gzip_member, joined

# Short, repetitive and random parts: the deflate blocks differ in kind (stored, fixed, dynamic).
PART = st.one_of(st.binary(max_size=300), st.binary(min_size=1, max_size=8).map(lambda b: b * 900))


@given(st.lists(PART, max_size=6))
def test_parts_deflated_apart_read_back_as_their_bytes_in_order(parts: list[bytes]) -> None:
    body = gzip_member([deflate(part) for part in parts])
    assert gunzip_one_member(body) == b"".join(parts)
    assert gzip.decompress(body) == b"".join(parts)


@given(PART, PART)
def test_crc32_combine_is_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(
        first + second
    )


def test_empty_parts_add_nothing() -> None:
    assert deflate(b"") == EMPTY
    assert gunzip_one_member(gzip_member([])) == b""
    assert gunzip_one_member(gzip_member([EMPTY, deflate(b"abc"), EMPTY])) == b"abc"
    whole = joined([deflate(b"ab"), EMPTY, deflate(b"c")])
    assert (whole.crc, whole.size) == (zlib.crc32(b"abc"), 3)


def test_crc32_combine_over_a_long_second_part() -> None:
    # Lengths far past the hypothesis parts: every bit of the length takes part in the shift.
    second = bytes(range(256)) * 4099  # 1,049,344 bytes
    first = b"# HELP x A gauge.\n"
    assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(
        first + second
    )
