"""Slots: receivers take capacity before they receive."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pipeline._receiver import Slots


class TestSlots:
    async def test_takes_up_to_what_is_free(self) -> None:
        """A take gets at most what is free, and at most what was asked."""
        slots = Slots(5)
        assert await slots.take(3) == 3
        assert await slots.take(10) == 2
        assert slots.in_use == 5

    async def test_waits_for_a_free_slot(self) -> None:
        """With no free slot a take waits until one is given back."""
        slots = Slots(1)
        assert await slots.take(10) == 1
        got: list[int] = []

        async def taker() -> None:
            got.append(await slots.take(10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(taker)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            slots.give_back()
        assert got == [1]

    async def test_take_is_a_checkpoint(self) -> None:
        """Taking a free slot still yields to the scheduler (a cancellable checkpoint)."""
        slots = Slots(2)
        with trio.testing.assert_checkpoints():
            await slots.take(1)

    def test_over_return_is_a_bug(self) -> None:
        """Giving back more than was taken raises."""
        slots = Slots(1)
        with pytest.raises(RuntimeError):
            slots.give_back()

    def test_needs_a_slot(self) -> None:
        """A stage with no capacity is refused up front."""
        with pytest.raises(ValueError, match="at least one slot"):
            Slots(0)
