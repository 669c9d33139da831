"""The nursery tree: every stage and channel of the service, wired in one place.

Read top to bottom, this is the picture in ``docs/architecture.md``::

    run_service
    ├── health server                          (until the work is over)
    ├── start-up wait                          (until SQS, S3, DynamoDB answer, or stop)
    └── lease keepers                          (one per queue, heartbeats)
        ├── cancel watch                       (job items of the exports in flight)
        ├── owed aborts                        (multipart aborts that failed, retried)
        ├── pause gate                         (control items: paused queues)
        ├── event hub                          (GET /events: changed jobs, 1/s each)
        └── work (cancel scope: grace deadline on stop)
            ├── stop watcher                   (stop → intake cancelled, deadline set)
            ├── intake (cancel scope)
            │   ├── export-job receivers x2    ─► export_deliveries (0)
            │   └── download-task receivers x2 ─► task_deliveries (0)
            ├── job stage                      export_deliveries ─► file_tasks | SQS
            ├── task stage                     task_deliveries ─► file_tasks
            └── file workers xMAX_CONCURRENT_JOBS   file_tasks ─► S3, jobs table

Which branches exist depends on the mode: ``orchestrator`` has no task stage
and no file workers (files go to the download-task queue), ``worker`` has no
export-job receivers and no job stage. ``all`` has both sides; it reads the
download-task queue too when one is configured, which is where its files
overflow when its own workers are busy.

Start-up waits for AWS (``startup.py``), ``/health`` served, ``/ready`` 503
until the work has begun; a stop during the wait ends the process unstarted.

Shutdown (SIGTERM/SIGINT sets ``stop``): the intake scope is cancelled, so no
new message is taken; the work scope gets a deadline ``SHUTDOWN_GRACE_SECONDS``
ahead, so work in flight may finish; what is still running then is cancelled
and hands its message back (shielded, bounded). Channels then close in order
downstream and every nursery ends.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import structlog
import trio

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobcontrol import job_statuses
from pipeline._adapters.aws.pauses import read_pauses
from pipeline._adapters.http.dlq import DeadLetterAccess, add_dlq_routes
from pipeline._adapters.http.health import (
    create_health_app,
    readiness_checks,
    serve_health,
)
from pipeline._adapters.retry import observe_retries
from pipeline._config import Mode, Settings
from pipeline._memory import settle as settle_memory
from pipeline._service.buffers import in_flight_bytes
from pipeline._service.dispatch import (
    FileTask,
    lane_dispatch,
)
from pipeline._service.file_stage import run_file_workers
from pipeline._service.filework import FileLimits, FileStage
from pipeline._service.job_stage import JobStage, run_job_stage
from pipeline._service.lease import Delivery
from pipeline._service.queues import StageQueue, lanes_of, queue_names, stage_queues
from pipeline._service.receiver import Slots, run_receiver
from pipeline._service.resources import Resources, open_resources
from pipeline._service.routes import add_routes
from pipeline._service.startup import StartGate, wait_for_dependencies
from pipeline._service.sweeper import run_outbox, run_sweeper
from pipeline._service.task_stage import run_task_stage

__all__ = ["file_stage", "open_resources", "run_service"]

log = structlog.get_logger("pipeline.graph")

# Receivers per queue: one long poll returns at most ten messages, and a
# second receiver polls while the first one's batch is being started.
RECEIVERS_PER_QUEUE = 2
# Deliveries are handed over unbuffered: a receiver takes slots before it
# receives, so a message never waits in a buffer while its lease runs.
DELIVERY_BUFFER = 0
# Shielded cleanup after the grace period (hand-backs, aborts) has its own
# deadline inside this margin; see _lease.CLEANUP_SECONDS.


def file_task_buffer(settings: Settings) -> int:
    """One listed file waiting per worker keeps the workers busy while the job
    stage lists the next page; more would only delay overflow to the queue."""
    return settings.max_concurrent_jobs


def file_stage(resources: Resources) -> FileStage:
    """The file workers' part of the service's resources."""
    return FileStage(
        api=resources.api,
        jobs=resources.jobs,
        table=resources.table,
        bucket=resources.bucket,
        cancels=resources.cancels,
        inflate_limiter=resources.inflate_limiter,
        pool=resources.pool,
        metrics=resources.metrics,
        limits=FileLimits.of(resources.settings),
    )


def _status(resources: Resources, mode: Mode, queues: list[str]) -> dict[str, Any]:
    """What GET /health says of this process: its mode, its pool's figures, its intake."""
    pool, limiter = resources.pool, resources.inflate_limiter
    return {
        "mode": mode.value,
        "intake": resources.intake.status(queues),
        "pool": {
            "size": resources.settings.worker_pool_size,
            "active": limiter.borrowed_tokens,
            "queued": limiter.statistics().tasks_waiting,
            "inFlight": pool.in_flight,
            "completed": pool.completed,
            "failed": pool.failed,
            "avgProcessingMs": pool.avg_processing_ms,
        },
        "paused": resources.pauses.view,
    }


