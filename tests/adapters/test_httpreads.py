"""httpcore's read size: set once for the process, and a body then arrives in large reads."""

from __future__ import annotations

import functools
import socket

import httpcore
import httpx
import pytest
import trio

from pipeline._adapters.httpreads import READ_BYTES, use_large_reads

BODY = bytes(range(256)) * (16 * 1024)  # 4 MiB


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> None:
    for connection in (httpcore.AsyncHTTP11Connection, httpcore.HTTP11Connection):
        monkeypatch.setattr(connection, "READ_NUM_BYTES", connection.READ_NUM_BYTES)


def test_sets_both_connection_classes() -> None:
    """use_large_reads sets the read size of httpcore's async and sync HTTP/1.1 connections."""
    use_large_reads()
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == READ_BYTES
    assert httpcore.HTTP11Connection.READ_NUM_BYTES == READ_BYTES


def test_refuses_a_size_below_one() -> None:
    """A read size of zero is refused with its value in the message."""
    with pytest.raises(ValueError, match="not 0"):
        use_large_reads(0)


async def _serve_body(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.receive_some(65536)  # the request (small, one read)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
        await stream.send_all(head + BODY)


async def test_body_arrives_in_reads_over_64_kib(nursery: trio.Nursery) -> None:
    """With large reads, a body already waiting in the socket comes in pieces over 64 KiB."""
    use_large_reads()
    serve = functools.partial(trio.serve_tcp, _serve_body, 0, host="127.0.0.1")
    listeners = await nursery.start(serve)
    port = listeners[0].socket.getsockname()[1]
    options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)]
    transport = httpx.AsyncHTTPTransport(socket_options=options)
    async with (
        httpx.AsyncClient(transport=transport) as http,
        http.stream("GET", f"http://127.0.0.1:{port}/") as response,
    ):
        await trio.sleep(0.2)  # let the sender fill the receive buffer
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == len(BODY)
    assert max(sizes) > 64 * 1024
    assert max(sizes) <= READ_BYTES
