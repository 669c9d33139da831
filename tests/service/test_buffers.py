"""The byte path's memory bound: per stream, shared parts in flight, within issue 22's budget."""

from __future__ import annotations

import pytest

from pipeline._adapters.aws.s3parts import PROCESS_PARTS_IN_FLIGHT
from pipeline._adapters.aws.s3sink import MAX_PART_SIZE, PARTS_IN_FLIGHT
from pipeline._service.buffers import STREAM_BYTES, in_flight_bytes

MB = 1000 * 1000


def test_one_stream_holds_its_buffers_and_its_own_parts_in_flight() -> None:
    """Alone, a stream may have PARTS_IN_FLIGHT parts being sent besides its own buffers."""
    assert in_flight_bytes(0) == 0
    assert in_flight_bytes(1) == STREAM_BYTES + PARTS_IN_FLIGHT * MAX_PART_SIZE


def test_parts_in_flight_are_shared_by_the_process() -> None:
    """Past PROCESS_PARTS_IN_FLIGHT parts, one more stream adds only its own buffers."""
    many = PROCESS_PARTS_IN_FLIGHT
    assert in_flight_bytes(many + 1) - in_flight_bytes(many) == STREAM_BYTES
    assert in_flight_bytes(many) == many * STREAM_BYTES + PROCESS_PARTS_IN_FLIGHT * MAX_PART_SIZE


def test_eight_files_in_flight_stay_within_48_mb_each() -> None:
    """Issue 22's budget: eight large files in flight hold at most 8 x 48 MB of buffers."""
    assert in_flight_bytes(8) <= 8 * 48 * MB


def test_a_negative_count_is_refused() -> None:
    """A negative number of streams is a caller's bug, named in the message."""
    with pytest.raises(ValueError, match="not -1"):
        in_flight_bytes(-1)
