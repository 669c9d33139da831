"""httpcore's read size: set once for the process, and a body then arrives in large reads."""

from __future__ import annotations

import functools
import socket

import h11
import h11._receivebuffer
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
    buffer = h11._receivebuffer.ReceiveBuffer
    monkeypatch.setattr(buffer, "maybe_extract_at_most", buffer.maybe_extract_at_most)


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
        # Until the sender has sent all, or is blocked on a full receive buffer.
        await trio.testing.wait_all_tasks_blocked()
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == len(BODY)
    assert max(sizes) > 64 * 1024
    assert max(sizes) <= READ_BYTES


def test_whole_receive_buffer_goes_out_without_a_copy() -> None:
    """h11's receive buffer hands itself out when a body takes all of it, and a part otherwise."""
    use_large_reads()
    buffer = h11._receivebuffer.ReceiveBuffer()
    assert buffer.maybe_extract_at_most(10) is None
    buffer += b"0123456789"
    held = buffer._data
    assert buffer.maybe_extract_at_most(4) == b"0123"
    assert buffer.maybe_extract_at_most(100) is held
    assert held == b"456789"
    assert len(buffer) == 0
    buffer += b"next"
    assert bytes(buffer) == b"next"
    assert held == b"456789"


def test_body_and_next_response_on_one_connection_with_whole_buffers() -> None:
    """A client reading a body then the next response on the same h11 connection gets both."""
    use_large_reads()
    client = h11.Connection(h11.CLIENT)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
    for _ in range(2):
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(head + b"abc")
        assert isinstance(client.next_event(), h11.Response)
        first = client.next_event()
        client.receive_data(b"def")
        second = client.next_event()
        assert isinstance(first, h11.Data)
        assert isinstance(second, h11.Data)
        assert bytes(first.data) + bytes(second.data) == b"abcdef"
        assert isinstance(client.next_event(), h11.EndOfMessage)
        client.start_next_cycle()
