"""Job accounting: file tallies and summaries derived from file results."""

from __future__ import annotations

from pipeline._core.accounting import (
    EntryOutcome,
    FileResult,
    FileTally,
    JobStatus,
    JobSummary,
    file_counts,
    final_status,
    summarize,
)


def _result(
    file_id: str, *, ok: bool = True, up: int = 0, paths: frozenset[str] = frozenset()
) -> FileResult:
    return FileResult(
        file_id=file_id,
        name=f"{file_id}.zip",
        ok=ok,
        entries_uploaded=up,
        bytes_uploaded=up * 10,
        seen_paths=paths,
        error=None if ok else "bad CRC",
    )


class TestFileTally:
    def test_counts_each_outcome(self) -> None:
        """Uploads add bytes; paths with a metadata item are remembered."""
        tally = FileTally(file_id="f", name="f.zip")
        tally.count(EntryOutcome.UPLOADED, path="a", has_item=True, size=5)
        tally.count(EntryOutcome.SKIPPED, path="b", has_item=False)
        tally.count(EntryOutcome.REJECTED, path="c", has_item=True)
        tally.count(EntryOutcome.REJECTED, path="../d", has_item=False)
        result = tally.result()
        assert result.ok
        assert (result.entries_uploaded, result.entries_skipped, result.entries_rejected) == (
            1,
            1,
            2,
        )
        assert result.bytes_uploaded == 5
        assert result.seen_paths == {"a", "c"}

    def test_failed_result_keeps_counts(self) -> None:
        """A failed file keeps what it uploaded before the fault."""
        tally = FileTally(file_id="f", name="f.zip")
        tally.count(EntryOutcome.UPLOADED, path="a", has_item=True, size=3)
        result = tally.result(error="bad CRC in entry b")
        assert not result.ok
        assert result.entries_uploaded == 1
        assert result.error == "bad CRC in entry b"


class TestSummarize:
    def test_missing_counts_paths_no_file_contained(self) -> None:
        """A metadata path is missing when no file had it, counted once across files."""
        results = [
            _result("1", up=2, paths=frozenset({"a", "b"})),
            _result("2", up=1, paths=frozenset({"b"})),
        ]
        summary = summarize(results, files_total=2, metadata_paths={"a", "b", "c", "d"})
        assert summary.entries_uploaded == 3
        assert summary.bytes_uploaded == 30
        assert summary.entries_missing == 2
        assert summary.files_done == 2

    def test_same_results_same_summary(self) -> None:
        """A result recorded again (redelivery) does not change the summary."""
        one = _result("1", up=2)
        assert summarize([one], files_total=1) == summarize([one], files_total=1)


class TestFinalStatus:
    def test_not_done_until_every_file(self) -> None:
        """Until every listed file has a result, the job is not final."""
        assert final_status(summarize([_result("1")], files_total=2)) is None

    def test_completed(self) -> None:
        """All files done gives COMPLETED."""
        assert final_status(summarize([_result("1")], files_total=1)) == (JobStatus.COMPLETED, None)

    def test_failed_with_reason(self) -> None:
        """A failed file fails the job with a one-line count."""
        summary = summarize([_result("1"), _result("2", ok=False)], files_total=2)
        assert final_status(summary) == (JobStatus.FAILED, "1 of 2 files failed")

    def test_empty_export_completes(self) -> None:
        """An export with no files completes at once."""
        assert final_status(summarize([], files_total=0)) == (JobStatus.COMPLETED, None)


class TestFileCounts:
    def test_a_file_adds_its_counts(self) -> None:
        """A done file adds one to filesDone and its entries and bytes; filesTotal stays."""
        counts = file_counts(_result("f1", up=3))
        assert counts == JobSummary(files_done=1, entries_uploaded=3, bytes_uploaded=30)

    def test_counts_add_up_to_the_summary(self) -> None:
        """Adding every file's counts gives what summarize derives from the results."""
        results = [_result("f1", up=2), _result("f2", ok=False, up=1), _result("f3")]
        added = [file_counts(result) for result in results]
        derived = summarize(results, files_total=0)
        for field in ("files_done", "files_failed", "entries_uploaded", "bytes_uploaded"):
            assert sum(getattr(c, field) for c in added) == getattr(derived, field)
