"""The wheel the image installs runs the worker without the test extras or pipeline.testing."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio

import pipeline.ops.provision as provision_cli
from pipeline.testing.moto import free_port

ROOT = Path(__file__).resolve().parents[2]
# Building the wheel and installing its dependencies from the package index
# (or pip's cache) takes a while on a cold machine.
INSTALL_TIMEOUT = 600
READY_TIMEOUT = 60.0


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH, so only the venv's own packages are seen."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        env=_clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _install(where: Path) -> Path:
    """Build the wheel into ``where`` and install it in a fresh venv there; its python."""
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", where / "dist", ROOT)
    (wheel,) = (where / "dist").glob("pipeline-*.whl")
    # No pip of its own (ensurepip costs seconds): this pip installs into it
    # (``--python``), without byte-compiling every dependency up front.
    _run(sys.executable, "-m", "venv", "--without-pip", where / "venv")
    python = where / "venv" / "bin" / "python"
    install = ("install", "-q", "--disable-pip-version-check", "--no-compile", wheel)
    _run(sys.executable, "-m", "pip", "--python", python, *install)
    # Run from the venv, not the repository root, so the installed copy is the one found.
    find = "import pathlib, pipeline; print(pathlib.Path(pipeline.__file__).parent)"
    installed = Path(_run(python, "-c", find, cwd=where).strip())
    assert installed.is_relative_to(where / "venv")
    shutil.rmtree(installed / "testing")
    return python


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the built wheel and its runtime dependencies (no pip either).

    ``pipeline.testing`` is deleted from it afterwards: the image ships it (for
    the simulator in compose.yaml), but the service must run without it.
    Under pytest-xdist the workers share one run's temporary root: the first
    to get here builds the venv, another that needs it waits and reuses it.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    where = shared / "wheel"
    with (shared / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            python = where / "venv" / "bin" / "python"
            if not (where / "done").exists():
                shutil.rmtree(where, ignore_errors=True)
                where.mkdir()
                python = _install(where)
                (where / "done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


@pytest.mark.slow
def test_runtime_install_has_no_test_tooling(runtime_python: Path) -> None:
    """The installed wheel brings no moto, pytest or hypothesis with it."""
    probe = (
        "import importlib.util as u, sys;"
        "extra = [m for m in ('moto', 'pytest', 'hypothesis') if u.find_spec(m)];"
        "print(extra); sys.exit(1 if extra else 0)"
    )
    _run(runtime_python, "-c", probe, cwd=runtime_python.parent)


@pytest.mark.slow
async def test_worker_from_the_wheel_gets_ready_and_stops_on_sigterm(
    runtime_python: Path, aws_endpoint: str
) -> None:
    """``--mode worker`` from the wheel answers /ready against moto and serves the console
    page from its package data, then exits 0 on SIGTERM."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SQS_EXPORT_JOBS_URL": f"{aws_endpoint}/123456789012/jobs-{tag}",
        "SQS_DOWNLOAD_TASKS_URL": f"{aws_endpoint}/123456789012/tasks-{tag}",
        "S3_BUCKET_NAME": f"bucket-{tag}",
        "DYNAMODB_METADATA_TABLE": f"meta-{tag}",
        "DYNAMODB_JOBS_TABLE": f"jobs-{tag}",
    }
    provision = functools.partial(provision_cli.main, ["--visibility-timeout", "30"], env)
    assert await trio.to_thread.run_sync(provision) == 0
    port = free_port()
    service_env = {
        "PATH": os.environ.get("PATH", ""),
        **env,
        "EXPORT_API_BASE_URL": "http://127.0.0.1:9",
        "HEALTH_PORT": str(port),
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    log = runtime_python.parent.parent.parent / f"worker-{tag}.log"
    with log.open("w") as output:
        process = await trio.lowlevel.open_process(
            [str(runtime_python), "-m", "pipeline", "--mode", "worker"],
            env=service_env,
            cwd=runtime_python.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        ready = None
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline and process.returncode is None:
                try:
                    answer = await http.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 200:
                    ready = answer.json()
                    break
                await trio.sleep(0.5)
            assert ready is not None, f"the worker never answered /ready: {log.read_text()}"
            # The console page's files ship in the wheel (package data).
            page = await http.get(f"http://127.0.0.1:{port}/ui", timeout=5)
            script = await http.get(f"http://127.0.0.1:{port}/ui/console.js", timeout=5)
        assert page.status_code == 200
        assert "<title>pipeline console</title>" in page.text
        assert script.status_code == 200
        assert "EventSource" in script.text
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            code = await process.wait()
        assert code == 0, log.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "service started" in log.read_text()
