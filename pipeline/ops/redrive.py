"""``python -m pipeline redrive``: move dead-lettered messages back to their queue.

After the cause of a dead letter is fixed (a deployment, a token, an outage),
an operator sends the messages back to be processed again. Only bodies the
service would accept move, each at most once per run, and the command always
ends: a poison body stays in the dead-letter queue (listed with its reason and
counted as kept), since moved back it would only be dead-lettered again
(:mod:`pipeline._adapters.aws.deadletters` has the rules, shared with
``POST /dlq/{queue}/redrive``). ``--dry-run`` lists what would move and what
would stay, leaving both queues as they were. Bodies are printed with their
control characters escaped.

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

import trio

from pipeline._adapters.aws import deadletters
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._adapters.aws.deadletters import DeadLetter, NoDeadLetterQueue, Redriven
from pipeline._errors import PipelineError
from pipeline.ops.environment import QUEUES, aws_from, queue_url_from
from pipeline.ops.terminal import printable

__all__ = ["main", "redrive"]

EXIT_FAILED = 1
EXIT_CONFIG = 2

# Shown of each body in the listing: enough to recognise the export.
BODY_PREVIEW = 120


def _line(message: DeadLetter, verdict: str) -> str:
    preview = printable(" ".join(message.body.split())[:BODY_PREVIEW])
    return f"{message.message_id}  {verdict}  deliveries={message.receive_count}  {preview}"


async def redrive(
    client: SqsClient,
    queue: str,
    queue_url: str,
    *,
    dry_run: bool,
    limit: int | None = None,
    out: TextIO | None = None,
) -> Redriven:
    """Move up to ``limit`` acceptable dead letters of ``queue`` back, printing one line each.

    Each line gives the message's ID, whether it moved or stays (and why),
    its deliveries so far, and the start of its body, escaped, to ``out``
    (standard output by default). Raises
    :class:`~pipeline._adapters.aws.deadletters.NoDeadLetterQueue`.
    """
    done = await deadletters.redrive(client, queue, queue_url, limit=limit, dry_run=dry_run)
    moved = "would move" if dry_run else "moved"
    for message in done.moved:
        print(_line(message, moved), file=out)
    for message, why in done.kept:
        print(_line(message, f"kept ({printable(why)})"), file=out)
    return done


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
    queue_url = queue_url_from(env, args.queue, command="redrive")
    if queue_url is None:
        return EXIT_CONFIG
    if args.max is not None and args.max < 1:
        print("pipeline redrive: --max must be at least 1", file=sys.stderr)
        return EXIT_CONFIG

    async def run() -> Redriven:
        async with aws_from(env, pool_size=2) as aws:
            return await redrive(
                aws.sqs, args.queue, queue_url, dry_run=args.dry_run, limit=args.max
            )

    try:
        report = trio.run(run)
    except NoDeadLetterQueue as err:
        print(f"pipeline redrive: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except PipelineError as err:
        print(f"pipeline redrive: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    verb = "would move" if args.dry_run else "moved"
    print(
        f"{verb} {len(report.moved)} message(s) from {report.dead_letter_url} to {queue_url}; "
        f"kept {len(report.kept)} the service would refuse"
    )
    return 0
