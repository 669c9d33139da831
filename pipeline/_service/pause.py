"""Paused queues as this process knows them: one reason of the intake gate.

The pause itself is a control item in the jobs table
(:mod:`pipeline._adapters.aws.pauses`), written by whoever takes the call.
:meth:`PauseGate.run` reads the items at start and then every
:data:`~pipeline._service.cancel.CHECK_SECONDS` (the cancel watch's clock), so
every process stops or restarts receiving within a few seconds; a pause taken
in this process applies here at once (:meth:`PauseGate.apply`). The gate is
one of the reasons of the receivers' :class:`~pipeline._service.intake.IntakeGate`
(beside a failing dependency): only the receivers wait; work in flight goes on
and its leases keep being extended. Until the first read answers, no queue
counts as open, so a process that restarts during a pause does not take a
message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs
import structlog
import trio

from pipeline._errors import PipelineError, describe
from pipeline._service.cancel import CHECK_SECONDS

__all__ = ["PauseGate"]

log = structlog.get_logger("pipeline.pause")

ReadPauses = Callable[[], Awaitable[Mapping[str, bool]]]


@attrs.define(eq=False)
class PauseGate:
    """Which queues are paused; receivers of a paused queue wait."""

    name: str = "pause"
    _paused: dict[str, bool] = attrs.field(factory=dict)
    _known: bool = False
    _first_read: trio.Event = attrs.field(init=False, factory=trio.Event)

    def apply(self, paused: Mapping[str, bool]) -> None:
        """Take ``paused`` (queue → paused) as the current state."""
        for queue, now in paused.items():
            if self._paused.get(queue, False) != now:
                log.info("queue paused" if now else "queue resumed", queue=queue)
            self._paused[queue] = now
        self._known = True
        self._first_read.set()

    def is_paused(self, queue: str) -> bool:
        return self._paused.get(queue, False)

    @property
    def view(self) -> dict[str, bool]:
        """Queue → paused, as last read (empty before the first read)."""
        return dict(self._paused)

    def closes(self, queue_name: str) -> str | None:
        """Why intake of ``queue_name`` (a keeper's name: ``export_jobs``) is held back.

        A queue's high lane (``export_jobs_high``) is paused with it: an
        operator who pauses export jobs means every new export job.
        """
        if not self._known:
            return "paused queues not read yet"
        queue = queue_name.removesuffix("_high").replace("_", "-")
        if self._paused.get(queue, False):
            return "paused by an operator"
        return None

    async def probe(self) -> None:
        """Until the first read has answered, wait for it; after it, nothing to try.

        :meth:`run` reads the pause items on its own clock; waiting here lets
        the receivers open the moment the first read answers (milliseconds
        after start) rather than a probe round later. Intake stays closed
        meanwhile whatever the other reasons' probes would find.
        """
        await self._first_read.wait()

    async def run(self, read: ReadPauses, *, every: float = CHECK_SECONDS) -> None:
        """Read the pause items now and on every tick, until cancelled."""
        while True:
            try:
                self.apply(await read())
            except Exception as err:
                # The next look comes in a few seconds; the state stays as last read.
                log.warning(
                    "paused queues not read",
                    error=describe(err),
                    exc_info=not isinstance(err, PipelineError),
                )
            await trio.sleep(every)
