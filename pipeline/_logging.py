"""JSON log lines with the job's context on every one of them.

Tasks bind ``correlationId``, ``exportId``, ``fileId`` and ``stage`` with
structlog's contextvars; Trio copies the context into child tasks when they are
spawned, so a line logged deep inside a file worker carries the IDs bound by
the stage that started it. The processor chain is chosen once here, so the hot
path is a single call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

__all__ = ["bound", "configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Keys whose values must never reach a log line, wherever they come from.
_SECRET_KEYS = frozenset({"authorization", "token", "export_api_token", "password", "secret"})


def _drop_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS & event_dict.keys():
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(
    level: str = "info", stream: TextIO | None = None, *, log_format: str = "json"
) -> None:
    """Send log lines at ``level`` and above to ``stream`` (stdout by default).

    ``log_format`` ``json`` (one object per line, for machines) or ``console``
    (structlog's aligned, readable lines, for people at a terminal).
    """
    tail: list[Any]
    if log_format == "console":
        tail = [structlog.dev.ConsoleRenderer(colors=False)]
    else:
        tail = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            _drop_secrets,
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library; keep their chatter out of
    # our stream unless it is a warning.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


@contextmanager
def bound(**context: str) -> Iterator[None]:
    """Bind ``context`` to every log line of this task (and tasks it spawns)."""
    with structlog.contextvars.bound_contextvars(**context):
        yield
