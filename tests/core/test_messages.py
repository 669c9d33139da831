"""Decoding export-job and download-task bodies (contract 1)."""

from __future__ import annotations

import datetime as dt
import json

import attrs
import pytest

from pipeline._core.lanes import Priority
from pipeline._core.messages import (
    DownloadTask,
    ExportJob,
    decode_download_task,
    decode_export_job,
    encode_download_task,
    encode_export_job,
)
from pipeline._errors import PoisonMessage


class TestExportJob:
    def test_plain_body(self) -> None:
        """A plain body gives its export IDs and correlation ID."""
        job = decode_export_job(
            '{"exportIds": ["exp-0001", "exp-0002"], "correlationId": "c-7f3a"}'
        )
        assert job == ExportJob(export_ids=("exp-0001", "exp-0002"), correlation_id="c-7f3a")

    def test_generated_correlation_id(self) -> None:
        """A missing correlationId is generated."""
        job = decode_export_job('{"exportIds": ["a"]}')
        assert job.correlation_id.startswith("c-")
        assert len(job.correlation_id) > 4
        assert (
            decode_export_job('{"exportIds": ["a"]}', new_correlation_id="c-1").correlation_id
            == "c-1"
        )

    def test_sns_envelope(self) -> None:
        """An SNS notification envelope is unwrapped."""
        inner = json.dumps({"exportIds": ["x.y:z-1"], "correlationId": "c-2"})
        body = json.dumps({"Type": "Notification", "MessageId": "m", "Message": inner})
        assert decode_export_job(body) == ExportJob(export_ids=("x.y:z-1",), correlation_id="c-2")

    def test_duplicate_ids_once(self) -> None:
        """An export named twice in one body is processed once."""
        assert decode_export_job('{"exportIds": ["a", "b", "a"]}').export_ids == ("a", "b")

    def test_round_trip(self) -> None:
        """What encode_export_job writes, decode_export_job reads back."""
        job = ExportJob(export_ids=("a", "b"), correlation_id="c-9")
        assert decode_export_job(encode_export_job(job)) == job

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ("not json", "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            ("{}", "no 'exportIds'"),
            ('{"exportIds": []}', "non-empty list"),
            ('{"exportIds": "exp-1"}', "non-empty list"),
            ('{"exportIds": ["bad id"]}', "is not 1-128 characters"),
            ('{"exportIds": [""]}', "is not 1-128 characters"),
            ('{"exportIds": [7]}', "is not 1-128 characters"),
            ('{"exportIds": ["' + "a" * 129 + '"]}', "is not 1-128 characters"),
            ('{"exportIds": ["a/b"]}', "is not 1-128 characters"),
            ('{"exportIds": ["a"], "correlationId": 5}', "correlationId"),
            ('{"Type": "Notification", "Message": 5}', "SNS envelope"),
            ('{"Type": "Notification", "Message": "nope"}', "not valid JSON"),
            ('{"exportIds": ["a"], "priority": "urgent"}', "'priority' must be"),
            ('{"exportIds": ["a"], "priority": "HIGH"}', "'priority' must be"),
            ('{"exportIds": ["a"], "priority": 1}', "'priority' must be"),
            ('{"exportIds": ["a"], "notBefore": "tomorrow"}', "'notBefore' must be"),
            ('{"exportIds": ["a"], "notBefore": 1767225600}', "'notBefore' must be"),
            ('{"exportIds": ["a"], "notBefore": "2026-13-01T00:00:00Z"}', "'notBefore' must be"),
            # No zone: whose 22:00 would it be?
            ('{"exportIds": ["a"], "notBefore": "2026-01-31T22:00:00"}', "with its zone"),
        ],
    )
    def test_poison(self, body: str, reason: str) -> None:
        """An invalid body is poison, with a one-line reason."""
        with pytest.raises(PoisonMessage, match=reason) as info:
            decode_export_job(body)
        assert "\n" not in str(info.value)

    def test_longest_id(self) -> None:
        """An ID of exactly 128 allowed characters is valid."""
        export_id = "A0._:-" * 21 + "ab"
        assert len(export_id) == 128
        assert decode_export_job(json.dumps({"exportIds": [export_id]})).export_ids == (export_id,)

    def test_priority_and_not_before(self) -> None:
        """priority and notBefore are read (a zone other than Z is turned into UTC),
        and written back only when they are not the defaults."""
        job = decode_export_job(
            '{"exportIds": ["a"], "priority": "high", "notBefore": "2026-01-31T23:30:00+01:00"}'
        )
        assert job.priority is Priority.HIGH
        assert job.not_before == dt.datetime(2026, 1, 31, 22, 30, tzinfo=dt.UTC)
        assert decode_export_job(encode_export_job(job)) == job
        assert '"notBefore": "2026-01-31T22:30:00Z"' in encode_export_job(job)
        plain = decode_export_job('{"exportIds": ["a"], "correlationId": "c"}')
        assert plain.priority is Priority.NORMAL
        assert plain.not_before is None
        assert json.loads(encode_export_job(plain)) == {"exportIds": ["a"], "correlationId": "c"}
        explicit = decode_export_job('{"exportIds": ["a"], "priority": "normal"}')
        assert explicit.priority is Priority.NORMAL


class TestDownloadTask:
    task = DownloadTask(
        export_id="exp-1",
        correlation_id="c-1",
        file_id="f-1",
        name="part-0001.zip",
        download_url="http://127.0.0.2:9000/d/f-1",
        size_bytes=1234,
    )

    def test_round_trip(self) -> None:
        """A download task survives encoding, with its version."""
        body = encode_download_task(self.task)
        assert json.loads(body)["version"] == 1
        assert decode_download_task(body) == self.task

    def test_priority(self) -> None:
        """A task carries its export's priority; one written without it (by an
        older orchestrator) is normal."""
        high = DownloadTask(**{**attrs.asdict(self.task), "priority": Priority.HIGH})
        assert decode_download_task(encode_download_task(high)).priority is Priority.HIGH
        document = json.loads(encode_download_task(self.task))
        del document["priority"]
        assert decode_download_task(json.dumps(document)).priority is Priority.NORMAL

    @pytest.mark.parametrize(
        "change",
        [
            {"version": 2},
            {"exportId": "bad id"},
            {"file": {"fileId": "f"}},
            {"correlationId": None},
            {"priority": "urgent"},
        ],
    )
    def test_poison(self, change: dict[str, object]) -> None:
        """A task of another version or shape is poison."""
        document = {**json.loads(encode_download_task(self.task)), **change}
        with pytest.raises(PoisonMessage):
            decode_download_task(json.dumps(document))
