"""The source stage: SQS long polls that take only what can start now.

A receiver first takes free slots (capacity of the stage it feeds), then asks
SQS for at most that many messages. A message is therefore never received to
wait in a local queue while its visibility clock runs, which is how other
consumers end up delivering long jobs twice. Each message is leased (its
visibility kept extended) from the moment it arrives.

Stopping: the intake cancel scope is cancelled on SIGTERM. A long poll already
sent to SQS is shielded and allowed to finish (at most ``SQS_WAIT_SECONDS``):
cancelling it mid-flight could drop messages SQS had already handed us, leaving
them invisible until their timeout. Whatever such a poll returns, and whatever
was not yet passed on, is handed back at once.
"""

from __future__ import annotations

import attrs
import structlog
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.queues import Queues
from pipeline._adapters.retry import pause
from pipeline._core.backoff import Backoff
from pipeline._errors import PipelineError, TransientError
from pipeline._service.intake import IntakeGate
from pipeline._service.lease import Delivery, LeaseKeeper

__all__ = ["RECEIVE_WAIT_SECONDS", "Slots", "run_receiver"]

log = structlog.get_logger("pipeline.receiver")

# Long-poll length by default (SQS_WAIT_SECONDS). Shorter than SQS's 20 s
# maximum so an idle service stops within a few seconds of SIGTERM; the extra
# empty receives cost little.
RECEIVE_WAIT_SECONDS = 5
# SQS returns at most ten messages per receive.
SQS_MAX_BATCH = 10


@attrs.define(eq=False)
class Slots:
    """Capacity shared by the receivers of one stage: one slot per message in flight."""

    total: int
    _free: int = attrs.field(init=False)
    _lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)

    def __attrs_post_init__(self) -> None:
        if self.total < 1:
            msg = f"Slots needs at least one slot, not {self.total}"
            raise ValueError(msg)
        self._free = self.total

    @property
    def in_use(self) -> int:
        return self.total - self._free

    async def take(self, up_to: int) -> int:
        """Wait for at least one free slot, then take up to ``up_to`` of them."""
        await trio.lowlevel.checkpoint()
        while self._free == 0:
            await self._lot.park()
        taken = min(up_to, self._free)
        self._free -= taken
        return taken

    def give_back(self, count: int = 1) -> None:
        """Return ``count`` slots."""
        self._free += count
        if self._free > self.total:
            msg = "more slots given back than taken"
            raise RuntimeError(msg)
        self._lot.unpark_all()


async def run_receiver(
    send: trio.MemorySendChannel[Delivery],
    *,
    sqs: Queues,
    keeper: LeaseKeeper,
    slots: Slots,
    policy: Backoff,
    wait_seconds: int = RECEIVE_WAIT_SECONDS,
    gate: IntakeGate | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Receive messages from ``keeper.queue_url`` into ``send`` until cancelled.

    Each delivery carries one slot; its consumer gives it back when the
    message's work ends. Before each receive the intake ``gate`` is asked:
    while it is closed, messages are left in SQS.
    """
    async with send:
        task_status.started()
        failures = 0
        while True:
            if gate is not None:
                await gate.wait_open(keeper.queue_name)
            wanted = await slots.take(SQS_MAX_BATCH)
            if gate is not None and gate.closed(keeper.queue_name):
                # Closed while this receiver waited for a slot.
                slots.give_back(wanted)
                continue
            messages: list[_sqs.ReceivedMessage] = []
            error: PipelineError | None = None
            # Shielded, but bounded: a poll in flight is let finish (see above).
            with trio.CancelScope(shield=True) as poll:
                poll.deadline = trio.current_time() + wait_seconds + 10
                try:
                    messages = await sqs.receive(
                        keeper.queue_url,
                        max_messages=wanted,
                        wait_seconds=wait_seconds,
                        policy=policy,
                    )
                except PipelineError as err:
                    error = err
            if error is not None or poll.cancelled_caught:
                # SQS unreachable for a while: the receiver waits and tries
                # again; the service stays up and its work in flight goes on.
                slots.give_back(wanted)
                failures += 1
                retry_after = error.retry_after if isinstance(error, TransientError) else None
                reason = str(error) if error is not None else "receive timed out"
                # The policy's attempts were spent inside receive(); this loop
                # never gives up, so its count only picks the wait's ceiling.
                await pause(
                    policy,
                    min(failures, policy.max_attempts),
                    dependency="sqs",
                    what="sqs receive",
                    error=reason,
                    retry_after=retry_after,
                    failures=failures,
                )
                continue
            failures = 0
            slots.give_back(wanted - len(messages))
            deliveries = [Delivery(message, keeper.hold(message)) for message in messages]
            for sent, delivery in enumerate(deliveries):
                try:
                    await send.send(delivery)
                except trio.Cancelled:
                    rest = deliveries[sent:]
                    slots.give_back(len(rest))
                    await keeper.hand_back(d.lease for d in rest)
                    raise
