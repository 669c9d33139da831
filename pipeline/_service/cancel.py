"""Cancelled exports, as this process knows them: the cancel scopes of their work.

A cancel is written to the job item (``CANCELLED``) by whoever takes it, the
control API or the command line of any process. This process stops its work
on the export as soon as it knows: at once when the call came in here
(:meth:`CancelWatch.cancel`), otherwise when :meth:`CancelWatch.run`, which
looks at the job items of the exports in flight here every few seconds, sees
the status. Work on an export runs inside :meth:`CancelWatch.guard`; a guard
entered after the cancel is cancelled before it starts, so no new file of the
export begins.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

import attrs
import structlog
import trio

from pipeline._core.accounting import JobStatus
from pipeline._errors import PipelineError, describe

__all__ = ["CHECK_SECONDS", "CancelWatch"]

log = structlog.get_logger("pipeline.cancel")

# How often the job items of the exports in flight are read: a cancel taken by
# another process stops the work here within this (plus one call), well inside
# the contract's 10 seconds.
CHECK_SECONDS = 3.0
# Cancelled exports remembered, so a late file of one does not start; the job
# item says CANCELLED for good anyway, this only saves the read.
REMEMBERED = 10_000

ReadStatuses = Callable[[Iterable[str]], Awaitable[dict[str, JobStatus]]]


@attrs.define
class CancelWatch:
    """The cancel scopes of the exports this process works on, by export ID."""

    _scopes: dict[str, set[trio.CancelScope]] = attrs.field(factory=dict)
    _cancelled: OrderedDict[str, None] = attrs.field(factory=OrderedDict)

    @contextmanager
    def guard(self, export_id: str) -> Iterator[trio.CancelScope]:
        """Run a piece of the export's work in a scope a cancel of the export stops."""
        scope = trio.CancelScope()
        if export_id in self._cancelled:
            scope.cancel()
        scopes = self._scopes.setdefault(export_id, set())
        scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            scopes.discard(scope)
            if not scopes:
                del self._scopes[export_id]

    def is_cancelled(self, export_id: str) -> bool:
        return export_id in self._cancelled

    def cancel(self, export_id: str) -> None:
        """Stop the export's work in this process, and any that would start."""
        self._cancelled[export_id] = None
        self._cancelled.move_to_end(export_id)
        while len(self._cancelled) > REMEMBERED:
            self._cancelled.popitem(last=False)
        scopes = self._scopes.get(export_id, ())
        if scopes:
            log.info("export cancelled; its work here stops", exportId=export_id)
        for scope in scopes:
            scope.cancel()

    def resume(self, export_id: str) -> None:
        """Forget a cancel: the export was retried."""
        self._cancelled.pop(export_id, None)

    @property
    def in_flight(self) -> list[str]:
        """The exports with work running here now."""
        return list(self._scopes)

    async def run(self, read_statuses: ReadStatuses, *, every: float = CHECK_SECONDS) -> None:
        """Look at the job items of the exports in flight here; stop the cancelled ones."""
        while True:
            await trio.sleep(every)
            watched = [export_id for export_id in self._scopes if export_id not in self._cancelled]
            if not watched:
                continue
            try:
                statuses = await read_statuses(watched)
            except Exception as err:
                # The next look comes in a few seconds; the work goes on meanwhile.
                log.warning(
                    "job statuses not read; cancels wait",
                    error=describe(err),
                    exc_info=not isinstance(err, PipelineError),
                )
                continue
            for export_id, status in statuses.items():
                if status is JobStatus.CANCELLED:
                    self.cancel(export_id)
