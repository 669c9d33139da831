"""The error hierarchy: whose fault each error is, and one line for any of them."""

from __future__ import annotations

import pytest

from pipeline._errors import (
    AwsRejected,
    AwsUnavailable,
    DownloadRefused,
    ExportApiRejected,
    ExportApiUnavailable,
    Fault,
    FilesUnrecorded,
    LeaseLost,
    ListingFault,
    PipelineError,
    PoisonMessage,
    RetriesExhausted,
    ZipCorrupt,
    describe,
    is_bug,
    is_verdict,
)


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (ExportApiUnavailable("503"), Fault.EXPORT),
        (ExportApiRejected("403"), Fault.EXPORT),
        (ListingFault("cursor repeated"), Fault.EXPORT),
        (PoisonMessage("not JSON"), Fault.EXPORT),
        (DownloadRefused("host not allowed"), Fault.FILE),
        (ZipCorrupt("bad CRC"), Fault.FILE),
        (AwsUnavailable("SlowDown"), Fault.INFRASTRUCTURE),
        (AwsRejected("AccessDenied"), Fault.INFRASTRUCTURE),
        (LeaseLost("handle gone"), Fault.INFRASTRUCTURE),
        (FilesUnrecorded("1 file"), Fault.INFRASTRUCTURE),
    ],
)
def test_each_error_says_whose_fault_it_is(error: PipelineError, fault: Fault) -> None:
    """Errors of the export or the file are verdicts; those of our infrastructure are not."""
    assert error.fault is fault
    assert error.verdict is (fault is not Fault.INFRASTRUCTURE)


def test_retries_exhausted_takes_the_fault_it_is_given() -> None:
    """RetriesExhausted is permanent, with the fault of the error it outlived."""
    ours = RetriesExhausted("s3 put: gave up", fault=Fault.INFRASTRUCTURE)
    theirs = RetriesExhausted("GET /exports/x: gave up", fault=Fault.EXPORT)
    assert not ours.transient
    assert not ours.verdict
    assert theirs.verdict


def test_groups_are_verdicts_only_when_every_error_is() -> None:
    """A group holding one infrastructure error is no verdict; a bug is a verdict and a bug."""
    group = ExceptionGroup("two", [ZipCorrupt("bad CRC"), AwsUnavailable("throttled")])
    assert not is_verdict(group)
    assert is_verdict(ExceptionGroup("one", [ZipCorrupt("bad CRC")]))
    assert is_verdict(KeyError("x"))
    assert is_bug(ExceptionGroup("bug", [AwsUnavailable("x"), KeyError("x")]))
    assert not is_bug(ExceptionGroup("ours", [AwsUnavailable("x")]))


def test_describe_is_one_line_for_groups() -> None:
    """Exception groups flatten to one line, never a multi-line traceback."""
    group = ExceptionGroup("outer", [AwsUnavailable("throttled"), ValueError("bad\nvalue")])
    line = describe(group)
    assert "\n" not in line
    assert line == "throttled; ValueError: bad"
