"""The control API beside the health endpoints (contract section 7): jobs and queues.

Reading is open: ``GET /jobs/{exportId}`` (the job item, its progress and an
estimate of the time left) and ``GET /queues`` (depths, and whether either
queue is over ``OVERLOAD_BACKLOG``). ``POST /jobs`` (submit),
``POST /jobs/{exportId}/cancel`` and ``POST /jobs/{exportId}/retry`` change
something, so they need ``Authorization: Bearer <ADMIN_TOKEN>``, compared in
constant time: with no ``ADMIN_TOKEN`` configured the calls are off (403), a
missing or wrong token is 401. A malformed body is 400 with the reason, an
unknown export 404, a cancel of a final job or a retry of one that did not
end FAILED or CANCELLED 409.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs
import trio
from quart import request
from quart_trio import QuartTrio

from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clients import AwsClient
from pipeline._adapters.aws.jobcontrol import Answer, Verdict, cancel_job, retry_job
from pipeline._adapters.aws.jobitems import JobItem, converter, format_time, utc_now
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus
from pipeline._core.messages import ExportJob, decode_export_job, encode_export_job
from pipeline._errors import PipelineError, PoisonMessage

__all__ = [
    "Control",
    "QueueFigures",
    "add_control_routes",
    "job_view",
    "overloaded",
    "queue_figures",
    "refusal",
]

_FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
_DEPTHS = {
    "visible": "ApproximateNumberOfMessages",
    "inFlight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


@attrs.frozen
class Control:
    """What the control routes read and change."""

    jobs: JobStore
    sqs: AwsClient
    export_jobs_url: str
    download_tasks_url: str | None
    admin_token: str | None
    overload_backlog: int
    # This process's own work on an export stops at once on a cancel taken
    # here, and forgets it on a retry (other processes see the job item).
    on_cancel: Callable[[str], None] = lambda export_id: None
    on_retry: Callable[[str], None] = lambda export_id: None
    # Queue name (export-jobs, download-tasks) → paused, as this process knows it.
    paused: Callable[[], dict[str, bool]] = dict


def job_view(job: JobItem, now: datetime) -> dict[str, Any]:
    """The job item's attributes with ``exportId``, ``progress`` and ``etaSeconds``.

    Progress is the listed bytes of finished files over ``bytesTotal``, or
    finished files over listed files where sizes are unknown (1.0 only once
    final); the estimate extrapolates the pace so far, and is null until a
    file finished.
    """
    summary = job.summary
    view: dict[str, Any] = {
        "exportId": job.export_id,
        "status": job.status.value,
        **converter.unstructure(summary),
        "correlationId": job.correlation_id,
        "createdAt": format_time(job.created_at),
        "updatedAt": format_time(job.updated_at),
    }
    if job.bytes_total is not None:
        view["bytesTotal"] = job.bytes_total
    if job.error is not None:
        view["error"] = job.error
    finished, total = summary.files_finished, summary.files_total
    eta: float | None = None
    if job.status in _FINAL:
        progress = 1.0
        eta = 0.0
    elif job.listing_done and total > 0:
        if job.bytes_total:
            share = min(job.bytes_finished / job.bytes_total, 1.0)
        else:
            share = finished / total
        progress = min(share, 0.99)
        elapsed = (now - (job.waiting_since or job.created_at)).total_seconds()
        if share > 0 and elapsed > 0:
            eta = round(elapsed / share * (1.0 - share), 1)
    else:
        progress = 0.0
    view["progress"] = round(progress, 4)
    view["etaSeconds"] = eta
    return view


def overloaded(views: list[dict[str, int] | None], backlog: int) -> bool:
    """Whether any queue's visible backlog is over ``backlog`` (OVERLOAD_BACKLOG)."""
    return any(view["visible"] > backlog for view in views if view is not None)


def refusal(control: Control) -> tuple[dict[str, str], int] | None:
    """Why a changing call may not run (403 off, 401 token), or None when it may."""
    if control.admin_token is None:
        return {"error": "the control API is off: ADMIN_TOKEN is not set"}, 403
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {control.admin_token}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return {"error": "missing or wrong bearer token"}, 401
    return None


