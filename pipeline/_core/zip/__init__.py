"""ZIP reading without I/O: records and refusal rules, the stream reader, the decoder.

format.py holds the records and what is refused, directory.py finds and
parses the central directory, stream.py (with buffer.py and descriptor.py)
turns a byte stream into entry events, decoder.py inflates and verifies one
entry, and inflater.py decides how an archive's compressed bytes become
decodes. events.py is the one vocabulary all of them and the uploader speak.

The stream reader has two modes, chosen by whether a central directory is given:

**Directory-first** (the normal case). The directory says where each entry
starts and how many compressed bytes it has, so the reader counts bytes and
never scans for a data descriptor: stored entries with descriptors read like
any other. The stream must begin at the smallest ``local_header_offset`` of the
directory (``Range: bytes=<that>-``). Each local header is checked against its
directory record (name, method, flags, and CRC and sizes unless deferred to a
descriptor) and each descriptor against the directory's values; any
disagreement, two entries overlapping, or a local header where the directory
lists none (between entries or after the last) is :class:`ZipCorrupt`. Bytes
between entries that are not a local header are skipped. After the last
listed entry the reader is :attr:`~ZipStreamReader.done` and ignores the rest
(the directory itself).

**Local headers only** (the server ignored ``Range``; the stream starts at
offset 0). Entries are read from their local headers; the directory, when
reached, ends the archive. An entry whose header carries its sizes reads like
the directory mode. A deflated entry with a data descriptor has no length up
front: only the inflater can tell where its deflate stream ends, so the reader
hands out every byte it has as that entry's data and waits
(:attr:`~ZipStreamReader.awaiting_end`) until the caller reports the end with
:meth:`~ZipStreamReader.end_found`, giving back the bytes past it. A stored
entry with a data descriptor is read by looking for a descriptor signature
whose CRC-32 and sizes match the bytes before it (a running CRC on the event
loop, cheap next to inflating); a descriptor without signature there is not
found and ends as a truncated archive. In this mode symlinks cannot be
recognised (local headers carry no file attributes), and an entry refused by
its local header whose end is unknown (deflated with a descriptor, or
encrypted) fails the file, since nothing after it can be found.

Refused entries (:func:`~pipeline._core.zip.format.refusal`) produce one
:class:`EntryRefused` and no data: their bytes are skipped. Directory entries
are read like any other entry (usually with no data); deciding to ignore them
is the caller's business.
"""

__all__: list[str] = []