def _dead_letter_access(settings: Settings, aws: AwsClients) -> DeadLetterAccess:
    urls = {"export-jobs": settings.sqs_export_jobs_url}
    if settings.sqs_download_tasks_url is not None:
        urls["download-tasks"] = settings.sqs_download_tasks_url
    return DeadLetterAccess(sqs=aws.sqs, queue_urls=urls, admin_token=settings.admin_token)


async def run_service(
    settings: Settings,
    mode: Mode,
    stop: trio.Event,
    *,
    settle: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service in ``mode`` until ``stop`` is set and the work has wound down.

    With ``settle`` (the process's own entry point; not the tests, which run
    many services in one process) the memory is settled once the clients are
    open: see :mod:`pipeline._memory`.
    """
    async with open_resources(settings) as resources:
        if settle:
            settle_memory()
        # Every retry and breaker change below is counted in this service's metrics.
        with observe_retries(resources.metrics):
            await _serve(settings, mode, stop, resources, task_status)
    log.info("service stopped")


async def _serve(
    settings: Settings,
    mode: Mode,
    stop: trio.Event,
    resources: Resources,
    task_status: trio.TaskStatus[None],
) -> None:
    takes_jobs = mode in (Mode.ALL, Mode.ORCHESTRATOR)
    takes_tasks = mode is Mode.WORKER or (
        mode is Mode.ALL and settings.sqs_download_tasks_url is not None
    )
    resources.metrics.watch(
        files_in_flight=lambda: resources.pool.in_flight,
        threads_busy=lambda: resources.inflate_limiter.borrowed_tokens,
    )
    async with trio.open_nursery() as top:
        health_done = trio.Event()
        gate = StartGate()
        read = queue_names(settings, takes_jobs, takes_tasks)
        resources.metrics.known_queues(read)
        app = create_health_app(
            {**readiness_checks(settings, resources.aws), "started": gate.check},
            functools.partial(_status, resources, mode, read),
        )
        hub = add_routes(app, resources)
        add_dlq_routes(app, _dead_letter_access(settings, resources.aws))
        await top.start(serve_health, app, settings.health_port, health_done)

        lanes_of_jobs = (settings.sqs_export_jobs_url, settings.sqs_export_jobs_high_url)
        lanes_of_tasks = (settings.sqs_download_tasks_url, settings.sqs_download_tasks_high_url)
        job_urls = lanes_of_jobs if takes_jobs else (None, None)
        task_urls = lanes_of_tasks if takes_tasks else (None, None)
        queues = [url for url in (*job_urls, *task_urls) if url is not None]
        facts = await wait_for_dependencies(settings, resources.aws, queues=queues, stop=stop)
        if facts is None:
            health_done.set()
            return
        queues_of = functools.partial(stage_queues, resources.queues, resources.metrics, facts)
        job_queues = queues_of(job_urls, name="export_jobs")
        task_queues = queues_of(task_urls, name="download_tasks")
        keepers_of = [queue.keeper for queue in job_queues + task_queues]

        async with trio.open_nursery() as keepers:
            for keeper in keepers_of:
                await keepers.start(keeper.run)
            # Cancels taken by other processes reach the work here through the job items.
            keepers.start_soon(
                resources.cancels.run, functools.partial(job_statuses, resources.jobs)
            )
            # Aborts that failed are tried again until S3 confirms them.
            await keepers.start(resources.bucket.owed.run)
            # So do pauses, through their control items, on the same clock.
            keepers.start_soon(resources.pauses.run, functools.partial(read_pauses, resources.jobs))
            keepers.start_soon(hub.run)
            with trio.CancelScope() as work_scope:
                async with trio.open_nursery() as work:
                    await _start_work(
                        work, resources, mode, stop, work_scope, job_queues, task_queues
                    )
                    gate.open()
                    task_status.started()
            for keeper in keepers_of:
                await keeper.hand_back_remaining()
            keepers.cancel_scope.cancel()
        health_done.set()


async def _start_work(
    work: trio.Nursery,
    resources: Resources,
    mode: Mode,
    stop: trio.Event,
    work_scope: trio.CancelScope,
    job_queues: list[StageQueue],
    task_queues: list[StageQueue],
) -> None:
    settings = resources.settings
    intake_scope = trio.CancelScope()
    work.start_soon(_watch_stop, stop, intake_scope, work_scope, settings.shutdown_grace_seconds)

    # Files for this process's own workers (all and worker modes).
    file_send: trio.MemorySendChannel[FileTask] | None = None
    if mode is not Mode.ORCHESTRATOR:
        file_send, file_receive = trio.open_memory_channel[FileTask](file_task_buffer(settings))
        task_slots = Slots(settings.max_concurrent_jobs, lanes=lanes_of(task_queues))
        await work.start(
            functools.partial(
                run_file_workers, file_receive, stage=file_stage(resources), slots=task_slots
            )
        )

    receivers: list[tuple[StageQueue, Slots, trio.MemorySendChannel[Delivery]]] = []
    if job_queues:
        job_slots = Slots(settings.max_concurrent_jobs, lanes=lanes_of(job_queues))
        job_files = None if file_send is None else file_send.clone()
        dispatch = lane_dispatch(settings, resources.queues, job_files)
        stages: list[tuple[trio.MemoryReceiveChannel[Delivery], JobStage]] = []
        for queue in job_queues:
            export_send, export_receive = trio.open_memory_channel[Delivery](DELIVERY_BUFFER)
            stage = JobStage(
                api=resources.api,
                jobs=resources.jobs,
                table=resources.table,
                cancels=resources.cancels,
                poll_interval_seconds=settings.export_poll_interval_seconds,
                max_wait_seconds=settings.export_max_wait_seconds,
                keeper=queue.keeper,
                slots=job_slots,
                dispatch=dispatch,
                dead_letter_url=queue.dead_letter_url,
                waits_for_files=file_send is not None,
            )
            stages.append((export_receive, stage))
            receivers.append((queue, job_slots, export_send))
        await work.start(functools.partial(_run_job_stages_then_close, stages, files=job_files))

    if file_send is not None:
        for queue in task_queues:
            task_send, task_receive = trio.open_memory_channel[Delivery](DELIVERY_BUFFER)
            await work.start(
                functools.partial(
                    run_task_stage,
                    task_receive,
                    file_send.clone(),
                    slots=task_slots,
                    dead_letter_url=queue.dead_letter_url,
                )
            )
            receivers.append((queue, task_slots, task_send))
        # The clones above are the only senders; closing this one lets the
        # workers end once the job and task stages have ended.
        await file_send.aclose()
    # Where export jobs are taken, stranded jobs are looked for too.
    work.start_soon(
        functools.partial(_run_intake, intake_scope, receivers, resources, sweeps=bool(job_queues))
    )
    # The byte path's memory bound with every file slot busy (buffers.py).
    buffers = in_flight_bytes(resources.settings.max_concurrent_jobs) // (1024 * 1024)
    log.info("service started", mode=mode.value, byteBuffersMiB=buffers)


async def _run_job_stages_then_close(
    stages: list[tuple[trio.MemoryReceiveChannel[Delivery], JobStage]],
    *,
    files: trio.MemorySendChannel[FileTask] | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The job stage of each lane, closing their sender of local files when all end.

    The workers end when every sender of their channel is closed; if the job
    stages' stayed open, an idle service would wait out the whole shutdown
    grace period on workers that have nothing left to do.
    """
    async with contextlib.AsyncExitStack() as stack:
        if files is not None:
            await stack.enter_async_context(files)
        async with trio.open_nursery() as nursery:
            for receive, stage in stages:
                await nursery.start(functools.partial(run_job_stage, receive, stage=stage))
            task_status.started()


async def _run_intake(
    intake_scope: trio.CancelScope,
    receivers: list[tuple[StageQueue, Slots, trio.MemorySendChannel[Delivery]]],
    resources: Resources,
    *,
    sweeps: bool,
) -> None:
    with intake_scope:
        async with trio.open_nursery() as intake:
            if sweeps:
                await intake.start(
                    functools.partial(
                        run_sweeper,
                        jobs=resources.jobs,
                        sqs=resources.queues,
                        export_jobs_url=resources.settings.sqs_export_jobs_url,
                    )
                )
                await intake.start(functools.partial(run_outbox, jobs=resources.jobs))
            for queue, slots, send in receivers:
                async with send:
                    for _ in range(RECEIVERS_PER_QUEUE):
                        await intake.start(
                            functools.partial(
                                run_receiver,
                                send.clone(),
                                sqs=queue.keeper.sqs,
                                keeper=queue.keeper,
                                slots=slots,
                                policy=resources.queues.policy,
                                wait_seconds=resources.settings.sqs_wait_seconds,
                                gate=resources.intake,
                            )
                        )


async def _watch_stop(
    stop: trio.Event, intake_scope: trio.CancelScope, work_scope: trio.CancelScope, grace: float
) -> None:
    await stop.wait()
    log.info("stopping: no new messages; work in flight has a grace period", grace_seconds=grace)
    intake_scope.cancel()
    work_scope.deadline = trio.current_time() + grace
