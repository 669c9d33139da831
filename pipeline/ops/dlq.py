"""``python -m pipeline dlq QUEUE [--delete MESSAGE_ID]``: look into a dead-letter queue.

Lists up to ten messages of the queue's dead-letter queue as a table (the
message ID to delete it by, when it was sent, its deliveries before this look,
why the service dead-lettered it when it did), then the start of each body,
leaving them where they are: they are visible again within seconds. A look is
a receive, so it adds one to each message's deliveries. ``--delete`` removes one
message by its ID. Bodies and reasons are printed with their control
characters escaped. The same calls over HTTP are ``GET /dlq/{queue}`` and
``DELETE /dlq/{queue}/{messageId}`` (:mod:`pipeline._adapters.aws.deadletters`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

import trio
from rich import box
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from pipeline._adapters.aws import deadletters
from pipeline._adapters.aws.deadletters import DeadLetter, NoDeadLetterQueue
from pipeline._errors import PipelineError
from pipeline.ops.environment import QUEUES, aws_from, queue_url_from
from pipeline.ops.terminal import printable

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_CONFIG = 2
# Shown of each body: enough to recognise the export.
BODY_PREVIEW = 160


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline dlq",
        description="Show up to ten messages of a queue's dead-letter queue, or delete one.",
    )
    parser.add_argument("queue", choices=sorted(QUEUES), help="which of the service's queues")
    parser.add_argument("--delete", metavar="MESSAGE_ID", help="delete this message")
    return parser


def _print(messages: list[DeadLetter], console: Console) -> None:
    """As ``status`` prints jobs: a table, then the long text under it, one line each."""
    # Message IDs in full, never cut to fit: they are what --delete takes.
    widest = max(len(message.message_id) for message in messages)
    table = Table(
        Column("message ID", no_wrap=True, min_width=widest),
        Column("sent (UTC)", no_wrap=True),
        Column("deliveries", justify="right", no_wrap=True),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
    )
    for message in messages:
        sent = message.sent_at.strftime("%Y-%m-%d %H:%M:%S") if message.sent_at else ""
        table.add_row(message.message_id, sent, str(message.receive_count))
    console.print(table)
    for message in messages:
        reason = message.reason or "(not given: moved by the queue's own redrive policy)"
        body = " ".join(message.body.split())[:BODY_PREVIEW]
        # Text, not markup: brackets in a body are shown as they are.
        console.print(Text(message.message_id, style="bold"))
        console.print(Text(f"  reason: {printable(reason)}"), soft_wrap=True)
        console.print(Text(f"  body:   {printable(body)}"), soft_wrap=True)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    queue_url = queue_url_from(env, args.queue, command="dlq")
    if queue_url is None:
        return EXIT_CONFIG
    console = Console()

    async def run() -> int:
        async with aws_from(env, pool_size=2) as aws:
            if args.delete is not None:
                deleted = await deadletters.delete_dead_letter(aws.sqs, queue_url, args.delete)
                if not deleted:
                    print(f"no message {printable(args.delete)!r} in the dead-letter queue")
                    return EXIT_NOT_OK
                print(f"deleted {printable(args.delete)}")
                return EXIT_OK
            messages = await deadletters.look(aws.sqs, queue_url)
            if not messages:
                print(f"the dead-letter queue of {args.queue} is empty")
            else:
                _print(messages, console)
            return EXIT_OK

    try:
        return trio.run(run)
    except NoDeadLetterQueue as err:
        print(f"pipeline dlq: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except PipelineError as err:
        print(f"pipeline dlq: failed: {err}", file=sys.stderr)
        return EXIT_NOT_OK
