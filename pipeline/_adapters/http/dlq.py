"""The dead-letter calls of the control API (contract 8), on the service's HTTP port.

- ``GET /dlq/{queue}``: up to ten messages of the queue's dead-letter queue,
  looked at without being consumed;
- ``POST /dlq/{queue}/redrive`` with an optional ``{"limit": N}``: the bodies
  the service would accept go back to the queue, each once; the others stay
  and are counted (``{"moved": n, "kept": k}``);
- ``DELETE /dlq/{queue}/{messageId}``: 204 once that message is deleted.

``queue`` is ``export-jobs`` or ``download-tasks``. All three need the admin
token, the look too: it shows message bodies and touches their visibility.
The rules are :mod:`pipeline._adapters.aws.deadletters`', shared with the
command line. An unknown queue, one this process has no URL for, or one
without a dead-letter queue is 404.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from quart import request
from quart_trio import QuartTrio

from pipeline._adapters.aws import deadletters
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._adapters.aws.deadletters import DeadLetter, NoDeadLetterQueue
from pipeline._adapters.aws.jobitems import format_time
from pipeline._adapters.http.auth import Refusal, refusal

__all__ = ["DeadLetterAccess", "add_dlq_routes", "dead_letter_view"]

Answer = tuple[dict[str, Any], int] | Refusal


@attrs.frozen
class DeadLetterAccess:
    """What the dead-letter routes need: SQS, the queues by role, the admin token."""

    sqs: SqsClient
    queue_urls: dict[str, str]
    admin_token: str | None


def dead_letter_view(message: DeadLetter) -> dict[str, Any]:
    """One message as ``GET /dlq/{queue}`` shows it."""
    return {
        "messageId": message.message_id,
        "sentAt": None if message.sent_at is None else format_time(message.sent_at),
        "receiveCount": message.receive_count,
        "body": message.body,
        "reason": message.reason,
    }


def _limit(raw: str) -> int | None:
    """The redrive's ``limit`` from its body (None: no limit); ValueError with the reason."""
    if not raw.strip():
        return None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as err:
        msg = f"body is not valid JSON ({err})"
        raise ValueError(msg) from None
    if not isinstance(document, dict):
        msg = 'body must be a JSON object like {"limit": 10}'
        raise ValueError(msg)
    limit = document.get("limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        msg = "'limit' must be a whole number of at least 1"
        raise ValueError(msg)
    return limit


def add_dlq_routes(app: QuartTrio, access: DeadLetterAccess) -> None:
    """Serve the dead-letter calls on ``app``."""

    def target(queue: str) -> str | Answer:
        """The queue's URL, or the answer that refuses the call (token, unknown queue)."""
        refused = refusal(access.admin_token)
        if refused is not None:
            return refused
        url = access.queue_urls.get(queue)
        if url is None:
            known = ", ".join(sorted(access.queue_urls))
            return {"error": f"no queue {queue!r} here (queues: {known})"}, 404
        return url

    @app.errorhandler(NoDeadLetterQueue)
    async def no_dead_letter_queue(err: NoDeadLetterQueue) -> Answer:
        return {"error": str(err)}, 404

    @app.get("/dlq/<queue>")
    async def look(queue: str) -> Answer:
        url = target(queue)
        if not isinstance(url, str):
            return url
        messages = await deadletters.look(access.sqs, url)
        return {"messages": [dead_letter_view(message) for message in messages]}, 200

    @app.post("/dlq/<queue>/redrive")
    async def redrive(queue: str) -> Answer:
        url = target(queue)
        if not isinstance(url, str):
            return url
        raw = await request.get_data()
        try:
            limit = _limit(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        except ValueError as err:
            return {"error": str(err)}, 400
        done = await deadletters.redrive(access.sqs, queue, url, limit=limit)
        return {"moved": len(done.moved), "kept": len(done.kept)}, 200

    @app.delete("/dlq/<queue>/<message_id>")
    async def delete(queue: str, message_id: str) -> Answer | tuple[str, int]:
        url = target(queue)
        if not isinstance(url, str):
            return url
        deleted = await deadletters.delete_dead_letter(access.sqs, url, message_id)
        if not deleted:
            return {"error": f"no message {message_id!r} in the dead-letter queue"}, 404
        return "", 204
