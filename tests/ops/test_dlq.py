"""``python -m pipeline dlq``: look into a dead-letter queue, delete one message."""

from __future__ import annotations

import functools

import pytest
import trio

import pipeline.ops.dlq as cli
from pipeline._adapters.aws import sqs
from tests.support.stack import open_stack


async def test_lists_in_full_and_escaped_then_deletes_one(
    aws_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The listing shows whole message IDs and bodies with escape codes escaped, and
    leaves the messages; --delete removes one (exit 0), a second time exit 1."""
    async with open_stack(aws_endpoint) as stack:
        dlq = await sqs.dead_letter_queue_url(stack.aws.sqs, stack.urls.export_jobs_url)
        assert dlq is not None
        poison = await sqs.send(stack.aws.sqs, dlq, "not json \x1b]0;owned\x07")
        await sqs.send(stack.aws.sqs, dlq, '{"exportIds": ["exp-1"]}')
        listed = await trio.to_thread.run_sync(
            functools.partial(cli.main, ["export-jobs"], stack.env)
        )
        out = capsys.readouterr().out
        delete = ["export-jobs", "--delete", poison]
        deleted = await trio.to_thread.run_sync(functools.partial(cli.main, delete, stack.env))
        again = await trio.to_thread.run_sync(functools.partial(cli.main, delete, stack.env))
        left = await stack.queue_depth(dlq)
    assert listed == 0
    assert poison in out
    assert "not json \\x1b]0;owned\\x07" in out
    assert "\x1b" not in out
    assert (deleted, again, left) == (0, 1, 1)
