"""Dead letters (contract 8): look without consuming, redrive once, delete one.

Shared by the HTTP calls (``/dlq/{queue}``) and the command line
(``python -m pipeline dlq|redrive``). A queue is named by its role
(``export-jobs``, ``download-tasks``); its dead-letter queue is read from the
queue's redrive policy.

SQS has no way to read a message without receiving it, so *looking* receives
with a short visibility timeout and sets it back to 0 at once (shielded):
the messages are visible again within seconds, even if the looker dies.

*Redrive* must end, and must not feed the service a body it refuses: a
poison body moved back is dead-lettered again by the service, under a new
message ID, and a naive redrive chases it for ever. So one call moves a
message only when the service's own decoder for that queue accepts its body,
moves each body at most once (a copy dead-lettered again meanwhile stays),
and ends when the dead-letter queue is empty, the limit is reached, or a
message it already looked at comes round again. Messages it keeps stay
invisible during the call (so it does not see them again) and are handed
back at the end. A message is sent to its queue before it is deleted from the
dead-letter queue: a crash in between duplicates it (which the service
absorbs) and never loses it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import datetime

import attrs
import trio

from pipeline._adapters.aws import sqs
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._core.messages import decode_download_task, decode_export_job
from pipeline._errors import PipelineError, PoisonMessage

__all__ = [
    "DECODERS",
    "DeadLetter",
    "NoDeadLetterQueue",
    "Redriven",
    "delete_dead_letter",
    "find_dead_letters",
    "look",
    "redrive",
]

# How the service decodes each queue's bodies: what a redrive must pass.
DECODERS: dict[str, Callable[[str], object]] = {
    "export-jobs": decode_export_job,
    "download-tasks": decode_download_task,
}
# Messages a look shows: one receive's worth.
LOOK_MAX = 10
# A look holds messages this long at most if it could not hand them back.
LOOK_HOLD_SECONDS = 5
# A search for one message to delete holds what it passes over this long:
# long enough to walk a large queue, handed back at its end anyway.
SEARCH_HOLD_SECONDS = 30
# A redrive holds what it keeps for its whole call; a longer call sees a kept
# message again, which ends it.
REDRIVE_HOLD_SECONDS = 120
# Handing back is cleanup: shielded, with a short deadline of its own.
_RELEASE_SECONDS = 5.0


class NoDeadLetterQueue(LookupError):
    """The queue has no redrive policy, so no dead-letter queue."""


@attrs.frozen
class DeadLetter:
    """One message in a dead-letter queue, as a look shows it."""

    message_id: str
    sent_at: datetime | None
    # Deliveries before this look (a look is a receive too).
    receive_count: int
    body: str
    # Why the service dead-lettered it, when it did so itself.
    reason: str | None

    @classmethod
    def of(cls, message: sqs.ReceivedMessage) -> DeadLetter:
        return cls(
            message_id=message.message_id,
            sent_at=message.sent_at,
            receive_count=max(message.receive_count - 1, 0),
            body=message.body,
            reason=message.attributes.get(sqs.REASON_ATTRIBUTE),
        )


@attrs.frozen
class Redriven:
    """What one redrive did: per message, moved or kept and why."""

    dead_letter_url: str
    moved: list[DeadLetter]
    # (message, why it stays)
    kept: list[tuple[DeadLetter, str]]


async def find_dead_letters(client: SqsClient, queue_url: str) -> str:
    """The URL of ``queue_url``'s dead-letter queue; :class:`NoDeadLetterQueue` if none."""
    found = await sqs.dead_letter_queue_url(client, queue_url)
    if found is None:
        msg = f"{queue_url} has no dead-letter queue (no RedrivePolicy)"
        raise NoDeadLetterQueue(msg)
    return found


async def _release(client: SqsClient, url: str, held: list[sqs.ReceivedMessage]) -> None:
    """Make ``held`` visible again at once (shielded, bounded; their hold ends anyway)."""
    if not held:
        return
    # A failure leaves each to be visible again when its short hold runs out.
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(_RELEASE_SECONDS),
        contextlib.suppress(PipelineError),
    ):
        await sqs.change_visibility_batch(
            client, url, [(message.receipt_handle, 0) for message in held]
        )


