"""``python -m pipeline jobs|files|pause|resume``: the console's views without a browser.

Speaks to AWS with the service's own environment, as ``status`` does
(:mod:`pipeline.ops.jobs`), whether or not a service is up:

- ``jobs [--status S] [--limit N] [--all] [--json]`` lists jobs newest first
  from the status index (a page, or every page with ``--all``);
- ``files EXPORT_ID [--status failed|done] [--json]`` lists a job's files, a
  failed one with its reason;
- ``pause QUEUE`` and ``resume QUEUE`` (``export-jobs`` or
  ``download-tasks``) write the queue's control item: every process follows
  within 10 seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from pipeline._adapters.aws.jobitems import utc_now
from pipeline._adapters.aws.joblist import DEFAULT_LIMIT, MAX_LIMIT, list_files, list_jobs
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.pauses import QUEUES, set_paused
from pipeline._adapters.http.control import job_view
from pipeline._core.accounting import JobStatus
from pipeline._core.messages import EXPORT_ID_PATTERN
from pipeline._errors import PipelineError
from pipeline.ops.environment import aws_from

__all__ = ["VERBS", "main"]

VERBS = ("jobs", "files", "pause", "resume")
EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_USAGE = 2


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        msg = f"must be 1 to {MAX_LIMIT}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _export_id(text: str) -> str:
    if not EXPORT_ID_PATTERN.fullmatch(text):
        msg = f"{text!r} is not an export ID (1 to 128 of A-Z a-z 0-9 . _ : -)"
        raise argparse.ArgumentTypeError(msg)
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description="List jobs and files; pause or resume a queue."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    jobs = verbs.add_parser("jobs", help="jobs newest first, optionally of one status")
    jobs.add_argument("--status", type=str.upper, choices=[s.value for s in JobStatus])
    jobs.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, help="jobs per page")
    jobs.add_argument("--all", action="store_true", help="every page, not only the first")
    jobs.add_argument("--json", action="store_true", help="as GET /jobs answers")
    files = verbs.add_parser("files", help="a job's files; a failed one with its reason")
    files.add_argument("export_id", type=_export_id, metavar="EXPORT_ID")
    files.add_argument("--status", type=str.lower, choices=["failed", "done"])
    files.add_argument("--json", action="store_true", help="as GET /jobs/{id}/files answers")
    for verb, what in (("pause", "stop every process receiving"), ("resume", "receive again")):
        command = verbs.add_parser(verb, help=f"{what} from a queue")
        command.add_argument("queue", choices=QUEUES)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    console = Console()

    async def run() -> int:
        async with aws_from(env, pool_size=4) as aws:
            store = JobStore(
                aws.dynamodb, env.get("DYNAMODB_JOBS_TABLE", "").strip() or "export-jobs"
            )
            if args.verb == "jobs":
                return await _jobs(store, args, console)
            if args.verb == "files":
                return await _files(store, args, console)
            await set_paused(store, args.queue, args.verb == "pause")
            state = "paused" if args.verb == "pause" else "resumed"
            console.print(f"{args.queue} {state}: every process follows within 10 s")
            return EXIT_OK

    try:
        return trio.run(run)
    except PipelineError as err:
        print(f"pipeline {args.verb}: failed: {err}", file=sys.stderr)
        return EXIT_NOT_OK


async def _jobs(store: JobStore, args: argparse.Namespace, console: Console) -> int:
    status = None if args.status is None else JobStatus(args.status)
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await list_jobs(store, status, limit=args.limit, cursor=cursor)
        now = utc_now()
        found += [job_view(job, now) for job in page.jobs]
        cursor = page.next_cursor
        if cursor is None or not args.all:
            break
    if args.json:
        print(json.dumps({"jobs": found, "nextCursor": cursor}, indent=2))
        return EXIT_OK
    table = Table("export", "status", "files done/failed/total", "entries up", "progress")
    table.add_column("created")
    table.add_column("error")
    for view in found:
        table.add_row(
            view["exportId"],
            view["status"],
            f"{view['filesDone']}/{view['filesFailed']}/{view['filesTotal']}",
            str(view["entriesUploaded"]),
            f"{view['progress'] * 100:.0f}%",
            view["createdAt"],
            view.get("error", ""),
        )
    console.print(table)
    what = f"{status.value} jobs" if status else "jobs"
    more = " (more: --all, or a larger --limit)" if cursor else ""
    console.print(f"{len(found)} {what}, newest first{more}")
    return EXIT_OK


async def _files(store: JobStore, args: argparse.Namespace, console: Console) -> int:
    if await store.get_job(args.export_id) is None:
        print(f"no job for export {args.export_id!r}", file=sys.stderr)
        return EXIT_NOT_OK
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await list_files(store, args.export_id, args.status, cursor=cursor)
        found += page.files
        cursor = page.next_cursor
        if cursor is None:
            break
    if args.json:
        print(json.dumps({"exportId": args.export_id, "files": found}, indent=2))
        return EXIT_OK
    table = Table("file", "name", "status", "entries up/skip/rej", "error")
    for file in found:
        table.add_row(
            file["fileId"],
            file.get("name") or "",
            file["status"],
            f"{file['entriesUploaded']}/{file['entriesSkipped']}/{file['entriesRejected']}",
            file.get("error", ""),
        )
    console.print(table)
    failed = sum(1 for file in found if file["status"] == "failed")
    console.print(f"{len(found)} files of {args.export_id}, {failed} failed")
    return EXIT_OK
