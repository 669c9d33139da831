"""The fault table of issue 4: every fault case of the suite, run N times.

Runs each case of ``tests/system/test_faults.py`` (S3, SQS, DynamoDB and Export
API faults, in-process service), the outages past the retries of
``tests/system/test_outages.py`` (redeliveries sped up to a 1 s base, as in the
tests), 30 s outages of S3 (500 on every call), DynamoDB (every call throttled)
and SQS (every connection broken, from the first heartbeat) at the real
redelivery schedule, the duplicate and never-started tasks of ``tests/system/test_duplicates.py``,
the long-file heartbeat case, and the SIGTERM and SIGKILL cases of
``tests/system/test_shutdown.py`` (service subprocesses), a worker started
during a 30 s SQS outage (``tests/system/test_startup.py``), each
``--runs`` times on a fresh stack against one moto server, and prints a
Markdown table: runs, jobs completed, runs exact in every respect (counts,
objects with bytes and sha256, no open upload, message deleted, fault hit as
planned), objects lost, objects or counts doubled.

    python benchmarks/fault_table.py --runs 3
    python benchmarks/fault_table.py --runs 1 --only "S3 "

Takes about (28 x 3 s + 55 s) per run on two cores.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline._core import backoff
from pipeline.testing.moto import moto_server
from tests.system.test_duplicates import (
    test_late_task_for_a_finished_file_changes_nothing,
    test_stop_hands_back_tasks_that_never_started,
)
from tests.system.test_faults import CASES, Case, Outcome, long_file_scenario, run_case
from tests.system.test_outages import LONG_OUTAGES, OUTAGES
from tests.system.test_shutdown import sigkill_scenario, sigterm_scenario
from tests.system.test_startup import worker_started_during_outage

# A scenario gives the run's outcome to check, or None when it asserted
# everything itself (a failed assertion is reported as the run's failure).
Scenario = Callable[[str], Awaitable[Outcome | None]]


@attrs.define
class Row:
    """The tally of one fault over its runs."""

    name: str
    runs: int = 0
    completed: int = 0
    exact: int = 0
    lost: int = 0
    doubled: int = 0
    failures: list[str] = attrs.field(factory=list)

    def add(self, outcome: Outcome | None, failure: str | None) -> None:
        self.runs += 1
        if failure is not None:
            self.failures.append(failure)
        if outcome is None:
            # A self-checking scenario: passing is exact and its job completed.
            self.completed += failure is None
            self.exact += failure is None
            return
        self.completed += outcome.completed
        self.lost += outcome.lost
        self.doubled += outcome.doubled
        try:
            outcome.check()
        except AssertionError as err:
            self.failures.append(f"not exact: {err}".splitlines()[0])
        else:
            self.exact += failure is None


def _of_case(case: Case) -> Scenario:
    async def scenario(endpoint: str) -> Outcome:
        return await run_case(endpoint, case)

    return scenario


def _of_outage(case: Case) -> Scenario:
    async def scenario(endpoint: str) -> Outcome:
        saved = backoff.REDELIVERY_BASE_SECONDS
        backoff.REDELIVERY_BASE_SECONDS = 1
        try:
            return await run_case(endpoint, case)
        finally:
            backoff.REDELIVERY_BASE_SECONDS = saved

    return scenario


def _checked(test: Callable[[str], Awaitable[None]]) -> Scenario:
    async def scenario(endpoint: str) -> None:
        await test(endpoint)

    return scenario


def scenarios() -> list[tuple[str, Scenario]]:
    found: list[tuple[str, Scenario]] = [(case.name, _of_case(case)) for case in CASES]
    found += [(case.name, _of_outage(case)) for case in OUTAGES]
    # At the real redelivery schedule: what an operator's 30 s outage costs.
    found += [(case.name, _of_case(case)) for case in LONG_OUTAGES]
    found += [
        (
            "Duplicate task after COMPLETED, its URL now 403",
            _checked(test_late_task_for_a_finished_file_changes_nothing),
        ),
        (
            "SIGTERM with a download task waiting for a busy worker",
            _checked(test_stop_hands_back_tasks_that_never_started),
        ),
        ("File taking 4x the visibility timeout (heartbeats)", long_file_scenario),
        ("SIGTERM mid-file (grace 5 s), then restart", sigterm_scenario),
        ("SIGKILL mid-file, then restart", sigkill_scenario),
        (
            "Worker started during a 30 s SQS outage (connections broken)",
            functools.partial(worker_started_during_outage, seconds=30),
        ),
    ]
    return found


async def run_all(endpoint: str, chosen: list[tuple[str, Scenario]], runs: int) -> list[Row]:
    rows = []
    for name, scenario in chosen:
        row = Row(name)
        for _ in range(runs):
            started = time.monotonic()
            outcome: Outcome | None = None
            failure: str | None = None
            try:
                outcome = await scenario(endpoint)
            except Exception as err:  # one run's failure is a row, not the end of the table
                failure = f"{type(err).__name__}: {err}".splitlines()[0]
            row.add(outcome, failure)
            print(
                f"  {name}: {'ok' if failure is None else failure} "
                f"({time.monotonic() - started:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| fault injected | runs | jobs completed | exact | objects lost | "
        "objects or counts doubled |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.runs} | {row.completed} | {row.exact} | {row.lost} | "
            f"{row.doubled} |"
        )
    total = Row(
        "**all**",
        runs=sum(r.runs for r in rows),
        completed=sum(r.completed for r in rows),
        exact=sum(r.exact for r in rows),
        lost=sum(r.lost for r in rows),
        doubled=sum(r.doubled for r in rows),
    )
    lines.append(
        f"| {total.name} | {total.runs} | {total.completed} | {total.exact} | {total.lost} | "
        f"{total.doubled} |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per fault (default 3)")
    parser.add_argument("--only", default="", help="only faults whose name contains this")
    args = parser.parse_args()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    # The in-process service's logs would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    chosen = [(n, s) for n, s in scenarios() if args.only in n]
    started = time.monotonic()
    with moto_server() as endpoint:
        rows = trio.run(run_all, endpoint, chosen, args.runs)
    print(table(rows))
    for row in rows:
        for failure in row.failures:
            print(f"- {row.name}: {failure}")
    print(f"\n{sum(r.runs for r in rows)} runs in {time.monotonic() - started:.0f} s")
    return 0 if all(r.exact == r.runs for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
