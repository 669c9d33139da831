"""Where the service's CPU goes: py-spy's folded stacks summed into the pipeline's kinds of work.

``BENCH_PROFILE_DIR=DIR python benchmarks/large_entries.py`` leaves
``DIR/service-large.folded`` (py-spy ``--format raw``: one stack per line,
then its sample count). This sums the samples into a few kinds of work, by
the innermost frame that says which (the first rule that matches, from the
leaf outwards), and prints each kind's share of the samples on CPU. Samples
of threads waiting (epoll, an idle worker thread) are left out.

    python benchmarks/profile_summary.py /tmp/prof/service-large.folded
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (kind, a piece of a frame that marks it), tried from the leaf outwards.
RULES: tuple[tuple[str, str], ...] = (
    ("inflate + CRC-32 + SHA-256 (worker threads)", "EntryDecoder."),
    ("S3 part CRC-32", "s3parts.py"),
    ("S3 requests: socket sends", "send_all"),
    ("S3 requests: botocore and httpx per call", "aiobotocore/"),
    ("download: reads through httpcore, h11, httpx", "DownloadStream.__anext__"),
    ("ZIP reader framing and hand-off", "pipeline/_service/inflate.py"),
    ("ZIP reader framing and hand-off", "pipeline/_core/zip/"),
    ("uploader (pieces into parts)", "pipeline/_service/file_stage.py"),
    ("job and file bookkeeping (DynamoDB, SQS)", "pipeline/_adapters/aws/"),
    ("trio thread hand-off", "_thread_cache.py"),
    ("trio thread hand-off", "trio/_threads.py"),
    ("trio scheduler and I/O wait bookkeeping", "trio/_core/"),
)
IDLE = ("get_events", "_thread_cache.py:211", "_thread_cache.py:209")


def classify(frames: list[str]) -> str | None:
    """The kind of work of one stack, or ``None`` for a thread that is waiting."""
    if any(mark in frames[-1] for mark in IDLE):
        return None
    for frame in reversed(frames):
        for kind, mark in RULES:
            if mark in frame:
                return kind
    return "other"


def summarize(lines: list[str]) -> Counter[str]:
    """Samples per kind of work."""
    kinds: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        kind = classify(stack.split(";"))
        if kind is not None:
            kinds[kind] += int(count)
    return kinds


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit("usage: python benchmarks/profile_summary.py FOLDED_FILE")
    kinds = summarize(Path(argv[0]).read_text().splitlines())
    total = sum(kinds.values())
    print(f"{total} samples on CPU")
    for kind, samples in kinds.most_common():
        print(f"{100 * samples / total:5.1f} %  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
