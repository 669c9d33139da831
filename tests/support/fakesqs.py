"""A scripted SQS in memory on trio's clock, behind the seam :class:`~.queues.Queues`.

As trio's ``test_highlevel_open_tcp_stream.py`` drives a scripted network
under ``autojump_clock``, this fake lets the lease keeper, the receivers and
the sweeper run against queues whose visibility timeouts, delays and long
polls count trio's virtual seconds: a test of three visibility timeouts takes
milliseconds and fails the same way every time. It keeps what the service
relies on: each receive makes a new receipt handle and invalidates the last,
a visibility change or delete needs the current handle of a message in
flight, no message stays invisible past 12 hours after it was received, a long
poll returns as soon as a message is visible. Faults are scripted per call
(:meth:`FakeSqs.fail`, :meth:`FakeSqs.stall`), and every call is recorded with
its virtual time (:attr:`FakeSqs.calls`). moto stays the SQS of the adapter
and system tests, where the protocol itself is under test.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs
import trio

from pipeline._adapters.aws.queues import Queues
from pipeline._adapters.aws.sqs import MAX_BATCH, MAX_VISIBILITY, ReceivedMessage
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsRejected, LeaseLost, PipelineError

__all__ = ["Call", "FakeMessage", "FakeSqs"]

# Virtual time 0 is this instant, for the timestamps SQS reports.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@attrs.define(eq=False)
class FakeMessage:
    """One message in a fake queue."""

    message_id: str
    body: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    receipt_handle: str | None = None
    received_at: float | None = None
    first_received_at: float | None = None
    # The message's own string attributes (a dead letter's reason).
    attributes: dict[str, str] = attrs.field(factory=dict)

    def in_flight(self, now: float) -> bool:
        return self.receipt_handle is not None and self.visible_at > now


@attrs.frozen
class Call:
    """One call the service made: which, on which queue, at which virtual time."""

    operation: str
    queue_url: str
    at: float


@attrs.define
class _Fault:
    operation: str
    times: int
    error: PipelineError | None = None
    stall_seconds: float = 0.0


@attrs.define(eq=False)
class _FakeQueue:
    visibility_timeout: int
    messages: list[FakeMessage] = attrs.Factory(list)


@attrs.define(eq=False)
class FakeSqs:
    """Queues in memory on trio's clock; see the module doc. Implements :class:`Queues`."""

    # What the service's calls are given (each call here names its own).
    policy: Backoff = attrs.Factory(lambda: Backoff(max_attempts=1))
    calls: list[Call] = attrs.Factory(list)
    _queues: dict[str, _FakeQueue] = attrs.Factory(dict)
    _faults: deque[_Fault] = attrs.Factory(deque)
    _ids: itertools.count[int] = attrs.Factory(itertools.count)
    _changed: trio.Event = attrs.Factory(trio.Event)

    # -- set-up and inspection ------------------------------------------------

    def create_queue(self, name: str, visibility_timeout: int = 30) -> str:
        """A new empty queue; its URL."""
        url = f"https://sqs.fake/000000000000/{name}"
        self._queues[url] = _FakeQueue(visibility_timeout)
        return url

    def fail(self, operation: str, error: PipelineError, *, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` (e.g. ``"receive"``) raise ``error``."""
        self._faults.append(_Fault(operation, times, error=error))

    def stall(self, operation: str, seconds: float, *, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` first hang for ``seconds`` (virtual)."""
        self._faults.append(_Fault(operation, times, stall_seconds=seconds))

    def depth(self, queue_url: str) -> tuple[int, int]:
        """(visible or delayed, in flight) messages, as SQS's approximate counts."""
        now = trio.current_time()
        messages = self._queue(queue_url).messages
        in_flight = sum(message.in_flight(now) for message in messages)
        return len(messages) - in_flight, in_flight

    def messages(self, queue_url: str) -> list[FakeMessage]:
        """Every message the queue holds, in the order sent."""
        return list(self._queue(queue_url).messages)

    def times(self, operation: str) -> list[float]:
        """The virtual times of every call of ``operation``."""
        return [call.at for call in self.calls if call.operation == operation]

    # -- the Queues calls -----------------------------------------------------

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_seconds: int, policy: Backoff
    ) -> list[ReceivedMessage]:
        if not 1 <= max_messages <= MAX_BATCH:
            msg = f"max_messages must be 1..{MAX_BATCH}, not {max_messages}"
            raise ValueError(msg)
        await self._enter("receive", queue_url)
        queue = self._queue(queue_url)
        deadline = trio.current_time() + wait_seconds
        while True:
            now = trio.current_time()
            ready = [m for m in queue.messages if m.visible_at <= now][:max_messages]
            if ready or now >= deadline:
                return [self._deliver(message, queue, now) for message in ready]
            # A long poll: back when a message turns visible, or anything changes.
            upcoming = [m.visible_at for m in queue.messages if m.visible_at > now]
            changed = self._changed
            with trio.move_on_at(min([deadline, *upcoming])):
                await changed.wait()

    async def delete(self, queue_url: str, receipt_handle: str, *, policy: Backoff) -> None:
        await self._enter("delete", queue_url)
        queue = self._queue(queue_url)
        message = self._held(queue, receipt_handle, trio.current_time())
        if message is None:
            msg = "sqs delete: lease lost: ReceiptHandleIsInvalid"
            raise LeaseLost(msg)
        queue.messages.remove(message)
        self._touch()

    async def delete_batch(
        self, queue_url: str, receipt_handles: Sequence[str], *, policy: Backoff
    ) -> dict[str, str]:
        failed: dict[str, str] = {}
        queue = self._queue(queue_url)
        for at in range(0, len(receipt_handles), MAX_BATCH):
            await self._enter("delete_batch", queue_url)
            now = trio.current_time()
            for handle in receipt_handles[at : at + MAX_BATCH]:
                message = self._held(queue, handle, now)
                if message is None:
                    failed[handle] = "ReceiptHandleIsInvalid: the handle is gone"
                else:
                    queue.messages.remove(message)
        self._touch()
        return failed

    async def change_visibility_batch(
        self, queue_url: str, entries: Sequence[tuple[str, int]], *, policy: Backoff
    ) -> set[str]:
        for _, seconds in entries:
            if not 0 <= seconds <= MAX_VISIBILITY:
                msg = f"visibility timeout must be 0..{MAX_VISIBILITY} seconds, not {seconds}"
                raise ValueError(msg)
        failed: set[str] = set()
        queue = self._queue(queue_url)
        for chunk in (entries[at : at + MAX_BATCH] for at in range(0, len(entries), MAX_BATCH)):
            await self._enter("change_visibility_batch", queue_url)
            now = trio.current_time()
            for handle, seconds in chunk:
                message = self._held(queue, handle, now)
                received_at = now if message is None else message.received_at
                assert received_at is not None
                # SQS refuses to keep a message hidden past 12 hours after it was received.
                if message is None or now + seconds - received_at > MAX_VISIBILITY:
                    failed.add(handle)
                else:
                    message.visible_at = now + seconds
        self._touch()
        return failed

    async def send(
        self,
        queue_url: str,
        body: str,
        delay_seconds: int = 0,
        *,
        attributes: dict[str, str] | None = None,
        policy: Backoff,
    ) -> str:
        await self._enter("send", queue_url)
        return self._put(queue_url, body, delay_seconds, attributes)

    async def send_batch(
        self, queue_url: str, bodies: Sequence[str | tuple[str, int]], *, policy: Backoff
    ) -> None:
        await self._enter("send_batch", queue_url)
        for entry in bodies:
            body, delay = (entry, 0) if isinstance(entry, str) else entry
            self._put(queue_url, body, delay)

    # -- machinery ------------------------------------------------------------

    def _queue(self, queue_url: str) -> _FakeQueue:
        queue = self._queues.get(queue_url)
        if queue is None:
            msg = f"sqs: no such queue {queue_url}"
            raise AwsRejected(msg, code="AWS.SimpleQueueService.NonExistentQueue")
        return queue

    async def _enter(self, operation: str, queue_url: str) -> None:
        """Record the call, then play the first scripted fault for it, if any."""
        self.calls.append(Call(operation, queue_url, trio.current_time()))
        await trio.lowlevel.checkpoint()
        fault = next((f for f in self._faults if f.operation == operation), None)
        if fault is None:
            return
        fault.times -= 1
        if fault.times == 0:
            self._faults.remove(fault)
        if fault.stall_seconds:
            await trio.sleep(fault.stall_seconds)
        if fault.error is not None:
            raise fault.error

    def _held(self, queue: _FakeQueue, handle: str, now: float) -> FakeMessage | None:
        for message in queue.messages:
            if message.receipt_handle == handle and message.in_flight(now):
                return message
        return None

    def _deliver(self, message: FakeMessage, queue: _FakeQueue, now: float) -> ReceivedMessage:
        message.receive_count += 1
        message.receipt_handle = f"{message.message_id}#{message.receive_count}"
        message.received_at = now
        if message.first_received_at is None:
            message.first_received_at = now
        message.visible_at = now + queue.visibility_timeout
        return ReceivedMessage(
            message_id=message.message_id,
            receipt_handle=message.receipt_handle,
            body=message.body,
            receive_count=message.receive_count,
            sent_at=EPOCH + timedelta(seconds=message.sent_at),
            first_received_at=EPOCH + timedelta(seconds=message.first_received_at),
            attributes=dict(message.attributes),
        )

    def _put(
        self,
        queue_url: str,
        body: str,
        delay_seconds: int,
        attributes: dict[str, str] | None = None,
    ) -> str:
        if not 0 <= delay_seconds <= 900:
            msg = f"delay_seconds must be 0..900, not {delay_seconds}"
            raise ValueError(msg)
        queue = self._queue(queue_url)
        now = trio.current_time()
        message_id = f"m-{next(self._ids)}"
        message = FakeMessage(message_id, body, now, now + delay_seconds)
        message.attributes.update(attributes or {})
        queue.messages.append(message)
        self._touch()
        return message_id

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _implements_queues(fake: FakeSqs) -> Queues:
    """Checked by mypy: the fake offers exactly the seam the service uses."""
    return fake
