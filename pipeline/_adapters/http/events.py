"""``GET /events``: the jobs this process changes, as Server-Sent Events.

The job store notes each export whose summary item it writes
(:class:`~pipeline._adapters.aws.jobchanges.JobChanges`). While at least one
client listens, :meth:`EventHub.run` reads each noted job's item (at most once
per job per second, however often it changed) and sends every listener one
``job`` event with the item as ``GET /jobs/{exportId}`` shows it. A job's
events go out in the order they were read, so they never go back in time.
Nobody listening costs one check per write and no read at all. A listener too
slow to keep up is dropped (its browser reconnects); an idle stream carries a
comment line every :data:`KEEPALIVE_SECONDS` so proxies keep it open.

Only what this process writes is seen: in split mode an orchestrator sees
begins, listings and ends, a worker its files' counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
import trio
from quart import Response
from quart_trio import QuartTrio

from pipeline._adapters.aws.jobchanges import JobChanges
from pipeline._adapters.aws.jobitems import utc_now
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.http.control import job_view
from pipeline._errors import PipelineError, describe

__all__ = ["KEEPALIVE_SECONDS", "EventHub", "add_events_route", "job_views"]

log = structlog.get_logger("pipeline.events")

KEEPALIVE_SECONDS = 15.0
# At most one event per job per this many seconds.
MIN_INTERVAL_SECONDS = 1.0
# Events a listener may fall behind before it is dropped.
LISTENER_BUFFER = 256
# Jobs read at once when many changed in the same second.
_READS_AT_ONCE = 8

ReadView = Callable[[str], Awaitable[dict[str, Any] | None]]


def job_views(jobs: JobStore) -> ReadView:
    """Read a job as ``GET /jobs/{exportId}`` shows it (None once it is gone)."""

    async def read(export_id: str) -> dict[str, Any] | None:
        job = await jobs.get_job(export_id)
        return None if job is None else job_view(job, utc_now())

    return read


class EventHub:
    """The listeners of ``GET /events`` and the jobs changed since they were last told."""

    def __init__(self, changes: JobChanges, read_view: ReadView) -> None:
        self._read_view = read_view
        self._listeners: set[trio.MemorySendChannel[bytes]] = set()
        self._pending: dict[str, None] = {}
        self._sent_at: dict[str, float] = {}
        self._wake = trio.Event()
        self._next_id = 0
        changes.add(self._noted)

    def _noted(self, export_id: str) -> None:
        if not self._listeners:
            return
        self._pending[export_id] = None
        self._wake.set()

    def subscribe(self) -> trio.MemoryReceiveChannel[bytes]:
        send, receive = trio.open_memory_channel[bytes](LISTENER_BUFFER)
        self._listeners.add(send)
        return receive

    def unsubscribe(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        receive.close()
        # Its sender now has no receiver: drop it (and any other left so).
        for send in list(self._listeners):
            if send.statistics().open_receive_channels == 0:
                self._listeners.discard(send)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def _broadcast(self, event: bytes) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Too slow, or gone: its stream ends, and a browser reconnects.
                self._listeners.discard(send)
                send.close()

    async def run(self) -> None:
        """Read and send the noted jobs' items, each at most once a second, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._pending and self._listeners:
                now = trio.current_time()
                due = [
                    export_id
                    for export_id in self._pending
                    if now - self._sent_at.get(export_id, -math.inf) >= MIN_INTERVAL_SECONDS
                ]
                if not due:
                    soonest = min(self._sent_at[e] for e in self._pending) + MIN_INTERVAL_SECONDS
                    await trio.sleep_until(soonest)
                    continue
                for export_id in due:
                    del self._pending[export_id]
                    self._sent_at[export_id] = now
                await self._send_views(due)
            self._pending.clear()
            horizon = trio.current_time() - MIN_INTERVAL_SECONDS
            self._sent_at = {e: at for e, at in self._sent_at.items() if at > horizon}

    async def _send_views(self, export_ids: list[str]) -> None:
        views: dict[str, dict[str, Any] | None] = {}
        limiter = trio.CapacityLimiter(_READS_AT_ONCE)

        async def read(export_id: str) -> None:
            async with limiter:
                try:
                    views[export_id] = await self._read_view(export_id)
                except PipelineError as err:
                    log.warning("job not read for events", exportId=export_id, error=describe(err))

        async with trio.open_nursery() as nursery:
            for export_id in export_ids:
                nursery.start_soon(read, export_id)
        for export_id in export_ids:
            view = views.get(export_id)
            if view is not None:
                self._next_id += 1
                data = json.dumps(view, separators=(",", ":"))
                self._broadcast(f"id: {self._next_id}\nevent: job\ndata: {data}\n\n".encode())


async def _stream(hub: EventHub, receive: trio.MemoryReceiveChannel[bytes]) -> AsyncIterator[bytes]:
    try:
        # A browser's EventSource reconnects after this many milliseconds.
        yield b"retry: 3000\n: connected\n\n"
        while True:
            with trio.move_on_after(KEEPALIVE_SECONDS):
                try:
                    event = await receive.receive()
                except trio.EndOfChannel:
                    return
                yield event
                continue
            yield b": keep-alive\n\n"
    finally:
        hub.unsubscribe(receive)


def add_events_route(app: QuartTrio, hub: EventHub) -> None:
    """Serve ``GET /events`` from ``hub``."""

    @app.get("/events")
    async def events() -> Response:
        response = Response(
            _stream(hub, hub.subscribe()),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # A stream lasts as long as its listener: no response deadline.
        response.timeout = None
        return response
