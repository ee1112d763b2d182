"""One run of the command: parse the line, run the command, and end in one exit code.

Whatever a command raises ends here as at most one line on stderr,
``modelstorage: error: <message>``, and the exit code ``exits`` documents.
SIGTERM and SIGHUP stop a command as Ctrl-C does (``signals``): the command
cleans up on its way out, and exits 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback

from storage import StorageError
from storage.cli.cloud import CLOUD_COMMANDS
from storage.cli.commands import COMMANDS, Context
from storage.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
    exit_code_for,
    one_line,
)
from storage.cli.parser import build_parser
from storage.cli.render import configure_logging, consoles, print_plain
from storage.cli.signals import Interrupted, stopping_signals_interrupt
from storage.options import use_url_hints

logger = logging.getLogger("modelstorage")


def run(argv: list[str] | None = None) -> int:
    use_url_hints()  # a fix is told as the URL option to set, not a Python argument
    out, err = consoles()

    def fail(message: object, code: int) -> int:
        print_plain(err, f"{PROG}: error: {one_line(message)}")
        return code

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CommandError as exc:
        return fail(exc, exc.exit_code)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    verbosity = getattr(args, "verbose", 0)
    ctx = Context(getattr(args, "url", None), getattr(args, "quiet", False), out, err)
    configure_logging(verbosity, err)
    _line_buffered(sys.stdout)  # each line as it is printed, through a pipe too (CI and compose logs)
    started = time.perf_counter()
    with stopping_signals_interrupt():
        code = _run_command(args, ctx, fail, verbosity)
    logger.info("%s finished in %.3fs with exit code %d", args.command, time.perf_counter() - started, code)
    return code


def _run_command(args, ctx: Context, fail, verbosity: int) -> int:
    try:
        return {**COMMANDS, **CLOUD_COMMANDS}[args.command](args, ctx)
    except CommandError as exc:
        return fail(exc, exc.exit_code)
    except StorageError as exc:
        return fail(exc, exit_code_for(exc))
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): no message, and no
        # second BrokenPipeError when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", EXIT_FAILED)
    except Interrupted as exc:
        return fail(f"interrupted by {exc.signal_name}", exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        if verbosity >= 2:
            traceback.print_exc()
        return fail("out of memory: try again with less data (run with -vv for the traceback)", EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - a bug still deserves one readable line
        if verbosity >= 2:
            traceback.print_exc()
        return fail(f"unexpected {type(exc).__name__}: {exc} (run with -vv for the traceback)", EXIT_FAILED)


def _line_buffered(stream) -> None:
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(OSError, ValueError):  # detached, or closed
            reconfigure(line_buffering=True)
