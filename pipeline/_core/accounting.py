"""Job accounting: what one file did, and what a whole export adds up to.

Counts in the jobs table must be exact even when a message is delivered twice
or a worker dies mid-file, and they must move while the job runs. So each
file's outcome is one :class:`FileResult`, recorded once (a second record of
the same file is refused), and recording it adds its :func:`file_counts` to the
job's counts in the same conditional write: a file is counted exactly when
its result exists. :func:`summarize` derives the same counts from the set of
results; at the end it settles ``entriesMissing``, which needs the union of
the metadata paths seen in every file (why a result carries ``seen_paths``).

Pure values and functions only; the job store persists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from enum import StrEnum

import attrs

__all__ = [
    "EntryOutcome",
    "FileResult",
    "FileTally",
    "JobStatus",
    "JobSummary",
    "file_counts",
    "final_status",
    "summarize",
]


class JobStatus(StrEnum):
    """The job item's ``status``, as the contract spells it."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class EntryOutcome(StrEnum):
    """What happened to one ZIP entry."""

    UPLOADED = "uploaded"
    SKIPPED = "skipped"  # no metadata item: not ours to upload
    REJECTED = "rejected"  # unsafe, or size/SHA-256 differ from the item


@attrs.frozen
class FileResult:
    """The final outcome of one ZIP file of an export."""

    file_id: str
    name: str
    ok: bool
    entries_uploaded: int = 0
    entries_skipped: int = 0
    entries_rejected: int = 0
    bytes_uploaded: int = 0
    # Paths of this file's entries that had a metadata item (uploaded or rejected).
    seen_paths: frozenset[str] = frozenset()
    error: str | None = None
    # The ZIP's listed size: a job's progress is the listed bytes of its finished files.
    size_bytes: int = 0


@attrs.define
class FileTally:
    """Running counts while one file is read; frozen into a :class:`FileResult`."""

    file_id: str
    name: str
    uploaded: int = 0
    skipped: int = 0
    rejected: int = 0
    bytes_uploaded: int = 0
    seen_paths: set[str] = attrs.field(factory=set)
    size_bytes: int = 0

    def count(self, outcome: EntryOutcome, *, path: str, has_item: bool, size: int = 0) -> None:
        """Count one entry's outcome; ``size`` is the bytes written for an upload."""
        if has_item:
            self.seen_paths.add(path)
        if outcome is EntryOutcome.UPLOADED:
            self.uploaded += 1
            self.bytes_uploaded += size
        elif outcome is EntryOutcome.SKIPPED:
            self.skipped += 1
        else:
            self.rejected += 1

    def result(self, error: str | None = None) -> FileResult:
        """The file's result: failed when ``error`` is given."""
        return FileResult(
            file_id=self.file_id,
            name=self.name,
            ok=error is None,
            entries_uploaded=self.uploaded,
            entries_skipped=self.skipped,
            entries_rejected=self.rejected,
            bytes_uploaded=self.bytes_uploaded,
            seen_paths=frozenset(self.seen_paths),
            error=error,
            size_bytes=self.size_bytes,
        )


@attrs.frozen
class JobSummary:
    """The counts of the job item, derived from the file results."""

    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    entries_uploaded: int = 0
    entries_skipped: int = 0
    entries_rejected: int = 0
    entries_missing: int = 0
    bytes_uploaded: int = 0

    @property
    def files_finished(self) -> int:
        return self.files_done + self.files_failed


def file_counts(result: FileResult) -> JobSummary:
    """What recording ``result`` adds to its job's counts (``filesTotal`` untouched)."""
    return JobSummary(
        files_done=1 if result.ok else 0,
        files_failed=0 if result.ok else 1,
        entries_uploaded=result.entries_uploaded,
        entries_skipped=result.entries_skipped,
        entries_rejected=result.entries_rejected,
        bytes_uploaded=result.bytes_uploaded,
    )


def summarize(
    results: Iterable[FileResult],
    *,
    files_total: int,
    metadata_paths: Set[str] | None = None,
) -> JobSummary:
    """Add up file results; ``entriesMissing`` only when ``metadata_paths`` is given.

    A path present in several files counts once as seen; a metadata path is
    missing when no file of the export contained it.
    """
    done = failed = uploaded = skipped = rejected = nbytes = 0
    seen: set[str] = set()
    for result in results:
        if result.ok:
            done += 1
        else:
            failed += 1
        uploaded += result.entries_uploaded
        skipped += result.entries_skipped
        rejected += result.entries_rejected
        nbytes += result.bytes_uploaded
        seen |= result.seen_paths
    missing = 0 if metadata_paths is None else len(metadata_paths - seen)
    return JobSummary(
        files_total=files_total,
        files_done=done,
        files_failed=failed,
        entries_uploaded=uploaded,
        entries_skipped=skipped,
        entries_rejected=rejected,
        entries_missing=missing,
        bytes_uploaded=nbytes,
    )


def final_status(summary: JobSummary) -> tuple[JobStatus, str | None] | None:
    """The job's final status once every listed file has a result, else ``None``.

    The error of a failed job is a one-line reason a person can act on.
    """
    if summary.files_finished < summary.files_total:
        return None
    if summary.files_failed:
        reason = f"{summary.files_failed} of {summary.files_total} files failed"
        return JobStatus.FAILED, reason
    return JobStatus.COMPLETED, None
