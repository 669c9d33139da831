"""The pause gate: which receivers wait because an operator paused their queue."""

from __future__ import annotations

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
