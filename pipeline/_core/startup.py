"""Start-up that waits: how long between looks at the dependencies, and when to say so.

A process that starts while SQS, S3 or DynamoDB does not answer stays up and
looks again (contract 6); it must neither give up after a fixed number of
tries (a crash loop on Fargate in the middle of an incident) nor hammer AWS,
nor write a log line per look. So the looks back off exponentially with full
jitter, with no limit on the total time but a cap on each wait (a dependency
that answers again is noticed within that cap), and a line is due only when
what the process knows changes: which dependency answers, which does not,
which refuses.

Pure: the round number, the answers and the random draw come in as
arguments; :mod:`pipeline._service.startup` does the looking and sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import attrs

from pipeline._core.backoff import Backoff

__all__ = ["START_POLICY", "Standing", "StartupWatch"]

# Ceilings 0.25, 0.5, 1, 2, then 4 s for as long as it takes: a dependency
# that answers again is seen within 4 s (plus one look), well inside the
# 10 s in which work must begin, and a few dozen waiting processes cost AWS
# three cheap calls each every 2 s on average.
START_POLICY = Backoff(max_attempts=1, base=0.25, cap=4.0)
# The ceiling has long reached the cap by then; beyond it 2.0 ** n would
# only grow towards an OverflowError after a day-long outage.
_MAX_EXPONENT_ROUND = 32


class Standing(StrEnum):
    """What one look at a dependency found."""

    ANSWERS = "answers"
    # Throttled, 5xx, connection trouble, no answer in time: wait.
    NOT_ANSWERING = "not answering"
    # AWS answered no (access denied, no such queue, bucket or table): wait
    # too, since a deployment may still be creating it or granting access,
    # but an operator must look.
    REFUSES = "refuses"


@attrs.define
class StartupWatch:
    """What start-up knows of each dependency, round after round."""

    policy: Backoff = START_POLICY
    rounds: int = 0
    _last: dict[str, Standing] = attrs.field(init=False, factory=dict)

    def record(self, standings: Mapping[str, Standing]) -> bool:
        """Record one round of looks; whether it changed what is known (then say so)."""
        self.rounds += 1
        changed = dict(standings) != self._last
        self._last = dict(standings)
        return changed

    @property
    def all_answer(self) -> bool:
        """Whether the last round found every dependency answering."""
        return bool(self._last) and all(s is Standing.ANSWERS for s in self._last.values())

    def delay(self, draw: float) -> float:
        """Seconds to wait before the next round; ``draw`` is uniform in [0, 1)."""
        return self.policy.delay(min(max(self.rounds, 1), _MAX_EXPONENT_ROUND), None, draw)
