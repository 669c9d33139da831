"""Small exports under a latency model of real AWS: the service against the plain loop, one run.

Against moto on the same two cores, a plain sequential loop waits on moto's
CPU, not on other machines, so a ratio against it measures moto as much as
the service. Here both also go through a latency model near what a task in
one region sees: a proxy in front of moto (``harness.latency_proxy``, a
process of its own) adds to each call a delay drawn uniformly from 15-30 ms
for S3, 4-10 ms for DynamoDB and 8-16 ms for SQS, and the Export API simulator
waits 40 ms before answering each request. Phases, each on fresh resources of
one moto server:

* **moto direct**: the service (``MAX_CONCURRENT_JOBS=20``) and the plain
  boto3 + ``zipfile`` loop on the same 200 small exports (one ZIP of five
  3 KB entries each), as ``small_exports.py`` runs them;
* **latency model**: the same two, through the model;
* **export latency**: single small exports offered to the service at 10 a
  second through the model, p50 and p95 of the seconds from each message's
  send to its job's final log line.

Printed: the table of issue 22 (exports/s, CPU ms per entry of the service or
loop and of moto, AWS calls per entry and per export, the latencies) and the
AWS calls per entry by operation. With ``BENCH_PROFILE_DIR`` set, py-spy
records the service in each phase (``harness.profile``).

Run::

    python benchmarks/latency.py
    python benchmarks/latency.py --exports 50 --offered 50 --no-direct   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import trio
from harness import EXPORT_API_LATENCY, cpu_seconds, latency_proxy, moto
from small_exports import (
    CONCURRENCY,
    ENTRIES_PER_SMALL_EXPORT,
    ENTRY_BYTES,
    Exports,
    Result,
    _calls_table,
    run_plain_phase,
    run_service_phase,
    small_exports,
)

from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._logging import configure_logging


async def bench(
    args: argparse.Namespace, endpoint: str, proxy: str, moto_pid: int, proxy_pid: int
) -> list[tuple[str, Result]]:
    """Every phase's result, under its row name."""
    small = small_exports(args.exports)
    offered = small_exports(args.offered, seed=23)
    out: list[tuple[str, Result]] = []
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=10) as aws:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)

            async def service(
                key: str, via: str, delay: float, exports: Exports, rate: float | None = None
            ) -> None:
                proxy0 = cpu_seconds(proxy_pid)
                result = await run_service_phase(
                    f"service, {key}", "exports", aws, via, moto_pid, exports, workdir,
                    api_delay=delay, offer_rate=rate,
                )  # fmt: skip
                out.append((key, result))
                _print(result, cpu_seconds(proxy_pid) - proxy0)

            async def plain(key: str, via: str, delay: float) -> None:
                proxy0 = cpu_seconds(proxy_pid)
                result = await run_plain_phase(
                    aws, via, moto_pid, small, workdir, api_delay=delay, label=f"plain, {key}"
                )
                out.append((key, result))
                _print(result, cpu_seconds(proxy_pid) - proxy0)

            if args.direct:
                await service("moto direct", endpoint, 0.0, small)
                await plain("moto direct", endpoint, 0.0)
            await service("latency model", proxy, EXPORT_API_LATENCY, small)
            await plain("latency model", proxy, EXPORT_API_LATENCY)
            if args.offered:
                await service("offered", proxy, EXPORT_API_LATENCY, offered, args.rate)
    return out


def _print(result: Result, proxy_cpu: float) -> None:
    print(f"{result.line()}  proxy {proxy_cpu:5.1f} CPU-s", flush=True)


def table(results: list[tuple[str, Result]], rate: float) -> str:
    """Issue 22's one-run table: service against plain loop, per load."""
    by = {(key, r.label.split(",")[0]): r for key, r in results}
    rows = [f"{'load':<52}{'service':>16}{'plain loop':>16}{'ratio':>8}"]

    def row(name: str, service: str, plain: str, ratio: float | None) -> None:
        cell = f"{ratio:8.2f}" if ratio is not None else ""
        rows.append(f"{name:<52}{service:>16}{plain:>16}{cell}")

    for key in ("moto direct", "latency model"):
        s, p = by.get((key, "service")), by.get((key, "plain"))
        if s is None or p is None:
            continue
        row(f"{key}: exports/s", f"{s.rate:.1f}", f"{p.rate:.1f}", s.rate / p.rate)
        cpu_s, cpu_p = s.per_entry_ms(s.cpu), p.per_entry_ms(p.cpu)
        row(
            f"{key}: CPU ms per entry (moto's)",
            f"{cpu_s:.1f} ({s.per_entry_ms(s.moto_cpu):.1f})",
            f"{cpu_p:.1f} ({p.per_entry_ms(p.moto_cpu):.1f})",
            cpu_s / cpu_p,
        )
        calls_s, calls_p = sum(s.calls.values()), sum(p.calls.values())
        row(
            f"{key}: AWS calls per entry (per export)",
            f"{calls_s / s.entries:.2f} ({calls_s / s.count:.1f})",
            f"{calls_p / p.entries:.2f} ({calls_p / p.count:.1f})",
            None,
        )
        row(
            f"{key}: Export API downloads per export",
            f"{s.downloads / s.count:.2f}",
            f"{p.downloads / p.count:.2f}",
            None,
        )
    offered = by.get(("offered", "service"))
    if offered is not None and offered.latencies:
        quantiles = statistics.quantiles(offered.latencies, n=20)
        row(
            f"export latency at {rate:g}/s offered: p50 / p95 s",
            f"{statistics.median(offered.latencies):.2f} / {quantiles[18]:.2f}",
            "",
            None,
        )
        row("  ... its CPU ms per entry", f"{offered.per_entry_ms(offered.cpu):.1f}", "", None)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--exports", type=int, default=200, help="small exports (default 200)")
    parser.add_argument(
        "--offered", type=int, default=200, help="exports offered one by one (default 200)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="exports offered per second")
    parser.add_argument(
        "--no-direct", dest="direct", action="store_false", help="skip the moto-direct phases"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    print(
        f"{os.cpu_count()} CPUs; {args.exports} exports x 1 ZIP x {ENTRIES_PER_SMALL_EXPORT} "
        f"entries of {ENTRY_BYTES} B; MAX_CONCURRENT_JOBS={CONCURRENCY}; then {args.offered} "
        f"offered at {args.rate:g}/s",
        flush=True,
    )
    with moto() as (endpoint, moto_proc), latency_proxy(endpoint) as (proxy, proxy_proc):
        results = trio.run(bench, args, endpoint, proxy, moto_proc.pid, proxy_proc.pid)
    print()
    print(table(results, args.rate))
    print()
    print(_calls_table([r for _, r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
