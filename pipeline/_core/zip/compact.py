"""The central directory held in columns: tens of bytes per entry, not one object each.

A million-entry directory parsed into :class:`~.format.CentralEntry` objects
took about 390 MiB (each object, its two names, its ints). Here each field is
one :mod:`array` column and the raw names are one ``bytearray``: an entry
costs 27 bytes plus its raw name (4 more per offset or size column once one of
its values needs 64 bits), and an entry is rebuilt as a ``CentralEntry`` only
when it is asked for, one at a time. A name taken from an Info-ZIP Unicode
Path field (not the raw name decoded) is kept beside, as UTF-8.

Duplicate names are found without a set of every name: a bit per hash slot
marks the names seen; a name whose slot is already marked makes its hash a
candidate; at the end only the names with a candidate hash are compared, as
strings. A hash collision therefore costs a comparison, never a wrong verdict.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import overload

from pipeline._core.zip.format import CentralEntry, decode_name
from pipeline._errors import ZipCorrupt

__all__ = ["CompactDirectory", "in_stream_order"]

_MAX32 = 0xFFFFFFFF
# Hash slots per entry for the duplicate check: at 32 about 1.5 % of the
# names become candidates (compared once more at the end) for 4 bytes each.
_SLOTS_PER_ENTRY = 32
# Offsets sorted per run of this many entries, then merged: an unordered
# directory is put in stream order with a bounded list, not one of every entry.
_SORT_RUN = 65536


class CompactDirectory(Sequence[CentralEntry]):
    """A parsed central directory: its entries in directory order, rebuilt on access.

    Filled by :class:`~.directory.DirectoryParser` (:meth:`add`, then
    :meth:`seal`); read as a sequence of :class:`CentralEntry`, or in stream
    order through :attr:`by_offset`.
    """

    def __init__(self, expected: int) -> None:
        self._offsets = array("I")
        self._csizes = array("I")
        self._usizes = array("I")
        self._crcs = array("I")
        self._methods = array("H")
        self._flags = array("H")
        self._external = array("I")
        self._systems = array("B")
        self._name_ends = array("I")
        self._names = bytearray()
        # Entries whose name is not their raw name decoded (a Unicode Path
        # field): their indexes, ascending, and those names as UTF-8.
        self._alt_index = array("I")
        self._alt_ends = array("I")
        self._alt_names = bytearray()
        self._ordered = True
        self._order: array[int] | None = None
        slots = 1024
        while slots < expected * _SLOTS_PER_ENTRY:
            slots *= 2
        self._mask = slots - 1
        self._seen: bytearray | None = bytearray(slots // 8)
        self._candidates: set[int] = set()

    def add(self, entry: CentralEntry) -> None:
        """Append the next entry of the directory."""
        index = len(self._crcs)
        offset = entry.local_header_offset
        if index and offset < self._offsets[index - 1]:
            self._ordered = False
        self._offsets = _append(self._offsets, offset)
        self._csizes = _append(self._csizes, entry.compressed_size)
        self._usizes = _append(self._usizes, entry.uncompressed_size)
        self._crcs.append(entry.crc32)
        self._methods.append(entry.method)
        self._flags.append(entry.flags)
        self._external.append(entry.external_attr)
        self._systems.append(entry.create_system)
        self._names += entry.raw_name
        self._name_ends.append(len(self._names))
        if entry.name != decode_name(entry.raw_name, entry.flags):
            self._alt_index.append(index)
            self._alt_names += entry.name.encode("utf-8", "surrogatepass")
            self._alt_ends.append(len(self._alt_names))
        self._mark(entry.name)

    def _mark(self, name: str) -> None:
        seen = self._seen
        assert seen is not None, "the directory is sealed"
        slot = hash(name) & self._mask
        byte, bit = slot >> 3, 1 << (slot & 7)
        if seen[byte] & bit:
            self._candidates.add(hash(name))
        else:
            seen[byte] |= bit

    def seal(self) -> None:
        """All entries are in: refuse a name listed twice, and put the offsets in order.

        Raises :class:`ZipCorrupt` naming the first name listed a second time.
        """
        self._seen = None
        if self._candidates:
            self._find_duplicate()
        self._candidates = set()
        if not self._ordered:
            self._order = _sorted_indexes(self._offsets)

    def _find_duplicate(self) -> None:
        # Compared as decoded, as they become S3 keys: a CP437 and a UTF-8 name
        # for the same text would land on one object.
        names: dict[int, set[str]] = {}
        for index in range(len(self)):
            name = self._name(index)
            key = hash(name)
            if key not in self._candidates:
                continue
            same_hash = names.setdefault(key, set())
            if name in same_hash:
                msg = f"central directory lists {name!r} twice"
                raise ZipCorrupt(msg)
            same_hash.add(name)

    def _raw_name(self, index: int) -> bytes:
        start = self._name_ends[index - 1] if index else 0
        return bytes(self._names[start : self._name_ends[index]])

    def _name(self, index: int) -> str:
        alt = bisect_left(self._alt_index, index)
        if alt < len(self._alt_index) and self._alt_index[alt] == index:
            start = self._alt_ends[alt - 1] if alt else 0
            return self._alt_names[start : self._alt_ends[alt]].decode("utf-8", "surrogatepass")
        return decode_name(self._raw_name(index), self._flags[index])

    def __len__(self) -> int:
        return len(self._crcs)

    @overload
    def __getitem__(self, index: int) -> CentralEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[CentralEntry]: ...
    def __getitem__(self, index: int | slice) -> CentralEntry | Sequence[CentralEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            msg = f"entry {index} of a directory of {len(self)}"
            raise IndexError(msg)
        return CentralEntry(
            name=self._name(index),
            raw_name=self._raw_name(index),
            method=self._methods[index],
            flags=self._flags[index],
            crc32=self._crcs[index],
            compressed_size=self._csizes[index],
            uncompressed_size=self._usizes[index],
            local_header_offset=self._offsets[index],
            external_attr=self._external[index],
            create_system=self._systems[index],
        )

    def __iter__(self) -> Iterator[CentralEntry]:
        for index in range(len(self)):
            yield self[index]

    @property
    def by_offset(self) -> Sequence[CentralEntry]:
        """The entries in stream order (ascending ``local_header_offset``)."""
        return _ByOffset(self, self._order)

    @property
    def first_offset(self) -> int:
        """The smallest ``local_header_offset``, where the stream must start (0 when empty)."""
        if not len(self):
            return 0
        return self._offsets[0 if self._order is None else self._order[0]]

    def nbytes(self) -> int:
        """Bytes the columns and names take (a measure for tests and benchmarks)."""
        columns = (
            self._offsets,
            self._csizes,
            self._usizes,
            self._crcs,
            self._methods,
            self._flags,
            self._external,
            self._systems,
            self._name_ends,
            self._alt_index,
            self._alt_ends,
        )
        total = sum(column.itemsize * len(column) for column in columns)
        total += len(self._names) + len(self._alt_names)
        if self._order is not None:
            total += self._order.itemsize * len(self._order)
        return total


class _ByOffset(Sequence[CentralEntry]):
    """A directory's entries in stream order, through its permutation when it has one."""

    def __init__(self, directory: CompactDirectory, order: array[int] | None) -> None:
        self._directory = directory
        self._order = order

    def __len__(self) -> int:
        return len(self._directory)

    @overload
    def __getitem__(self, index: int) -> CentralEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[CentralEntry]: ...
    def __getitem__(self, index: int | slice) -> CentralEntry | Sequence[CentralEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._order is None:
            return self._directory[index]
        return self._directory[self._order[index]]


def in_stream_order(directory: Sequence[CentralEntry] | None) -> Sequence[CentralEntry] | None:
    """``directory`` by ascending ``local_header_offset``; a compact one without a copy."""
    if directory is None:
        return None
    if isinstance(directory, CompactDirectory):
        return directory.by_offset
    return sorted(directory, key=lambda entry: entry.local_header_offset)


def _append(column: array[int], value: int) -> array[int]:
    """``column`` with ``value`` appended, widened to 64 bits the first time one needs it."""
    if value > _MAX32 and column.typecode == "I":
        column = array("Q", column)
    column.append(value)
    return column


def _sorted_indexes(keys: array[int]) -> array[int]:
    """Indexes of ``keys`` in ascending order of key (stable), in bounded extra memory."""
    runs = [
        array("I", sorted(range(start, min(start + _SORT_RUN, len(keys))), key=keys.__getitem__))
        for start in range(0, len(keys), _SORT_RUN)
    ]
    return array("I", heapq.merge(*runs, key=keys.__getitem__))
