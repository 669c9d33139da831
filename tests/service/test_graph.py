"""The whole graph in one process (all mode) against moto and the simulator."""

from __future__ import annotations

import json
import random
import zipfile

import pytest

from pipeline._adapters.aws.metadata import MetadataItem
from pipeline._core.accounting import JobStatus
from pipeline._service.job_stage import EXPORTS_AT_ONCE
from pipeline.testing.demo import build_zip, metadata_for, records
from tests.support.stack import Stack, open_stack, sha256
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

RNG = random.Random(7)
MIXED = [
    ("docs/", b""),
    ("docs/readme.txt", records(RNG, 3_000)),
    ("données/résumé.txt", "Résumé de l'export\n".encode() * 20),
    ("empty.bin", b""),
    ("data/rows.jsonl", records(RNG, 200_000)),
]


async def _expect_objects(stack: Stack, export_id: str, entries: list[tuple[str, bytes]]) -> None:
    objects = await stack.objects(export_id)
    expected = {name: data for name, data in entries if not name.endswith("/")}
    assert set(objects) == set(expected)
    for name, data in expected.items():
        body, metadata = objects[name]
        assert body == data, name
        assert metadata == {"sha256": sha256(data)}, name


class TestHappyPath:
    async def test_every_kind_of_zip(self, aws_endpoint: str) -> None:
        """Deflated, stored, descriptor, ZIP64, UTF-8, empty and directory entries land exactly."""
        stored = [("raw/a.bin", bytes(range(256)) * 300), ("raw/b.bin", b"")]
        zip64 = [("big/x.jsonl", records(RNG, 12 * 1024 * 1024))]
        files = [
            ("part-0001.zip", build_zip(MIXED)),
            ("part-0002.zip", build_zip(stored, method=zipfile.ZIP_STORED, descriptors=True)),
            ("part-0003.zip", build_zip(zip64, descriptors=True, zip64=True)),
        ]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-kinds", files, page_size_cap=1, empty_pages=True)
            await stack.seed("exp-kinds", metadata_for([*MIXED, *stored, *zip64]))
            stop = await stack.run_service()
            await stack.send_job(["exp-kinds"])
            job = await stack.wait_final("exp-kinds")
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            summary = job.summary
            assert summary.files_total == summary.files_done == 3
            assert summary.entries_uploaded == 7
            assert (summary.entries_skipped, summary.entries_rejected, summary.entries_missing) == (
                0,
                0,
                0,
            )
            everything = [*MIXED, *stored, *zip64]
            assert summary.bytes_uploaded == sum(
                len(d) for n, d in everything if not n.endswith("/")
            )
            assert job.correlation_id == "c-test"
            await _expect_objects(stack, "exp-kinds", everything)

    async def test_counts_skipped_rejected_missing(self, aws_endpoint: str) -> None:
        """No item: skipped; mismatch or unsafe: rejected; item without entry: missing."""
        entries = [
            ("ok.txt", b"fine"),
            ("nometa.txt", b"nobody asked"),
            ("wrong-sha.txt", b"tampered"),
            ("wrong-size.txt", b"sized"),
            ("../escape.txt", b"never"),
            ("/abs.txt", b"never"),
        ]
        items = [
            *metadata_for([entries[0]]),
            MetadataItem(path="wrong-sha.txt", size_bytes=None, sha256="0" * 64),
            MetadataItem(path="wrong-size.txt", size_bytes=999, sha256=None),
            MetadataItem(path="../escape.txt", size_bytes=None, sha256=None),
            MetadataItem(path="absent.txt", size_bytes=None, sha256=None),
        ]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-counts", [("p.zip", build_zip(entries))])
            await stack.seed("exp-counts", items)
            stop = await stack.run_service()
            await stack.send_job(["exp-counts"])
            job = await stack.wait_final("exp-counts")
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            summary = job.summary
            assert summary.entries_uploaded == 1
            assert summary.entries_skipped == 1
            assert summary.entries_rejected == 4
            assert summary.entries_missing == 1
            assert summary.bytes_uploaded == 4
            assert set(await stack.objects("exp-counts")) == {"ok.txt"}

    async def test_malformed_metadata_item_rejects_only_its_entry(self, aws_endpoint: str) -> None:
        """An item with a malformed sha256 rejects its entry; the file's other entries upload."""
        entries = [("good.txt", b"good"), ("bad-sha.txt", b"bad")]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-badmeta", [("p.zip", build_zip(entries))])
            await stack.seed("exp-badmeta", metadata_for([entries[0]]))
            await stack.aws.dynamodb.put_item(
                TableName=stack.env["DYNAMODB_METADATA_TABLE"],
                Item={
                    "exportId": {"S": "exp-badmeta"},
                    "path": {"S": "bad-sha.txt"},
                    "sha256": {"S": "not-a-digest"},
                },
            )
            stop = await stack.run_service()
            await stack.send_job(["exp-badmeta"])
            job = await stack.wait_final("exp-badmeta")
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            assert (job.summary.entries_uploaded, job.summary.entries_rejected) == (1, 1)
            assert set(await stack.objects("exp-badmeta")) == {"good.txt"}

    async def test_many_exports_in_one_message_ask_a_few_at_a_time(self, aws_endpoint: str) -> None:
        """A message of 40 export IDs never has more than EXPORTS_AT_ONCE status calls open."""
        ids = [f"exp-many-{n:02}" for n in range(40)]
        async with open_stack(aws_endpoint) as stack:
            for export_id in ids:
                stack.simulator.add_export(export_id, [], status="FAILED")
            # Each status answer waits, so calls made at once would overlap.
            stack.simulator.inject_stall("status", 1.0, times=len(ids))
            stop = await stack.run_service()
            await stack.send_job(ids)
            for export_id in ids:
                await stack.wait_final(export_id, within=90)
            stop.set()
            most = stack.simulator.most_at_once("status")
            assert 1 < most <= EXPORTS_AT_ONCE < len(ids), most

    async def test_listing_fault_counts_the_files_already_handed_out(
        self, aws_endpoint: str
    ) -> None:
        """A listing that loops fails the job with the counts of the files listed before it."""
        entries = [("one.txt", b"first file")]
        async with open_stack(aws_endpoint) as stack:
            files = [("p1.zip", build_zip(entries)), ("p2.zip", build_zip([("two.txt", b"2")]))]
            stack.simulator.add_export("exp-loop", files, page_size_cap=1, repeat_cursor=True)
            await stack.seed("exp-loop", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-loop"])
            job = await stack.wait_final("exp-loop")
            stop.set()
            assert job.status is JobStatus.FAILED
            assert job.error is not None
            assert "cursor repeated" in job.error
            summary = job.summary
            assert (summary.files_total, summary.files_done, summary.entries_uploaded) == (1, 1, 1)
            assert set(await stack.objects("exp-loop")) == {"one.txt"}

    async def test_rate_limit_holds_over_many_small_files(self, aws_endpoint: str) -> None:
        """With EXPORT_API_RATE_PER_SECOND=5, no second holds more than 5 requests to the API."""
        files = [(f"p{n}.zip", build_zip([(f"f{n}.txt", b"x" * n)])) for n in range(12)]
        async with open_stack(aws_endpoint) as stack:
            # Downloads from the API's own host count against its rate too.
            stack.simulator.add_export("exp-paced", files, download_host="api")
            stop = await stack.run_service(EXPORT_API_RATE_PER_SECOND="5")
            await stack.send_job(["exp-paced"])
            job = await stack.wait_final("exp-paced", within=90)
            stop.set()
            assert job.status is JobStatus.COMPLETED
            times = sorted(r.at for r in stack.simulator.requests if r.listener == "api")
            # status, listing, and per file one read (a small ZIP is all in its tail)
            assert len(times) >= 2 + len(files)
            busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
            assert busiest <= 5

    async def test_pending_then_ready_sns_second_host(self, aws_endpoint: str) -> None:
        """PENDING is polled until READY; SNS is unwrapped; the download host gets no token."""
        entries = [("a.txt", b"alpha"), ("b.txt", b"beta")]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export(
                "exp-pending",
                [("p.zip", build_zip(entries))],
                pending_polls=2,
                download_host="other",
            )
            await stack.seed("exp-pending", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-pending"], correlation_id=None, sns=True)
            job = await stack.wait_final("exp-pending", within=90)
            stop.set()
            assert job.status is JobStatus.COMPLETED, job.error
            assert job.summary.entries_uploaded == 2
            assert job.correlation_id.startswith("c-")
            assert stack.simulator.authorization_seen_on_download_host is False
            await _expect_objects(stack, "exp-pending", entries)


class TestFailures:
    async def test_unknown_and_failed_exports(self, aws_endpoint: str) -> None:
        """404 and FAILED exports fail their jobs; the other export of the message completes."""
        entries = [("a.txt", b"alpha")]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-good", [("p.zip", build_zip(entries))])
            stack.simulator.add_export("exp-bad", [], status="FAILED")
            await stack.seed("exp-good", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-good", "exp-unknown", "exp-bad"])
            good = await stack.wait_final("exp-good")
            unknown = await stack.wait_final("exp-unknown")
            bad = await stack.wait_final("exp-bad")
            stop.set()
            assert good.status is JobStatus.COMPLETED
            assert unknown.status is JobStatus.FAILED
            assert "404" in (unknown.error or "")
            assert bad.status is JobStatus.FAILED
            assert "FAILED" in (bad.error or "")

    async def test_corrupt_zip_keeps_earlier_entries(self, aws_endpoint: str) -> None:
        """A bad CRC fails the file and the job; entries verified before the fault stay."""
        first = ("first.txt", b"complete and verified " * 100)
        second = ("second.txt", b"this one is damaged " * 100)
        data = bytearray(build_zip([first, second], method=zipfile.ZIP_STORED))
        damaged_at = data.index(b"this one is damaged")
        data[damaged_at] ^= 0xFF
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-corrupt", [("p.zip", bytes(data))])
            await stack.seed("exp-corrupt", metadata_for([first, second]))
            stop = await stack.run_service()
            await stack.send_job(["exp-corrupt"])
            job = await stack.wait_final("exp-corrupt")
            stop.set()
            assert job.status is JobStatus.FAILED
            assert job.summary.files_failed == 1
            assert "p.zip" in (job.error or "")
            assert "CRC" in (job.error or "")
            assert set(await stack.objects("exp-corrupt")) == {"first.txt"}
            assert await stack.open_uploads() == 0

    async def test_poison_message_goes_to_dlq(self, aws_endpoint: str) -> None:
        """A poison body ends in the DLQ once and does not stop the next message."""
        entries = [("a.txt", b"alpha")]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-after-poison", [("p.zip", build_zip(entries))])
            await stack.seed("exp-after-poison", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_raw("this is not json")
            await stack.send_raw(json.dumps({"exportIds": ["bad id!"]}))
            await stack.send_job(["exp-after-poison"])
            job = await stack.wait_final("exp-after-poison")
            assert job.status is JobStatus.COMPLETED
            dlq = stack.urls.export_jobs_dlq_url
            received = await stack.aws.sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=2
            )
            bodies = sorted(m["Body"] for m in received.get("Messages", []))
            stop.set()
            assert bodies == sorted(["this is not json", json.dumps({"exportIds": ["bad id!"]})])

    async def test_disallowed_host_makes_no_request(self, aws_endpoint: str) -> None:
        """A download URL on a host not allowed fails the file before any request."""
        entries = [("a.txt", b"alpha")]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export(
                "exp-host", [("p.zip", build_zip(entries))], download_host="other"
            )
            await stack.seed("exp-host", metadata_for(entries))
            stop = await stack.run_service(EXPORT_DOWNLOAD_ALLOWED_HOSTS="files.example.com")
            await stack.send_job(["exp-host"])
            job = await stack.wait_final("exp-host")
            stop.set()
            assert job.status is JobStatus.FAILED
            assert "not allowed" in (job.error or "")
            assert stack.simulator.download_requests == 0


class TestIdempotency:
    async def test_resubmit_gives_the_same_result(self, aws_endpoint: str) -> None:
        """The same export sent again leaves the same objects and the same job counts."""
        entries = [("a.txt", b"alpha"), ("b.txt", b"beta" * 1000)]
        async with open_stack(aws_endpoint) as stack:
            stack.simulator.add_export("exp-twice", [("p.zip", build_zip(entries))])
            await stack.seed("exp-twice", metadata_for(entries))
            stop = await stack.run_service()
            await stack.send_job(["exp-twice"])
            await stack.send_job(["exp-twice"])
            first = await stack.wait_final("exp-twice")
            await stack.send_job(["exp-twice"])

            # A completed export is not processed again: once the third message
            # is handled (deleted), the item is as it was.
            async def handled() -> bool:
                return not await stack.queue_depth(stack.urls.export_jobs_url)

            await eventually(handled, within=30)
            second = await stack.wait_final("exp-twice")
            stop.set()
            assert second == first
            assert first.summary.entries_uploaded == 2
            await _expect_objects(stack, "exp-twice", entries)
