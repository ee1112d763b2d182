"""The ``simulate`` report on stdout: a heading, one table row per round as it ends, what the columns mean, a verdict.

Rows are fixed-width lines printed as their round ends (rich's tables are
drawn whole, only once the last row is known), so a pipe, a CI log or
``docker compose logs`` shows each round when it happens.
"""

from __future__ import annotations

from rich.console import Console

from storage.cli.fedavg import ATOL, RTOL
from storage.cli.render import print_plain
from storage.cli.simulate import RoundReport, SimulationConfig, SimulationReport

MiB = 1024 * 1024

# (first header line, second header line); each column as wide as its widest header line.
COLUMNS = (
    ("round", ""),
    ("model", "MiB"),
    ("upload", "MiB/s"),
    ("agg.", "s"),
    ("agg.", "MiB/s"),
    ("download", "MiB/s"),
    ("agg. mem", "MiB"),
    ("peak RSS", "MiB"),
)
WIDTHS = tuple(max(len(top), len(bottom), 6) for top, bottom in COLUMNS)
GAP = "  "
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


def _line(cells: tuple[str, ...], last: str) -> str:
    return (GAP.join(cell.rjust(width) for cell, width in zip(cells, WIDTHS, strict=True)) + GAP + last).rstrip()


def print_heading(console: Console, config: SimulationConfig, parameters: int, run_id: str, store: str) -> None:
    """What is about to run, and the table's header, before the first round starts."""
    print_plain(
        console,
        f"{config.rounds} round(s) x {config.clients} client(s), {parameters:,} float32 parameters, "
        f"seed {config.seed}, run {run_id} (models sim-{run_id}-*), on {store}",
    )
    print_plain(console, _line(tuple(top for top, _ in COLUMNS), ""))
    print_plain(console, _line(tuple(bottom for _, bottom in COLUMNS), "result"))
    print_plain(console, _line(tuple("-" * width for width in WIDTHS), "-" * 8))


def print_round(console: Console, r: RoundReport) -> None:
    """One round's row."""
    cells = (
        str(r.round_number),
        _mib(r.model_bytes),
        _rate(r.upload_bytes, r.upload_seconds),
        f"{r.aggregation_seconds:.2f}",
        _rate(r.aggregation_bytes, r.aggregation_seconds),
        _rate(r.download_bytes, r.download_seconds),
        _mib(r.aggregation_peak_bytes),
        _mib(r.rss_high_water_bytes),
    )
    matched = r.comparison.matched
    print_plain(console, _line(cells, "match" if matched else "MISMATCH"), style=None if matched else "bold red")


def print_summary(console: Console, report: SimulationReport) -> None:
    """What the columns mean, and a one-line verdict."""
    for note in NOTES:
        print_plain(console, f"  {note}", style="dim")
    matched = sum(r.comparison.matched for r in report.rounds)
    worst = max((r.comparison.max_abs_difference for r in report.rounds), default=0.0)
    verdict = "matched" if report.all_matched else "did NOT all match"
    print_plain(
        console,
        f"{matched}/{report.config.rounds} rounds' aggregates {verdict} the in-memory FedAvg reference "
        f"(rtol {RTOL:g}, atol {ATOL:g}; largest difference {worst:.3g}); {report.seconds:.1f} s in all",
    )
    if report.kept:
        print_plain(console, f"kept: {', '.join(report.kept)}")
