"""The central directory held in columns: tens of bytes per entry, not one object each.

A million-entry directory parsed into :class:`~.format.CentralEntry` objects
took about 390 MiB (each object, its two names, its ints). Here each number is
one :mod:`array` column, as narrow as its largest value so far needs (1 byte,
widened to 2, 4 or 8 the first time a value needs it), and the raw names are
one ``bytearray``. Offsets in stream order and the ends of names are kept as
their steps (:class:`Ascending`). Method, flags and file attributes repeat
from entry to entry, so an entry holds a 1-byte index into a table of the
combinations seen; past 256 combinations they become four plain columns.
An entry thus costs from about 7 bytes (small files in stream order) to 43
plus its raw name, less than its record's 46 bytes plus name in the
directory; empty files with 7-byte names take 13. It is rebuilt as a
``CentralEntry`` only when asked for, one at a time. A name taken from an
Info-ZIP Unicode Path field (not the raw name decoded) is kept beside, as UTF-8.

Duplicate names are found without a set of every name: a bit per hash slot
marks the names seen; a name whose slot is already marked makes its hash a
candidate; at the end only the names with a candidate hash are compared, as
strings. A hash collision therefore costs a comparison, never a wrong verdict.
"""

from __future__ import annotations

import heapq
import secrets
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import overload

from pipeline._core.zip.format import CentralEntry, decode_name
from pipeline._errors import ZipCorrupt

__all__ = ["Ascending", "CompactDirectory", "Kind", "Record", "in_stream_order"]

# Unsigned typecodes from narrow to wide, and the largest value each holds.
_WIDER = ("B", "H", "I", "Q")
_WIDEST = {code: 2 ** (8 * array(code).itemsize) - 1 for code in _WIDER}
_MAX_KINDS = 256
# Entries per whole value of an Ascending column.
_BLOCK = 64
# Python's string hash, salted per process: fast, and no archive can aim at
# shared slots, even where PYTHONHASHSEED fixes the string hash (many names
# in one slot would make every one a candidate, held until the end).
_SALT = secrets.randbits(64)


def _name_hash(name: str) -> int:
    return hash((_SALT, name))


