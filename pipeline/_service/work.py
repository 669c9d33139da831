"""One place where a message's work runs and ends.

Every stage that takes a message from a queue runs its work as::

    async with working(delivery, slots=slots, dead_letter_url=dlq) as work:
        ...              # the stage's own work
        work.done()      # or work.poison(reason), work.passed_on(); or raise

:func:`working` owns what each stage used to repeat around its work: the
cancel scope the lease keeper cancels when the lease is lost; the slot the
message holds, given back exactly once when the work ends (not when it is
passed on: the slot goes with the message); and the message's ending, which
:func:`pipeline._core.ending.decide` takes from what the stage said and how
its work stopped (returned, failed, a dependency down, cancelled), and the
keeper carries out, shielded and bounded. An error of the work is logged here
and ends there: one message never takes its stage down. A cancel from
outside (shutdown) still propagates, after the message is handed back.

A file the job stage listed for this process's own workers has no message of
its own (its export-job message waits for it): ``working(None)`` runs it the
same way, with nothing to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import structlog
import trio

from pipeline._core.ending import Done, PassedOn, Poison, Said, stopped_by
from pipeline._errors import describe, is_bug
from pipeline._service.lease import Delivery, Lease
from pipeline._service.receiver import Slots

__all__ = ["Work", "working"]

log = structlog.get_logger("pipeline.work")


@attrs.define(eq=False)
class Work:
    """What a stage says happened to its message's work; said once."""

    # The message's body, where it can be dead-lettered (a delivery's).
    body: str | None = None
    said: Said | None = attrs.field(init=False, default=None)

    def done(self) -> None:
        """The work is finished, or is not to be done (its export cancelled): delete it."""
        self._say(Done())

    def poison(self, reason: str) -> None:
        """The message can never be worked: to the dead-letter queue with ``reason``."""
        if self.body is None:
            msg = "only a delivery's message can be dead-lettered"
            raise RuntimeError(msg)
        self._say(Poison(reason))

    def passed_on(self) -> None:
        """Another holder (a file worker) has the message now, its slot with it."""
        self._say(PassedOn())

    def _say(self, said: Said) -> None:
        if self.said is not None:
            msg = f"the work already said {self.said!r}"
            raise RuntimeError(msg)
        self.said = said


@asynccontextmanager
async def working(
    held: Delivery | Lease | None,
    *,
    slots: Slots | None = None,
    dead_letter_url: str | None = None,
) -> AsyncIterator[Work]:
    """Run a message's work in the body, then end the message; see the module doc.

    ``held`` is the delivery (or only its lease), None for work without a
    message. ``slots`` are those the message's receiver took its slot from.
    """
    lease = held.lease if isinstance(held, Delivery) else held
    work = Work(held.message.body if isinstance(held, Delivery) else None)
    error: BaseException | None = None
    scope = trio.CancelScope()
    try:
        with scope:
            if lease is not None:
                lease.keeper.guard(lease, scope)
            yield work
    except Exception as err:
        error = err
        log.error("work failed; it will be tried again", error=describe(err), exc_info=is_bug(err))
    except BaseException as err:
        error = err
        raise
    finally:
        if lease is not None:
            keeper = lease.keeper
            keeper.unguard(lease, scope)
            if slots is not None and not isinstance(work.said, PassedOn):
                slots.give_back(lane=keeper.lane)
            await keeper.end(
                lease,
                work.said,
                stopped_by(error),
                body=work.body,
                dead_letter_url=dead_letter_url,
            )
