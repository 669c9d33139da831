"""EXPORT_API_RATE_PER_SECOND's pacer: what reaches the API's host, and when."""

from __future__ import annotations

import functools

import httpx
import trio

from pipeline._adapters.exportapi.pacing import Pacer


async def _serve(arrivals: list[float], stream: trio.SocketStream) -> None:
    """A bare HTTP/1.1 server: notes when each request's headers arrive, answers 200."""
    buffer = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            _, buffer = buffer.split(b"\r\n\r\n", 1)
            arrivals.append(trio.current_time())
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


async def test_requests_reach_the_host_within_the_rate() -> None:
    """Twelve requests sent at once on fresh connections arrive at most 5 in any second,
    and the pacer really holds them (they take over two seconds), the wait for a new
    connection not counted against the next second's turns."""
    arrivals: list[float] = []
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, host="127.0.0.1"),
            functools.partial(_serve, arrivals),
            0,
        )
        port = listener.socket.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        pacer = Pacer(base, 5)
        async with (
            httpx.AsyncClient(event_hooks={"request": [pacer]}) as client,
            trio.open_nursery() as senders,
        ):
            for n in range(12):
                senders.start_soon(client.get, f"{base}/exports/{n}")
        nursery.cancel_scope.cancel()
    assert len(arrivals) == 12
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 5
    assert max(arrivals) - min(arrivals) >= 2.0


async def test_other_hosts_are_not_paced() -> None:
    """A request to another origin (a presigned storage URL) gets no trace hook and no wait."""
    pacer = Pacer("http://api.example:8080", 1)
    request = httpx.Request("GET", "http://storage.example/part-1.zip")
    await pacer(request)
    assert "trace" not in request.extensions
    paced = httpx.Request("GET", "http://api.example:8080/exports/e1")
    await pacer(paced)
    assert "trace" in paced.extensions
