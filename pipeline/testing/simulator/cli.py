"""The simulator on its own: ``python -m pipeline.testing.simulator [--demo]``."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from pipeline.testing.demo import build_zip
from pipeline.testing.simulator.app import serve_simulator
from pipeline.testing.simulator.state import Simulator, SimulatorUrls

__all__ = ["main", "seed_demo"]


def seed_demo(sim: Simulator) -> list[str]:
    """Add a few sample exports with small ZIPs; returns their IDs."""
    rows = b"".join(b'{"row": %d, "value": "demo"}\n' % n for n in range(1000))
    sim.add_export(
        "demo-0001",
        [
            (
                "part-0001.zip",
                build_zip([("data/a.jsonl", rows), ("readme.txt", b"demo\n")]),
            ),
            ("part-0002.zip", build_zip([("data/b.jsonl", rows[::-1]), ("data/empty.txt", b"")])),
        ],
        page_size_cap=1,
        empty_pages=True,
    )
    sim.add_export(
        "demo-0002",
        [("part-0001.zip", build_zip([("c.csv", b"id,name\n1,alpha\n2,beta\n")]))],
        pending_polls=2,
        download_host="api",
    )
    sim.add_export("demo-0003", [], status="FAILED")
    return ["demo-0001", "demo-0002", "demo-0003"]


async def _run(args: argparse.Namespace) -> None:
    sim = Simulator(token=args.token)
    demo = seed_demo(sim) if args.demo else []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            urls: SimulatorUrls = await nursery.start(
                functools.partial(
                    serve_simulator,
                    sim,
                    host=args.host,
                    port=args.port,
                    download_host=args.download_host,
                    download_port=args.download_port,
                )
            )
            print(f"EXPORT_API_BASE_URL={urls.api_url}")
            print(f"EXPORT_DOWNLOAD_ALLOWED_HOSTS={urls.download_netloc}")
            if args.token:
                print("EXPORT_API_TOKEN is required (the value given with --token)")
            for export_id in demo:
                print(f"demo export: {export_id}")
            print("Ctrl-C or SIGTERM stops the simulator", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.testing.simulator``: serve until Ctrl-C or SIGTERM; returns 0."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.simulator", description="The Export API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="API host address")
    parser.add_argument("--port", type=int, default=8081, help="API port (0: any free port)")
    parser.add_argument("--download-host", default="127.0.0.2", help="download host address")
    parser.add_argument("--download-port", type=int, default=8082, help="download port (0: any)")
    parser.add_argument("--token", default=None, help="bearer token the API host requires")
    parser.add_argument("--demo", action="store_true", help="seed sample exports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(_run, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
