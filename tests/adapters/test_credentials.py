"""AWS credentials from the Fargate container endpoint, resolved on Trio."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline._adapters.aws.clients import open_aws_clients


class _CredentialsHandler(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = json.dumps(
            {
                "AccessKeyId": "AKIDFROMCONTAINER",
                "SecretAccessKey": "secret",
                "Token": "session-token",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def container_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CredentialsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v2/credentials/task"
    server.shutdown()


async def test_container_credentials_on_trio(
    aws_endpoint: str, container_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no keys in the environment, the task-role endpoint is used, without asyncio."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", container_endpoint)
    _CredentialsHandler.hits = 0
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=2) as aws:
        await aws.sqs.list_queues()
        credentials = await aws.sqs._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key == "AKIDFROMCONTAINER"
    assert _CredentialsHandler.hits >= 1
