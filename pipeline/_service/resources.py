"""The long-lived resources of one service: its adapters, opened once, and its shared state.

Opened once for the lifetime of the service, before the nursery tree of
``graph.py`` is started, and closed after it ends. Each adapter is made here,
once, with its client, its names from the settings and its retry policy: the
jobs table (:class:`JobStore`), the metadata table (:class:`MetadataTable`),
the output bucket (:class:`OutputBucket`), the queues (:class:`SqsQueues`),
the Export API (:class:`ExportApi`). Only ``graph.py`` (and the HTTP routes
it serves) reads :class:`Resources`; it hands each stage the parts that stage
uses, by name.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import httpx
import trio

from pipeline._adapters.aws.bucket import OutputBucket
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.clienttypes import EventsClient
from pipeline._adapters.aws.joboutbox import EventBus
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._adapters.aws.queues import SqsQueues
from pipeline._adapters.exportapi import ExportApi, ExportApiSession
from pipeline._adapters.exportapi.pacing import Pacer
from pipeline._adapters.http.health import readiness_checks
from pipeline._adapters.httpreads import use_large_reads
from pipeline._adapters.retry import observe_health
from pipeline._config import Settings
from pipeline._core.backoff import AWS_POLICY, Backoff, CircuitBreaker, DependencyHealth
from pipeline._core.pool import PoolFigures
from pipeline._service.cancel import CancelWatch
from pipeline._service.intake import AwsFailing, ExportApiBreaker, IntakeGate
from pipeline._service.metrics import ServiceMetrics
from pipeline._service.pause import PauseGate

__all__ = ["Resources", "export_api_breaker", "open_resources"]


@attrs.frozen
class Resources:
    """The adapters and shared state of one service, for ``graph.py`` to hand out."""

    settings: Settings
    # The clients themselves: start-up's and /ready's checks, the dead-letter routes.
    aws: AwsClients
    api: ExportApi
    jobs: JobStore
    table: MetadataTable
    bucket: OutputBucket
    queues: SqsQueues
    # Threads that inflate at once (WORKER_POOL_SIZE).
    inflate_limiter: trio.CapacityLimiter
    # What the receivers wait on before taking messages (no reason: always open).
    intake: IntakeGate
    # The queues paused for every process, as last read here.
    pauses: PauseGate
    # The file workers' figures, for GET /health.
    pool: PoolFigures = attrs.field(factory=PoolFigures)
    # What GET /metrics shows.
    metrics: ServiceMetrics = attrs.field(factory=ServiceMetrics)
    # The exports cancelled, and the cancel scopes of the work on them here.
    cancels: CancelWatch = attrs.field(factory=CancelWatch)


def export_api_breaker() -> CircuitBreaker:
    """The Export API's breaker: five failures of five open it, a probe every 5 s.

    One call's attempts failing alone opens it, so the intake gate holds new
    work back at once; the short cooldown lets work resume within seconds of
    the API answering again (contract 2), at the cost of one probe request per
    cooldown while it does not.
    """
    return CircuitBreaker(window=10, min_calls=5, cooldown=5.0)


def _pacing(settings: Settings) -> list[Callable[[httpx.Request], Awaitable[None]]]:
    """The request hook that keeps to EXPORT_API_RATE_PER_SECOND, when it is set."""
    rate = settings.export_api_rate_per_second
    return [] if rate is None else [Pacer(settings.export_api_base_url, rate)]


def _event_bus(settings: Settings, events: EventsClient | None) -> EventBus | None:
    """Where lifecycle events go (EVENT_BUS_NAME), or None when they are off."""
    if settings.event_bus_name is None or events is None:
        return None
    return EventBus(events, settings.event_bus_name, AWS_POLICY)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The Export API client's TLS context (CA bundle, ``SSL_CERT_FILE``), made once a process.

    httpx's default makes one per client, loading the CA bundle each time
    (0.03 CPU-s); a process opens this client once, but the tests run the
    service in-process hundreds of times. A context may serve many clients.
    """
    return httpx.create_ssl_context()


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the long-lived clients (AWS, Export API) and their adapters for the service's life."""
    use_large_reads()
    connections = settings.max_concurrent_jobs * 2 + 10
    async with (
        open_aws_clients(
            region=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            pool_size=connections,
            events=settings.event_bus_name is not None,
        ) as aws,
        httpx.AsyncClient(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx.Timeout(30.0, connect=10.0),
            follow_redirects=False,
            event_hooks={"request": _pacing(settings)},
            verify=_tls_context(),
        ) as http,
    ):
        session = ExportApiSession(
            http,
            base_url=settings.export_api_base_url,
            token=settings.export_api_token,
            allowed_hosts=settings.export_download_allowed_hosts,
            policy=Backoff(max_attempts=settings.export_api_max_attempts, base=1.0, cap=30.0),
            breaker=export_api_breaker(),
        )
        health = DependencyHealth()
        checks = readiness_checks(settings, aws)
        # The work needs the Export API, S3 and DynamoDB; SQS trouble is the
        # receivers' own to wait out (they are what would be paused).
        # An operator's pause of a queue holds its receivers back the same way.
        pauses = PauseGate()
        gate = IntakeGate(
            [
                ExportApiBreaker(session),
                AwsFailing(health, {name: checks[name] for name in ("s3", "dynamodb")}),
                pauses,
            ]
        )
        with observe_health(health):
            yield Resources(
                settings=settings,
                aws=aws,
                api=ExportApi(session),
                jobs=JobStore(
                    aws.dynamodb,
                    settings.dynamodb_jobs_table,
                    AWS_POLICY,
                    events=_event_bus(settings, aws.events),
                    retention_days=settings.job_retention_days,
                ),
                table=MetadataTable(aws.dynamodb, settings.dynamodb_metadata_table, AWS_POLICY),
                bucket=OutputBucket(
                    aws.s3, settings.s3_bucket_name, settings.s3_prefix, AWS_POLICY
                ),
                queues=SqsQueues(aws.sqs, AWS_POLICY),
                inflate_limiter=trio.CapacityLimiter(settings.worker_pool_size),
                intake=gate,
                pauses=pauses,
            )
