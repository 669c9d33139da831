"""Chaos: four processes on the same queues under seeded faults, kills and duplicates; an audit.

Why this shape: each fault of the suite is tested alone, on one export, in
one process; production meets them together, while processes die and come
back and messages arrive twice. So this runs what a deployment runs, ``python
-m pipeline`` as an orchestrator, two workers and an ``all``-mode process on
the same queues (moto behind one fault proxy, the Export API simulator), and
for ``--minutes`` lets a seeded schedule loose on them:

* fault windows of 2-15 s: S3 answering 5xx, DynamoDB throttling every call,
  SQS breaking every connection (through the proxy of tests/support);
  Export API 5xx, downloads broken off midway, stalled answers (through the
  simulator's fault options). ``--api-outage`` bounds the Export API 5xx
  windows (``0`` leaves them out): a long one may FAIL jobs until the Export
  API's trouble is handled like our own (issue 23);
* SIGKILLs and SIGTERMs of random processes, each followed by a restart
  (which may land inside a fault window: start-up then waits for AWS);
* duplicated export-job messages;
* many exports of mixed shapes with known outcomes (``chaos_fixtures.py``),
  some of which must end FAILED.

Then the faults stop and the run drains: every export final and every queue
empty. The audit (``chaos_audit.py``) checks it all exactly, and that every
SIGTERM exited 0 within 30 s (Fargate's stop timeout). Printed: the seed, the
actions taken, the audit's figures, RSS per process and the time to drain;
the exit status is 1 on any audit failure. Each process's log is kept in the
run directory, with the timeline of actions. The schedule and the exports
follow from the seed; the interleaving does not, being real time.

    python benchmarks/chaos.py --minutes 6 --seed 1
    python benchmarks/chaos.py --minutes 2 --seed 7 --api-outage 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import attrs
import trio
from chaos_audit import audit, queue_depths
from chaos_fixtures import Fixture, make_fixtures
from harness import TOKEN, bench_env, moto, provision_bench, vm_rss_kb, wait_ready

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.backoff import AWS_POLICY
from pipeline._logging import configure_logging
from pipeline.ops.provisioning import ProvisionedUrls, seed_metadata
from pipeline.testing.moto import free_port
from pipeline.testing.simulator import Simulator, serve_simulator
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy

ROLES = {"orchestrator": "orchestrator", "worker-1": "worker", "worker-2": "worker", "all": "all"}
GRACE_SECONDS = 8
# Fargate's stop timeout: a SIGTERM must end the process well inside it.
SIGTERM_DEADLINE_SECONDS = 30
VISIBILITY_TIMEOUT = 30
# Per 6 minutes, as in issue 23's run.
SIGKILLS_PER_6_MIN = 10
SIGTERMS_PER_6_MIN = 18
DUPLICATES_PER_6_MIN = 12
EXPORTS_PER_MINUTE = 25
AWS_FAULTS = {
    "s3 5xx": ("s3", "status", 503, "SlowDown"),
    "dynamodb throttling": ("dynamodb", "status", 400, "ThrottlingException"),
    "sqs resets": ("sqs", "reset", 500, "InternalError"),
}
API_FAULTS = ("api 5xx", "api truncated downloads", "api stalls")


@attrs.frozen
class Action:
    """One thing the schedule does at ``at`` seconds into the run."""

    at: float
    kind: str
    seconds: float = 0.0
    target: str = ""
    exports: tuple[str, ...] = ()
    pick: float = 0.0

    def line(self) -> str:
        what = self.target or ",".join(self.exports)
        length = f" {self.seconds:.1f} s" if self.seconds else ""
        return f"{self.at:7.1f} s  {self.kind}{length} {what}".rstrip()


def make_schedule(
    rng: random.Random, minutes: float, fixtures: list[Fixture], api_outage: tuple[float, float]
) -> list[Action]:
    """Every action of the run, from the seed alone."""
    span = minutes * 60
    actions = []
    ids = [f.export_id for f in fixtures]
    while ids:
        size = min(len(ids), rng.choice((1, 1, 1, 2, 3)))
        actions.append(Action(rng.uniform(2, 0.7 * span), "submit", exports=tuple(ids[:size])))
        ids = ids[size:]
    at = 3.0
    while (at := at + rng.uniform(8, 25)) < span - 5:
        actions.append(Action(at, rng.choice(list(AWS_FAULTS)), rng.uniform(2, 15)))
    at = 5.0
    while (at := at + rng.uniform(10, 35)) < span - 5:
        kind = rng.choice(API_FAULTS if api_outage[1] > 0 else API_FAULTS[1:])
        seconds = rng.uniform(*api_outage) if kind == "api 5xx" else rng.uniform(2, 15)
        actions.append(Action(at, kind, seconds))
        at += seconds  # one Export API window at a time: each ends by clearing its faults
    for kind, per_6 in (("sigkill", SIGKILLS_PER_6_MIN), ("sigterm", SIGTERMS_PER_6_MIN)):
        for _ in range(max(1, round(per_6 * minutes / 6))):
            actions.append(Action(rng.uniform(5, span - 10), kind, target=rng.choice(list(ROLES))))
    for _ in range(max(1, round(DUPLICATES_PER_6_MIN * minutes / 6))):
        actions.append(Action(rng.uniform(10, span), "duplicate", pick=rng.random()))
    return sorted(actions, key=lambda a: a.at)


def _open_log(path: Path) -> IO[bytes]:
    """A process's log file, closed by the caller when the process has ended."""
    return path.open("wb")


