"""Command line: ``python -m pipeline [--mode all|orchestrator|worker] [--local]``.

``python -m pipeline redrive QUEUE [--dry-run]`` moves dead letters back
(:mod:`pipeline.ops.redrive`), ``dlq QUEUE [--delete ID]`` shows them or
deletes one (:mod:`pipeline.ops.dlq`); ``submit EXPORT_ID... [--wait]``, ``status``,
``cancel`` and ``retry`` control jobs (:mod:`pipeline.ops.jobs`); ``jobs
[--status S]``, ``files EXPORT_ID``, ``pause QUEUE`` and ``resume QUEUE`` are
the console's views and switches (:mod:`pipeline.ops.console`).

Without ``--mode`` the mode comes from ``SERVICE_MODE`` (``all`` when neither
is given), so one image serves every service by configuration alone.

Without ``--local`` the service reads its settings from the environment
(contract 5) and runs until SIGTERM or SIGINT. A bad setting prints one line
naming the variable and exits with status 2.

With ``--local`` it runs the embedded default instead: a moto server and the
Export API simulator on loopback, a sample export set, one run to completion
and a summary (see ``pipeline/testing/local.py``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# Only the standard library above: the service takes over SIGTERM before it
# imports the rest (trio, structlog, attrs: a few hundred ms under load), so a
# stop sent right after start ends it with status 0, not by the signal.
if TYPE_CHECKING:
    from pipeline._config import Mode, Settings

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    from pipeline._config import Mode

    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Export jobs to verified files in S3.",
        epilog="Operator commands: python -m pipeline submit|status|cancel|retry ... "
        "(a job), jobs|files|pause|resume ... (the console), dlq|redrive ... (dead letters); "
        "each has its own --help.",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        default=None,
        help="all: both roles in one process; orchestrator: export jobs to download tasks; "
        "worker: download tasks to S3 (default: $SERVICE_MODE, else all)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="run the embedded demo: local moto server and Export API simulator, "
        "a sample export set, one run to completion and a summary",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["redrive"]:
        from pipeline.ops.redrive import main as redrive

        return redrive(arguments[1:])
    if arguments[:1] == ["dlq"]:
        from pipeline.ops.dlq import main as dlq

        return dlq(arguments[1:])
    if arguments[:1] and arguments[0] in ("jobs", "files", "pause", "resume"):
        from pipeline.ops.console import main as console

        return console(arguments)
    if arguments[:1] and arguments[0] in ("submit", "status", "cancel", "retry"):
        from pipeline.ops.jobs import main as control

        return control(arguments)
    # From here on a SIGTERM is not the default action (death by signal, not
    # exit 0), however early: the service's own imports take a second or more.
    _remember_early_signals()
    return _serve(_parser().parse_args(arguments))


def _serve(args: argparse.Namespace) -> int:
    """The service (``--mode``) or the embedded demo (``--local``), as the arguments say."""
    import structlog
    import trio

    from pipeline._config import ConfigError, load_settings, resolve_mode
    from pipeline._errors import describe
    from pipeline._logging import configure_logging

    try:
        mode = resolve_mode(args.mode, os.environ)
    except ConfigError as err:
        print(f"pipeline: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.local:
        from pipeline.testing.local import run_local

        return run_local(mode)
    try:
        settings = load_settings(os.environ, mode)
    except ConfigError as err:
        print(f"pipeline: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, log_format=settings.log_format)
    try:
        trio.run(serve_until_signalled, settings, mode)
    except Exception as err:
        # A bug escaped every stage (start-up waits for AWS instead of failing):
        # one line (with the traceback at debug level), never a raw exception group.
        structlog.get_logger("pipeline").critical(
            "service stopped by an error",
            error=describe(err),
            exc_info=settings.log_level == "debug",
        )
        return EXIT_FAILURE
    return 0


# Signals that arrived before Trio's receiver took them over.
_EARLY_SIGNALS: list[int] = []


def _remember_early_signals() -> None:
    def remember(signum: int, _frame: object) -> None:
        _EARLY_SIGNALS.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, remember)


async def serve_until_signalled(settings: Settings, mode: Mode) -> None:
    """Run the service until SIGTERM or SIGINT, then wind it down gracefully.

    A signal that came during start-up (before Trio listened) stops it at
    once: it ends without taking work, status 0.
    """
    import structlog
    import trio

    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        from pipeline._service.graph import run_service

        if _EARLY_SIGNALS:
            stop.set()
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    if not stop.is_set():
                        stop.set()
                        continue
                    # A second signal: someone wants it gone now. Work is cancelled
                    # at once; its shielded cleanup (abort, hand back) still runs,
                    # each step within its own short deadline.
                    structlog.get_logger("pipeline").warning("second signal: stopping now")
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await run_service(settings, mode, stop, settle=True)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
