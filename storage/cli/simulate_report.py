"""The ``simulate`` report on stdout: one table row per round, what the columns mean, a verdict."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from storage.cli.fedavg import ATOL, RTOL
from storage.cli.render import print_plain
from storage.cli.simulate import SimulationReport

MiB = 1024 * 1024

HEADERS = (
    "round",
    "model\nMiB",
    "upload\nMiB/s",
    "agg.\ns",
    "agg.\nMiB/s",
    "download\nMiB/s",
    "agg. mem\nMiB",
    "peak RSS\nMiB",
)
NOTES = (
    "upload, download: bytes of all clients / wall time from the first start to the last end",
    "agg.: the combiner reading the updates, FedAvg, storing the global model",
    "agg. mem: tracemalloc peak of what the aggregation allocated (running sum + one layer + result)",
    "peak RSS: resource.getrusage high-water mark of the whole process so far, clients included",
)


def _mib(nbytes: float) -> str:
    return f"{nbytes / MiB:,.1f}"


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MiB / seconds:,.0f}" if seconds > 0 else "-"


def render_report(report: SimulationReport, console: Console) -> None:
    """The per-round table, what its columns mean, and a one-line verdict, on ``console`` (stdout)."""
    config = report.config
    print_plain(
        console,
        f"{config.rounds} round(s) x {config.clients} client(s), {report.spec.parameters:,} float32 parameters, "
        f"seed {report.seed}, on {report.store}",
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in HEADERS:
        table.add_column(header, justify="right")
    table.add_column("result")
    for r in report.rounds:
        table.add_row(
            str(r.round_number),
            _mib(r.model_bytes),
            _rate(r.upload_bytes, r.upload_seconds),
            f"{r.aggregation_seconds:.2f}",
            _rate(r.aggregation_bytes, r.aggregation_seconds),
            _rate(r.download_bytes, r.download_seconds),
            _mib(r.aggregation_peak_bytes),
            _mib(r.rss_high_water_bytes),
            "match" if r.comparison.matched else "MISMATCH",
            style=None if r.comparison.matched else "bold red",
        )
    console.print(table)
    for note in NOTES:
        print_plain(console, f"  {note}", style="dim")
    matched = sum(r.comparison.matched for r in report.rounds)
    worst = max((r.comparison.max_abs_difference for r in report.rounds), default=0.0)
    verdict = "matched" if report.all_matched else "did NOT all match"
    print_plain(
        console,
        f"{matched}/{config.rounds} rounds' aggregates {verdict} the in-memory FedAvg reference "
        f"(rtol {RTOL:g}, atol {ATOL:g}; largest difference {worst:.3g}); {report.seconds:.1f} s in all",
    )
    if report.kept:
        print_plain(console, f"kept: {', '.join(report.kept)}")
