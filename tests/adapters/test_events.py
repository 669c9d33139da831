"""The event hub on Trio's clock: nothing read without listeners, one event per job per second."""

from __future__ import annotations

import itertools
import json
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from pipeline._adapters.aws.jobchanges import JobChanges
from pipeline._adapters.http.events import MIN_INTERVAL_SECONDS, EventHub


def _hub() -> tuple[JobChanges, EventHub, list[tuple[float, str]]]:
    """A hub whose reads are recorded (when, which job); each read's view counts up."""
    changes = JobChanges()
    reads: list[tuple[float, str]] = []
    counts: dict[str, int] = {}

    async def read_view(export_id: str) -> dict[str, Any]:
        reads.append((trio.current_time(), export_id))
        counts[export_id] = counts.get(export_id, 0) + 1
        return {"exportId": export_id, "filesDone": counts[export_id]}

    return changes, EventHub(changes, read_view), reads


def _data(event: bytes) -> dict[str, Any]:
    (line,) = [line for line in event.decode().splitlines() if line.startswith("data: ")]
    return dict(json.loads(line[len("data: ") :]))


async def test_nothing_is_read_while_nobody_listens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Changes noted with no listener cost no read and leave nothing pending."""
    changes, hub, reads = _hub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        for _ in range(100):
            changes.note("exp-1")
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert reads == []


async def test_one_event_per_job_per_second_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many changes of a job within a second make one event; the next comes a second later,
    and each carries the state read then."""
    changes, hub, reads = _hub()
    receive = hub.subscribe()
    events: list[tuple[float, dict[str, Any]]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        for _ in range(3):
            for _ in range(50):
                changes.note("exp-1")
                await trio.sleep(0.01)
            changes.note("exp-2")
        with trio.move_on_after(5):
            async for event in receive:
                events.append((trio.current_time(), _data(event)))
        nursery.cancel_scope.cancel()
    for export_id in ("exp-1", "exp-2"):
        read_at = [at for at, job in reads if job == export_id]
        gaps = [later - earlier for earlier, later in itertools.pairwise(read_at)]
        assert all(gap >= MIN_INTERVAL_SECONDS for gap in gaps), (export_id, gaps)
    # 150 changes of exp-1 over 1.5 s: two or three reads, each one event.
    sent = [data for _, data in events if data["exportId"] == "exp-1"]
    assert len(sent) in (2, 3)
    assert len(sent) == sum(1 for _, job in reads if job == "exp-1")
    assert [data["filesDone"] for data in sent] == list(range(1, len(sent) + 1))


async def test_a_listener_that_falls_behind_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A listener that never reads is let go once its buffer is full; others still get events."""
    changes, hub, _ = _hub()
    stuck = hub.subscribe()
    live = hub.subscribe()
    got = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)

        async def read_live() -> None:
            nonlocal got
            async for _ in live:
                got += 1

        nursery.start_soon(read_live)
        for n in range(400):
            changes.note(f"exp-{n}")
            await trio.lowlevel.checkpoint()
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert hub.listeners == 1
    assert got == 400
    stuck.close()
