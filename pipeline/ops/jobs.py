"""``python -m pipeline submit|status|cancel|retry``: the control API without HTTP.

Speaks to AWS with the service's own environment (``SQS_EXPORT_JOBS_URL``,
``DYNAMODB_JOBS_TABLE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``), so it works
from any shell that can run the service, whether or not a service is up:

- ``submit EXPORT_ID... [--wait] [--priority high] [--not-before TIME]``
  sends one export-job message (a high one to ``SQS_EXPORT_JOBS_HIGH_URL``
  when set); with ``--wait`` it shows each job's progress live until every
  job has ended, and exits 0 only when all ended ``COMPLETED``;
- ``status EXPORT_ID... [--json]`` shows the job items as a table (errors
  below it, one line each), or each as the JSON object ``GET /jobs/{exportId}``
  answers;
- ``cancel EXPORT_ID`` and ``retry EXPORT_ID`` do what their HTTP calls do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobcontrol import (
    CLI_CANCEL_REASON,
    Answer,
    Verdict,
    cancel_job,
    retry_job,
)
from pipeline._adapters.aws.jobitems import JobItem, utc_now
from pipeline._adapters.aws.joboutbox import EventBus
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.http.control import job_view
from pipeline._core.accounting import JobStatus
from pipeline._core.lanes import Priority
from pipeline._core.messages import (
    ExportJob,
    encode_export_job,
    export_id_problem,
    parse_not_before,
)
from pipeline._errors import PipelineError, PoisonMessage
from pipeline.ops.terminal import printable

__all__ = ["VERBS", "main", "watch_jobs"]

VERBS = ("submit", "status", "cancel", "retry")
EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_CONFIG = 2
# How often --wait reads the job items: the items move within 5 s of a file.
POLL_SECONDS = 1.0


@attrs.frozen
class _Env:
    """What the commands read of the service's environment."""

    region: str
    endpoint_url: str | None
    jobs_table: str
    export_jobs_url: str | None
    export_jobs_high_url: str | None = None
    # A cancel or retry here is a transition like the service's: its event and
    # its retention follow the same settings.
    event_bus: str | None = None
    retention_days: int = 30

    @classmethod
    def read(cls, env: Mapping[str, str]) -> _Env:
        retention = env.get("JOB_RETENTION_DAYS", "").strip() or "30"
        return cls(
            region=env.get("AWS_REGION", "").strip() or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL", "").strip() or None,
            jobs_table=env.get("DYNAMODB_JOBS_TABLE", "").strip() or "export-jobs",
            export_jobs_url=env.get("SQS_EXPORT_JOBS_URL", "").strip() or None,
            export_jobs_high_url=env.get("SQS_EXPORT_JOBS_HIGH_URL", "").strip() or None,
            event_bus=env.get("EVENT_BUS_NAME", "").strip() or None,
            retention_days=int(retention) if retention.isdigit() else 30,
        )


