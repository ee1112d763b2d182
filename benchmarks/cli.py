"""``python -m benchmarks``: every measurement in one run, on one endpoint, then the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path

from adapters.options import ObjectStoreOptions
from benchmarks import memprobe, report, targets
from benchmarks.candidates import all_candidates
from benchmarks.endpoint import open_target, purge
from benchmarks.measure import GiB, KiB, MiB, OutsideLoad, size_label
from benchmarks.requestcount import count_requests
from benchmarks.throughput import run_sizes, run_small, stderr_log, summarize, summarize_small, warm_up
from storage.options import parse_quantity

SECTIONS = ("throughput", "small", "requests", "memory")
DEFAULT_SIZES = [64 * KiB, MiB, 16 * MiB, 256 * MiB]
NOISE = (
    "Candidates are interleaved (each repeat runs every candidate once, in an order rotated by one per repeat), "
    "warmed up first, and timed on a collected heap; fast calls repeat for at least 50 ms per sample; tables show "
    "medians and the repeats' spread. Memory targets run in fresh child processes."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput, small-model operations, requests per operation and peak memory of every "
        "ModelStorage backend against the raw SDK calls, on one endpoint.",
    )
    p.add_argument(
        "--url",
        help="an existing endpoint: s3://bucket/prefix?endpoint_url=...&region=... or "
        "minio://host:port/bucket/prefix?secure=false (credentials from AWS_* or MINIO_* variables); "
        "default: a SeaweedFS started on loopback",
    )
    p.add_argument(
        "--https",
        action="store_true",
        help="serve the loopback SeaweedFS over TLS (a certificate made for the run) and talk to it by HTTPS",
    )
    p.add_argument("--large", action="store_true", help="add 1 GiB models to the throughput sizes")
    p.add_argument("--sizes", help="comma-separated model sizes instead of 64KiB,1MiB,16MiB,256MiB")
    p.add_argument("--repeat", type=int, help="repeats per size (default 5; 9 at 16 MiB; 3 above 256 MiB)")
    p.add_argument("--small-ops", type=int, default=40, help="64 KiB puts and gets per repeat (default 40)")
    p.add_argument("--small-repeat", type=int, default=5, help="repeats of the small-model run (default 5)")
    p.add_argument("--stream-size", default="1GiB", help="model size of the get_ptr/open memory check (default 1GiB)")
    p.add_argument("--delete-all-n", type=int, default=1001, help="models in the counted delete_all (default 1001)")
    p.add_argument("--only", help="comma-separated substrings: keep only the candidates whose name has one")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run, of {','.join(SECTIONS)}")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an adapter option, as in a store's URL, to try a tuning (part_size=8MiB, max_concurrency=8, "
        "ranged_get_threshold=64MiB, ...); repeatable",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="where the report goes")
    p.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    return p.parse_args(argv)


def _repeats(args):
    # 16 MiB is where the targets start and a repeat is cheap; the gaps there are
    # as small as the noise, so its median gets the most samples.
    def repeats(size: int) -> int:
        if args.repeat:
            return args.repeat
        if size == 16 * MiB:
            return 9
        return 3 if size > 256 * MiB else 5

    return repeats


@dataclasses.dataclass
class Findings:
    """What the sections found: markdown, verdicts, and the raw samples for results.json."""

    markdown: list[str] = dataclasses.field(default_factory=list)
    verdicts: list[targets.Verdict] = dataclasses.field(default_factory=list)
    raw: dict = dataclasses.field(default_factory=dict)


def _throughput(args, target, candidates, sizes, found: Findings) -> None:
    stderr_log("throughput")
    samples = run_sizes(candidates, sizes, _repeats(args), stderr_log, target.server_pid)
    summaries = summarize(samples)
    found.raw["throughput"] = [dataclasses.asdict(s) for s in samples]
    found.markdown += ["## Throughput", "", report.throughput_tables(summaries, candidates), ""]
    found.markdown += [report.cpu_table(summaries, candidates), ""]
    found.markdown += [
        "Ratios: object stores to the best raw SDK call (either SDK) at that size and direction; "
        "local stores to plain file write/read.",
        "",
    ]
    found.verdicts += targets.throughput_verdicts(targets.Rates(summaries, candidates))
    if report.plot(summaries, candidates, args.out / "throughput.png"):
        found.markdown += ["![throughput against model size](throughput.png)", ""]


def _small(args, candidates, found: Findings) -> None:
    stderr_log("small models")
    small = summarize_small(run_small(candidates, args.small_ops, args.small_repeat, stderr_log))
    found.raw["small"] = {f"{c} {op}": v for (c, op), v in small.items()}
    found.markdown += [
        f"## Small models: 64 KiB, {args.small_ops} puts (with metadata) then gets per repeat, "
        f"median of {args.small_repeat}",
        "",
        report.small_table(small, candidates),
        "",
    ]
    found.verdicts += targets.small_verdicts(small, candidates)


def _requests(args, target, found: Findings) -> None:
    stderr_log("requests per operation")
    counts = count_requests(target, args.delete_all_n, stderr_log)
    found.raw["requests"] = [dataclasses.asdict(c) for c in counts]
    found.markdown += ["## Requests per operation (counted at urllib3)", "", report.requests_table(counts), ""]


def _memory(args, target, tuning, found: Findings) -> None:
    size = parse_quantity("--stream-size", args.stream_size)
    stderr_log(f"memory: {size_label(size)} through get_ptr and open(), in child processes")
    streams = {
        name: memprobe.run({"kind": "stream", "sdk": sdk, "size": size, "tuning": tuning, "target": target.as_dict()})
        for name, sdk in (("S3ModelStorage", "boto3"), ("MinioModelStorage", "minio"))
    }
    memory = memprobe.run({"kind": "memory", "size": 256 * MiB})
    found.raw["memory"] = {"streams": streams, "memory_store": memory}
    found.markdown += ["## Peak memory (child processes)", "", report.streams_table(streams, size), ""]
    found.verdicts += targets.stream_verdicts(streams, size)
    found.verdicts.append(targets.memory_verdict(memory, 256 * MiB))


def _chosen(candidates, only: str | None):
    """The candidates ``--only`` keeps; the others are closed."""
    if not only:
        return candidates
    wanted = only.split(",")
    keep = [c for c in candidates if any(w in c.name for w in wanted)]
    for c in candidates:
        if c not in keep:
            c.close()
    return keep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = set(args.sections.split(","))
    sizes = [parse_quantity("--sizes", s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or DEFAULT_SIZES + ([GiB] * args.large)
    tuning = dict(option.partition("=")[::2] for option in args.option)
    ObjectStoreOptions.parse(tuning, from_url=True)  # a bad option fails here, before any server starts
    args.out.mkdir(parents=True, exist_ok=True)
    found = Findings()

    with open_target(args.url, https=args.https) as target:
        stderr_log(f"endpoint: {target.description}")
        outside = OutsideLoad(target.server_pid)
        candidates = _chosen(all_candidates(target, tuning), args.only)
        try:
            warm_up(candidates)
            if "throughput" in sections:
                _throughput(args, target, candidates, sizes, found)
            if "small" in sections:
                _small(args, candidates, found)
        finally:
            for c in candidates:
                c.close()
        if "requests" in sections:
            _requests(args, target, found)
        if "memory" in sections:
            _memory(args, target, tuning, found)
        if args.url:
            purge(target)
        others = outside.cpus()

    head = [
        "# modelstorage benchmark",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')} · {target.description} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · boto3 {version('boto3')} · minio {version('minio')}"
        + (f" · adapter tuning {tuning}" if tuning else ""),
        "",
        NOISE + ("" if others is None else f" Other processes kept {others:.2f} of the {os.cpu_count()} CPUs busy."),
        "",
    ]
    if found.verdicts:
        head += ["## Targets", "", report.verdicts_list(found.verdicts), ""]
    text = "\n".join(head + found.markdown)
    (args.out / "benchmark.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(found.raw, indent=1, default=str))
    print(text)
    stderr_log(f"report: {args.out / 'benchmark.md'}")
    return 1 if args.check and not all(v.passed for v in found.verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
