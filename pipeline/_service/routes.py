"""The HTTP routes one process serves beside ``/health`` and ``/ready``, wired to its state.

The control API (``/jobs/{id}``, cancel, retry, ``/queues``), the console's
calls and page (``GET /jobs``, files, bulk retry, pause/resume, ``/ui``), the
live events and ``/metrics``: what each reads and which of this process's own
parts a call taken here tells at once (a cancel its cancel watch, a pause its
pause gate). Split from :mod:`.graph`, which starts the server and the tasks.
"""

from __future__ import annotations

from quart_trio import QuartTrio

from pipeline._adapters.http.console import ConsoleHooks, add_console_routes
from pipeline._adapters.http.control import Control, add_control_routes
from pipeline._adapters.http.events import EventHub, add_events_route, job_views
from pipeline._adapters.http.health import add_metrics_route
from pipeline._service.resources import Resources

__all__ = ["add_routes"]


def add_routes(app: QuartTrio, resources: Resources) -> EventHub:
    """Serve the control API, the console, ``/events`` and ``/metrics`` on ``app``.

    Returns the event hub, whose task the caller runs.
    """
    settings = resources.settings
    control = Control(
        jobs=resources.jobs,
        sqs=resources.aws.sqs,
        export_jobs_url=settings.sqs_export_jobs_url,
        export_jobs_high_url=settings.sqs_export_jobs_high_url,
        download_tasks_url=settings.sqs_download_tasks_url,
        download_tasks_high_url=settings.sqs_download_tasks_high_url,
        admin_token=settings.admin_token,
        overload_backlog=settings.overload_backlog,
        on_cancel=resources.cancels.cancel,
        on_retry=resources.cancels.resume,
        paused=lambda: resources.pauses.view,
    )
    figures = add_control_routes(app, control)
    add_console_routes(
        app,
        control,
        ConsoleHooks(on_pause=lambda queue, paused: resources.pauses.apply({queue: paused})),
    )
    hub = EventHub(resources.jobs.changes, job_views(resources.jobs))
    add_events_route(app, hub)

    async def refresh_queue_gauges() -> None:
        resources.metrics.queues_seen(await figures.figures(), resources.pauses.view)

    add_metrics_route(app, resources.metrics.text, refresh_queue_gauges)
    return hub