def _start_time(value: str) -> dt.datetime:
    """``--not-before``: read as the message's ``notBefore`` is, or refused (exit 2)."""
    try:
        when = parse_not_before(value)
    except PoisonMessage as err:
        raise argparse.ArgumentTypeError(str(err).replace("'notBefore'", "the time")) from None
    assert when is not None
    return when


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description="Submit, watch, cancel and retry export jobs."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    submit = verbs.add_parser("submit", help="send an export job")
    submit.add_argument("export_ids", nargs="+", metavar="EXPORT_ID")
    submit.add_argument("--correlation-id", default=None, help="default: a new UUID")
    submit.add_argument(
        "--wait", action="store_true", help="show live progress until every job has ended"
    )
    submit.add_argument(
        "--priority",
        choices=[priority.value for priority in Priority],
        default=Priority.NORMAL.value,
        help="high: through the high lane, ahead of normal work",
    )
    submit.add_argument(
        "--not-before",
        type=_start_time,
        default=None,
        metavar="TIME",
        help="no file starts before this ISO-8601 time with its zone (e.g. 2026-01-31T22:00:00Z)",
    )
    status = verbs.add_parser("status", help="show jobs")
    status.add_argument("export_ids", nargs="+", metavar="EXPORT_ID")
    status.add_argument("--json", action="store_true", help="as GET /jobs/{exportId} answers")
    for verb, what in (("cancel", "stop an active job"), ("retry", "run a failed job again")):
        command = verbs.add_parser(verb, help=what)
        command.add_argument("export_id", metavar="EXPORT_ID")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    env = _Env.read(os.environ if environ is None else environ)
    console = Console()
    # Refused here as POST /jobs refuses it (contract 8): sent, it would only be
    # dead-lettered; no job can carry it, so cancel, retry and status refuse it alike.
    export_ids = args.export_ids if args.verb in ("submit", "status") else [args.export_id]
    problems = [problem for i in export_ids if (problem := export_id_problem(i))]
    if problems:
        print(f"pipeline {args.verb}: {problems[0]}; nothing was sent", file=sys.stderr)
        return EXIT_CONFIG
    if args.verb in ("submit", "retry") and env.export_jobs_url is None:
        print(
            "pipeline: configuration error: SQS_EXPORT_JOBS_URL is required but not set",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    async def run() -> int:
        async with open_aws_clients(
            region=env.region,
            endpoint_url=env.endpoint_url,
            pool_size=4,
            events=env.event_bus is not None,
        ) as aws:
            bus = (
                None
                if env.event_bus is None or aws.events is None
                else EventBus(aws.events, env.event_bus)
            )
            jobs = JobStore(
                aws.dynamodb, env.jobs_table, events=bus, retention_days=env.retention_days
            )
            if args.verb == "submit":
                return await _submit(aws, jobs, env, args, console)
            if args.verb == "status":
                return await _status(jobs, args.export_ids, console, as_json=args.json)
            if args.verb == "cancel":
                answer = await cancel_job(jobs, args.export_id, CLI_CANCEL_REASON)
                return _answered("cancel", answer, console)
            assert env.export_jobs_url is not None
            answer = await retry_job(jobs, aws.sqs, env.export_jobs_url, args.export_id)
            return _answered("retry", answer, console)

    try:
        return trio.run(run)
    except PipelineError as err:
        print(f"pipeline {args.verb}: failed: {printable(str(err))}", file=sys.stderr)
        return EXIT_NOT_OK


def _answered(verb: str, answer: Answer, console: Console) -> int:
    """One line on the outcome; a refusal (the HTTP API's 404 or 409) exits 1, on stderr."""
    if answer.verdict is Verdict.CONFLICT:
        print(
            f"pipeline {verb}: refused (conflict): {printable(answer.reason or '')}",
            file=sys.stderr,
        )
        return EXIT_NOT_OK
    if answer.verdict is Verdict.UNKNOWN:
        print(f"pipeline {verb}: {printable(answer.reason or '')}", file=sys.stderr)
        return EXIT_NOT_OK
    assert answer.job is not None
    console.print(f"{answer.job.export_id}: {answer.job.status.value}")
    return EXIT_OK


async def _submit(
    aws: AwsClients, jobs: JobStore, env: _Env, args: argparse.Namespace, console: Console
) -> int:
    assert env.export_jobs_url is not None
    export_ids: list[str] = list(dict.fromkeys(args.export_ids))
    correlation_id = args.correlation_id or str(uuid.uuid4())
    # A job that ended COMPLETED or CANCELLED stays so when submitted again:
    # waiting for this submission to show on it would never end.
    settled = {
        export_id: job
        for export_id in export_ids
        if (job := await jobs.get_job(export_id)) is not None
        and job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED)
    }
    message = ExportJob(
        export_ids=tuple(export_ids),
        correlation_id=correlation_id,
        priority=Priority(args.priority),
        not_before=args.not_before,
    )
    url = env.export_jobs_url
    if message.priority is Priority.HIGH and env.export_jobs_high_url is not None:
        url = env.export_jobs_high_url
    await sqs.send(aws.sqs, url, encode_export_job(message))
    console.print(f"submitted {', '.join(export_ids)} (correlationId {correlation_id})")
    for export_id, job in settled.items():
        hint = " (retry it to run again)" if job.status is JobStatus.CANCELLED else ""
        console.print(f"{export_id} had ended {job.status.value}; it stays so{hint}")
    if not args.wait:
        return EXIT_OK
    final = await watch_jobs(jobs, export_ids, correlation_id, console, settled=settled)
    _print_table(list(final.values()), console)
    ok = all(job.status is JobStatus.COMPLETED for job in final.values())
    return EXIT_OK if ok else EXIT_NOT_OK


