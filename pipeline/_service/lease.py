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

Releasing a lease either deletes the message (the work is done) or hands it
back with visibility 0 (shutdown, or work that could not finish), so it is
delivered again at once instead of after the timeout. Both run shielded with
their own short deadline: cleanup that must happen even while cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import structlog
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._core.backoff import Backoff
from pipeline._errors import PipelineError

__all__ = ["CLEANUP_SECONDS", "Delivery", "Lease", "LeaseKeeper"]

log = structlog.get_logger("pipeline.lease")

# Deleting or handing back a message must finish even during shutdown, but
# never hold up the exit: Fargate kills the task 30 s after SIGTERM.
CLEANUP_SECONDS = 2.0


@attrs.define(eq=False)
class Lease:
    """One received message whose visibility this process keeps extending."""

    message_id: str
    receipt_handle: str
    expires_at: float
    scope: trio.CancelScope | None = None
    lost: bool = False
    # Deleted, handed back or dead-lettered: any later release is a no-op.
    released: bool = False
    # Seconds the message stays invisible when handed back; 0 = redeliver at once.
    hand_back_delay: int = 0


@attrs.frozen
class Delivery:
    """A received message and the lease that keeps it ours."""

    message: _sqs.ReceivedMessage
    lease: Lease


@attrs.define(eq=False)
class LeaseKeeper:
    """Keeps the messages of one queue invisible while their work runs.

    ``visibility_timeout`` is what each extension asks for; the keeper wakes
    every third of it and extends every lease that would expire within half
    of it, so a lease is extended at least once before it runs out even when
    one batch call is slow.
    """

    sqs: Any
    queue_url: str
    visibility_timeout: int
    policy: Backoff
    _leases: set[Lease] = attrs.field(init=False, factory=set)

    def hold(self, message: _sqs.ReceivedMessage, scope: trio.CancelScope | None = None) -> Lease:
        """Start keeping ``message`` invisible; ``scope`` is cancelled if its lease is lost."""
        lease = Lease(
            message_id=message.message_id,
            receipt_handle=message.receipt_handle,
            expires_at=trio.current_time() + self.visibility_timeout,
            scope=scope,
        )
        self._leases.add(lease)
        return lease

    @property
    def held(self) -> int:
        """How many leases are kept right now."""
        return len(self._leases)

    async def complete(self, lease: Lease) -> None:
        """The work is done: delete the message (shielded, bounded)."""
        self._leases.discard(lease)
        if lease.lost or lease.released:
            return
        lease.released = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS) as scope:
            try:
                await _sqs.delete(
                    self.sqs, self.queue_url, lease.receipt_handle, policy=self.policy
                )
            except PipelineError as err:
                log.warning("message delete failed", message_id=lease.message_id, error=str(err))
        if scope.cancelled_caught:
            log.warning("message delete timed out", message_id=lease.message_id)

    async def hand_back(self, leases: Iterable[Lease]) -> None:
        """Make messages visible again after their ``hand_back_delay`` (shielded, bounded)."""
        pending = [lease for lease in leases if not (lease.lost or lease.released)]
        for lease in pending:
            self._leases.discard(lease)
            lease.released = True
        if not pending:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_SECONDS) as scope:
            try:
                failed = await _sqs.change_visibility_batch(
                    self.sqs,
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

    async def dead_letter(
        self, lease: Lease, body: str, reason: str, dead_letter_url: str | None
    ) -> None:
        """End a poison message: copy it to the DLQ and delete it, logged once.

        Without a DLQ the message is parked for the longest visibility SQS
        allows, so the queue's redrive policy (if any) can take it; if the DLQ
        cannot be reached, the message is handed back and tried again later.
        """
        if dead_letter_url is None:
            log.error("poison message; no dead-letter queue, parked", reason=reason)
            lease.hand_back_delay = _sqs.MAX_VISIBILITY
            await self.hand_back([lease])
            return
        try:
            await _sqs.send(self.sqs, dead_letter_url, body, policy=self.policy)
        except PipelineError as err:
            log.error("poison message not moved; handed back", reason=reason, error=str(err))
            await self.hand_back([lease])
            return
        log.error("poison message; moved to the dead-letter queue", reason=reason)
        await self.complete(lease)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Extend leases until cancelled."""
        period = max(self.visibility_timeout / 3, 0.2)
        task_status.started()
        while True:
            await trio.sleep(period)
            await self._extend_due(horizon=self.visibility_timeout / 2)

    async def _extend_due(self, *, horizon: float) -> None:
        now = trio.current_time()
        due = [lease for lease in self._leases if lease.expires_at - now <= horizon]
        if not due:
            return
        try:
            failed = await _sqs.change_visibility_batch(
                self.sqs,
                self.queue_url,
                [(lease.receipt_handle, self.visibility_timeout) for lease in due],
                policy=self.policy,
            )
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

    def _lose(self, lease: Lease) -> None:
        lease.lost = True
        self._leases.discard(lease)
        log.warning("lease lost; cancelling its work", message_id=lease.message_id)
        if lease.scope is not None:
            lease.scope.cancel()
