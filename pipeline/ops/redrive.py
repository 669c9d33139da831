"""``python -m pipeline redrive``: move dead-lettered messages back to their queue.

After the cause of a dead letter is fixed (a deployment, a token, an outage),
an operator sends the messages back to be processed again. Each message is
sent to the source queue first and deleted from the dead-letter queue only
after, so a crash in between duplicates a message (which the service absorbs:
processing is idempotent) but never loses one. ``--dry-run`` lists what would
move and hands every message back at once, leaving both queues as they were.

The queue is named by role (``export-jobs`` or ``download-tasks``) and found
through the service's own environment (``SQS_EXPORT_JOBS_URL``,
``SQS_DOWNLOAD_TASKS_URL``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``); its
dead-letter queue is read from the queue's redrive policy.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import attrs
import trio

from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clients import AwsClient, open_aws_clients
from pipeline._config import ConfigError
from pipeline._errors import PipelineError

__all__ = ["RedriveReport", "main", "redrive"]

EXIT_FAILED = 1
EXIT_CONFIG = 2

QUEUES = {"export-jobs": "SQS_EXPORT_JOBS_URL", "download-tasks": "SQS_DOWNLOAD_TASKS_URL"}
# Long enough to send a batch on and delete it; a message held longer by a
# crashed redrive simply reappears in the dead-letter queue.
HOLD_SECONDS = 60
# Shown of each body in the listing: enough to recognise the export.
BODY_PREVIEW = 120


@attrs.frozen
class RedriveReport:
    """What a redrive saw and did."""

    dead_letter_url: str
    found: int
    moved: int


async def redrive(
    client: AwsClient,
    queue_url: str,
    *,
    dry_run: bool,
    limit: int | None = None,
    out: TextIO | None = None,
) -> RedriveReport:
    """Move up to ``limit`` messages from ``queue_url``'s dead-letter queue back to it.

    Prints one line per message (its ID, deliveries so far, and the start of
    its body) to ``out`` (standard output by default). Raises
    :class:`~pipeline._config.ConfigError` when the queue has no dead-letter queue.
    """
    dead_letters = await sqs.dead_letter_queue_url(client, queue_url)
    if dead_letters is None:
        msg = f"{queue_url} has no dead-letter queue (no RedrivePolicy)"
        raise ConfigError(msg)
    found = moved = 0
    held: list[sqs.ReceivedMessage] = []
    try:
        while limit is None or found < limit:
            want = 10 if limit is None else min(10, limit - found)
            batch = await sqs.receive(
                client,
                dead_letters,
                max_messages=want,
                wait_seconds=1,
                visibility_timeout=HOLD_SECONDS,
            )
            if not batch:
                break
            found += len(batch)
            for message in batch:
                preview = " ".join(message.body.split())[:BODY_PREVIEW]
                print(
                    f"{message.message_id}  deliveries={message.receive_count}  {preview}", file=out
                )
            if dry_run:
                held.extend(batch)
                continue
            await sqs.send_batch(client, queue_url, [message.body for message in batch])
            for message in batch:
                await sqs.delete(client, dead_letters, message.receipt_handle)
            moved += len(batch)
    finally:
        # A dry run (or a failed move) leaves the dead letters where they were.
        with trio.CancelScope(shield=True):
            await sqs.change_visibility_batch(
                client, dead_letters, [(message.receipt_handle, 0) for message in held]
            )
    return RedriveReport(dead_letter_url=dead_letters, found=found, moved=moved)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline redrive",
        description="Move messages from a queue's dead-letter queue back to the queue.",
    )
    parser.add_argument("queue", choices=sorted(QUEUES), help="which of the service's queues")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the dead letters, move nothing"
    )
    parser.add_argument("--max", type=int, default=None, help="move at most this many")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    variable = QUEUES[args.queue]
    queue_url = env.get(variable, "").strip()
    if not queue_url:
        print(
            f"pipeline redrive: configuration error: {variable} is required but not set",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.max is not None and args.max < 1:
        print("pipeline redrive: --max must be at least 1", file=sys.stderr)
        return EXIT_CONFIG

    async def run() -> RedriveReport:
        async with open_aws_clients(
            region=env.get("AWS_REGION", "").strip() or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL", "").strip() or None,
            pool_size=2,
        ) as aws:
            return await redrive(aws.sqs, queue_url, dry_run=args.dry_run, limit=args.max)

    try:
        report = trio.run(run)
    except ConfigError as err:
        print(f"pipeline redrive: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except PipelineError as err:
        print(f"pipeline redrive: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    verb = "would move" if args.dry_run else "moved"
    count = report.found if args.dry_run else report.moved
    print(f"{verb} {count} message(s) from {report.dead_letter_url} to {queue_url}")
    return 0
