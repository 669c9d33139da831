"""A poison message is dead-lettered once, tagged with its reason, logged with the
correlation ID its sender stated."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from pipeline._adapters.aws import sqs
from tests.support.stack import open_stack
from tests.support.waiting import eventually

BODY = json.dumps({"exportIds": ["bad/id"], "correlationId": "c-printed-by-cli"})


MOVED = "poison message; moved to the dead-letter queue"


async def test_poison_line_carries_the_stated_correlation_id_and_the_copy_its_reason(
    aws_endpoint: str,
) -> None:
    """The poison log line names the body's correlationId; the DLQ copy carries the
    reason as its pipeline-reason attribute."""
    async with open_stack(aws_endpoint) as stack:
        dlq = await sqs.dead_letter_queue_url(stack.aws.sqs, stack.urls.export_jobs_url)
        assert dlq is not None
        with capture_logs(processors=[merge_contextvars]) as logs:
            stop = await stack.run_service()
            await stack.send_raw(BODY)

            async def moved() -> list[MutableMapping[str, Any]]:
                # A DLQ send that failed first logs "not moved; handed back" and the
                # message comes again: the line that matters is the move, once.
                return [e for e in logs if str(e["event"]).startswith(MOVED)]

            poison = await eventually(moved, within=30)
            stop.set()
        # The line is logged once the copy is in the DLQ.
        copies = await sqs.receive(
            stack.aws.sqs, dlq, max_messages=10, wait_seconds=1, with_attributes=True
        )
    (line,) = poison
    assert line["correlationId"] == "c-printed-by-cli"
    (copy,) = copies
    assert copy.body == BODY
    assert "bad/id" in copy.attributes[sqs.REASON_ATTRIBUTE]
    assert line["reason"] == copy.attributes[sqs.REASON_ATTRIBUTE]