async def _receive(client: SqsClient, url: str, hold: int) -> list[sqs.ReceivedMessage]:
    return await sqs.receive(
        client,
        url,
        max_messages=sqs.MAX_BATCH,
        wait_seconds=1,
        visibility_timeout=hold,
        with_attributes=True,
    )


async def look(client: SqsClient, queue_url: str, *, limit: int = LOOK_MAX) -> list[DeadLetter]:
    """Up to ``limit`` messages of the dead-letter queue, left in it (visible within seconds)."""
    url = await find_dead_letters(client, queue_url)
    held: list[sqs.ReceivedMessage] = []
    try:
        while len(held) < limit:
            batch = await _receive(client, url, LOOK_HOLD_SECONDS)
            known = {message.message_id for message in held}
            fresh = [message for message in batch if message.message_id not in known]
            held.extend(batch)
            if not fresh:
                break
    finally:
        await _release(client, url, held)
    shown: dict[str, DeadLetter] = {}
    for message in held:
        shown.setdefault(message.message_id, DeadLetter.of(message))
    return list(shown.values())[:limit]


async def delete_dead_letter(client: SqsClient, queue_url: str, message_id: str) -> bool:
    """Delete the message ``message_id`` from the dead-letter queue; False when not found.

    Looks through the queue (as :func:`look` does) until it finds the message,
    the queue is empty, or a message comes round again; deletes it by the
    receipt handle of that look.
    """
    url = await find_dead_letters(client, queue_url)
    held: list[sqs.ReceivedMessage] = []
    seen: set[str] = set()
    try:
        while batch := await _receive(client, url, SEARCH_HOLD_SECONDS):
            held.extend(batch)
            for message in batch:
                if message.message_id == message_id:
                    held.remove(message)
                    await sqs.delete(client, url, message.receipt_handle)
                    return True
            if seen.intersection(message.message_id for message in batch):
                break
            seen.update(message.message_id for message in batch)
    finally:
        await _release(client, url, held)
    return False


def _refusal(decode: Callable[[str], object], body: str) -> str | None:
    try:
        decode(body)
    except PoisonMessage as err:
        return str(err)
    return None


async def redrive(
    client: SqsClient,
    queue: str,
    queue_url: str,
    *,
    limit: int | None = None,
    dry_run: bool = False,
) -> Redriven:
    """Move the dead letters the service would accept back to ``queue_url``, each once.

    ``queue`` is the role (a key of :data:`DECODERS`), which chooses the
    decoder. ``limit`` is the most messages moved; those beyond it are left
    as they were and not counted. ``dry_run`` moves nothing and reports what
    would move. Raises :class:`NoDeadLetterQueue` when the queue has none.
    """
    decode = DECODERS[queue]
    url = await find_dead_letters(client, queue_url)
    moved: list[DeadLetter] = []
    kept: list[tuple[DeadLetter, str]] = []
    moved_bodies: set[bytes] = set()
    held: list[sqs.ReceivedMessage] = []
    seen: set[str] = set()
    try:
        while limit is None or len(moved) < limit:
            batch = await _receive(client, url, REDRIVE_HOLD_SECONDS)
            if not batch:
                break
            again = False
            going: list[sqs.ReceivedMessage] = []
            for message in batch:
                if message.message_id in seen:
                    again = True
                    held.append(message)
                    continue
                seen.add(message.message_id)
                digest = hashlib.sha256(message.body.encode()).digest()
                if limit is not None and len(moved) + len(going) >= limit:
                    held.append(message)
                    continue
                why = (
                    "the same body was moved back earlier in this redrive"
                    if digest in moved_bodies
                    else _refusal(decode, message.body)
                )
                if why is not None:
                    kept.append((DeadLetter.of(message), why))
                    held.append(message)
                    continue
                moved_bodies.add(digest)
                going.append(message)
            if dry_run:
                held.extend(going)
            elif going:
                # Handed back at the end if the move fails half-way.
                held.extend(going)
                await sqs.send_batch(client, queue_url, [message.body for message in going])
                for message in going:
                    await sqs.delete(client, url, message.receipt_handle)
                    held.remove(message)
            moved.extend(DeadLetter.of(message) for message in going)
            if again:
                break
    finally:
        await _release(client, url, held)
    return Redriven(dead_letter_url=url, moved=moved, kept=kept)
