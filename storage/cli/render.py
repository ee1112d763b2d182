"""Everything the command draws with rich: its consoles, progress bars, tables and log lines.

The other modules decide what to say; this one decides how it looks. The
``simulate`` report has a module of its own, ``simulate_report``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from storage import ModelStat
from storage.cli.exits import PROG, one_line
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


def is_terminal(console: Console) -> bool:
    """Whether ``console`` writes to a terminal, whatever FORCE_COLOR or TTY_COMPATIBLE say.

    rich takes those variables (which CI systems set for colours) as "this is a
    terminal", and would then draw progress bars into log files.
    """
    try:
        return console.file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class BinaryTransferSpeedColumn(ProgressColumn):
    """Speed in KiB/s, MiB/s, ...: the units of the sizes beside it (rich's own speed column is in MB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")


def progress_bars(console: Console, *, quiet: bool) -> Progress:
    """Byte progress bars on ``console``; off with --quiet or when it is not a terminal.

    While they are drawn, what goes to stdout is drawn above them when stdout is
    the terminal too, and goes straight to stdout otherwise (a pipe or a file
    gets the data, never the bars' console).
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        BinaryTransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        redirect_stdout=_stdout_is_terminal(),
        disable=quiet or not is_terminal(console),
    )


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class OneLineHandler(logging.Handler):
    """Log records as ``modelstorage: warning: ...``, one line each, on the command's stderr console.

    A record's exception is named on the same line; its traceback follows only
    with ``tracebacks`` (-vv). Printed through the console, a line appears above
    live progress bars instead of through them.
    """

    def __init__(self, console: Console, *, tracebacks: bool) -> None:
        super().__init__()
        self._console = console
        self._tracebacks = tracebacks

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{PROG}: {record.levelname.lower()}: {one_line(record.getMessage())}"
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                line += f" ({type(exc).__name__}: {one_line(exc)})"
            print_plain(self._console, line)
            if exc is not None and self._tracebacks:
                print_plain(self._console, "".join(traceback.format_exception(*record.exc_info)).rstrip())
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def configure_logging(verbosity: int, console: Console) -> None:
    """The library's log (logger ``modelstorage``) as one line per record on ``console``.

    Warnings always; with -v info (retries, timings); with -vv debug and the
    tracebacks of logged exceptions. A thread that dies of an exception is
    reported the same way.
    """
    library = logging.getLogger("modelstorage")
    library.handlers = [OneLineHandler(console, tracebacks=verbosity >= 2)]
    library.propagate = False
    library.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    logging.getLogger("modelstorage.retry").setLevel(logging.ERROR if verbosity == 0 else logging.NOTSET)

    def thread_died(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        library.error("thread %s stopped", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = thread_died


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
    """``ls``: one row per model, its metadata cut to one short line; ``changed`` after the SHA-256 of bytes
    changed outside the store since it recorded them."""
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
            (stat.sha256 or "-")[:12] + (" changed" if stat.changed else ""),
            stat.last_modified.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            escape(_summary(metadata)),
        )
    return table


def print_check_step(console: Console, name: str, ok: bool | None, seconds: float, detail: str) -> None:
    """One line of ``check``'s report (``ok`` None: a note); a step that took no time of its own shows none."""
    status = "[green]ok[/]    " if ok else "[yellow]note[/]  " if ok is None else "[bold red]FAILED[/]"
    timing = f"{seconds * 1000:7.1f} ms" if seconds else " " * 10
    console.print(f"  {status}  {name:<21} {timing}  {escape(detail)}", highlight=False, soft_wrap=True)
