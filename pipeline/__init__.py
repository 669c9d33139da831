"""Export jobs to verified files in S3: one Trio structured-concurrency streaming graph.

The public surface is small on purpose: the service is run from the command
line (``python -m pipeline``); these names are for embedding it and for tests.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline._config import ConfigError, Mode, Settings, load_settings
    from pipeline._errors import PermanentError, PipelineError, TransientError
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


# Where each name lives. Each is imported when first asked for: the graph
# (aiobotocore, httpx, quart) takes about a second, and even the settings
# (attrs, cattrs) come after `python -m pipeline` has taken over SIGTERM (see
# pipeline.__main__), so a stop sent right after start is not a death by signal.
_HOMES = {
    "ConfigError": "pipeline._config",
    "Mode": "pipeline._config",
    "Settings": "pipeline._config",
    "load_settings": "pipeline._config",
    "PermanentError": "pipeline._errors",
    "PipelineError": "pipeline._errors",
    "TransientError": "pipeline._errors",
    "run_service": "pipeline._service.graph",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        msg = f"module 'pipeline' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(home), name)
