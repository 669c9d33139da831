"""The container image's recipe and the compose file: linted, non-root, checked against schema."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.tools import installed_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing on the Dockerfile, not even a warning or information."""
    done = subprocess.run(
        [installed_tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_image_runs_as_a_numeric_non_root_user_with_a_health_check() -> None:
    """The final stage switches to a numeric non-root user and checks /health."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user.isdigit()
    assert int(user) != 0
    health = [line for line in final if line.startswith("HEALTHCHECK")]
    assert health
    assert "/health" in "\n".join(final)
    assert any(line.startswith("FROM python:3.11-slim") for line in final)


def test_compose_file_follows_the_compose_schema() -> None:
    """compose.yaml validates against the Compose specification's JSON schema."""
    jsonschema = pytest.importorskip("jsonschema")
    if not COMPOSE_SCHEMA.exists():
        pytest.skip(f"{COMPOSE_SCHEMA} is not on this machine")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    # The schema names draft 7 by a URL jsonschema does not know; it is draft 7.
    jsonschema.Draft7Validator(schema).validate(document)


def test_compose_services_pick_their_role_by_service_mode() -> None:
    """The orchestrator and worker services run the one image, each with its SERVICE_MODE."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for role in ("orchestrator", "worker"):
        assert services[role]["build"] == "."
        assert services[role]["environment"]["SERVICE_MODE"] == role
        assert "command" not in services[role]
