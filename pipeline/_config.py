"""Settings from the environment, checked once at start-up.

The contract's variables (section 5) map one to one onto :class:`Settings`
fields. A missing or malformed value raises :class:`ConfigError`, whose message
is the single line the service prints before exiting with status 2: it names
the variable and what was wrong, never the value of a secret.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs

__all__ = ["ConfigError", "Mode", "Settings", "load_settings", "resolve_mode"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is one line naming it."""


class Mode(StrEnum):
    """Which roles this process plays (``--mode``, else ``SERVICE_MODE``)."""

    ALL = "all"
    ORCHESTRATOR = "orchestrator"
    WORKER = "worker"


def resolve_mode(flag: str | None, environ: Mapping[str, str]) -> Mode:
    """The mode from ``--mode`` when given, else ``SERVICE_MODE``, else ``all``.

    One image serves every service: a deployment sets ``SERVICE_MODE`` per
    service instead of overriding the command. A bad value is a
    :class:`ConfigError` naming the variable.
    """
    if flag is not None:
        return Mode(flag)
    raw = environ.get("SERVICE_MODE", "").strip()
    if not raw:
        return Mode.ALL
    try:
        return Mode(raw.lower())
    except ValueError:
        allowed = ", ".join(mode.value for mode in Mode)
        msg = f"SERVICE_MODE must be one of {allowed}, not {raw!r}"
        raise ConfigError(msg) from None


_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# EventBridge's own rule for bus names, or a bus ARN.
_EVENT_BUS = re.compile(r"^([A-Za-z0-9._/-]{1,256}|arn:aws[a-z-]*:events:[^\s]+:event-bus/[^\s]+)$")
_LOG_FORMATS = ("json", "console")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _env_name(attribute: attrs.Attribute[Any]) -> str:
    return str(attribute.metadata["env"])


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        msg = f"{_env_name(attribute)} must be greater than 0, not {value}"
        raise ConfigError(msg)


