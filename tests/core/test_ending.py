"""How a message ends, decided from what its stage said and how its work stopped (ending.py)."""

from __future__ import annotations

import pytest

from pipeline._core.backoff import redelivery_delay
from pipeline._core.ending import (
    OUTAGE_HAND_BACK_SECONDS,
    DeadLetter,
    Delete,
    Done,
    Ending,
    HandBack,
    Leave,
    PassedOn,
    Poison,
    Said,
    Stopped,
    Why,
    decide,
    dependency_down,
    stopped_by,
)
from pipeline._errors import (
    AwsRejected,
    AwsUnavailable,
    ExportApiExhausted,
    Fault,
    FilesUnrecorded,
    RetriesExhausted,
    ZipCorrupt,
)

DLQ = "https://sqs.example/dlq"
HOURS_12 = 12 * 3600


def ending(
    said: Said | None,
    stopped: Stopped,
    *,
    lost: bool = False,
    receive_count: int = 1,
    time_left: int = HOURS_12,
    draw: float = 0.5,
    dead_letter_url: str | None = DLQ,
) -> Ending:
    return decide(
        said,
        stopped,
        lost=lost,
        receive_count=receive_count,
        time_left=time_left,
        draw=draw,
        dead_letter_url=dead_letter_url,
    )


class TestWhatTheStageSaid:
    @pytest.mark.parametrize("stopped", list(Stopped))
    def test_done_deletes_however_the_work_stopped(self, stopped: Stopped) -> None:
        """A message said done is deleted, even if a cancel or an error came after."""
        assert ending(Done(), stopped) == Delete()

    def test_poison_goes_to_the_dead_letter_queue(self) -> None:
        """A poison message is dead-lettered with its reason to the queue given."""
        assert ending(Poison("not JSON"), Stopped.RETURNED) == DeadLetter("not JSON", DLQ)

    def test_poison_without_a_dlq_is_parked_as_long_as_sqs_allows(self) -> None:
        """With no DLQ a poison message is handed back for all of its time left."""
        parked = ending(Poison("not JSON"), Stopped.RETURNED, time_left=700, dead_letter_url=None)
        assert parked == HandBack(700, Why.PARKED, "not JSON")

    @pytest.mark.parametrize("stopped", list(Stopped))
    def test_passed_on_is_left_to_the_next_holder(self, stopped: Stopped) -> None:
        """A message passed on to a file worker is neither deleted nor handed back here."""
        assert isinstance(ending(PassedOn(), stopped), Leave)


