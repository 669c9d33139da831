"""``python -m pipeline.testing.moto --help`` explains itself instead of crashing."""

from __future__ import annotations

import subprocess
import sys


def test_help_names_the_port_and_the_environment() -> None:
    """--help exits 0 and says how to point the service at the server."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.testing.moto", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "port" in done.stdout
    assert "AWS_ENDPOINT_URL" in done.stdout