async def watch_jobs(
    jobs: JobStore,
    export_ids: list[str],
    correlation_id: str,
    console: Console,
    *,
    settled: Mapping[str, JobItem] | None = None,
    every: float = POLL_SECONDS,
) -> dict[str, JobItem]:
    """Live progress, one bar per export, until each job has ended for this submission.

    ``settled`` are jobs that had ended for good before the submission (they
    stay as they are); the others count once they carry ``correlation_id``.
    """
    settled = settled or {}
    final = dict(settled)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {
            export_id: progress.add_task(export_id, total=1.0, detail="queued")
            for export_id in export_ids
        }
        while True:
            for export_id in export_ids:
                job = final.get(export_id) or await jobs.get_job(export_id)
                if job is None:
                    continue
                mine = job.correlation_id == correlation_id or export_id in settled
                if mine and job.status.is_final:
                    final[export_id] = job
                view = job_view(job, utc_now())
                known = mine and (job.listing_done or job.status.is_final)
                progress.update(
                    bars[export_id],
                    # A pulsing bar while the size of the job is not known yet.
                    total=1.0 if known else None,
                    completed=view["progress"] if mine else 0.0,
                    detail=_detail(job, view) if mine else "queued",
                )
            if len(final) == len(export_ids):
                return final
            await trio.sleep(every)


def _detail(job: JobItem, view: dict[str, Any]) -> str:
    finished = job.summary.files_finished
    # Until the listing is done the total is unknown (in all mode the listing
    # keeps pace with the workers, so that can be most of the job).
    files = f"{finished}/{job.files_total}" if job.listing_done else f"{finished}/? (listing)"
    eta = view["etaSeconds"]
    left = "" if eta is None or job.status is not JobStatus.RUNNING else f", ~{eta:.0f}s left"
    return f"{job.status.value:<9} {files} files, {job.summary.entries_uploaded} entries{left}"


async def _status(jobs: JobStore, export_ids: list[str], console: Console, *, as_json: bool) -> int:
    found: list[JobItem] = []
    missing: list[str] = []
    for export_id in dict.fromkeys(export_ids):
        job = await jobs.get_job(export_id)
        if job is None:
            missing.append(export_id)
        else:
            found.append(job)
    if as_json:
        # Each as GET /jobs/{exportId} answers; several, one object per line.
        now = utc_now()
        for job in found:
            print(json.dumps(job_view(job, now), indent=2 if len(found) == 1 else None))
    elif found:
        _print_table(found, console)
    for export_id in missing:
        print(f"no job for export {export_id!r}", file=sys.stderr)
    return EXIT_NOT_OK if missing else EXIT_OK


def _print_table(found: list[JobItem], console: Console) -> None:
    # Export IDs in full, never cut to fit: they are what the next command takes.
    # Columns apart by one space, no frame: six of them fit 80 columns.
    widest = max(len(job.export_id) for job in found)
    table = Table(
        Column("export", no_wrap=True, min_width=widest),
        Column("status", no_wrap=True, min_width=9),
        Column("files\nok/failed/all", no_wrap=True),
        Column("entries\nup/skip/rej/miss", no_wrap=True),
        Column("MB\nup", justify="right", no_wrap=True),
        Column("done", justify="right", no_wrap=True),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),
    )
    now = utc_now()
    for job in found:
        s, view = job.summary, job_view(job, now)
        table.add_row(
            Text(job.export_id),
            job.status.value,
            f"{s.files_done}/{s.files_failed}/{s.files_total}",
            f"{s.entries_uploaded}/{s.entries_skipped}/{s.entries_rejected}/{s.entries_missing}",
            f"{s.bytes_uploaded / 1e6:.1f}",
            f"{view['progress'] * 100:.0f}%",
        )
    console.print(table)
    # Errors below the table, one line each, at the terminal's full width.
    for job in found:
        if job.error:
            console.print(Text(f"{job.export_id}: {printable(job.error)}"), soft_wrap=True)
