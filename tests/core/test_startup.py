"""Start-up's wait: delays between rounds and when a line is due."""

from __future__ import annotations

from pipeline._core.startup import START_POLICY, Standing, StartupWatch

UP = Standing.ANSWERS
DOWN = Standing.NOT_ANSWERING


class TestDelay:
    def test_delay_grows_to_the_cap_and_stays(self) -> None:
        """The ceiling doubles per round from the base up to the cap, then holds."""
        watch = StartupWatch()
        ceilings = []
        for _ in range(8):
            watch.record({"sqs": DOWN})
            ceilings.append(watch.delay(0.999999))
        assert ceilings[0] < ceilings[1] < ceilings[2]
        assert max(ceilings) <= START_POLICY.cap
        assert ceilings[-1] == ceilings[-2]

    def test_no_limit_on_rounds(self) -> None:
        """A day of rounds still gives a capped delay (no attempt limit, no overflow)."""
        watch = StartupWatch()
        for _ in range(50_000):
            watch.record({"sqs": DOWN})
        assert 0 < watch.delay(0.5) <= START_POLICY.cap

    def test_full_jitter(self) -> None:
        """The delay is the draw times the ceiling."""
        watch = StartupWatch()
        for _ in range(10):
            watch.record({"sqs": DOWN})
        assert watch.delay(0.0) == 0.0
        assert watch.delay(0.5) == START_POLICY.cap / 2


class TestWhenToSay:
    def test_first_round_is_news(self) -> None:
        """The first round is always a change; the same answers again are not."""
        watch = StartupWatch()
        assert watch.record({"sqs": DOWN, "s3": UP})
        assert not watch.record({"sqs": DOWN, "s3": UP})
        assert not watch.record({"sqs": DOWN, "s3": UP})

    def test_a_change_of_any_dependency_is_news(self) -> None:
        """A dependency going up, down or refusing is said once."""
        watch = StartupWatch()
        watch.record({"sqs": DOWN, "s3": DOWN})
        assert watch.record({"sqs": DOWN, "s3": UP})
        assert watch.record({"sqs": Standing.REFUSES, "s3": UP})
        assert not watch.record({"sqs": Standing.REFUSES, "s3": UP})

    def test_all_answer(self) -> None:
        """Start-up may begin only when the last round found every dependency answering."""
        watch = StartupWatch()
        assert not watch.all_answer
        watch.record({"sqs": DOWN, "s3": UP})
        assert not watch.all_answer
        assert watch.record({"sqs": UP, "s3": UP})
        assert watch.all_answer
