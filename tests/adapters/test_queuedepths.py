"""GET /queues from figures at most 5 s old, refreshed by one caller at a time."""

from __future__ import annotations

import httpx
import trio
import trio.testing

from pipeline._adapters.aws.queuedepths import SingleFlight
from pipeline._errors import AwsUnavailable
from tests.support.faultproxy import FaultProxy, serve_fault_proxy
from tests.support.stack import open_stack
from tests.support.waiting import eventually

CALLERS = 200


class TestSingleFlight:
    async def test_concurrent_callers_share_one_fetch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """200 callers at once cost one fetch; within max_age none, after it one more."""
        fetches = 0

        async def fetch() -> int:
            nonlocal fetches
            fetches += 1
            await trio.sleep(1)
            return fetches

        cache = SingleFlight(fetch, max_age=5)
        seen: list[int] = []

        async def call() -> None:
            seen.append(await cache.get())

        async with trio.open_nursery() as nursery:
            for _ in range(CALLERS):
                nursery.start_soon(call)
        assert (fetches, set(seen)) == (1, {1})
        await trio.sleep(3)
        assert await cache.get() == 1
        await trio.sleep(2)
        assert (await cache.get(), fetches) == (2, 2)

    async def test_a_failed_fetch_fails_its_waiters_and_the_next_caller_tries_again(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Waiters of a failed refresh get its error; a later caller fetches anew."""
        answers = [AwsUnavailable("sqs get queue attributes: 503"), 7]

        async def fetch() -> int:
            await trio.sleep(1)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        cache = SingleFlight(fetch, max_age=5)
        failures: list[str] = []

        async def call() -> None:
            try:
                await cache.get()
            except AwsUnavailable as err:
                failures.append(str(err))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert failures == ["sqs get queue attributes: 503"] * 3
        assert await cache.get() == 7

    async def test_a_waiter_takes_over_when_the_fetching_caller_is_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A refresh whose caller went away is started again by a waiter, not lost."""
        fetches = 0

        async def fetch() -> int:
            nonlocal fetches
            fetches += 1
            await trio.sleep(1)
            return fetches

        cache = SingleFlight(fetch, max_age=5)
        got: list[int] = []
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await cache.get()

        async def wait() -> None:
            got.append(await cache.get())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lead)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            leader.cancel()
        # The first fetch was cut short; the waiter's own is the second.
        assert (got, fetches) == ([2], 2)


async def test_200_concurrent_calls_cost_a_handful_of_sqs_requests(aws_endpoint: str) -> None:
    """200 concurrent GET /queues on a running service cost at most a handful of SQS
    requests (counted at a proxy in front of moto), and all answer 200."""
    proxy = FaultProxy(aws_endpoint)
    async with open_stack(aws_endpoint, with_task_queue=True) as stack:
        url = await stack.nursery.start(serve_fault_proxy, proxy)
        base, stop = await stack.serve_http(AWS_ENDPOINT_URL=url)

        # Start-up asks SQS about the queues too: wait until the receivers poll.
        async def polled() -> int:
            return proxy.calls[("sqs", "ReceiveMessage")]

        await eventually(polled, within=30)
        before = {
            operation: count
            for (service, operation), count in proxy.calls.items()
            if service == "sqs" and operation != "ReceiveMessage"
        }
        limits = httpx.Limits(max_connections=CALLERS)
        answers: list[int] = []
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

            async def call() -> None:
                answers.append((await client.get("/queues")).status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(CALLERS):
                    nursery.start_soon(call)
        after = {
            operation: count
            for (service, operation), count in proxy.calls.items()
            if service == "sqs" and operation != "ReceiveMessage"
        }
        stop.set()
    spent = {op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)}
    print(f"SQS requests for {CALLERS} concurrent GET /queues: {spent}")
    assert answers == [200] * CALLERS
    # One refresh: each queue's attributes, each DLQ's depth, each DLQ URL once (6);
    # a slow burst may span a second refresh (4 more).
    assert sum(spent.values()) <= 10
