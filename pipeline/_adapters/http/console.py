"""The operator's calls beside the control API (contract section 8), and the page.

- ``GET /jobs?status=S&limit=N&cursor=C``: jobs newest first, from the
  status index (:func:`~pipeline._adapters.aws.joblist.list_jobs`);
- ``GET /jobs/{exportId}/files?status=failed|done&cursor=C``: a job's files,
  a failed one with its one-line error;
- ``POST /jobs/retry`` ``{"status": "FAILED"|"CANCELLED", "limit": N}``: up
  to ``N`` such jobs retried, each as ``POST /jobs/{exportId}/retry`` would;
- ``POST /queues/{queue}/pause`` and ``/resume``: the queue's control item;
- ``GET /ui``: the page, from files shipped in the package (``static/``).

The changing calls need the admin token, as the control API's do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import attrs
from quart import Response, request
from quart_trio import QuartTrio

from pipeline._adapters.aws.jobcontrol import Verdict, retry_job
from pipeline._adapters.aws.jobitems import utc_now
from pipeline._adapters.aws.joblist import DEFAULT_LIMIT, MAX_LIMIT, list_files, list_jobs
from pipeline._adapters.aws.pauses import QUEUES, set_paused
from pipeline._adapters.http.auth import Refusal, refusal
from pipeline._adapters.http.control import Control, job_view
from pipeline._core.accounting import JobStatus

__all__ = ["ConsoleHooks", "add_console_routes"]

# The page's own files, and their types; nothing else is served from static/.
_ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
# The page loads only its own assets, and talks only to this server.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@attrs.frozen
class ConsoleHooks:
    """What a call taken here changes in this process at once."""

    on_pause: Callable[[str, bool], None] = lambda queue, paused: None
    on_retry: Callable[[str], None] = lambda export_id: None


def _limit(default: int) -> int:
    text = request.args.get("limit")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        msg = f"limit must be a whole number, not {text!r}"
        raise ValueError(msg) from None
    if not 1 <= value <= MAX_LIMIT:
        msg = f"limit must be 1 to {MAX_LIMIT}, not {value}"
        raise ValueError(msg)
    return value


def _status(text: str | None) -> JobStatus | None:
    if text is None or text == "":
        return None
    try:
        return JobStatus(text.upper())
    except ValueError:
        names = ", ".join(status.value for status in JobStatus)
        msg = f"status must be one of {names}, not {text!r}"
        raise ValueError(msg) from None


def _asset(name: str) -> bytes:
    return (resources.files("pipeline._adapters.http") / "static" / name).read_bytes()


def add_console_routes(app: QuartTrio, control: Control, hooks: ConsoleHooks) -> None:
    """Serve the job list, a job's files, bulk retry, pause/resume and the page on ``app``."""

    @app.get("/jobs")
    async def jobs() -> tuple[dict[str, Any], int]:
        try:
            status = _status(request.args.get("status"))
            page = await list_jobs(
                control.jobs,
                status,
                limit=_limit(DEFAULT_LIMIT),
                cursor=request.args.get("cursor") or None,
            )
        except ValueError as err:
            return {"error": str(err)}, 400
        now = utc_now()
        views = [job_view(job, now) for job in page.jobs]
        return {"jobs": views, "nextCursor": page.next_cursor}, 200

    @app.get("/jobs/<export_id>/files")
    async def files(export_id: str) -> tuple[dict[str, Any], int]:
        status = (request.args.get("status") or "").lower() or None
        try:
            limit = _limit(100)
        except ValueError as err:
            return {"error": str(err)}, 400
        if await control.jobs.get_job(export_id) is None:
            return {"error": f"no job for export {export_id!r}"}, 404
        try:
            page = await list_files(
                control.jobs,
                export_id,
                status,
                limit=limit,
                cursor=request.args.get("cursor") or None,
            )
        except ValueError as err:
            return {"error": str(err)}, 400
        return {"exportId": export_id, "files": page.files, "nextCursor": page.next_cursor}, 200

    @app.post("/jobs/retry")
    async def retry_many() -> tuple[dict[str, Any], int] | Refusal:
        refused = refusal(control.admin_token)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.get_data(as_text=True) or "{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            status = _status(body.get("status"))
            if status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise ValueError('status must be "FAILED" or "CANCELLED"')
            limit = body.get("limit", DEFAULT_LIMIT)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be a whole number 1 to {MAX_LIMIT}, not {limit!r}")
        except ValueError as err:
            return {"error": str(err)}, 400
        page = await list_jobs(control.jobs, status, limit=limit)
        retried: list[str] = []
        for job in page.jobs:
            answer = await retry_job(
                control.jobs, control.sqs, control.export_jobs_url, job.export_id
            )
            # A job retried meanwhile by someone else is theirs: not counted here.
            if answer.verdict is Verdict.ACCEPTED:
                control.on_retry(job.export_id)
                hooks.on_retry(job.export_id)
                retried.append(job.export_id)
        return {"retried": retried}, 202

    async def pause_or_resume(queue: str, paused: bool) -> tuple[dict[str, Any], int] | Refusal:
        refused = refusal(control.admin_token)
        if refused is not None:
            return refused
        if queue not in QUEUES:
            return {"error": f"no queue {queue!r}: it is one of {', '.join(QUEUES)}"}, 404
        if queue == "download-tasks" and control.download_tasks_url is None:
            return {"error": "no download-task queue is configured"}, 404
        await set_paused(control.jobs, queue, paused)
        hooks.on_pause(queue, paused)
        return {"queue": queue, "paused": paused}, 202

    @app.post("/queues/<queue>/pause")
    async def pause(queue: str) -> tuple[dict[str, Any], int] | Refusal:
        return await pause_or_resume(queue, True)

    @app.post("/queues/<queue>/resume")
    async def resume(queue: str) -> tuple[dict[str, Any], int] | Refusal:
        return await pause_or_resume(queue, False)

    @app.get("/ui")
    async def page() -> Response:
        response = Response(_asset("index.html"), mimetype="text/html")
        response.headers["Content-Security-Policy"] = _PAGE_POLICY
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/ui/<name>")
    async def asset(name: str) -> Response | tuple[dict[str, str], int]:
        kind = _ASSETS.get(name)
        if kind is None:
            return {"error": f"no asset {name!r}"}, 404
        response = Response(_asset(name), content_type=kind)
        response.headers["Cache-Control"] = "no-cache"
        return response
