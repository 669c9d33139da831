"""Log lines carry the job's context and never a secret."""

from __future__ import annotations

import io
import json

import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from pipeline._logging import bound, configure_logging
from pipeline.testing.demo import build_zip, metadata_for
from tests.support.stack import TOKEN, open_stack


def test_json_lines_with_bound_context() -> None:
    """Configured logging writes one JSON object a line, with bound context and no token."""
    stream = io.StringIO()
    configure_logging("info", stream)
    try:
        with bound(correlationId="c-1", exportId="exp-1"):
            structlog.get_logger("t").info("hello", token="s3cret", fileId="f-1")
        structlog.get_logger("t").debug("not shown")
    finally:
        structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["msg"] == "hello"
    assert line["level"] == "info"
    assert (line["correlationId"], line["exportId"], line["fileId"]) == ("c-1", "exp-1", "f-1")
    assert line["token"] == "[redacted]"
    assert "ts" in line


def test_console_format_for_people() -> None:
    """LOG_FORMAT=console renders aligned text lines, context included, secrets redacted."""
    stream = io.StringIO()
    configure_logging("info", stream, log_format="console")
    try:
        with bound(exportId="exp-9"):
            structlog.get_logger("t").info("file done", token="s3cret")
    finally:
        structlog.reset_defaults()
    (line,) = stream.getvalue().splitlines()
    assert "file done" in line
    assert "exportId=exp-9" in line
    assert "s3cret" not in line
    assert not line.startswith("{")


async def test_file_lines_carry_ids(aws_endpoint: str) -> None:
    """Every line the file stage logs names the correlation, export and file IDs."""
    entries = [("a.txt", b"alpha"), ("b.txt", b"beta")]
    async with open_stack(aws_endpoint) as stack:
        stack.simulator.add_export("exp-logs", [("p.zip", build_zip(entries))])
        await stack.seed("exp-logs", metadata_for(entries[:1]))
        with capture_logs(processors=[merge_contextvars]) as logs:
            stop = await stack.run_service()
            await stack.send_job(["exp-logs"], correlation_id="c-logs")
            await stack.wait_final("exp-logs")
            stop.set()
    file_lines = [line for line in logs if line.get("stage") == "files"]
    assert any(line["event"] == "file done" for line in file_lines)
    for line in file_lines:
        assert line["correlationId"] == "c-logs"
        assert line["exportId"] == "exp-logs"
        assert line["fileId"].startswith("exp-logs-f")
    assert not any(TOKEN in json.dumps(line, default=str) for line in logs)
