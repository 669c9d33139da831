"""A retry observer for tests: the hook the service's metrics use, keeping what it hears."""

from __future__ import annotations


class Recorder:
    """An observer that keeps what it hears, as the metrics will count it."""

    def __init__(self) -> None:
        self.retries: list[str] = []
        self.circuits: list[tuple[str, bool]] = []

    def retried(self, dependency: str) -> None:
        self.retries.append(dependency)

    def circuit_changed(self, dependency: str, is_open: bool) -> None:
        self.circuits.append((dependency, is_open))
