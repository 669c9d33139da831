"""Export jobs to verified files in S3: one Trio structured-concurrency streaming graph.

The public surface is small on purpose: the service is run from the command
line (``python -m pipeline``); these names are for embedding it and for tests.
"""

from typing import TYPE_CHECKING, Any

from pipeline._config import ConfigError, Mode, Settings, load_settings
from pipeline._errors import PermanentError, PipelineError, TransientError

if TYPE_CHECKING:
    from pipeline._service.graph import run_service

__all__ = [
    "ConfigError",
    "Mode",
    "PermanentError",
    "PipelineError",
    "Settings",
    "TransientError",
    "load_settings",
    "run_service",
]


def __getattr__(name: str) -> Any:
    # The graph (aiobotocore, httpx, quart: about a second to import) is
    # imported when first asked for, so that `python -m pipeline` can take
    # over SIGTERM before then (see pipeline.__main__).
    if name == "run_service":
        from pipeline._service.graph import run_service

        return run_service
    msg = f"module 'pipeline' has no attribute {name!r}"
    raise AttributeError(msg)
