"""``python -m benchmarks``: every measurement in one run, on one endpoint, then the report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from adapters.options import ObjectStoreOptions
from benchmarks import memprobe, report, scenarios, targets
from benchmarks.candidates import all_candidates, two_put_baselines
from benchmarks.endpoint import open_target, purge
from benchmarks.fednprotocol import FEDN_REQUIREMENT, find_fedn, make_fedn_venv
from benchmarks.measure import GiB, KiB, MiB, OutsideLoad, size_label
from benchmarks.requestcount import count_requests
from benchmarks.throughput import run_sizes, run_small, stderr_log, summarize, summarize_small, warm_up
from storage.options import parse_quantity

SECTIONS = ("throughput", "small", "requests", "fedn", "round", "fanout", "memory")
DEFAULT_SIZES = [64 * KiB, MiB, 16 * MiB, 256 * MiB]
NOISE = (
    "Candidates are interleaved (each repeat runs every candidate once, in an order rotated by one per repeat), "
    "warmed up first, and timed on a collected heap; fast calls repeat for at least 50 ms per sample; tables show "
    "medians and the repeats' spread. FEDn's calls, the round and the fan-out run every store in a fresh child "
    "process per repeat; memory targets run in fresh child processes too."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput, small-model operations, requests per operation and peak memory of every "
        "ModelStorage backend against the raw SDK calls; TempModelStorage against FEDn's own through FEDn's calls; "
        "a FEDn round end to end and a download fan-out with and without the read-through cache; on one endpoint.",
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
    p.add_argument("--clients", type=int, default=16, help="clients in the round and the fan-out (default 16)")
    p.add_argument("--round-size", default="16MiB", help="model size in the round (default 16MiB)")
    p.add_argument("--round-repeat", type=int, default=5, help="rounds per store (default 5)")
    p.add_argument("--fanout-size", default="64MiB", help="model size in the fan-out (default 64MiB)")
    p.add_argument("--fanout-repeat", type=int, default=5, help="fan-outs per store (default 5)")
    p.add_argument(
        "--cache-max-bytes", default="10GiB", help="bound of the read-through cache (default 10GiB, the library's)"
    )
    p.add_argument(
        "--fedn-python",
        help="an interpreter where fedn is installed, to run FEDn's TempModelStorage with (default: "
        "$MODELSTORAGE_BENCH_FEDN_PYTHON, this interpreter, or the one --make-fedn-venv made)",
    )
    p.add_argument(
        "--make-fedn-venv",
        action="store_true",
        help=f"make a venv with {FEDN_REQUIREMENT} from PyPI (its pins would change this environment's boto3), "
        "then exit",
    )
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
    load: dict[str, float] = dataclasses.field(default_factory=dict)
    """Section -> CPUs other processes kept busy while it ran."""

    @contextlib.contextmanager
    def section(self, name: str, server_pid: int | None) -> Iterator[None]:
        """Note how busy the rest of the machine kept while ``name`` runs."""
        outside = OutsideLoad(server_pid)
        yield
        cpus = outside.cpus()
        if cpus is not None:
            self.load[name] = cpus


def _throughput(args, target, candidates, sizes, found: Findings) -> None:
    stderr_log("throughput")
    samples = run_sizes(candidates, sizes, _repeats(args), stderr_log, target.server_pid)
    summaries = summarize(samples)
    found.raw["throughput"] = [dataclasses.asdict(s) for s in samples]
    found.markdown += ["## Throughput", "", report.throughput_tables(summaries, candidates), ""]
    found.markdown += [report.cpu_table(summaries, candidates), ""]
    found.markdown += [
        "Ratios: object stores to the best raw call of the same SDK at that size and direction; "
        "local stores to plain file write/read.",
        "",
    ]
    found.verdicts += targets.adapter_verdicts(targets.Rates(summaries, candidates))
    if report.plot(summaries, candidates, args.out / "throughput.png"):
        found.markdown += ["![throughput against model size](throughput.png)", ""]


def _small(args, candidates, found: Findings) -> None:
    stderr_log("small models")
    candidates = candidates + two_put_baselines(candidates)
    small = summarize_small(run_small(candidates, args.small_ops, args.small_repeat, stderr_log))
    found.raw["small"] = {f"{c} {op}": v for (c, op), v in small.items()}
    found.markdown += [
        f"## Small models: 64 KiB, {args.small_ops} puts (with metadata) then gets per repeat, "
        f"median of {args.small_repeat}",
        "",
        report.small_table(small, candidates),
        "",
    ]
    found.verdicts += targets.sidecar_put_verdicts(small, candidates)


def _requests(args, target, found: Findings) -> None:
    stderr_log("requests per operation")
    counts = count_requests(target, args.delete_all_n, stderr_log)
    found.raw["requests"] = [dataclasses.asdict(c) for c in counts]
    found.markdown += ["## Requests per operation (counted at urllib3)", "", report.requests_table(counts), ""]


def _fedn_calls(args, sizes, fedn, found: Findings) -> None:
    stderr_log("FEDn's calls: TempModelStorage against FEDn's")
    fedn_store = scenarios.fedn_store(fedn)
    stores = [s for s in (fedn_store, scenarios.temp_store()) if s is not None]
    rates = scenarios.run_calls(stores, sizes, _repeats(args), stderr_log)
    found.raw["fedn_calls"] = [dataclasses.asdict(r) for r in rates]
    fedn_name = fedn_store.name if fedn_store else None
    where = (
        f"fedn {fedn[1]} from PyPI, in an interpreter of its own" if fedn else "not measured: no interpreter with fedn"
    )
    found.markdown += [
        "## TempModelStorage against FEDn's, through FEDn's calls",
        "",
        "put: FEDn's upload protocol (`get_ptr(id).write` per 1 MiB chunk with `set_model_metadata(id, 1)`, "
        "then `set_model_metadata(id, 0)`, `flush`, `close`) under a new id; get: `get(id)`. MiB/s, median "
        f"(ratio to FEDn's store), client CPU s/GiB. FEDn's store: {where}.",
        "",
        report.calls_table(rates, fedn_name),
        "",
    ]
    found.verdicts += targets.fedn_verdicts(rates, "TempModelStorage", fedn_name)


def _round(args, target, tuning, fedn, found: Findings) -> None:
    size = parse_quantity("--round-size", args.round_size)
    cache_max = parse_quantity("--cache-max-bytes", args.cache_max_bytes)
    title = f"a FEDn round: {args.clients} clients x {size_label(size)}"
    stderr_log(title)
    stores = [s for s in (scenarios.fedn_store(fedn), scenarios.temp_store()) if s is not None]
    stores += scenarios.adapter_stores(target, tuning, cache_max)
    summaries, raw = scenarios.run_rounds(stores, args.clients, size, args.round_repeat, target.server_pid, stderr_log)
    found.raw["round"] = raw
    found.markdown += [
        f"## {title[0].upper()}{title[1:]}, median of {args.round_repeat}",
        "",
        f"upload: {args.clients} clients at once, FEDn's upload protocol in 1 MiB chunks; aggregate: the combiner "
        "reads each update (`get`) and deletes it, then writes the aggregate through the same protocol (the "
        f"arithmetic is left out); download: {args.clients} clients at once, as FEDn's `ModelService.Download` "
        "serves them (`get_model_metadata`, `get`, 1 MiB pieces). Requests and bytes went to the object store "
        "(counted at urllib3); model GETs are GETs of models' bytes. A cached store's GETs of a model fill its cache "
        "folder: as many bytes are written to local disk.",
        "",
        report.round_table(summaries),
        "",
    ]
    if report.round_plot(summaries, title, args.out / "round.png"):
        found.markdown += ["![the round's wall time per store and phase](round.png)", ""]


def _fanout(args, target, tuning, found: Findings) -> None:
    size = parse_quantity("--fanout-size", args.fanout_size)
    cache_max = parse_quantity("--cache-max-bytes", args.cache_max_bytes)
    stderr_log(f"fan-out: {args.clients} concurrent downloads of one {size_label(size)} model")
    # TempModelStorage: the same downloads from a local file, which is what a cache hit is; the floor to compare with
    stores = [scenarios.temp_store()] + scenarios.adapter_stores(target, tuning, cache_max)
    summaries, raw = scenarios.run_fanout(stores, args.clients, size, args.fanout_repeat, target.server_pid, stderr_log)
    found.raw["fanout"] = raw
    found.markdown += [
        f"## Fan-out: {args.clients} concurrent downloads of one {size_label(size)} model, "
        f"median of {args.fanout_repeat}",
        "",
        "Each client as FEDn's `ModelService.Download` serves it, all at once, on a model written just before "
        "(the cache starts without it). MiB/s: bytes delivered to all clients over wall time; model GETs: per "
        "repeat; CPU: client + server seconds. TempModelStorage serves the same downloads from a local file, "
        "as a cache hit does: the most a cache can approach.",
        "",
        report.fanout_table(summaries),
        "",
    ]
    found.verdicts += targets.fanout_verdicts(summaries, args.clients, size)


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


def _load_line(load: dict[str, float], whole: float | None) -> str:
    """How busy other processes kept the machine: the wall clock moves with it, CPU seconds per GiB barely."""
    if whole is None:
        return "Load from other processes: not measurable here."
    sections = ", ".join(f"{name} {cpus:.2f}" for name, cpus in load.items())
    return f"Other processes kept {whole:.2f} of the {os.cpu_count()} CPUs busy over the run" + (
        f" (by section: {sections})." if sections else "."
    )


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
    if args.make_fedn_venv:
        return make_fedn_venv(stderr_log)
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    sizes = [parse_quantity("--sizes", s) for s in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or DEFAULT_SIZES + ([GiB] * args.large)
    tuning = dict(option.partition("=")[::2] for option in args.option)
    ObjectStoreOptions.parse(tuning, from_url=True)  # a bad option fails here, before any server starts
    args.out.mkdir(parents=True, exist_ok=True)
    found = Findings()
    fedn = find_fedn(args.fedn_python) if sections & {"fedn", "round"} else None
    if fedn is None and sections & {"fedn", "round"}:
        stderr_log("no interpreter with fedn: FEDn's TempModelStorage is left out (--make-fedn-venv makes one)")
    load_before = os.getloadavg()

    with open_target(args.url, https=args.https) as target:
        stderr_log(f"endpoint: {target.description}")
        outside = OutsideLoad(target.server_pid)
        pid = target.server_pid
        candidates = _chosen(all_candidates(target, tuning), args.only)
        try:
            warm_up(candidates)
            if "throughput" in sections:
                with found.section("throughput", pid):
                    _throughput(args, target, candidates, sizes, found)
            if "small" in sections:
                with found.section("small", pid):
                    _small(args, candidates, found)
        finally:
            for c in candidates:
                c.close()
        if "requests" in sections:
            with found.section("requests", pid):
                _requests(args, target, found)
        if "fedn" in sections:
            with found.section("fedn", pid):
                _fedn_calls(args, sizes, fedn, found)
        if "round" in sections:
            with found.section("round", pid):
                _round(args, target, tuning, fedn, found)
        if "fanout" in sections:
            with found.section("fanout", pid):
                _fanout(args, target, tuning, found)
        if "memory" in sections:
            with found.section("memory", pid):
                _memory(args, target, tuning, found)
        if args.url:
            purge(target)
        others = outside.cpus()
    found.raw["load"] = {"sections": found.load, "whole_run": others, "loadavg_before": load_before}
    found.raw["load"]["loadavg_after"] = os.getloadavg()

    head = [
        "# modelstorage benchmark",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')} · {target.description} · {os.cpu_count()} CPUs · "
        f"Python {platform.python_version()} · boto3 {version('boto3')} · minio {version('minio')}"
        + (f" · fedn {fedn[1]} (its own interpreter)" if fedn else "")
        + (f" · adapter tuning {tuning}" if tuning else ""),
        "",
        NOISE,
        "",
        _load_line(found.load, others),
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