async def _depths(client: AwsClient, url: str) -> dict[str, int]:
    response = await client.get_queue_attributes(
        QueueUrl=url, AttributeNames=list(_DEPTHS.values())
    )
    attributes = response.get("Attributes") or {}
    return {name: int(attributes.get(attribute, 0)) for name, attribute in _DEPTHS.items()}


async def _queue_view(control: Control, url: str) -> dict[str, Any]:
    depths = await _depths(control.sqs, url)
    dead_letters = await sqs.dead_letter_queue_url(control.sqs, url)
    depths["deadLetter"] = (
        0 if dead_letters is None else (await _depths(control.sqs, dead_letters))["visible"]
    )
    return depths


async def queue_figures(control: Control) -> dict[str, Any]:
    """What ``GET /queues`` answers (without ``paused``): depths of both queues and their DLQs."""
    found: dict[str, Any] = {}

    async def look(name: str, url: str) -> None:
        found[name] = await _queue_view(control, url)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look, "exportJobs", control.export_jobs_url)
        if control.download_tasks_url is not None:
            nursery.start_soon(look, "downloadTasks", control.download_tasks_url)
    tasks = found.get("downloadTasks")
    return {
        "exportJobs": found["exportJobs"],
        "downloadTasks": tasks,
        "overloaded": overloaded([found["exportJobs"], tasks], control.overload_backlog),
    }


@attrs.define
class QueueFigures:
    """The queue figures, read at most once per ``max_age`` seconds whoever asks.

    ``GET /queues``, ``/metrics`` and the page all read them: any number of
    callers costs SQS a bounded number of requests.
    """

    read: Callable[[], Awaitable[dict[str, Any]]]
    max_age: float = 5.0
    _value: dict[str, Any] | None = None
    _read_at: float = 0.0
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or trio.current_time() - self._read_at > self.max_age:
                self._value = await self.read()
                self._read_at = trio.current_time()
            return dict(self._value)


def add_control_routes(app: QuartTrio, control: Control) -> QueueFigures:
    """Serve the control API on ``app``; returns its cached queue figures (for /metrics)."""

    @app.get("/jobs/<export_id>")
    async def get_job(export_id: str) -> tuple[dict[str, Any], int]:
        job = await control.jobs.get_job(export_id)
        if job is None:
            return {"error": f"no job for export {export_id!r}"}, 404
        return job_view(job, utc_now()), 200

    @app.post("/jobs")
    async def submit() -> tuple[dict[str, Any], int]:
        refused = refusal(control)
        if refused is not None:
            return refused
        raw = await request.get_data()
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            job = decode_export_job(body)
        except PoisonMessage as err:
            return {"error": str(err)}, 400
        message = ExportJob(export_ids=job.export_ids, correlation_id=job.correlation_id)
        await sqs.send(control.sqs, control.export_jobs_url, encode_export_job(message))
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
    async def cancel(export_id: str) -> tuple[dict[str, Any], int]:
        refused = refusal(control)
        if refused is not None:
            return refused
        answer = await cancel_job(control.jobs, export_id)
        if answer.verdict is Verdict.ACCEPTED:
            control.on_cancel(export_id)
        return answered(answer, 202)

    @app.post("/jobs/<export_id>/retry")
    async def retry(export_id: str) -> tuple[dict[str, Any], int]:
        refused = refusal(control)
        if refused is not None:
            return refused
        answer = await retry_job(control.jobs, control.sqs, control.export_jobs_url, export_id)
        if answer.verdict is Verdict.ACCEPTED:
            control.on_retry(export_id)
        return answered(answer, 202)

    figures = QueueFigures(functools.partial(queue_figures, control))

    @app.get("/queues")
    async def queues() -> tuple[dict[str, Any], int]:
        body = await figures.get()
        paused = control.paused()
        for name, queue in (("exportJobs", "export-jobs"), ("downloadTasks", "download-tasks")):
            if body[name] is not None:
                body[name] = {**body[name], "paused": paused.get(queue, False)}
        return body, 200

    @app.errorhandler(PipelineError)
    async def unavailable(err: PipelineError) -> tuple[dict[str, str], int]:
        return {"error": str(err)}, 503

    return figures
