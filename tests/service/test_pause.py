"""The pause gate: which receivers wait because an operator paused their queue."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from pipeline._errors import AwsUnavailable
from pipeline._service.intake import PROBE_SECONDS, IntakeGate
from pipeline._service.pause import PauseGate


class TestCloses:
    def test_holds_every_queue_until_the_pauses_are_read(self) -> None:
        """A process that has not read the pause items yet takes nothing."""
        gate = PauseGate()
        assert gate.closes("export_jobs") == "paused queues not read yet"
        gate.apply({})
        assert gate.closes("export_jobs") is None

    def test_a_paused_queue_holds_its_receivers_only(self) -> None:
        """Pausing export-jobs holds the export-job receivers, not the download-task ones."""
        gate = PauseGate()
        gate.apply({"export-jobs": True, "download-tasks": False})
        assert gate.closes("export_jobs") == "paused by an operator"
        assert gate.closes("download_tasks") is None

    def test_the_high_lane_is_paused_with_its_queue(self) -> None:
        """A queue's high lane waits while the queue is paused, and goes on when resumed."""
        gate = PauseGate()
        gate.apply({"download-tasks": True})
        assert gate.closes("download_tasks_high") == "paused by an operator"
        gate.apply({"download-tasks": False})
        assert gate.closes("download_tasks_high") is None
        assert gate.view == {"download-tasks": False}


class TestStart:
    async def test_receivers_start_once_the_first_read_answers(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Receivers waiting at start open when the first read of the pauses answers (0.2 s
        here), all of them, not a probe round later."""
        pauses = PauseGate()
        gate = IntakeGate([pauses])
        opened: list[float] = []

        async def read() -> dict[str, bool]:
            await trio.sleep(0.2)
            return {}

        async def receiver() -> None:
            await gate.wait_open("export_jobs")
            opened.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(receiver)
            nursery.start_soon(pauses.run, read)
            await trio.sleep(PROBE_SECONDS * 3)
            nursery.cancel_scope.cancel()
        assert opened == [pytest.approx(0.2)] * 4

    async def test_a_first_read_that_fails_holds_intake(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """While the pauses cannot be read, every queue stays held; the first answer opens it."""
        pauses = PauseGate()
        gate = IntakeGate([pauses])
        answers_at = 4.5

        async def read() -> dict[str, bool]:
            if trio.current_time() < answers_at:
                msg = "DynamoDB GetItem: ThrottlingException"
                raise AwsUnavailable(msg, code="ThrottlingException")
            return {"export-jobs": False}

        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(pauses.run, read, every=1.0))
            await gate.wait_open("export_jobs")
            opened = trio.current_time()
            nursery.cancel_scope.cancel()
        # Reads at 0, 1, ..., 4 failed; the one at 5 answered.
        assert opened == pytest.approx(5.0)
