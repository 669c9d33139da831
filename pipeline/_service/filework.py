"""What the file stage is handed: its adapters, its shared state and its limits.

Made once where the graph is wired (``graph.py``) from the service's
resources; the file workers, a file's reading (``file_stage.py``) and its
groups (``entry_groups.py``) read only this. Each field is something the
stage uses; nothing else of the service reaches it.
"""

from __future__ import annotations

import attrs
import trio

from pipeline._adapters.aws.bucket import OutputBucket
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._adapters.exportapi import ExportApi
from pipeline._config import Settings
from pipeline._core.pool import PoolFigures
from pipeline._core.zip.format import ZipLimits
from pipeline._service.cancel import CancelWatch
from pipeline._service.metrics import ServiceMetrics

__all__ = ["FileLimits", "FileStage"]


@attrs.frozen
class FileLimits:
    """The settings the file stage keeps to."""

    # File workers (MAX_CONCURRENT_JOBS) and inflate threads (WORKER_POOL_SIZE).
    workers: int
    threads: int
    max_file_size_mb: int
    zip: ZipLimits
    # How long an export's job may wait out the Export API (EXPORT_MAX_WAIT_SECONDS).
    max_wait_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> FileLimits:
        return cls(
            workers=settings.max_concurrent_jobs,
            threads=settings.worker_pool_size,
            max_file_size_mb=settings.max_file_size_mb,
            zip=ZipLimits(
                max_entry_size=settings.max_entry_size,
                max_ratio=settings.max_compression_ratio,
            ),
            max_wait_seconds=settings.export_max_wait_seconds,
        )

    @property
    def max_file_size(self) -> int:
        return self.max_file_size_mb * 1024 * 1024


@attrs.frozen
class FileStage:
    """The file workers' adapters and state: a file from its download to S3 and its record."""

    api: ExportApi
    jobs: JobStore
    table: MetadataTable
    bucket: OutputBucket
    # The exports cancelled, and the cancel scopes of the work on them here.
    cancels: CancelWatch
    # Threads that inflate at once, shared with every file of the process.
    inflate_limiter: trio.CapacityLimiter
    # The workers' figures (GET /health) and the files' (GET /metrics).
    pool: PoolFigures
    metrics: ServiceMetrics
    limits: FileLimits