@attrs.define
class Member:
    """One role's process over its incarnations (each restart is a new one)."""

    role: str
    mode: str
    port: int
    proc: trio.Process | None = None
    incarnations: int = 0
    signalled: bool = False
    retiring: bool = False
    exited: trio.Event = attrs.field(factory=trio.Event)
    code: int | None = None
    # (incarnation, seconds since it started, RSS KiB)
    rss: list[tuple[int, float, int]] = attrs.field(factory=list)
    started_at: float = 0.0


@attrs.define
class Run:
    """The run's state: processes, what was done and what was seen."""

    aws: AwsClients
    urls: ProvisionedUrls
    proxy: FaultProxy
    sim: Simulator
    env: dict[str, str]
    log_dir: Path
    rng: random.Random
    fixtures: list[Fixture]
    file_sizes: dict[tuple[str, str], int]
    members: dict[str, Member] = attrs.field(factory=dict)
    sent: list[str] = attrs.field(factory=list)
    done: dict[str, int] = attrs.field(factory=dict)
    sigterms: list[tuple[str, float, int | None]] = attrs.field(factory=list)
    sigkills: list[float] = attrs.field(factory=list)
    unexpected: list[str] = attrs.field(factory=list)
    timeline: list[str] = attrs.field(factory=list)
    began: float = 0.0

    def note(self, text: str) -> None:
        self.timeline.append(f"{trio.current_time() - self.began:7.1f} s  {text}")

    async def supervise(self, member: Member, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the member's process; restart it whenever it ends, until it is retired."""
        first = True
        while not member.retiring:
            member.incarnations += 1
            log = _open_log(self.log_dir / f"{member.role}-{member.incarnations}.log")
            member.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "pipeline", "--mode", member.mode],
                env={**self.env, "HEALTH_PORT": str(member.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            member.started_at = trio.current_time()
            member.signalled, member.code, member.exited = False, None, trio.Event()
            if first:
                await wait_ready(member.port, member.proc)
                task_status.started()
                first = False
            try:
                member.code = await member.proc.wait()
            finally:
                # Interrupted (Ctrl-C): no process of the run may outlive it.
                if member.proc.returncode is None:
                    member.proc.kill()
                log.close()
            member.exited.set()
            if not member.signalled and not member.retiring:
                self.unexpected.append(f"{member.role} exited {member.code} unasked")
                self.note(f"{member.role} exited {member.code} unasked; restarting")

    async def signal(self, member: Member, sig: signal.Signals, *, planned: bool = True) -> None:
        """Send ``sig``; for SIGTERM, time the exit against the deadline.

        ``planned``: an action of the schedule (the final stop is not one).
        """
        proc = member.proc
        if proc is None or member.signalled or proc.returncode is not None:
            self.note(f"{sig.name} {member.role}: skipped (already stopping)")
            return
        member.signalled = True
        if planned:
            self.done[sig.name.lower()] = self.done.get(sig.name.lower(), 0) + 1
        sent = trio.current_time()
        self.note(f"{sig.name} {member.role} (incarnation {member.incarnations})")
        if sig is signal.SIGKILL:
            self.sigkills.append(time.time())
        proc.send_signal(sig)
        if sig is not signal.SIGTERM:
            return
        exited = member.exited
        with trio.move_on_after(SIGTERM_DEADLINE_SECONDS):
            await exited.wait()
        took = trio.current_time() - sent
        if not exited.is_set():
            proc.kill()
            await exited.wait()
        self.sigterms.append((member.role, took, member.code if exited.is_set() else None))

    async def window(self, action: Action) -> None:
        """One fault window: on for ``action.seconds``, then off."""
        self.done[action.kind] = self.done.get(action.kind, 0) + 1
        self.note(f"{action.kind} for {action.seconds:.1f} s")
        if action.kind in AWS_FAULTS:
            service, kind, status, code = AWS_FAULTS[action.kind]
            fault = self.proxy.add(
                Fault(service, "*", kind, status=status, code=code, for_seconds=action.seconds)
            )
            await trio.sleep(action.seconds)
            if fault in self.proxy.faults:
                self.proxy.faults.remove(fault)
            return
        if action.kind == "api 5xx":
            for route in ("status", "files", "download"):
                self.sim.inject_status(route, 503, times=1 << 30)
        elif action.kind == "api stalls":
            stall = self.rng.uniform(1, 8)
            for route in ("status", "files", "download"):
                self.sim.inject_stall(route, stall, times=1 << 30)  # type: ignore[arg-type]
        else:
            for (export_id, file_id), size in self.file_sizes.items():
                self.sim.inject_break(export_id, file_id, max(1, size // 2))
        await trio.sleep(action.seconds)
        self.sim.clear_faults()

    async def act(self, action: Action, nursery: trio.Nursery) -> None:
        if action.kind == "submit":
            body = json.dumps({"exportIds": list(action.exports), "correlationId": "c-chaos"})
            await _sqs.send(self.aws.sqs, self.urls.export_jobs_url, body, policy=AWS_POLICY)
            self.sent.append(body)
            self.done["exports submitted"] = self.done.get("exports submitted", 0) + len(
                action.exports
            )
        elif action.kind == "duplicate":
            if self.sent:
                body = self.sent[int(action.pick * len(self.sent))]
                await _sqs.send(self.aws.sqs, self.urls.export_jobs_url, body, policy=AWS_POLICY)
                self.done["duplicates"] = self.done.get("duplicates", 0) + 1
                self.note(f"duplicate {body}")
        elif action.kind in ("sigkill", "sigterm"):
            sig = signal.SIGKILL if action.kind == "sigkill" else signal.SIGTERM
            nursery.start_soon(self.signal, self.members[action.target], sig)
        else:
            nursery.start_soon(self.window, action)

    async def sample_rss(self) -> None:
        while True:
            for member in self.members.values():
                proc = member.proc
                if proc is not None and proc.returncode is None:
                    try:
                        kb = vm_rss_kb(proc.pid)
                    except (FileNotFoundError, ProcessLookupError):
                        continue
                    if kb < 0:  # exiting: its memory is gone already
                        continue
                    age = trio.current_time() - member.started_at
                    member.rss.append((member.incarnations, age, kb))
            await trio.sleep(2)


async def _drained(run: Run, jobs: JobStore) -> bool:
    pending = 0
    for fixture in run.fixtures:
        try:
            job = await jobs.get_job(fixture.export_id)
        except KeyError:
            job = None
        pending += job is None or not job.status.is_final
    depths = await queue_depths(run.aws, run.urls)
    work = depths["export-jobs"] + depths["download-tasks"]
    return pending == 0 and work == 0


def _rss_line(member: Member) -> str:
    """RSS of the role's longest-lived incarnation (flat or growing?) and its peak over the run."""
    if not member.rss:
        return f"  {member.role}: no samples"
    lives: dict[int, list[tuple[float, int]]] = {}
    for incarnation, age, kb in member.rss:
        lives.setdefault(incarnation, []).append((age, kb))
    longest = max(lives.values(), key=lambda samples: samples[-1][0])
    settled = next((kb for age, kb in longest if age >= 10), longest[0][1])
    peak = max(kb for _, _, kb in member.rss)
    return (
        f"  {member.role}: {member.incarnations} incarnations; the longest-lived "
        f"{settled / 1024:.0f} MB at 10 s, "
        f"{longest[-1][1] / 1024:.0f} MB at {longest[-1][0]:.0f} s; "
        f"peak over the run {peak / 1024:.0f} MB"
    )


# What the processes' logs say: each name counts the lines holding all its marks.
LOG_MARKS = {
    "start-up waits for AWS (state changes)": ("waiting for AWS before taking work",),
    "exits on an error": ("service stopped by an error",),
    "Export API calls given up": ("gave up after", "/exports/"),
    "circuit breaker refusals": ("circuit breaker is open",),
}


def log_figures(log_dir: Path) -> dict[str, int]:
    """How many lines of every process's logs hold each of :data:`LOG_MARKS`."""
    found = dict.fromkeys(LOG_MARKS, 0)
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            for name, marks in LOG_MARKS.items():
                found[name] += all(mark in line for mark in marks)
    return found


async def chaos(endpoint: str, args: argparse.Namespace, log_dir: Path) -> int:
    rng = random.Random(args.seed)
    exports = args.exports or round(EXPORTS_PER_MINUTE * args.minutes)
    fixtures = make_fixtures(rng, exports, f"s{args.seed}")
    low, _, high = args.api_outage.partition("-")
    api_outage = (float(low), float(high or low))
    actions = make_schedule(rng, args.minutes, fixtures, api_outage)
    async with (
        open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=20) as aws,
        trio.open_nursery() as nursery,
    ):
        name, urls = await provision_bench(
            aws, visibility_timeout=VISIBILITY_TIMEOUT, download_tasks=True
        )
        sim = Simulator(token=TOKEN)
        file_sizes = {}
        for fixture in fixtures:
            fixture.add_to(sim)
            if fixture.serve is not None:
                ids = [f"{fixture.export_id}-f{n:04d}" for n in range(1, len(fixture.files) + 1)]
                for file_id, (_, data) in zip(ids, fixture.files, strict=True):
                    file_sizes[(fixture.export_id, file_id)] = len(data)
            if fixture.metadata:
                await seed_metadata(
                    aws.dynamodb, f"metadata-{name}", fixture.export_id, fixture.metadata
                )
        sim_urls = await nursery.start(serve_simulator, sim)
        proxy = FaultProxy(endpoint)
        proxy_url = await nursery.start(serve_fault_proxy, proxy)
        env = {
            **os.environ,
            **bench_env(
                proxy_url,
                name,
                urls.export_jobs_url,
                sim_urls,
                SQS_DOWNLOAD_TASKS_URL=str(urls.download_tasks_url),
                MAX_CONCURRENT_JOBS="4",
                SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
                EXPORT_POLL_INTERVAL_SECONDS="1",
                LOG_LEVEL="info",
            ),
        }
        run = Run(aws, urls, proxy, sim, env, log_dir, rng, fixtures, file_sizes)
        for role, mode in ROLES.items():
            run.members[role] = Member(role, mode, free_port())
            await nursery.start(run.supervise, run.members[role])
        nursery.start_soon(run.sample_rss)
        run.began = trio.current_time()
        print(
            f"{len(actions)} actions planned; processes ready; chaos for {args.minutes} min",
            flush=True,
        )
        async with trio.open_nursery() as acting:
            for action in actions:
                await trio.sleep_until(run.began + action.at)
                await run.act(action, acting)
        # Faults end with the schedule; restarts done, every process up.
        proxy.clear()
        sim.clear_faults()
        ended = trio.current_time()
        run.note("chaos over: draining")
        jobs = JobStore(aws.dynamodb, f"jobs-{name}", AWS_POLICY)
        drained = False
        with trio.move_on_after(args.drain_minutes * 60):
            while True:
                if await _drained(run, jobs):
                    drained = True
                    break
                await trio.sleep(2)
        drain_seconds = trio.current_time() - ended
        async with trio.open_nursery() as stopping:
            for member in run.members.values():
                member.retiring = True
                stopping.start_soon(
                    functools.partial(run.signal, member, signal.SIGTERM, planned=False)
                )
        result = await audit(aws, jobs, urls, f"bench-{name}", fixtures, run.sigkills)
        nursery.cancel_scope.cancel()
    if not drained:
        result.failures.insert(0, f"not drained within {args.drain_minutes} min")
    for role, took, code in run.sigterms:
        if code != 0 or took > SIGTERM_DEADLINE_SECONDS:
            result.failures.append(f"SIGTERM of {role}: exit {code} after {took:.1f} s")
    result.failures += run.unexpected
    (log_dir / "timeline.txt").write_text("\n".join(run.timeline) + "\n")
    shapes: dict[str, int] = {}
    for fixture in fixtures:
        shapes[fixture.shape] = shapes.get(fixture.shape, 0) + 1
    print(f"seed {args.seed}, {args.minutes} min, Export API 5xx windows {args.api_outage} s")
    print(f"exports by shape: {json.dumps(shapes)}")
    print(f"actions taken: {json.dumps(run.done)}")
    print(f"audit: exports by outcome {json.dumps(result.outcomes)}")
    print(f"  objects checked (bytes and sha256): {result.objects_checked}")
    print(f"  queue depths: {json.dumps(result.depths)}")
    print(
        f"  open multipart uploads: {result.open_uploads} "
        f"({result.abandoned_uploads} begun before a SIGKILL, left to the lifecycle rule)"
    )
    print(f"  job items WAITING or RUNNING: {result.unfinished_jobs}")
    worst = max((took for _, took, _ in run.sigterms), default=0.0)
    codes = sorted({code for _, _, code in run.sigterms}, key=str)
    print(f"  SIGTERMs: {len(run.sigterms)}, exit codes {codes}, slowest exit {worst:.1f} s")
    print(f"  time to drain after the chaos: {drain_seconds:.1f} s")
    print("RSS per process:")
    for member in run.members.values():
        print(_rss_line(member))
    print(f"process logs holding: {json.dumps(log_figures(log_dir))}")
    print(f"logs and timeline: {log_dir}")
    if result.failures:
        print(f"AUDIT FAILED ({len(result.failures)}):")
        for failure in result.failures[:60]:
            print(f"  - {failure}")
        return 1
    print("AUDIT PASSED")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6, help="length of the chaos (default 6)")
    parser.add_argument(
        "--seed", type=int, default=None, help="the schedule's seed (default: random)"
    )
    parser.add_argument(
        "--exports", type=int, default=0, help=f"exports (default {EXPORTS_PER_MINUTE}/min)"
    )
    parser.add_argument(
        "--api-outage",
        default="2-15",
        help="Export API 5xx windows, seconds MIN-MAX (default 2-15; 0: none)",
    )
    parser.add_argument("--drain-minutes", type=float, default=15, help="most time to drain")
    parser.add_argument("--log-dir", default=None, help="where the processes' logs go")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(10_000)
    print(f"seed {args.seed}", flush=True)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix=f"chaos-{args.seed}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    configure_logging("warning", stream=sys.stderr)
    started = time.monotonic()
    with moto() as (endpoint, _):
        status = trio.run(chaos, endpoint, args, log_dir)
    print(f"wall {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
