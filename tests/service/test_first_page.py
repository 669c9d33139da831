"""The status and the first page asked for together, against the real simulator on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from pipeline._adapters.exportapi import ExportApi, ExportApiSession
from pipeline._core.backoff import Backoff, CircuitBreaker
from pipeline._errors import ExportNotFound, ExportNotReady
from pipeline._service import first_page
from pipeline._service.first_page import status_and_first_page
from pipeline.testing.demo import build_zip
from pipeline.testing.simulator import Simulator, serve_simulator

TOKEN = "first-page-token"
FAST = Backoff(max_attempts=2, base=0.001, cap=0.005)
DELAY = 0.2


@pytest.fixture
async def sim_api(nursery: trio.Nursery) -> AsyncIterator[tuple[Simulator, ExportApi]]:
    sim = Simulator(token=TOKEN, request_delay=DELAY)
    urls = await nursery.start(serve_simulator, sim)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
        session = ExportApiSession(
            http,
            base_url=urls.api_url,
            token=TOKEN,
            allowed_hosts=frozenset({urls.download_netloc}),
            policy=FAST,
            breaker=CircuitBreaker(),
            rng=random.Random(0),
        )
        yield sim, ExportApi(session, page_size=100)


def add(sim: Simulator, export_id: str, *, pending_polls: int = 0) -> None:
    sim.add_export(
        export_id, [("a.zip", build_zip([("x.txt", b"x")]))], pending_polls=pending_polls
    )


def test_all_is_sorted() -> None:
    """The module's __all__ names what it defines."""
    assert all(hasattr(first_page, name) for name in first_page.__all__)


async def test_together_takes_one_round_trip(sim_api: tuple[Simulator, ExportApi]) -> None:
    """A READY export's status and first page arrive in about one request's delay, the page held."""
    sim, api = sim_api
    add(sim, "exp-ready")
    pages = api.list_files("exp-ready")
    started = trio.current_time()
    status, met = await status_and_first_page(api, "exp-ready", pages, together=True)
    took = trio.current_time() - started
    assert (status.status, met) == ("READY", None)
    assert pages.done
    assert [f.name for page in [p async for p in pages] for f in page] == ["a.zip"]
    assert sim.count("status") == 1
    assert sim.count("files") == 1
    assert took < 2 * DELAY


async def test_apart_asks_the_status_only(sim_api: tuple[Simulator, ExportApi]) -> None:
    """Without ``together`` only the status is asked; the listing is read later, as before."""
    sim, api = sim_api
    add(sim, "exp-apart")
    pages = api.list_files("exp-apart")
    status, met = await status_and_first_page(api, "exp-apart", pages, together=False)
    assert (status.status, met) == ("READY", None)
    assert sim.count("files") == 0
    assert len(await pages.peek()) == 1


async def test_pending_page_error_is_handed_over_not_raised(
    sim_api: tuple[Simulator, ExportApi],
) -> None:
    """A PENDING export: the status says so and nothing raises, whatever the page met."""
    sim, api = sim_api
    add(sim, "exp-pending", pending_polls=5)
    pages = api.list_files("exp-pending")
    status, met = await status_and_first_page(api, "exp-pending", pages, together=True)
    assert status.status == "PENDING"
    assert met is None or isinstance(met, ExportNotReady)


async def test_unknown_export_raises_the_status_error(
    sim_api: tuple[Simulator, ExportApi],
) -> None:
    """A 404 on the status is raised as it is, the page's own 404 dropped."""
    _, api = sim_api
    with pytest.raises(ExportNotFound):
        await status_and_first_page(api, "exp-nope", api.list_files("exp-nope"), together=True)
