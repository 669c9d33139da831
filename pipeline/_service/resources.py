"""The long-lived resources of one service: AWS clients, the Export API session, the gate.

Opened once for the lifetime of the service, before the nursery tree of
``graph.py`` is started, and closed after it ends; the :class:`Deps` they
make is what stages are handed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import trio

from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._adapters.aws.clienttypes import EventsClient
from pipeline._adapters.aws.joboutbox import EventBus
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.exportapi import ExportApi, ExportApiSession
from pipeline._adapters.exportapi.pacing import Pacer
from pipeline._adapters.http.health import readiness_checks
from pipeline._adapters.httpreads import use_large_reads
from pipeline._adapters.retry import observe_health
from pipeline._config import Settings
from pipeline._core.backoff import AWS_POLICY, Backoff, CircuitBreaker, DependencyHealth
from pipeline._service.deps import Deps
from pipeline._service.intake import AwsFailing, ExportApiBreaker, IntakeGate
from pipeline._service.pause import PauseGate

__all__ = ["export_api_breaker", "open_deps"]


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


@asynccontextmanager
async def open_deps(settings: Settings) -> AsyncIterator[Deps]:
    """Open the long-lived clients (AWS, Export API) for the lifetime of the service."""
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
            yield Deps(
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
                inflate_limiter=trio.CapacityLimiter(settings.worker_pool_size),
                intake=gate,
                pauses=pauses,
            )
