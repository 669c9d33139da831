"""Settling memory at start-up: what exists is frozen out of the collector, freed pages go back."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from pipeline import _memory


@pytest.fixture
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("_unfrozen")
def test_settle_freezes_what_exists() -> None:
    """After settle() the objects alive at that point are in the permanent generation."""
    kept = [object() for _ in range(100)]
    gc.unfreeze()
    _memory.settle()
    assert gc.get_freeze_count() >= len(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_found_on_linux() -> None:
    """On Linux (glibc, as in the image) the heap is trimmed, not silently skipped."""
    assert _memory._malloc_trim() is True
