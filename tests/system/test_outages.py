"""Our own outages outlast the retries: the work comes back later, never a verdict, never the DLQ.

Each case keeps an AWS operation failing for more attempts than one call's
retry policy allows (``AWS_POLICY``: 6), so the failure reaches the stage that
decides. The run must end as the fault suite's runs do: the job COMPLETED
with exact counts and objects, no open upload, no message left, DLQ empty.
The redelivery delay is shortened for the test (its schedule is tested in
tests/core/test_backoff.py); the delays still grow with each delivery.
"""

from __future__ import annotations

import pytest

from pipeline._core import backoff
from pipeline._core.backoff import AWS_POLICY
from tests.system.test_faults import Case, aws, run_case

# More failures in a row than one call's retries: the stage sees the outage.
OUTAGE = 2 * AWS_POLICY.max_attempts

OUTAGES: list[Case] = [
    aws("SQS ReceiveMessage 500 past the retries", "sqs", "ReceiveMessage", times=OUTAGE),
    # One heartbeat call hangs for 5 s while the lease has 6 s: the call's own
    # deadline and the next round's slack keep the lease.
    aws(
        "SQS heartbeat call stalled 5 s",
        "sqs",
        "ChangeMessageVisibilityBatch",
        "stall",
        times=1,
        stall_seconds=5,
        visibility_timeout=6,
        throttle=3_000,
    ),
    aws("S3 PutObject 500 past the retries", "s3", "PutObject", times=OUTAGE),
    aws(
        "S3 CreateMultipartUpload 503 past the retries",
        "s3",
        "CreateMultipartUpload",
        times=OUTAGE,
        status=503,
        code="SlowDown",
    ),
    aws(
        "DynamoDB GetItem throttled past the retries",
        "dynamodb",
        "GetItem",
        times=OUTAGE,
        status=400,
        code="ThrottlingException",
    ),
    aws(
        "DynamoDB TransactWriteItems (record file) throttled past the retries",
        "dynamodb",
        "TransactWriteItems",
        times=OUTAGE,
        status=400,
        code="ProvisionedThroughputExceededException",
    ),
    aws(
        "DynamoDB BatchGetItem throttled past the retries",
        "dynamodb",
        "BatchGetItem",
        times=OUTAGE,
        status=400,
        code="ProvisionedThroughputExceededException",
    ),
]


@pytest.fixture(autouse=True)
def quick_redelivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redeliveries after our failures come within seconds instead of minutes."""
    monkeypatch.setattr(backoff, "REDELIVERY_BASE_SECONDS", 1)


@pytest.mark.slow
@pytest.mark.parametrize("case", OUTAGES, ids=[case.name for case in OUTAGES])
async def test_outage_past_the_retries(aws_endpoint: str, case: Case) -> None:
    """The job completes exactly once the outage ends; nothing FAILED, nothing dead-lettered."""
    outcome = await run_case(aws_endpoint, case)
    outcome.check()
