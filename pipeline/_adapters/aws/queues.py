"""The seam between SQS and the service's lease keepers, receivers and sweeper.

What they need of SQS is six calls on a queue URL, no more: receive (a long
poll), delete, delete many, change the visibility of many messages, send, and
send many.
:class:`Queues` names exactly those, as httpx's ``handle_async_request`` names
what a transport must do: :class:`SqsQueues` does them against SQS through
:mod:`pipeline._adapters.aws.sqs` (errors translated there), and a scripted
fake on trio's clock (``tests/support/fakesqs.py``) does them in memory, so
the timing logic of leases, heartbeats and polls is tested in virtual time.

The contract of each call is that of the function of the same name in
:mod:`.sqs`: the same arguments checked the same way, the same errors
(:class:`~pipeline._errors.LeaseLost` for a receipt handle gone, failed
handles returned by :meth:`Queues.change_visibility_batch` and
:meth:`Queues.delete_batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._core.backoff import AWS_POLICY, Backoff

__all__ = ["Queues", "SqsQueues"]


class Queues(Protocol):
    """The SQS calls the lease keepers, receivers and sweeper make."""

    @property
    def policy(self) -> Backoff:
        """The retry policy the service's calls on these queues are given (a call may
        be given another: a cleanup's shorter one)."""
        ...

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_seconds: int, policy: Backoff
    ) -> list[_sqs.ReceivedMessage]:
        """Up to ``max_messages``, waiting at most ``wait_seconds`` for the first."""
        ...

    async def delete(self, queue_url: str, receipt_handle: str, *, policy: Backoff) -> None:
        """Delete a handled message; :class:`~pipeline._errors.LeaseLost` if the handle is gone."""
        ...

    async def delete_batch(
        self, queue_url: str, receipt_handles: Sequence[str], *, policy: Backoff
    ) -> dict[str, str]:
        """Delete handled messages, ten to a call; the handles not deleted, with why."""
        ...

    async def change_visibility_batch(
        self, queue_url: str, entries: Sequence[tuple[str, int]], *, policy: Backoff
    ) -> set[str]:
        """Set ``(receipt_handle, seconds)`` visibilities; the handles whose change failed."""
        ...

    async def send(
        self,
        queue_url: str,
        body: str,
        delay_seconds: int = 0,
        *,
        attributes: dict[str, str] | None = None,
        policy: Backoff,
    ) -> str:
        """Send one message (with string ``attributes`` when given); its message ID."""
        ...

    async def send_batch(
        self, queue_url: str, bodies: Sequence[str | tuple[str, int]], *, policy: Backoff
    ) -> None:
        """Send every body (or ``(body, delay_seconds)`` pair)."""
        ...


@attrs.frozen
class SqsQueues:
    """:class:`Queues` on SQS itself, through one aiobotocore client."""

    client: SqsClient
    policy: Backoff = AWS_POLICY

    async def receive(
        self, queue_url: str, *, max_messages: int, wait_seconds: int, policy: Backoff = AWS_POLICY
    ) -> list[_sqs.ReceivedMessage]:
        return await _sqs.receive(
            self.client,
            queue_url,
            max_messages=max_messages,
            wait_seconds=wait_seconds,
            policy=policy,
        )

    async def delete(
        self, queue_url: str, receipt_handle: str, *, policy: Backoff = AWS_POLICY
    ) -> None:
        await _sqs.delete(self.client, queue_url, receipt_handle, policy=policy)

    async def delete_batch(
        self, queue_url: str, receipt_handles: Sequence[str], *, policy: Backoff = AWS_POLICY
    ) -> dict[str, str]:
        return await _sqs.delete_batch(self.client, queue_url, receipt_handles, policy=policy)

    async def change_visibility_batch(
        self, queue_url: str, entries: Sequence[tuple[str, int]], *, policy: Backoff = AWS_POLICY
    ) -> set[str]:
        return await _sqs.change_visibility_batch(self.client, queue_url, entries, policy=policy)

    async def send(
        self,
        queue_url: str,
        body: str,
        delay_seconds: int = 0,
        *,
        attributes: dict[str, str] | None = None,
        policy: Backoff = AWS_POLICY,
    ) -> str:
        return await _sqs.send(
            self.client, queue_url, body, delay_seconds, attributes=attributes, policy=policy
        )

    async def send_batch(
        self,
        queue_url: str,
        bodies: Sequence[str | tuple[str, int]],
        *,
        policy: Backoff = AWS_POLICY,
    ) -> None:
        await _sqs.send_batch(self.client, queue_url, bodies, policy=policy)
