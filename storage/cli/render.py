"""Everything the command draws with rich: its consoles, progress bars, tables and log lines.

The other modules decide what to say; this one decides how it looks. The
``simulate`` report has a module of its own, ``simulate_report``.
"""

from __future__ import annotations

import json
import logging
import os

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from storage import ModelStat
from storage.model import Metadata

# rich's default of 80 columns would fold ids and wrap lines in files and pipes.
PIPED_WIDTH = 160


def consoles() -> tuple[Console, Console]:
    """stdout's console for data, stderr's for everything else."""
    out, err = Console(), Console(stderr=True)
    for console in (out, err):
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = PIPED_WIDTH
    return out, err


def print_plain(console: Console, text: str, **style) -> None:
    """``text`` exactly as given: no markup, no highlighting, long lines not folded."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, **style)


def progress_bars(console: Console, *, quiet: bool) -> Progress:
    """Byte progress bars on ``console``; off with --quiet or when it is not a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )


def configure_logging(verbosity: int, console: Console) -> None:
    """Library logs through rich on ``console``; retries only with -v (they are noise otherwise)."""
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    library = logging.getLogger("modelstorage")
    library.handlers = [handler]
    library.propagate = False
    library.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    logging.getLogger("modelstorage.retry").setLevel(logging.ERROR if verbosity == 0 else logging.NOTSET)


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _summary(metadata: Metadata, width: int = 48) -> str:
    text = json.dumps(metadata, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


def models_table(rows: list[tuple[ModelStat, Metadata]]) -> Table:
    """``ls``: one row per model, its metadata cut to one short line."""
    table = Table()
    table.add_column("id", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("sha256")
    table.add_column("modified")
    table.add_column("metadata", overflow="ellipsis")
    for stat, metadata in rows:
        table.add_row(
            escape(stat.model_id),
            human_size(stat.size),
            (stat.sha256 or "-")[:12],
            stat.last_modified.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            escape(_summary(metadata)),
        )
    return table


def print_check_step(console: Console, name: str, ok: bool, seconds: float, detail: str) -> None:
    """One line of ``check``'s report; a step that took no time of its own shows none."""
    status = "[green]ok[/]    " if ok else "[bold red]FAILED[/]"
    timing = f"{seconds * 1000:7.1f} ms" if seconds else " " * 10
    console.print(f"  {status}  {name:<21} {timing}  {escape(detail)}", highlight=False, soft_wrap=True)
