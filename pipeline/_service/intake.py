"""The intake gate: receivers take no new message while the work could not go on.

While a dependency the work needs is failing (the Export API's breaker is
open, S3 or DynamoDB fails attempt after attempt), a message taken now would
only wait, or be handed back and come again, each delivery bringing it closer
to the dead-letter queue. So the receivers ask the gate first
(:meth:`IntakeGate.wait_open`): messages stay in SQS, where waiting costs
nothing, and intake resumes as soon as every reason is gone.

A reason is a small object (:class:`GateReason`) that says, for a queue,
whether and why intake is closed, and may try to end itself (a probe of the
failing dependency), since with intake closed no new work would make the call
that shows the dependency is back. Adding a reason (an operator's pause of a
queue) is adding one such object to the list the gate is built with.

Work in flight goes on while the gate is closed: it has its own retries and
waits, and hands its message back when they are spent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import attrs
import structlog
import trio

from pipeline._adapters.exportapi import ExportApiSession
from pipeline._core.backoff import DependencyHealth
from pipeline._errors import PipelineError

__all__ = ["PROBE_SECONDS", "AwsFailing", "ExportApiBreaker", "GateReason", "IntakeGate"]

log = structlog.get_logger("pipeline.intake")

# How often a closed gate looks again and probes what closed it: "at once"
# for a person, and one cheap request a second for the failing dependency.
PROBE_SECONDS = 1.0
# A probe that hangs must not hold the gate's loop up.
PROBE_TIMEOUT_SECONDS = 3.0


class GateReason(Protocol):
    """One reason to hold intake back."""

    name: str

    def closes(self, queue_name: str) -> str | None:
        """Why intake of ``queue_name`` is closed now, in one line; None when it is not."""

    async def probe(self) -> None:
        """Try to end this reason (ask the failing dependency once); never raises for it."""


@attrs.define(eq=False)
class ExportApiBreaker:
    """Closed while the Export API's breaker is open, half-open included; probes it when due.

    Half-open stays closed: the breaker's probe is the gate's own request
    (or a call of work in flight), never a message taken for the purpose.
    """

    session: ExportApiSession
    name: str = "export_api"

    def closes(self, queue_name: str) -> str | None:
        if self.session.breaker.is_open:
            return "the Export API's circuit breaker is open"
        return None

    async def probe(self) -> None:
        await self.session.probe()


Check = Callable[[], Awaitable[None]]


@attrs.define(eq=False)
class AwsFailing:
    """Closed while S3 or DynamoDB fails attempt after attempt (:class:`DependencyHealth`).

    ``checks`` are the cheap readiness calls per dependency (``/ready``'s);
    a closed gate runs the failing one's, and its answer clears the reason.
    """

    health: DependencyHealth
    checks: Mapping[str, Check]
    name: str = "aws"

    def _failing(self) -> list[str]:
        return [dep for dep in sorted(self.checks) if self.health.is_failing(dep)]

    def closes(self, queue_name: str) -> str | None:
        failing = self._failing()
        return f"{', '.join(failing)} failing" if failing else None

    async def probe(self) -> None:
        for dep in self._failing():
            with trio.move_on_after(PROBE_TIMEOUT_SECONDS):
                try:
                    await self.checks[dep]()
                except PipelineError as err:
                    log.debug("dependency probe failed", dependency=dep, error=str(err))
                    continue
                self.health.record(dep, ok=True)
                log.info("dependency answers again", dependency=dep)


@attrs.define(eq=False)
class IntakeGate:
    """What the receivers wait on before each receive; see the module docstring."""

    reasons: Sequence[GateReason] = ()
    _probing: trio.Lock = attrs.field(init=False, factory=trio.Lock)
    _probed_at: float = attrs.field(init=False, default=-PROBE_SECONDS)
    _closed_since: dict[str, float] = attrs.field(init=False, factory=dict)
    # Set when a probe round ends: receivers that left the probe to another look again.
    _probed: trio.Event = attrs.field(init=False, factory=trio.Event)

    def closed(self, queue_name: str) -> list[str]:
        """Every reason intake of ``queue_name`` is closed now (empty: open)."""
        found = []
        for reason in self.reasons:
            why = reason.closes(queue_name)
            if why is not None:
                found.append(why)
        return found

    async def wait_open(self, queue_name: str) -> None:
        """Return once no reason closes intake of ``queue_name``; probe meanwhile.

        Returns at once (after a checkpoint) when the gate is open.
        """
        await trio.lowlevel.checkpoint()
        while why := self.closed(queue_name):
            if queue_name not in self._closed_since:
                self._closed_since[queue_name] = trio.current_time()
                log.warning("intake paused", queue=queue_name, reasons=why)
            await self._probe()
            if not self.closed(queue_name):
                break
            with trio.move_on_after(PROBE_SECONDS):
                await self._probed.wait()
        began = self._closed_since.pop(queue_name, None)
        if began is not None:
            paused = round(trio.current_time() - began, 1)
            log.info("intake resumed", queue=queue_name, paused_seconds=paused)

    async def _probe(self) -> None:
        # Several receivers wait at once; one probe a round is enough.
        if self._probing.locked() or trio.current_time() - self._probed_at < PROBE_SECONDS:
            return
        async with self._probing:
            self._probed_at = trio.current_time()
            try:
                for reason in self.reasons:
                    if any(reason.closes(queue) for queue in self._closed_since):
                        await reason.probe()
            finally:
                self._probed.set()
                self._probed = trio.Event()

    def status(self, queue_names: Sequence[str]) -> dict[str, object]:
        """What ``/health`` says of the gate: per queue, open or the reasons it is closed."""
        queues: dict[str, object] = {}
        for queue in queue_names:
            why = self.closed(queue)
            queues[queue] = {"open": not why, "reasons": why}
        return {"open": all(not self.closed(q) for q in queue_names), "queues": queues}
