"""The HTTP side: ``GET /health`` and ``GET /ready`` (contract 6).

``/health`` answers 200 as long as the process runs its loops: the handler
runs on the same Trio loop as the graph, so an answer at all proves the loop
is not stuck. ``/ready`` asks SQS, S3 and DynamoDB one cheap question each,
concurrently and under a short deadline, and answers 200 only if all three
answered; the body says which one did not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from pipeline._adapters.aws.clients import AwsClients, translate_aws_errors
from pipeline._config import Settings
from pipeline._errors import PipelineError

__all__ = [
    "add_json_errors",
    "add_metrics_route",
    "create_health_app",
    "readiness_checks",
    "serve_health",
]

log = structlog.get_logger("pipeline.health")

# A load balancer's health check gives up after a few seconds; answer first.
READY_TIMEOUT_SECONDS = 3.0
# Bodies over this answer 413 unread.
MAX_BODY_BYTES = 1024 * 1024

Check = Callable[[], Awaitable[None]]


def readiness_checks(settings: Settings, aws: AwsClients) -> dict[str, Check]:
    """One cheap call per dependency the service cannot work without."""

    async def sqs() -> None:
        with translate_aws_errors("SQS GetQueueAttributes"):
            await aws.sqs.get_queue_attributes(
                QueueUrl=settings.sqs_export_jobs_url, AttributeNames=["QueueArn"]
            )

    async def s3() -> None:
        with translate_aws_errors("S3 HeadBucket"):
            await aws.s3.head_bucket(Bucket=settings.s3_bucket_name)

    async def dynamodb() -> None:
        with translate_aws_errors("DynamoDB DescribeTable"):
            await aws.dynamodb.describe_table(TableName=settings.dynamodb_jobs_table)

    return {"sqs": sqs, "s3": s3, "dynamodb": dynamodb}


def create_health_app(
    checks: dict[str, Check], status: Callable[[], dict[str, Any]] | None = None
) -> QuartTrio:
    """The quart-trio app serving ``/health`` and ``/ready``.

    ``status`` adds what the process says about itself to ``/health`` (its
    mode and its pool's figures).
    """
    app = QuartTrio("pipeline")
    # The largest body any call takes: an export-job message (SQS's limit is 256 KiB).
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    add_json_errors(app)

    @app.before_request
    async def read_body() -> None:
        # An answer given with the request's body unread (a 401, a 404, a 405)
        # leaves hypercorn's keep-alive connection unable to answer the next
        # request on it; read every body first. MAX_CONTENT_LENGTH still bounds
        # it: a larger one is the 413 below, on a connection that is closed.
        await request.get_data()

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        return {"status": "ok", **(status() if status is not None else {})}, 200

    @app.get("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        results: dict[str, str] = {}

        async def run(name: str, check: Check) -> None:
            try:
                with trio.fail_after(READY_TIMEOUT_SECONDS):
                    await check()
                results[name] = "ok"
            except trio.TooSlowError:
                results[name] = "timed out"
            except PipelineError as err:
                results[name] = str(err)

        async with trio.open_nursery() as nursery:
            for name, check in checks.items():
                nursery.start_soon(run, name, check)
        ok = all(result == "ok" for result in results.values())
        return {"status": "ready" if ok else "not ready", "checks": results}, 200 if ok else 503

    return app


def add_json_errors(app: QuartTrio) -> None:
    """Every error ``app`` answers has a JSON body ``{"error": "..."}`` (contract 8).

    Quart's own answers (404 for an unknown path, 405 for a wrong method, 413
    for a body over its limit) are HTML pages by default; a bug is a 500 with
    one line, its traceback only in the log.
    """

    @app.errorhandler(HTTPException)
    async def http_error(err: HTTPException) -> tuple[dict[str, str], int, dict[str, str]]:
        headers: dict[str, str] = {}
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        code = err.code or 500
        if isinstance(err, RequestEntityTooLarge):
            # The rest of the body is never read: the connection cannot be reused.
            headers["Connection"] = "close"
        return {"error": f"{code} {err.name}: {err.description}"}, code, headers

    @app.errorhandler(Exception)
    async def bug(err: Exception) -> tuple[dict[str, str], int]:
        log.error("control API request failed", exc_info=err)
        return {"error": "internal error (see the service's log)"}, 500


def add_metrics_route(
    app: QuartTrio,
    render: Callable[[], bytes],
    refresh: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """``GET /metrics``: ``render()`` in Prometheus's text format, after ``refresh()``.

    ``refresh`` brings gauges read elsewhere (the queue figures) up to date; when
    it fails the scrape still answers, with those gauges as last set.
    """

    @app.get("/metrics")
    async def metrics() -> Response:
        if refresh is not None:
            try:
                with trio.fail_after(READY_TIMEOUT_SECONDS):
                    await refresh()
            except (PipelineError, trio.TooSlowError) as err:
                log.warning("queue figures not read for /metrics", error=str(err) or "timed out")
        # content_type as it is: mimetype= would add a second charset.
        return Response(render(), content_type=CONTENT_TYPE_LATEST)


async def serve_health(
    app: QuartTrio,
    port: int,
    shutdown: trio.Event,
    *,
    host: str = "0.0.0.0",
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``port`` until ``shutdown`` is set."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
