"""Cutting a ZIP's entries into groups read side by side: pipeline._core.zip.groups."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from pipeline._core.zip import groups as _groups
from pipeline._core.zip.format import CentralEntry
from pipeline._core.zip.groups import MIN_GROUP_BYTES, plan_groups

MIB = 1024 * 1024
HEADER = 40  # a local header with a short name


def laid_out(sizes_mib: list[float]) -> tuple[list[CentralEntry], int]:
    """Entries of these compressed sizes one after another, and where their data ends."""
    entries = []
    offset = 0
    for index, size in enumerate(sizes_mib):
        csize = int(size * MIB)
        entries.append(
            CentralEntry(f"e{index}", f"e{index}".encode(), 8, 0, 0, csize, csize * 3, offset)
        )
        offset += HEADER + csize
    return entries, offset


def plan(sizes_mib: list[float], streams: int = 2, min_mib: float = 16) -> list[list[int]]:
    entries, end = laid_out(sizes_mib)
    found = plan_groups(entries, end, streams=streams, min_bytes=int(min_mib * MIB))
    return [list(group) for group in found]


class TestSurface:
    def test_all_is_complete(self) -> None:
        """Every listed public name exists."""
        for name in _groups.__all__:
            assert hasattr(_groups, name)


class TestPlan:
    def test_two_large_entries_make_two_groups(self) -> None:
        """Two entries above the minimum are read as two groups, one each."""
        assert plan([20, 20]) == [[0], [1]]

    def test_small_archive_stays_one_group(self) -> None:
        """Groups below the minimum are not worth a stream: one group, as before."""
        assert plan([10, 10]) == [[0, 1]]
        assert plan([1] * 30) == [list(range(30))]

    def test_one_stream_is_one_group(self) -> None:
        """With one stream allowed the whole archive is one group, however large."""
        assert plan([64, 64], streams=1) == [[0, 1]]

    def test_one_entry_is_one_group(self) -> None:
        """A single entry cannot be split."""
        assert plan([200], streams=4) == [[0]]

    def test_empty_directory_is_one_empty_group(self) -> None:
        """No entries: one empty group, nothing to cut."""
        assert plan_groups([], 0, streams=2) == [range(0)]

    def test_one_huge_entry_between_small_ones_stays_whole(self) -> None:
        """When every cut leaves a small side, nothing is cut."""
        assert plan([1, 100, 1]) == [[0, 1, 2]]

    def test_cut_at_the_boundary_nearest_the_middle(self) -> None:
        """Small entries go with their neighbours so the two groups are about equal."""
        assert plan([20, 1, 1, 1, 1, 20]) == [[0, 1, 2], [3, 4, 5]]
        assert plan([30, 5, 25]) == [[0], [1, 2]]
        assert plan([25, 5, 30]) == [[0, 1], [2]]

    def test_three_streams(self) -> None:
        """Three equal large entries over three streams: one group each."""
        assert plan([30, 30, 30], streams=3) == [[0], [1], [2]]

    def test_fewer_groups_when_the_last_would_be_small(self) -> None:
        """When three groups cannot all hold the minimum, two are tried."""
        assert plan([30, 30, 5], streams=3) == [[0], [1, 2]]

    def test_more_streams_than_entries(self) -> None:
        """No more groups than entries."""
        assert plan([40, 40], streams=8) == [[0], [1]]

    def test_end_before_the_entries_stays_whole(self) -> None:
        """A nonsensical end (before the last entry) gives no groups of negative size."""
        entries, _ = laid_out([20, 20])
        assert plan_groups(entries, 10, streams=2, min_bytes=1) == [range(2)]

    def test_default_minimum(self) -> None:
        """The default minimum is MIN_GROUP_BYTES: just above it splits, just below not."""
        above, end = laid_out([MIN_GROUP_BYTES / MIB] * 2)
        assert len(plan_groups(above, end, streams=2)) == 2
        below, end = laid_out([MIN_GROUP_BYTES / MIB - 0.01] * 2)
        assert len(plan_groups(below, end, streams=2)) == 1

    @pytest.mark.parametrize(("streams", "min_bytes"), [(0, 1), (2, 0), (-1, 5)])
    def test_bad_arguments(self, streams: int, min_bytes: int) -> None:
        """Streams and the minimum must be positive."""
        with pytest.raises(ValueError, match="must be positive"):
            plan_groups([], 0, streams=streams, min_bytes=min_bytes)

    @pytest.mark.parametrize("seed", range(30))
    def test_groups_cover_every_entry_once_in_order(self, seed: int) -> None:
        """Any layout: contiguous groups covering every entry, each at least the minimum."""
        rng = random.Random(seed)
        sizes = [rng.choice([0.01, 0.5, 3, 12, 40]) for _ in range(rng.randint(1, 40))]
        streams = rng.randint(1, 4)
        entries, end = laid_out(sizes)
        found = plan_groups(entries, end, streams=streams, min_bytes=16 * MIB)
        assert [index for group in found for index in group] == list(range(len(entries)))
        assert 1 <= len(found) <= streams
        if len(found) > 1:
            starts = [entries[group.start].local_header_offset for group in found] + [end]
            assert all(b - a >= 16 * MIB for a, b in pairwise(starts))
