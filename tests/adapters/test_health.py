"""GET /health and GET /ready (contract 6)."""

from __future__ import annotations

import re

import httpx
import trio
from quart import Response

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


async def test_an_answer_before_the_body_leaves_the_connection_usable() -> None:
    """A refusal, 404 or 405 answered before its body was read: the next request on the
    same keep-alive connection is still answered (it used to hang for ever)."""
    app = create_health_app({})

    @app.post("/refuse")
    async def refuse() -> Response:
        # As the 401 of a changing call: answered without looking at the body.
        return Response('{"error": "no"}', status=401, content_type="application/json")

    body = b'{"exportIds": ["exp-1"]}'
    answers: list[list[bytes]] = []
    port = free_port()
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_health, app, port, done)
        for method, path in (("POST", "/refuse"), ("POST", "/no/such/path"), ("PUT", "/health")):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}"
                await stream.send_all(f"{head}\r\n\r\n".encode())
                received = b""
                # The body comes late, as over a slow link or from a client that
                # sends headers and body apart: once the server (in this process)
                # has taken the head and waits on the socket.
                await trio.testing.wait_all_tasks_blocked()
                await stream.send_all(body)
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                # Generous: a healthy server answers both at once; a wedged one never.
                with trio.move_on_after(10):
                    while received.count(b"HTTP/1.1 ") < 2:
                        chunk = await stream.receive_some()
                        if not chunk:
                            break
                        received += chunk
            answers.append(re.findall(rb"HTTP/1\.1 (\d{3})", received))
        done.set()
    assert answers == [
        [b"401", b"200"],
        [b"404", b"200"],
        [b"405", b"200"],
    ]
