"""GET /health and GET /ready (contract 6)."""

from __future__ import annotations

import httpx
import trio

from pipeline._adapters.http.health import create_health_app, readiness_checks, serve_health
from pipeline.testing.moto import free_port
from tests.support.stack import open_stack


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


class TestHealth:
    async def test_ready_when_dependencies_answer(self, aws_endpoint: str) -> None:
        """/health is 200; /ready is 200 with every check ok when SQS, S3 and DynamoDB answer."""
        async with open_stack(aws_endpoint) as stack, trio.open_nursery() as nursery:
            port = free_port()
            done = trio.Event()
            app = create_health_app(readiness_checks(stack.settings(), stack.aws))
            await nursery.start(serve_health, app, port, done)
            health = await _get(port, "/health")
            ready = await _get(port, "/ready")
            done.set()
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"sqs": "ok", "s3": "ok", "dynamodb": "ok"},
        }

    async def test_not_ready_names_the_failing_dependency(self, aws_endpoint: str) -> None:
        """/ready is 503 and says which dependency failed when a bucket is missing."""
        async with open_stack(aws_endpoint) as stack, trio.open_nursery() as nursery:
            port = free_port()
            done = trio.Event()
            settings = stack.settings(S3_BUCKET_NAME="no-such-bucket-here")
            app = create_health_app(readiness_checks(settings, stack.aws))
            await nursery.start(serve_health, app, port, done)
            ready = await _get(port, "/ready")
            done.set()
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready"
        assert body["checks"]["sqs"] == "ok"
        assert body["checks"]["dynamodb"] == "ok"
        assert body["checks"]["s3"] != "ok"
