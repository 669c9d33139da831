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

Two lanes: where a high queue is configured, its receivers and the normal
queue's share the stage's :class:`Slots`, which hands free slots out as
``_core/lanes.py`` decides (high first, at least one in four to normal, an
idle lane polling with one slot it keeps between empty polls).
"""

from __future__ import annotations

import collections

import attrs
import structlog
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.queues import Queues
from pipeline._adapters.retry import pause
from pipeline._core.backoff import Backoff
from pipeline._core.lanes import LanePolicy, Priority
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
class _Taker:
    """A receiver waiting in :meth:`Slots.take`."""

    lane: Priority
    up_to: int
    granted: int = 0
    given: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class Slots:
    """Capacity shared by the receivers of one stage: one slot per message in flight.

    With a high lane the receivers of both queues share it, and
    :class:`~pipeline._core.lanes.LanePolicy` says whose receiver takes a
    free slot (waiting receivers are served in turn within a lane).
    """

    total: int
    lanes: tuple[Priority, ...] = (Priority.NORMAL,)
    _free: int = attrs.field(init=False)
    _policy: LanePolicy = attrs.field(init=False)
    _waiting: dict[Priority, collections.deque[_Taker]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.total < 1:
            msg = f"Slots needs at least one slot, not {self.total}"
            raise ValueError(msg)
        self._free = self.total
        self._policy = LanePolicy.of(self.lanes, self.total)
        self._waiting = {lane: collections.deque() for lane in self._policy.lanes}

    @property
    def in_use(self) -> int:
        return self.total - self._free

    async def take(self, up_to: int, lane: Priority = Priority.NORMAL) -> int:
        """Wait until ``lane`` may take slots, then take up to ``up_to`` of them.

        The slots are held for a poll: the receiver then calls :meth:`polled`.
        """
        await trio.lowlevel.checkpoint()
        taker = _Taker(lane, up_to)
        self._waiting[lane].append(taker)
        self._hand_out()
        if taker.granted:
            return taker.granted
        try:
            await taker.given.wait()
        except trio.Cancelled:
            if taker.granted:
                self.stopped(lane, taker.granted)
            else:
                self._waiting[lane].remove(taker)
            raise
        return taker.granted

    def polled(self, lane: Priority, held: int, received: int | None) -> int:
        """A poll with ``held`` slots got ``received`` messages (None: it failed).

        Each message keeps its slot; of the others, the lane may keep some for
        its next poll (returned), and the rest are given back.
        """
        kept = self._policy.polled(lane, held, received)
        self.give_back(held - (received or 0) - kept, lane=lane)
        return kept

    def stopped(self, lane: Priority, held: int) -> None:
        """A receiver holding ``held`` slots for a poll ends without polling."""
        self._policy.stopped(lane)
        self.give_back(held, lane=lane)

    def give_back(self, count: int = 1, *, lane: Priority = Priority.NORMAL) -> None:
        """Return ``count`` slots taken by ``lane``'s receivers."""
        if self._free + count > self.total:
            msg = "more slots given back than taken"
            raise RuntimeError(msg)
        self._policy.released(lane, count)
        self._free += count
        self._hand_out()

    def _hand_out(self) -> None:
        while self._free > 0:
            waiting = {lane: queue[0].up_to for lane, queue in self._waiting.items() if queue}
            grant = self._policy.grant(self._free, waiting)
            if grant is None:
                return
            taker = self._waiting[grant.lane].popleft()
            taker.granted = grant.count
            self._free -= grant.count
            taker.given.set()


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
    while it is closed, messages are left in SQS. The keeper's lane is the
    queue's among the receivers sharing ``slots``.
    """
    lane = keeper.lane
    async with send:
        task_status.started()
        failures = 0
        # Slots kept from an empty poll for the next one (an idle lane's poller).
        held = 0
        try:
            while True:
                if held:
                    await trio.lowlevel.checkpoint()
                else:
                    if gate is not None:
                        await gate.wait_open(keeper.queue_name)
                    held = await slots.take(SQS_MAX_BATCH, lane)
                if gate is not None and gate.closed(keeper.queue_name):
                    # Closed while this receiver waited for a slot, or held one.
                    slots.stopped(lane, held)
                    held = 0
                    continue
                messages: list[_sqs.ReceivedMessage] = []
                error: PipelineError | None = None
                # Shielded, but bounded: a poll in flight is let finish (see above).
                with trio.CancelScope(shield=True) as poll:
                    poll.deadline = trio.current_time() + wait_seconds + 10
                    try:
                        messages = await sqs.receive(
                            keeper.queue_url,
                            max_messages=held,
                            wait_seconds=wait_seconds,
                            policy=policy,
                        )
                    except PipelineError as err:
                        error = err
                if error is not None or poll.cancelled_caught:
                    # SQS unreachable for a while: the receiver waits and tries
                    # again; the service stays up and its work in flight goes on.
                    held = slots.polled(lane, held, None)
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
                held = slots.polled(lane, held, len(messages))
                deliveries = [Delivery(message, keeper.hold(message)) for message in messages]
                if deliveries and gate is not None and gate.closed(keeper.queue_name):
                    # Paused (or a dependency failed) while the poll was out: what it
                    # brought goes back to the queue at once, for when intake reopens.
                    slots.give_back(len(deliveries), lane=lane)
                    await keeper.send_again(d.lease for d in deliveries)
                    continue
                for sent, delivery in enumerate(deliveries):
                    try:
                        await send.send(delivery)
                    except trio.Cancelled:
                        rest = deliveries[sent:]
                        slots.give_back(len(rest), lane=lane)
                        await keeper.send_again(d.lease for d in rest)
                        raise
        finally:
            if held:
                slots.stopped(lane, held)
