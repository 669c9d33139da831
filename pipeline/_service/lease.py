"""Message leases: visibility heartbeats, and handing messages back.

An SQS message is invisible to other consumers only until its visibility
timeout runs out; a file that takes longer would be delivered to a second
worker while the first is still busy with it. So every message in flight is a
:class:`Lease` held by one :class:`LeaseKeeper` per queue, which extends all
leases that are close to expiry in one ``ChangeMessageVisibilityBatch`` call per
ten messages. Batching keeps the keeper ahead even with hundreds of messages in
flight: a refresh that falls behind would leave stale receipt handles.

Each lease guards a cancel scope: the work of that message. When an extension
fails because the receipt handle is gone (someone else owns the message now),
the keeper cancels that scope instead of letting two workers race.

How a message ends is decided once, in :func:`pipeline._core.ending.decide`,
from what its stage said and how its work stopped; ``_service/work.py`` runs
the work and asks :meth:`LeaseKeeper.end` to carry the ending out. Releasing a
lease either deletes the message (the work is done; messages completed within
a moment of each other go in one ``DeleteMessageBatch``), dead-letters it, or
hands it back: with visibility 0 at shutdown, delivered again at once to a
process that is not stopping; after a dependency's outage in a few seconds;
after a failure of our own (AWS down past its retries) with a delay that
grows with its deliveries, so an outage costs a few deliveries spread over its
length, not a fast loop into the dead-letter queue. Each runs shielded with
its own short deadline: cleanup that must happen even while cancelled.

SQS never keeps a message invisible for more than 12 hours after it was
received: extensions and hand-back delays are capped to what is left of that.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs
import structlog
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.queues import Queues
from pipeline._core import ending as _ending
from pipeline._core.backoff import Backoff
from pipeline._core.ending import DeadLetter, Delete, Ending, HandBack, Said, Stopped, Why
from pipeline._core.lanes import Priority
from pipeline._errors import PipelineError
from pipeline._service.metrics import ServiceMetrics

__all__ = [
    "CLEANUP_SECONDS",
    "DELETE_LINGER_SECONDS",
    "LIMIT_MARGIN_SECONDS",
    "Delivery",
    "Lease",
    "LeaseKeeper",
]

log = structlog.get_logger("pipeline.lease")

# Deleting or handing back a message must finish even during shutdown, but
# never hold up the exit: Fargate kills the task 30 s after SIGTERM.
CLEANUP_SECONDS = 2.0
# How long the first message to complete waits for others to share its
# DeleteMessageBatch: ~10 small exports finish per second under load, so
# this gathers a few without holding anything the service needs (see _delete).
DELETE_LINGER_SECONDS = 0.2
# Kept clear of SQS's 12-hour limit on a received message's invisibility,
# since our clock and SQS's do not start at the same instant.
LIMIT_MARGIN_SECONDS = 60


@attrs.define(eq=False)
class Lease:
    """One received message whose visibility this process keeps extending."""

    message_id: str
    receipt_handle: str
    expires_at: float
    # Who keeps it, and so ends it.
    keeper: LeaseKeeper = attrs.field(repr=False)
    # The work's scope, cancelled if the lease is lost (see LeaseKeeper.guard).
    scope: trio.CancelScope | None = None
    lost: bool = False
    # Deleted, handed back or dead-lettered: any later release is a no-op.
    released: bool = False
    # Seconds the message stays invisible when handed back; 0 = redeliver at once.
    hand_back_delay: int = 0
    # Deliveries so far, this one included (SQS's ApproximateReceiveCount).
    receive_count: int = 1
    # When it was received (trio's clock): SQS's 12-hour limit counts from here.
    received_at: float = 0.0
    # The message's body, for a fresh copy when it is sent again (ending.py).
    body: str | None = None


@attrs.define(eq=False)
class _DeleteBatch:
    """Messages deleted in one call; joined until it is full or its linger ends."""

    leases: list[Lease]
    full: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)
    sent: bool = False
    # Receipt handles not deleted, with the reason.
    failed: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Delivery:
    """A received message and the lease that keeps it ours."""

    message: _sqs.ReceivedMessage
    lease: Lease


@attrs.define(eq=False)
class LeaseKeeper:
    """Keeps the messages of one queue invisible while their work runs.

    ``visibility_timeout`` is what each extension asks for; the keeper wakes
    every sixth of it and extends every lease that has less than two thirds
    left, so an extension is first tried with at least half the timeout to
    spare, and a slow or failed call leaves two more tries before it runs out.
    """

    sqs: Queues
    queue_url: str
    visibility_timeout: int
    policy: Backoff
    # Counted in GET /metrics under this queue name, when given.
    metrics: ServiceMetrics | None = None
    queue_name: str = "queue"
    # The queue's lane (normal, or high): whose slots its messages hold.
    lane: Priority = Priority.NORMAL
    _leases: set[Lease] = attrs.field(init=False, factory=set)
    _rng: random.Random = attrs.field(init=False, factory=random.Random)
    # The delete batch still open for messages to join, if any.
    _deleting: _DeleteBatch | None = attrs.field(init=False, default=None)

    def hold(self, message: _sqs.ReceivedMessage, scope: trio.CancelScope | None = None) -> Lease:
        """Start keeping ``message`` invisible; ``scope`` is cancelled if its lease is lost."""
        now = trio.current_time()
        lease = Lease(
            message_id=message.message_id,
            receipt_handle=message.receipt_handle,
            expires_at=now + self.visibility_timeout,
            keeper=self,
            scope=scope,
            receive_count=message.receive_count,
            received_at=now,
            body=message.body,
        )
        self._leases.add(lease)
        self._count("received")
        return lease

    def _count(self, outcome: str, count: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.message(self.queue_name, outcome, count)

    @property
    def held(self) -> int:
        """How many leases are kept right now."""
        return len(self._leases)

    async def complete(self, lease: Lease, *, outcome: str = "deleted") -> None:
        """The work is done: delete the message (shielded, bounded).

        ``outcome`` is how the metrics count it: deleted, or dead_lettered
        when it was copied to the dead-letter queue first.
        """
        self._leases.discard(lease)
        if lease.lost or lease.released:
            return
        lease.released = True
        self._count(outcome)
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS) as scope:
            error = await self._delete(lease)
            if error is not None:
                log.warning("message delete failed", message_id=lease.message_id, error=error)
        if scope.cancelled_caught:
            log.warning("message delete timed out", message_id=lease.message_id)

    async def _delete(self, lease: Lease) -> str | None:
        """Delete ``lease``'s message with the others completed meanwhile; why it failed, if so.

        Messages often finish together (a burst of small exports), and SQS
        deletes ten in one call: the first to complete waits up to
        :data:`DELETE_LINGER_SECONDS` for others to join its batch, then sends
        it; the rest wait for that batch. The work is done and recorded by
        now, so the wait costs nothing but the message's time in flight.
        """
        batch = self._deleting
        if batch is not None and not batch.sent and len(batch.leases) < _sqs.MAX_BATCH:
            batch.leases.append(lease)
            if len(batch.leases) == _sqs.MAX_BATCH:
                batch.full.set()
            await batch.done.wait()
            return batch.failed.get(lease.receipt_handle)
        batch = self._deleting = _DeleteBatch([lease])
        answered = False
        try:
            with trio.move_on_after(DELETE_LINGER_SECONDS):
                await batch.full.wait()
            batch.sent = True
            handles = [joined.receipt_handle for joined in batch.leases]
            try:
                batch.failed = await self.sqs.delete_batch(
                    self.queue_url, handles, policy=self.policy
                )
            except PipelineError as err:
                batch.failed = dict.fromkeys(handles, str(err))
            answered = True
        finally:
            batch.sent = True
            if not answered:  # the first one's deadline ran out: the batch's too
                batch.failed = {joined.receipt_handle: "timed out" for joined in batch.leases}
            batch.done.set()
            if self._deleting is batch:
                self._deleting = None
        return batch.failed.get(lease.receipt_handle)

    async def hand_back_remaining(self) -> None:
        """Hand back every message still held: at shutdown, work that never started.

        A message can be held without anyone working on it (a download task
        waiting in the file workers' buffer when the grace period ended);
        without this it would stay invisible until its timeout ran out.
        """
        remaining = list(self._leases)
        if remaining:
            log.info("handing back messages whose work never started", count=len(remaining))
            # Not the messages' fault: their deliveries do not count (send_again).
            await self.send_again(remaining)

    def _capped(self, lease: Lease, seconds: int) -> int:
        """``seconds``, or less when SQS's 12-hour limit for the message comes first."""
        return max(0, min(seconds, self._time_left(lease)))

    def _time_left(self, lease: Lease) -> int:
        """Seconds the message may still be kept invisible (SQS's 12 hours, less a margin)."""
        held = trio.current_time() - lease.received_at
        return _sqs.MAX_VISIBILITY - LIMIT_MARGIN_SECONDS - int(held)

    def guard(self, lease: Lease, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` (the lease's work) if the lease is lost: now, or later."""
        lease.scope = scope
        if lease.lost:
            scope.cancel()

    def unguard(self, lease: Lease, scope: trio.CancelScope) -> None:
        """``scope``'s work is over; a lease passed on may be guarding another's by now."""
        if lease.scope is scope:
            lease.scope = None

    async def end(
        self,
        lease: Lease,
        said: Said | None,
        stopped: Stopped,
        *,
        body: str | None = None,
        dead_letter_url: str | None = None,
    ) -> Ending:
        """End the message as :func:`~pipeline._core.ending.decide` says; the ending.

        ``body`` is the message's, for a dead-letter copy.
        """
        ending = _ending.decide(
            said,
            stopped,
            lost=lease.lost,
            receive_count=lease.receive_count,
            time_left=self._time_left(lease),
            draw=self._rng.random(),
            dead_letter_url=dead_letter_url,
        )
        if isinstance(ending, Delete):
            await self.complete(lease)
        elif isinstance(ending, HandBack):
            lease.hand_back_delay = ending.delay
            _log_hand_back(lease, ending)
            if lease.body is None:
                lease.body = body
            if ending.fresh:
                await self.send_again([lease])
            else:
                await self.hand_back([lease])
        elif isinstance(ending, DeadLetter):
            if body is None:
                msg = "a dead letter needs the message's body"
                raise ValueError(msg)
            try:
                await self.dead_letter(lease, body, ending.reason, ending.queue_url)
            finally:
                # Cancelled before the copy was sent (shutdown): back at once.
                await self.hand_back([lease])
        return ending

    async def send_again(self, leases: Iterable[Lease]) -> None:
        """Hand messages back as fresh copies after their ``hand_back_delay`` (shielded, bounded).

        Not the messages' fault (a shutdown, an outage, a closed intake), so no
        delivery counts toward ``maxReceiveCount`` (ending.py). Copies first, then
        the originals deleted: a failure between leaves duplicates, never nothing.
        """
        pending = [lease for lease in leases if not (lease.lost or lease.released)]
        await self.hand_back([lease for lease in pending if lease.body is None])
        copied = [lease for lease in pending if lease.body is not None]
        if not copied:
            return
        for lease in copied:
            self._leases.discard(lease)
            lease.released = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS) as scope:
            try:
                await self.sqs.send_batch(
                    self.queue_url,
                    [(str(lease.body), lease.hand_back_delay) for lease in copied],
                    policy=self.policy,
                )
            except PipelineError as err:
                log.warning("messages not sent again; handed back", error=str(err))
                for lease in copied:
                    lease.released = False
                await self.hand_back(copied)
                return
            self._count("handed_back", len(copied))
            try:
                failed = await self.sqs.delete_batch(
                    self.queue_url, [lease.receipt_handle for lease in copied], policy=self.policy
                )
            except PipelineError as err:
                failed = {lease.receipt_handle: str(err) for lease in copied}
            if failed:  # the copies are out; such an original comes back once more
                log.warning("originals of copies sent again not deleted", count=len(failed))
        if scope.cancelled_caught:
            log.warning("sending messages again timed out", count=len(copied))
        else:
            log.info("messages sent again as fresh copies", count=len(copied))

    async def hand_back(self, leases: Iterable[Lease]) -> None:
        """Make messages visible again after their ``hand_back_delay`` (shielded, bounded)."""
        pending = [lease for lease in leases if not (lease.lost or lease.released)]
        for lease in pending:
            self._leases.discard(lease)
            lease.released = True
        if not pending:
            return
        self._count("handed_back", len(pending))
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS) as scope:
            try:
                failed = await self.sqs.change_visibility_batch(
                    self.queue_url,
                    [(lease.receipt_handle, lease.hand_back_delay) for lease in pending],
                    policy=self.policy,
                )
            except PipelineError as err:
                log.warning("hand back failed", count=len(pending), error=str(err))
                return
            if failed:
                log.warning("hand back refused for some messages", count=len(failed))
        if scope.cancelled_caught:
            log.warning("hand back timed out", count=len(pending))
        else:
            log.info("messages handed back", count=len(pending))

    async def dead_letter(self, lease: Lease, body: str, reason: str, dead_letter_url: str) -> None:
        """End a poison message: copy it to the DLQ and delete it, logged once.

        The copy carries ``reason`` as its :data:`~pipeline._adapters.aws.sqs.REASON_ATTRIBUTE`.
        If the DLQ cannot be reached, the message is handed back and tried again.
        (Without a DLQ the message is parked instead: :func:`~pipeline._core.ending.decide`.)
        """
        try:
            # The reason travels with the message: GET /dlq/{queue} shows it.
            reason_tag = {_sqs.REASON_ATTRIBUTE: reason}
            await self.sqs.send(dead_letter_url, body, attributes=reason_tag, policy=self.policy)
        except PipelineError as err:
            log.error("poison message not moved; handed back", reason=reason, error=str(err))
            await self.hand_back([lease])
            return
        log.error("poison message; moved to the dead-letter queue", reason=reason)
        await self.complete(lease, outcome="dead_lettered")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Extend leases until cancelled."""
        period = max(self.visibility_timeout / 6, 0.2)
        task_status.started()
        while True:
            await trio.sleep(period)
            await self._extend_due(horizon=self.visibility_timeout * 2 / 3)

    async def _extend_due(self, *, horizon: float) -> None:
        now = trio.current_time()
        due = [lease for lease in self._leases if lease.expires_at - now <= horizon]
        if not due:
            return
        try:
            # One stalled call must not hold the next round up: the leases
            # still have half a timeout left when it gives up.
            with trio.fail_after(max(self.visibility_timeout / 6, 1.0)):
                failed = await self.sqs.change_visibility_batch(
                    self.queue_url,
                    [
                        (lease.receipt_handle, self._capped(lease, self.visibility_timeout))
                        for lease in due
                    ],
                    policy=self.policy,
                )
        except trio.TooSlowError:
            log.warning("visibility heartbeat timed out", count=len(due))
            return
        except PipelineError as err:
            # The next round tries again; the leases have half a timeout left.
            log.warning("visibility heartbeat failed", count=len(due), error=str(err))
            return
        renewed_until = now + self.visibility_timeout
        for lease in due:
            if lease.receipt_handle in failed:
                self._lose(lease)
            else:
                lease.expires_at = renewed_until
        log.debug("visibility extended", count=len(due) - len(failed))
        if self.metrics is not None:
            self.metrics.heartbeats.inc(len(due) - len(failed))

    def _lose(self, lease: Lease) -> None:
        lease.lost = True
        self._leases.discard(lease)
        log.warning("lease lost; cancelling its work", message_id=lease.message_id)
        if lease.scope is not None:
            lease.scope.cancel()


def _log_hand_back(lease: Lease, ending: HandBack) -> None:
    """One line per hand-back, in the words of its reason."""
    fields = {"message_id": lease.message_id, "delay_seconds": ending.delay}
    if ending.why is Why.PARKED:
        log.error("poison message; no dead-letter queue, parked", reason=ending.reason, **fields)
    elif ending.why is Why.DEPENDENCY_DOWN:
        log.info("message handed back until the dependency answers", **fields)
    elif ending.why is Why.FAILED:
        log.info(
            "message handed back to be tried again later",
            deliveries=lease.receive_count,
            **fields,
        )
    elif ending.why is Why.UNSAID:
        log.warning("message handed back: its work ended without a result", **fields)
