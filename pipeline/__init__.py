"""Export jobs to verified files in S3: one Trio structured-concurrency streaming graph.

The public surface is small on purpose: the service is run from the command
line (``python -m pipeline``); these names are for embedding it and for tests.
"""

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
