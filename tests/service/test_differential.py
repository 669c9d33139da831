"""Differential: on archives and their mutations, the reader agrees with zipfile or refuses.

Hypothesis writes archives with zipfile (stored and deflated, descriptors,
ZIP64, duplicate and look-alike names) and bends them: flipped length fields,
truncated extras, overlapping offsets, local headers that disagree with the
directory, flag bits. For each, every entry the reader lets out must be one
zipfile reads with the same bytes; refusing more than zipfile is allowed,
reading what zipfile refuses is not.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.test_corpus import assert_nothing_zipfile_would_not_give, read_archive

NAMES = st.sampled_from(
    ["a.txt", "b/c.txt", "café.txt", "cafe\u0301.txt", "A.TXT", "d/", "e.bin", "ok.csv"]
)
CONTENT = st.binary(max_size=3000) | st.builds(lambda n: b"row,value\n" * n, st.integers(0, 400))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A valid archive written by zipfile, with up to five entries."""
    buffer = io.BytesIO()
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=method) as archive:
        # Duplicate names are wanted here; zipfile warns about each.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(draw(st.integers(1, 5))):
            name = draw(NAMES)
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            archive.writestr(info, b"" if name.endswith("/") else draw(CONTENT))
    return buffer.getvalue()


def _records(data: bytes, signature: bytes) -> list[int]:
    found, at = [], data.find(signature)
    while at >= 0:
        found.append(at)
        at = data.find(signature, at + 1)
    return found


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid archive with one structural field bent."""
    data = bytearray(draw(archives()))
    local = _records(bytes(data), b"PK\x03\x04")
    central = _records(bytes(data), b"PK\x01\x02")
    kind = draw(
        st.sampled_from(["local-field", "central-field", "flag", "extra-length", "offset", "byte"])
    )
    if kind == "local-field" and local:
        at = draw(st.sampled_from(local))
        # version, flags, method, time, date, crc, sizes, name and extra lengths
        field = draw(st.sampled_from([4, 6, 8, 10, 14, 18, 22, 26, 28]))
        data[at + field] ^= draw(st.integers(1, 255))
    elif kind == "central-field" and central:
        at = draw(st.sampled_from(central))
        field = draw(st.sampled_from([8, 10, 16, 20, 24, 28, 30, 32, 38, 42]))
        data[at + field] ^= draw(st.integers(1, 255))
    elif kind == "flag" and central:
        at = draw(st.sampled_from([*local, *central]))
        offset = 6 if data[at + 2] == 3 else 8
        bit = draw(st.sampled_from([0x01, 0x08, 0x20, 0x40, 0x800]))
        struct.pack_into(
            "<H", data, at + offset, struct.unpack_from("<H", data, at + offset)[0] ^ bit
        )
    elif kind == "extra-length" and central:
        at = draw(st.sampled_from(central))
        struct.pack_into("<H", data, at + 30, draw(st.integers(1, 64)))
    elif kind == "offset" and len(central) > 1:
        at = draw(st.sampled_from(central))
        struct.pack_into("<I", data, at + 42, draw(st.integers(0, len(data))))
    else:
        at = draw(st.integers(0, len(data) - 1))
        data[at] ^= draw(st.integers(1, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=archives())
async def test_valid_archives_read_like_zipfile(data: bytes) -> None:
    """On archives zipfile writes, the reader gives zipfile's bytes (or refuses)."""
    reading = await read_archive(data)
    assert_nothing_zipfile_would_not_give(data, reading)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
async def test_mutations_never_read_what_zipfile_refuses(data: bytes) -> None:
    """Bent lengths, flags, extras and offsets: never bytes zipfile would not give."""
    reading = await read_archive(data)
    assert_nothing_zipfile_would_not_give(data, reading)