def _not_negative(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        msg = f"{_env_name(attribute)} must not be negative, not {value}"
        raise ConfigError(msg)


def _port(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        msg = f"{_env_name(attribute)} must be a port number (0-65535), not {value}"
        raise ConfigError(msg)


def _log_level(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in _LOG_LEVELS:
        msg = f"{_env_name(attribute)} must be one of {', '.join(_LOG_LEVELS)}, not {value!r}"
        raise ConfigError(msg)


def _log_format(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in _LOG_FORMATS:
        msg = f"{_env_name(attribute)} must be one of {', '.join(_LOG_FORMATS)}, not {value!r}"
        raise ConfigError(msg)


def _sqs_wait(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 20:
        msg = f"{_env_name(attribute)} must be 1 to 20 seconds (SQS's long-poll range), not {value}"
        raise ConfigError(msg)


def _optional_positive(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        msg = f"{_env_name(attribute)} must be greater than 0, not {value}"
        raise ConfigError(msg)


def _http_url(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"{_env_name(attribute)} must be an absolute http(s) URL"
        raise ConfigError(msg)


def _allowed_hosts(_: Any, attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    for host in value:
        if not _HOST.match(host):
            msg = f"{_env_name(attribute)}: {host!r} is not a host or host:port"
            raise ConfigError(msg)


def _host_list(value: str | frozenset[str]) -> frozenset[str]:
    if isinstance(value, frozenset):
        return value
    return frozenset(h.strip().lower() for h in value.split(",") if h.strip())


def _event_bus(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _EVENT_BUS.match(value):
        msg = f"{_env_name(attribute)} must be an event bus name or ARN, not {value!r}"
        raise ConfigError(msg)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _env(name: str, **kwargs: Any) -> Any:
    """An attrs field read from environment variable ``name``."""
    metadata = {"env": name}
    return attrs.field(metadata=metadata, **kwargs)


@attrs.frozen
class Settings:
    """Everything the service reads from its environment (contract section 5)."""

    sqs_export_jobs_url: str = _env("SQS_EXPORT_JOBS_URL", validator=_http_url)
    s3_bucket_name: str = _env("S3_BUCKET_NAME")
    export_api_base_url: str = _env("EXPORT_API_BASE_URL", validator=_http_url)
    aws_region: str = _env("AWS_REGION", default="us-east-1")
    aws_endpoint_url: str | None = _env("AWS_ENDPOINT_URL", default=None, validator=_http_url)
    sqs_download_tasks_url: str | None = _env(
        "SQS_DOWNLOAD_TASKS_URL", default=None, validator=_http_url
    )
    # The high lane (contract 8, Priority); unset = one lane.
    sqs_export_jobs_high_url: str | None = _env(
        "SQS_EXPORT_JOBS_HIGH_URL", default=None, validator=_http_url
    )
    sqs_download_tasks_high_url: str | None = _env(
        "SQS_DOWNLOAD_TASKS_HIGH_URL", default=None, validator=_http_url
    )
    s3_prefix: str = _env("S3_PREFIX", default="exports/")
    dynamodb_metadata_table: str = _env("DYNAMODB_METADATA_TABLE", default="export-metadata")
    dynamodb_jobs_table: str = _env("DYNAMODB_JOBS_TABLE", default="export-jobs")
    export_api_token: str | None = _env("EXPORT_API_TOKEN", default=None, repr=False)
    export_download_allowed_hosts: frozenset[str] = _env(
        "EXPORT_DOWNLOAD_ALLOWED_HOSTS",
        default=frozenset(),
        converter=_host_list,
        validator=_allowed_hosts,
    )
    export_poll_interval_seconds: float = _env(
        "EXPORT_POLL_INTERVAL_SECONDS", default=30.0, validator=_positive
    )
    export_max_wait_seconds: float = _env(
        "EXPORT_MAX_WAIT_SECONDS", default=21600.0, validator=_positive
    )
    export_api_max_attempts: int = _env("EXPORT_API_MAX_ATTEMPTS", default=5, validator=_positive)
    max_entry_size_mb: int = _env("MAX_ENTRY_SIZE_MB", default=4096, validator=_positive)
    max_compression_ratio: float = _env("MAX_COMPRESSION_RATIO", default=200.0, validator=_positive)
    worker_pool_size: int = _env("WORKER_POOL_SIZE", factory=_cpu_count, validator=_positive)
    max_concurrent_jobs: int = _env("MAX_CONCURRENT_JOBS", default=20, validator=_positive)
    max_file_size_mb: int = _env("MAX_FILE_SIZE_MB", default=1024, validator=_positive)
    shutdown_grace_seconds: float = _env(
        "SHUTDOWN_GRACE_SECONDS", default=25.0, validator=_not_negative
    )
    health_port: int = _env("HEALTH_PORT", default=8080, validator=_port)
    log_level: str = _env("LOG_LEVEL", default="info", converter=str.lower, validator=_log_level)
    log_format: str = _env("LOG_FORMAT", default="json", converter=str.lower, validator=_log_format)
    admin_token: str | None = _env("ADMIN_TOKEN", default=None, repr=False)
    export_api_rate_per_second: float | None = _env(
        "EXPORT_API_RATE_PER_SECOND", default=None, validator=_optional_positive
    )
    overload_backlog: int = _env("OVERLOAD_BACKLOG", default=1000, validator=_not_negative)
    # Contract section 8: lifecycle events (unset: none), and how long a final
    # job's items are kept (0: for ever).
    event_bus_name: str | None = _env("EVENT_BUS_NAME", default=None, validator=_event_bus)
    job_retention_days: int = _env("JOB_RETENTION_DAYS", default=30, validator=_not_negative)
    # Beyond the contract: a long poll in flight is let finish on SIGTERM, so
    # this bounds how long an idle process takes to stop.
    sqs_wait_seconds: int = _env("SQS_WAIT_SECONDS", default=5, validator=_sqs_wait)

    @property
    def max_entry_size(self) -> int:
        return self.max_entry_size_mb * 1024 * 1024

    @property
    def max_file_size(self) -> int:
        return self.max_file_size_mb * 1024 * 1024


_converter = cattrs.Converter()
_WORDS = {int: "a whole number", float: "a number"}


def load_settings(environ: Mapping[str, str], mode: Mode) -> Settings:
    """Build :class:`Settings` from ``environ`` for ``mode``, or raise :class:`ConfigError`."""
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    for field in attrs.fields(Settings):
        name = _env_name(field)
        raw = environ.get(name)
        # An empty variable is unset, except S3_PREFIX where "" means the bucket root.
        if raw is None or (not raw.strip() and name != "S3_PREFIX"):
            if field.default is attrs.NOTHING:
                msg = f"{name} is required but not set"
                raise ConfigError(msg)
            continue
        if field.converter is not None:
            values[field.name] = raw.strip()
            continue
        kind = hints[field.name]
        try:
            values[field.name] = _converter.structure(raw.strip() if kind is not str else raw, kind)
        except (ValueError, TypeError):
            shown = "" if field.repr is False else f", not {raw!r}"
            msg = f"{name} must be {_WORDS.get(kind, 'a valid value')}{shown}"
            raise ConfigError(msg) from None
    if mode is not Mode.ALL and "sqs_download_tasks_url" not in values:
        msg = f"SQS_DOWNLOAD_TASKS_URL is required in {mode.value} mode but not set"
        raise ConfigError(msg)
    if "sqs_download_tasks_high_url" in values and "sqs_download_tasks_url" not in values:
        # High files need the normal task queue's side: workers read both lanes.
        msg = "SQS_DOWNLOAD_TASKS_HIGH_URL is set but SQS_DOWNLOAD_TASKS_URL is not"
        raise ConfigError(msg)
    return Settings(**values)
