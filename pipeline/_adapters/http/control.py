"""The control API beside the health endpoints (contract section 7): jobs and queues.

Reading is open: ``GET /jobs/{exportId}`` (the job item, its progress and an
estimate of the time left) and ``GET /queues`` (depths, and whether either
queue is over ``OVERLOAD_BACKLOG``; the figures are kept up to 5 s, see
:mod:`pipeline._adapters.aws.queuedepths`). ``POST /jobs`` (submit; a body with
``"priority": "high"`` goes to the high queue when there is one),
``POST /jobs/{exportId}/cancel`` and ``POST /jobs/{exportId}/retry`` change
something, so they need ``Authorization: Bearer <ADMIN_TOKEN>``
(:mod:`pipeline._adapters.http.auth`): with no ``ADMIN_TOKEN`` configured the
calls are off (403), a missing or wrong token is 401. A malformed body is 400
with the reason, an unknown export 404, a cancel of a final job or a retry of
one that did not end FAILED or CANCELLED 409.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._adapters.aws.jobcontrol import Answer, Verdict, cancel_job, retry_job
from pipeline._adapters.aws.jobitems import JobItem, job_document, utc_now
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.queuedepths import QueueDepths
from pipeline._adapters.http.auth import Refusal, refusal
from pipeline._core.accounting import JobStatus
from pipeline._core.lanes import Priority
from pipeline._core.messages import decode_export_job, encode_export_job
from pipeline._errors import PipelineError, PoisonMessage

if TYPE_CHECKING:
    from quart_trio import QuartTrio

__all__ = ["Control", "add_control_routes", "job_view", "overloaded"]

_FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
# GET /queues's names of the queues, and the names pause and resume take.
_PAUSE_NAMES = {"exportJobs": "export-jobs", "downloadTasks": "download-tasks"}


@attrs.frozen
class Control:
    """What the control routes read and change."""

    jobs: JobStore
    sqs: SqsClient
    export_jobs_url: str
    download_tasks_url: str | None
    admin_token: str | None
    overload_backlog: int
    # Where POST /jobs sends a high job; None: to export_jobs_url like the rest.
    export_jobs_high_url: str | None = None
    # The download-task queue's high lane, shown by GET /queues when configured.
    download_tasks_high_url: str | None = None
    # This process's own work on an export stops at once on a cancel taken
    # here, and forgets it on a retry (other processes see the job item).
    on_cancel: Callable[[str], None] = lambda export_id: None
    on_retry: Callable[[str], None] = lambda export_id: None
    # Queue name (export-jobs, download-tasks) → paused, as this process knows it.
    paused: Callable[[], dict[str, bool]] = dict


def job_view(job: JobItem, now: datetime) -> dict[str, Any]:
    """The job item's attributes with ``exportId``, ``progress`` and ``etaSeconds``.

    Progress is the listed bytes of finished files (``bytesFinished``) over
    ``bytesTotal``, or finished files over listed files where sizes are
    unknown: 1.0 for a COMPLETED job and only then, how far it got for a
    FAILED or CANCELLED one. The estimate extrapolates the pace so far, and is
    null until a file finished.
    """
    summary = job.summary
    view = job_document(job)
    if job.bytes_total is not None:
        view["bytesFinished"] = job.bytes_finished
    finished, total = summary.files_finished, summary.files_total
    share = 0.0
    if job.listing_done and total > 0:
        if job.bytes_total:
            share = min(job.bytes_finished / job.bytes_total, 1.0)
        else:
            share = finished / total
    eta: float | None = None
    if job.status is JobStatus.COMPLETED:
        progress, eta = 1.0, 0.0
    elif job.status in _FINAL:
        # Stopped or failed: how far it got, not 100 % (a job cancelled at 0/4 is 0).
        progress, eta = share, 0.0
    else:
        progress = min(share, 0.99)
        elapsed = (now - (job.waiting_since or job.created_at)).total_seconds()
        if share > 0 and elapsed > 0:
            eta = round(elapsed / share * (1.0 - share), 1)
    view["progress"] = round(progress, 4)
    view["etaSeconds"] = eta
    return view


def overloaded(views: Iterable[Mapping[str, int] | None], backlog: int) -> bool:
    """Whether any queue's visible backlog is over ``backlog`` (OVERLOAD_BACKLOG)."""
    return any(view["visible"] > backlog for view in views if view is not None)


