"""The command line: bad settings stop start-up with one line and status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BASE = {
    "SQS_EXPORT_JOBS_URL": "http://127.0.0.1:9/123/jobs",
    "S3_BUCKET_NAME": "bucket",
    "EXPORT_API_BASE_URL": "http://127.0.0.1:9",
}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in BASE and not k.startswith("EXPORT_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        ({}, ("--mode", "all"), "SQS_EXPORT_JOBS_URL"),
        ({**BASE, "MAX_CONCURRENT_JOBS": "lots"}, ("--mode", "all"), "MAX_CONCURRENT_JOBS"),
        (BASE, ("--mode", "worker"), "SQS_DOWNLOAD_TASKS_URL"),
        ({**BASE, "SERVICE_MODE": "worker"}, (), "SQS_DOWNLOAD_TASKS_URL"),
        ({**BASE, "SERVICE_MODE": "turbo"}, (), "SERVICE_MODE"),
        ({**BASE, "HEALTH_PORT": "-1"}, ("--mode", "orchestrator"), "SQS_DOWNLOAD_TASKS_URL"),
    ],
)
def test_bad_setting_exits_2_with_one_line(
    env: dict[str, str], args: tuple[str, ...], names: str
) -> None:
    """A missing or malformed variable gives exit status 2 and one stderr line naming it."""
    result = _run(env, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert names in lines[0]
    assert result.stdout == ""


def test_unknown_mode_is_refused() -> None:
    """An unknown --mode is a usage error (status 2)."""
    result = _run(BASE, "--mode", "turbo")
    assert result.returncode == 2
    assert "--mode" in result.stderr
