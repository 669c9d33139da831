"""How a message ends: one decision from what its stage said and how its work stopped.

A stage does not delete, hand back or dead-letter a message itself; it says
what happened (:class:`Done`, :class:`Poison`, :class:`PassedOn`, or nothing),
and its work stops one way or another (:class:`Stopped`). :func:`decide` turns
the two into the message's :data:`Ending`, which the lease keeper carries out
(``_service/work.py`` runs the work, ``_service/lease.py`` does the I/O):

==============================  ==================  ======================================
what happened                   ending              why
==============================  ==================  ======================================
lease lost                      leave it            someone else holds the message now
passed on (to a file worker)    leave it            the next holder ends it
said done                       delete              the result is recorded (or not wanted)
said poison, DLQ known          dead-letter         it can never be worked; once, logged
said poison, no DLQ             hand back, parked   the queue's redrive policy may take it
stopped (shutdown)              send again, at once a process that is not stopping takes it
failed: a dependency was down   send again, 2-5 s   the intake gate holds it while it lasts
failed: anything else           hand back, growing  30 s, 2 min, 8 min... per delivery
returned without a word         hand back, at once  nobody said it was done, so it is not
==============================  ==================  ======================================

"Send again" is a hand-back as a fresh copy of the message (``HandBack.fresh``):
the same body sent to the same queue with the delay, then the original
deleted. A shutdown or an outage is not the message's fault, but each
delivery it costs counts toward the queue's redrive policy (the template's
``maxReceiveCount`` is 3): a file task caught by a deploy, an S3 outage and a
DynamoDB throttle would go to the dead-letter queue with nothing wrong with
it, as a chaos run found. A fresh copy starts its count again. Failures of
the message's own keep counting, so a message that always fails still ends
in the DLQ. If the copy cannot be sent, the original is handed back instead.

What a stage said stands over how its work stopped: a file whose result is
recorded is deleted even if a cancel arrives after. No hand-back is longer
than what is left of SQS's 12 hours for the message (``time_left``).
"""

from __future__ import annotations

from enum import StrEnum

import attrs

from pipeline._core.backoff import redelivery_delay
from pipeline._errors import (
    AwsUnavailable,
    ExportApiExhausted,
    FilesUnrecorded,
    RetriesExhausted,
)

__all__ = [
    "OUTAGE_HAND_BACK_SECONDS",
    "DeadLetter",
    "Delete",
    "Done",
    "Ending",
    "HandBack",
    "Leave",
    "PassedOn",
    "Poison",
    "Said",
    "Stopped",
    "Why",
    "decide",
    "dependency_down",
    "stopped_by",
]

# Seconds a message handed back after an outage stays invisible, drawn in this
# range so the messages of one outage do not all come back at once. Short,
# since the intake gate, not this delay, keeps them waiting while it lasts.
OUTAGE_HAND_BACK_SECONDS = (2, 5)


# -- what the stage said ------------------------------------------------------


@attrs.frozen
class Done:
    """The work is finished, or is not to be done (its export cancelled)."""


@attrs.frozen
class Poison:
    """The message can never be worked (its body does not decode)."""

    reason: str


@attrs.frozen
class PassedOn:
    """Another holder works on the message now and ends it (a file worker)."""


Said = Done | Poison | PassedOn


# -- how the work stopped -----------------------------------------------------


class Stopped(StrEnum):
    """How a message's work stopped, whatever the stage said."""

    RETURNED = "returned"
    # Cancelled from outside (shutdown), or any BaseException.
    CANCELLED = "cancelled"
    # An error that says a dependency was down, not that the work failed.
    DEPENDENCY_DOWN = "dependency_down"
    FAILED = "failed"


def dependency_down(err: BaseException) -> bool:
    """Whether ``err`` says a dependency was down, not that the message's work failed.

    Files of a message that ended without a result (``FilesUnrecorded``) ended
    so because the jobs table or the API did not answer.
    """
    if isinstance(err, BaseExceptionGroup):
        return all(dependency_down(inner) for inner in err.exceptions)
    if isinstance(err, ExportApiExhausted | AwsUnavailable | FilesUnrecorded):
        return True
    return isinstance(err, RetriesExhausted) and isinstance(err.__cause__, AwsUnavailable)


def stopped_by(error: BaseException | None) -> Stopped:
    """How work that raised ``error`` (None: returned) stopped."""
    if error is None:
        return Stopped.RETURNED
    if not isinstance(error, Exception):
        # Cancelled, or a group holding a Cancelled: the process is stopping.
        return Stopped.CANCELLED
    return Stopped.DEPENDENCY_DOWN if dependency_down(error) else Stopped.FAILED


# -- the ending ---------------------------------------------------------------


class Why(StrEnum):
    """Why a message is handed back; each is logged in its own words."""

    CANCELLED = "cancelled"
    UNSAID = "unsaid"
    DEPENDENCY_DOWN = "dependency_down"
    FAILED = "failed"
    PARKED = "parked"


@attrs.frozen
class Delete:
    """Delete the message: its work is done."""


@attrs.frozen
class DeadLetter:
    """Copy the message to ``queue_url`` with ``reason``, then delete it."""

    reason: str
    queue_url: str


@attrs.frozen
class HandBack:
    """Make the message visible again after ``delay`` seconds."""

    delay: int
    why: Why
    # A poison message's reason, when it is parked.
    reason: str = ""
    # Sent again as a fresh copy (its deliveries counted from one again)
    # rather than made visible again: see the module doc.
    fresh: bool = False


@attrs.frozen
class Leave:
    """Do nothing: the message is not ours to end (lost, or passed on)."""

    why: str


Ending = Delete | DeadLetter | HandBack | Leave


def decide(
    said: Said | None,
    stopped: Stopped,
    *,
    lost: bool,
    receive_count: int,
    time_left: int,
    draw: float,
    dead_letter_url: str | None,
) -> Ending:
    """The ending of a message whose stage ``said`` so and whose work ``stopped`` so.

    ``receive_count`` counts its deliveries, this one included; ``time_left``
    is how long it may still be kept invisible (SQS's 12 hours); ``draw`` is
    uniform in [0, 1), spreading the hand-backs of one outage; see the module
    doc for the table.
    """
    if lost:
        return Leave("lease lost")
    if isinstance(said, PassedOn):
        return Leave("passed on")
    if isinstance(said, Done):
        return Delete()
    left = max(0, time_left)
    if isinstance(said, Poison):
        if dead_letter_url is None:
            return HandBack(left, Why.PARKED, said.reason)
        return DeadLetter(said.reason, dead_letter_url)
    if stopped is Stopped.CANCELLED:
        return HandBack(0, Why.CANCELLED, fresh=True)
    if stopped is Stopped.RETURNED:
        return HandBack(0, Why.UNSAID)
    if stopped is Stopped.DEPENDENCY_DOWN:
        low, high = OUTAGE_HAND_BACK_SECONDS
        delay = min(high, low + int(draw * (high - low + 1)))
        return HandBack(min(delay, left), Why.DEPENDENCY_DOWN, fresh=True)
    return HandBack(min(redelivery_delay(receive_count, draw), left), Why.FAILED)
