"""The long-lived clients and settings that stages are handed.

Opened once at the top of the nursery tree (``_graph.py``) and passed down;
nothing here is global. Stages take what they need from it, which keeps their
signatures short without hiding where a client comes from.
"""

from __future__ import annotations

import attrs
import trio

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.s3orphans import OwedAborts
from pipeline._adapters.exportapi import ExportApi
from pipeline._config import Settings
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._core.pool import PoolFigures
from pipeline._core.zip.format import ZipLimits
from pipeline._service.cancel import CancelWatch
from pipeline._service.intake import IntakeGate
from pipeline._service.metrics import ServiceMetrics
from pipeline._service.pause import PauseGate

__all__ = ["Deps"]


@attrs.frozen
class Deps:
    """Everything a stage may need besides its channels."""

    settings: Settings
    aws: AwsClients
    api: ExportApi
    jobs: JobStore
    # Threads that inflate at once (WORKER_POOL_SIZE).
    inflate_limiter: trio.CapacityLimiter
    aws_policy: Backoff = AWS_POLICY
    # The file workers' figures, for GET /health.
    pool: PoolFigures = attrs.field(factory=PoolFigures)
    # What GET /metrics shows.
    metrics: ServiceMetrics = attrs.field(factory=ServiceMetrics)
    # The exports cancelled, and the cancel scopes of the work on them here.
    cancels: CancelWatch = attrs.field(factory=CancelWatch)
    # What the receivers wait on before taking messages (no reason: always open).
    intake: IntakeGate = attrs.field(factory=IntakeGate)
    # Multipart uploads whose abort failed, tried again until gone.
    owed_aborts: OwedAborts = attrs.field(factory=OwedAborts)
    # The queues paused for every process, as last read here.
    pauses: PauseGate = attrs.field(factory=PauseGate)

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_entry_size=self.settings.max_entry_size,
            max_ratio=self.settings.max_compression_ratio,
        )

    def object_key(self, export_id: str, path: str) -> str:
        """Where an entry of an export lands in S3 (contract 4)."""
        return f"{self.settings.s3_prefix}{export_id}/{path}"