class TestHowTheWorkStopped:
    @pytest.mark.parametrize("said", [None, Done(), Poison("bad"), PassedOn()])
    def test_a_lost_lease_is_left_alone(self, said: Said | None) -> None:
        """Whatever was said, a message whose lease is lost is someone else's."""
        assert ending(said, Stopped.FAILED, lost=True) == Leave("lease lost")

    def test_cancelled_work_is_sent_again_at_once(self) -> None:
        """Work cancelled by a shutdown hands its message back at once, as a fresh copy."""
        assert ending(None, Stopped.CANCELLED, receive_count=4) == HandBack(
            0, Why.CANCELLED, fresh=True
        )

    @pytest.mark.parametrize(
        ("stopped", "fresh"),
        [
            (Stopped.CANCELLED, True),
            (Stopped.DEPENDENCY_DOWN, True),
            (Stopped.FAILED, False),
            (Stopped.RETURNED, False),
        ],
    )
    def test_only_what_is_not_the_messages_fault_starts_its_count_again(
        self, stopped: Stopped, fresh: bool
    ) -> None:
        """A shutdown or an outage sends a fresh copy; a failure of its own keeps counting."""
        decided = ending(None, stopped, receive_count=3)
        assert isinstance(decided, HandBack)
        assert decided.fresh is fresh

    def test_work_that_returned_unsaid_is_handed_back_at_once(self) -> None:
        """Nobody said the work was done, so it is not: handed back visible at once."""
        assert ending(None, Stopped.RETURNED) == HandBack(0, Why.UNSAID)

    @pytest.mark.parametrize("draw", [0.0, 0.3, 0.6, 0.999999])
    def test_an_outage_hands_back_within_seconds(self, draw: float) -> None:
        """A dependency down hands the message back in 2-5 s, spread by the draw."""
        decided = ending(None, Stopped.DEPENDENCY_DOWN, receive_count=9, draw=draw)
        assert isinstance(decided, HandBack)
        assert decided.why is Why.DEPENDENCY_DOWN
        low, high = OUTAGE_HAND_BACK_SECONDS
        assert low <= decided.delay <= high

    def test_outage_delays_cover_the_range(self) -> None:
        """Draws across [0, 1) reach both ends of the outage range."""
        delays = set()
        for n in range(100):
            decided = ending(None, Stopped.DEPENDENCY_DOWN, draw=n / 100)
            assert isinstance(decided, HandBack)
            delays.add(decided.delay)
        assert delays == set(range(OUTAGE_HAND_BACK_SECONDS[0], OUTAGE_HAND_BACK_SECONDS[1] + 1))

    @pytest.mark.parametrize("deliveries", [1, 2, 3, 6])
    def test_a_failure_hands_back_with_a_delay_growing_per_delivery(self, deliveries: int) -> None:
        """A failure of the work's own waits redelivery_delay for its delivery count."""
        decided = ending(None, Stopped.FAILED, receive_count=deliveries, draw=0.25)
        assert decided == HandBack(redelivery_delay(deliveries, 0.25), Why.FAILED)

    @pytest.mark.parametrize("stopped", [Stopped.FAILED, Stopped.DEPENDENCY_DOWN])
    def test_no_hand_back_outlasts_the_twelve_hours(self, stopped: Stopped) -> None:
        """Near SQS's limit the delay shrinks to what is left, never below 0."""
        near = ending(None, stopped, receive_count=6, time_left=1)
        gone = ending(None, stopped, receive_count=6, time_left=-30)
        assert isinstance(near, HandBack)
        assert isinstance(gone, HandBack)
        assert (near.delay, gone.delay) == (1, 0)


class TestStoppedBy:
    def test_returned(self) -> None:
        """No error: the work returned."""
        assert stopped_by(None) is Stopped.RETURNED

    def test_cancelled(self) -> None:
        """A BaseException (trio's Cancelled is one), or a group holding one, is a stop
        from outside."""
        stop = KeyboardInterrupt()
        assert stopped_by(stop) is Stopped.CANCELLED
        group = BaseExceptionGroup("work", [stop, ZipCorrupt("bad")])
        assert stopped_by(group) is Stopped.CANCELLED

    @pytest.mark.parametrize(
        "error",
        [
            AwsUnavailable("dynamodb unreachable"),
            ExportApiExhausted("the Export API did not answer"),
            FilesUnrecorded("2 file(s) ended without a recorded result"),
            ExceptionGroup("exports", [AwsUnavailable("s3"), ExportApiExhausted("api")]),
        ],
    )
    def test_a_dependency_down(self, error: Exception) -> None:
        """Errors that say a dependency did not answer are an outage, not a failure."""
        assert dependency_down(error)
        assert stopped_by(error) is Stopped.DEPENDENCY_DOWN

    def test_retries_spent_on_an_unavailable_dependency_are_an_outage(self) -> None:
        """RetriesExhausted caused by AwsUnavailable is an outage; by anything else, a failure."""
        spent = RetriesExhausted("s3 put: attempts spent", fault=Fault.INFRASTRUCTURE)
        spent.__cause__ = AwsUnavailable("s3 unreachable")
        assert stopped_by(spent) is Stopped.DEPENDENCY_DOWN
        other = RetriesExhausted("s3 put: attempts spent", fault=Fault.INFRASTRUCTURE)
        other.__cause__ = AwsRejected("AccessDenied")
        assert stopped_by(other) is Stopped.FAILED

    @pytest.mark.parametrize(
        "error",
        [
            ValueError("a bug"),
            AwsRejected("AccessDenied"),
            ExceptionGroup("exports", [AwsUnavailable("s3"), ValueError("a bug")]),
        ],
    )
    def test_anything_else_is_a_failure(self, error: Exception) -> None:
        """Other errors, or a group with any of them, are the work's own failure."""
        assert stopped_by(error) is Stopped.FAILED