# An entry's method, general-purpose flags, external attributes and create system.
Kind = tuple[int, int, int, int]
# What the directory parser hands over per record: the name, whether it is not
# the raw name decoded, the raw name, method, flags, CRC-32, compressed and
# uncompressed size, local header offset, external attributes, create system.
Record = tuple[str, bool, bytes, int, int, int, int, int, int, int, int]
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

    def __init__(self, expected: int, *, entries_end: int | None = None) -> None:
        # Where the entries' data ends (the directory's offset; no entry may
        # reach past it), when the parser knows it.
        self.entries_end = entries_end
        # In stream order (the usual case) offsets are kept as their steps;
        # the first one out of order turns them into a plain column.
        self._offsets: Ascending | array[int] = Ascending()
        self._csizes = array("B")
        self._usizes = array("B")
        self._crcs = array("B")
        self._name_ends = Ascending()
        self._names = bytearray()
        self._count = 0
        # (method, flags, external attributes, create system) by a 1-byte
        # index, while there are at most 256 of them; then plain columns.
        self._kinds: array[int] | None = array("B")
        self._kind_table: list[Kind] = []
        self._kind_index: dict[Kind, int] = {}
        self._methods = array("H")
        self._flags = array("H")
        self._external = array("I")
        self._systems = array("B")
        # Entries whose name is not their raw name decoded (a Unicode Path
        # field): their indexes, ascending, and those names as UTF-8.
        self._alt_index = array("I")
        self._alt_ends = array("I")
        self._alt_names = bytearray()
        self._order: array[int] | None = None
        slots = 1024
        while slots < expected * _SLOTS_PER_ENTRY:
            slots *= 2
        self._mask = slots - 1
        self._seen: bytearray | None = bytearray(slots // 8)
        self._candidates: set[int] = set()

    def add(
        self,
        name: str,
        alt: bool,
        raw_name: bytes,
        method: int,
        flags: int,
        crc: int,
        csize: int,
        usize: int,
        offset: int,
        external: int,
        system: int,
    ) -> None:
        """Append the next entry of the directory; ``alt``: ``name`` is not ``raw_name`` decoded."""
        index = self._count
        offsets = self._offsets
        if isinstance(offsets, Ascending):
            if offset >= offsets.last:
                offsets.append(offset)
            else:
                self._offsets = offsets = offsets.plain()
        if not isinstance(offsets, Ascending):
            self._offsets = _append(offsets, offset)
        self._csizes = _append(self._csizes, csize)
        self._usizes = _append(self._usizes, usize)
        self._crcs = _append(self._crcs, crc)
        self._names += raw_name
        self._name_ends.append(len(self._names))
        self._add_kind((method, flags, external, system))
        if alt:
            self._alt_index.append(index)
            self._alt_names += name.encode("utf-8", "surrogatepass")
            self._alt_ends.append(len(self._alt_names))
        self._count += 1
        self._mark(name)

    def _add_kind(self, kind: Kind) -> None:
        if self._kinds is None:
            self._append_plain(kind)
            return
        found = self._kind_index.get(kind)
        if found is None:
            found = len(self._kind_table)
            if found == _MAX_KINDS:
                self._to_plain()
                self._append_plain(kind)
                return
            self._kind_table.append(kind)
            self._kind_index[kind] = found
        self._kinds.append(found)

    def _to_plain(self) -> None:
        """Too many combinations for a table: every entry's own four columns from now on."""
        assert self._kinds is not None
        for found in self._kinds:
            self._append_plain(self._kind_table[found])
        self._kinds = None
        self._kind_table, self._kind_index = [], {}

    def _append_plain(self, kind: Kind) -> None:
        method, flags, external, system = kind
        self._methods.append(method)
        self._flags.append(flags)
        self._external.append(external)
        self._systems.append(system)

    def _kind(self, index: int) -> Kind:
        if self._kinds is not None:
            return self._kind_table[self._kinds[index]]
        return (
            self._methods[index],
            self._flags[index],
            self._external[index],
            self._systems[index],
        )

    def _mark(self, name: str) -> None:
        seen = self._seen
        assert seen is not None, "the directory is sealed"
        key = _name_hash(name)
        slot = key & self._mask
        byte, bit = slot >> 3, 1 << (slot & 7)
        if seen[byte] & bit:
            self._candidates.add(key)
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
        if not isinstance(self._offsets, Ascending):
            self._order = _sorted_indexes(self._offsets)

    def _find_duplicate(self) -> None:
        # Compared as decoded, as they become S3 keys: a CP437 and a UTF-8 name
        # for the same text would land on one object.
        names: dict[int, set[str]] = {}
        for index in range(len(self)):
            name = self._name(index)
            key = _name_hash(name)
            if key not in self._candidates:
                continue
            same_hash = names.setdefault(key, set())
            if name in same_hash:
                msg = f"central directory lists {name!r} twice"
                raise ZipCorrupt(msg)
            same_hash.add(name)

    def _raw_name(self, index: int) -> bytes:
        start, end = self._name_ends.span(index)
        return bytes(self._names[start:end])

    def _name(self, index: int, raw_name: bytes | None = None, flags: int | None = None) -> str:
        if self._alt_index:
            alt = bisect_left(self._alt_index, index)
            if alt < len(self._alt_index) and self._alt_index[alt] == index:
                start = self._alt_ends[alt - 1] if alt else 0
                alt_name = self._alt_names[start : self._alt_ends[alt]]
                return alt_name.decode("utf-8", "surrogatepass")
        if raw_name is None or flags is None:
            raw_name, flags = self._raw_name(index), self._kind(index)[1]
        return decode_name(raw_name, flags)

    def __len__(self) -> int:
        return self._count

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
        method, flags, external, system = self._kind(index)
        raw_name = self._raw_name(index)
        return CentralEntry(
            name=self._name(index, raw_name, flags),
            raw_name=raw_name,
            method=method,
            flags=flags,
            crc32=self._crcs[index],
            compressed_size=self._csizes[index],
            uncompressed_size=self._usizes[index],
            local_header_offset=self._offsets[index],
            external_attr=external,
            create_system=system,
        )

    def __iter__(self) -> Iterator[CentralEntry]:
        for index in range(len(self)):
            yield self[index]

    @property
    def by_offset(self) -> Sequence[CentralEntry]:
        """The entries in stream order (ascending ``local_header_offset``)."""
        return _ByOffset(self, self._order)

    def stream_run(self, start: int, stop: int) -> Sequence[CentralEntry]:
        """Entries ``start`` to ``stop - 1`` of :attr:`by_offset`, as a view in stream order."""
        return _ByOffset(self, self._order, range(len(self))[start:stop])

    @property
    def first_offset(self) -> int:
        """The smallest ``local_header_offset``, where the stream must start (0 when empty)."""
        if not len(self):
            return 0
        return self._offsets[0 if self._order is None else self._order[0]]

    def nbytes(self) -> int:
        """Bytes the columns and names take (a measure for tests and benchmarks)."""
        offsets = self._offsets
        columns = (
            *(offsets.columns() if isinstance(offsets, Ascending) else (offsets,)),
            *self._name_ends.columns(),
            self._csizes,
            self._usizes,
            self._crcs,
            self._kinds or array("B"),
            self._methods,
            self._flags,
            self._external,
            self._systems,
            self._alt_index,
            self._alt_ends,
        )
        total = sum(column.itemsize * len(column) for column in columns)
        total += len(self._names) + len(self._alt_names)
        if self._order is not None:
            total += self._order.itemsize * len(self._order)
        return total


class Ascending:
    """A non-decreasing column kept as its steps, with every 64th value whole.

    Offsets in stream order and the ends of names grow by small steps: a step
    takes 1 byte (widened like any column), the whole values an eighth of a
    byte per entry, and a value is its block's whole value plus at most 63
    steps, summed in C.
    """

    def __init__(self) -> None:
        self._steps = array("B")
        self._marks = array("Q")
        self.last = 0

    def append(self, value: int) -> None:
        """Append ``value``, at least :attr:`last`."""
        if len(self._steps) % _BLOCK == 0:
            self._marks.append(value)
        self._steps = _append(self._steps, value - self.last)
        self.last = value

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, index: int) -> int:
        block = index - index % _BLOCK
        return self._marks[index // _BLOCK] + sum(self._steps[block + 1 : index + 1])

    def span(self, index: int) -> tuple[int, int]:
        """The values before ``index`` (0 for the first) and at it."""
        end = self[index]
        return end - self._steps[index], end

    def plain(self) -> array[int]:
        """The values as a plain column, as narrow as the largest needs."""
        typecode = next(code for code in _WIDER if self.last <= _WIDEST[code])
        return array(typecode, accumulate(self._steps))

    def columns(self) -> tuple[array[int], ...]:
        """The arrays it is made of (for measuring)."""
        return (self._steps, self._marks)


class _ByOffset(Sequence[CentralEntry]):
    """A directory's entries in stream order, through its permutation when it has one."""

    def __init__(
        self, directory: CompactDirectory, order: array[int] | None, run: range | None = None
    ) -> None:
        self._directory = directory
        self._order = order
        self._run = range(len(directory)) if run is None else run

    def __len__(self) -> int:
        return len(self._run)

    @overload
    def __getitem__(self, index: int) -> CentralEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[CentralEntry]: ...
    def __getitem__(self, index: int | slice) -> CentralEntry | Sequence[CentralEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        at = self._run[index]  # IndexError past the run, as a sequence must
        return self._directory[at if self._order is None else self._order[at]]


def in_stream_order(directory: Sequence[CentralEntry] | None) -> Sequence[CentralEntry] | None:
    """``directory`` by ascending ``local_header_offset``; a compact one without a copy."""
    if directory is None:
        return None
    if isinstance(directory, CompactDirectory):
        return directory.by_offset
    if isinstance(directory, _ByOffset):  # already in stream order
        return directory
    return sorted(directory, key=lambda entry: entry.local_header_offset)


def _append(column: array[int], value: int) -> array[int]:
    """``column`` with ``value`` appended, widened the first time a value needs more bytes."""
    if value > _WIDEST[column.typecode]:
        typecode = next(code for code in _WIDER if value <= _WIDEST[code])
        column = array(typecode, column)
    column.append(value)
    return column


def _sorted_indexes(keys: array[int]) -> array[int]:
    """Indexes of ``keys`` in ascending order of key (stable), in bounded extra memory."""
    runs = [
        array("I", sorted(range(start, min(start + _SORT_RUN, len(keys))), key=keys.__getitem__))
        for start in range(0, len(keys), _SORT_RUN)
    ]
    return array("I", heapq.merge(*runs, key=keys.__getitem__))