def add_control_routes(app: QuartTrio, control: Control) -> QueueDepths:
    """Serve the control API on ``app``; returns its queue figures (also /metrics's source)."""
    # Imported here: the operator commands use job_view without serving HTTP,
    # and quart is a third of such a command's start-up.
    from quart import request

    @app.get("/jobs/<export_id>")
    async def get_job(export_id: str) -> tuple[dict[str, Any], int]:
        job = await control.jobs.get_job(export_id)
        if job is None:
            # POST /jobs only sends a message: the job item is written when a
            # process takes it, a second or two later (docs/contract.md, 7).
            return {"error": f"no job for export {export_id!r} (none seen yet)"}, 404
        return job_view(job, utc_now()), 200

    @app.post("/jobs")
    async def submit() -> tuple[dict[str, Any], int] | Refusal:
        refused = refusal(control.admin_token)
        if refused is not None:
            return refused
        raw = await request.get_data()
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            job = decode_export_job(body)
        except PoisonMessage as err:
            return {"error": str(err)}, 400
        url = control.export_jobs_url
        if job.priority is Priority.HIGH and control.export_jobs_high_url is not None:
            url = control.export_jobs_high_url
        await sqs.send(control.sqs, url, encode_export_job(job))
        return {"correlationId": job.correlation_id}, 202

    def answered(answer: Answer, status: int) -> tuple[dict[str, Any], int]:
        if answer.verdict is Verdict.UNKNOWN:
            return {"error": answer.reason}, 404
        if answer.verdict is Verdict.CONFLICT:
            assert answer.job is not None
            return {"error": answer.reason, "status": answer.job.status.value}, 409
        assert answer.job is not None
        body = {"exportId": answer.job.export_id, "status": answer.job.status.value}
        return {**body, "correlationId": answer.job.correlation_id}, status

    @app.post("/jobs/<export_id>/cancel")
    async def cancel(export_id: str) -> tuple[dict[str, Any], int] | Refusal:
        refused = refusal(control.admin_token)
        if refused is not None:
            return refused
        answer = await cancel_job(control.jobs, export_id)
        if answer.verdict is Verdict.ACCEPTED:
            control.on_cancel(export_id)
        return answered(answer, 202)

    @app.post("/jobs/<export_id>/retry")
    async def retry(export_id: str) -> tuple[dict[str, Any], int] | Refusal:
        refused = refusal(control.admin_token)
        if refused is not None:
            return refused
        answer = await retry_job(control.jobs, control.sqs, control.export_jobs_url, export_id)
        if answer.verdict is Verdict.ACCEPTED:
            control.on_retry(export_id)
        return answered(answer, 202)

    # The figures may be 5 s old (contract 7): any number of callers, bounded SQS cost.
    depths = QueueDepths(
        control.sqs,
        control.export_jobs_url,
        control.download_tasks_url,
        export_jobs_high_url=control.export_jobs_high_url,
        download_tasks_high_url=control.download_tasks_high_url,
    )

    @app.get("/queues")
    async def queues() -> tuple[dict[str, Any], int]:
        found = await depths.figures()
        # A high lane's queue is shown beside its queue, paused with it, and
        # its backlog counts towards overloaded like the queue's own.
        busy = overloaded(found.values(), control.overload_backlog)
        body: dict[str, Any] = {**found, "overloaded": busy}
        paused = control.paused()
        for name, figures in found.items():
            if figures is not None:
                queue = _PAUSE_NAMES[name.removesuffix("High")]
                body[name] = {**figures, "paused": paused.get(queue, False)}
        return body, 200

    @app.errorhandler(PipelineError)
    async def unavailable(err: PipelineError) -> tuple[dict[str, str], int]:
        return {"error": str(err)}, 503

    return depths
