"""CancelWatch: a cancel stops an export's work here, at once or from its job item."""

from __future__ import annotations

from collections.abc import Iterable

import trio
import trio.testing

from pipeline._core.accounting import JobStatus
from pipeline._errors import AwsUnavailable
from pipeline._service.cancel import CancelWatch


async def test_cancel_stops_running_work_of_that_export_only() -> None:
    """A cancel ends the guards of its export and leaves another export's running."""
    watch = CancelWatch()
    ended: list[str] = []

    async def work(export_id: str) -> None:
        with watch.guard(export_id) as scope:
            await trio.sleep_forever()
        ended.append(f"{export_id}:{scope.cancelled_caught}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, "exp-a")
        nursery.start_soon(work, "exp-b")
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(watch.in_flight) == ["exp-a", "exp-b"]
        watch.cancel("exp-a")
        await trio.testing.wait_all_tasks_blocked()
        assert ended == ["exp-a:True"]
        assert watch.in_flight == ["exp-b"]
        nursery.cancel_scope.cancel()


async def test_work_after_a_cancel_never_starts_until_resumed() -> None:
    """A guard entered after the cancel is cancelled at its first checkpoint; after
    resume (a retry) work runs again."""
    watch = CancelWatch()
    watch.cancel("exp-a")
    assert watch.is_cancelled("exp-a")
    with watch.guard("exp-a") as scope:
        await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    watch.resume("exp-a")
    with watch.guard("exp-a") as scope:
        await trio.lowlevel.checkpoint()
    assert not scope.cancelled_caught


async def test_run_cancels_what_the_job_items_say(autojump_clock: trio.testing.MockClock) -> None:
    """The watch reads the statuses of the exports in flight and stops the CANCELLED
    ones; a failed read is only retried at the next look."""
    watch = CancelWatch()
    asked: list[list[str]] = []
    answers: list[dict[str, JobStatus] | Exception] = [
        AwsUnavailable("dynamodb unreachable"),
        {"exp-a": JobStatus.RUNNING, "exp-b": JobStatus.CANCELLED},
    ]

    async def read(export_ids: Iterable[str]) -> dict[str, JobStatus]:
        asked.append(sorted(export_ids))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, read)

        async def work(export_id: str) -> None:
            with watch.guard(export_id):
                await trio.sleep_forever()

        nursery.start_soon(work, "exp-a")
        nursery.start_soon(work, "exp-b")
        await trio.sleep(7)
        assert asked == [["exp-a", "exp-b"], ["exp-a", "exp-b"]]
        assert watch.is_cancelled("exp-b")
        assert watch.in_flight == ["exp-a"]
        nursery.cancel_scope.cancel()
