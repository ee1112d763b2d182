"""One run of the command: parse the line, run the command, and end in one exit code.

Whatever a command raises ends here as at most one line on stderr,
``modelstorage: error: <message>``, and the exit code ``exits`` documents.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback

from storage import StorageError
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

logger = logging.getLogger("modelstorage")


def run(argv: list[str] | None = None) -> int:
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
    started = time.perf_counter()
    try:
        code = COMMANDS[args.command](args, ctx)
    except CommandError as exc:
        code = fail(exc, exc.exit_code)
    except StorageError as exc:
        code = fail(exc, exit_code_for(exc))
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): no message, and no
        # second BrokenPipeError when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        code = fail(f"{where}{exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        code = fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug still deserves one readable line
        if verbosity >= 2:
            traceback.print_exc()
        code = fail(f"unexpected {type(exc).__name__}: {exc} (run with -vv for the traceback)", EXIT_FAILED)
    logger.info("%s finished in %.3fs with exit code %d", args.command, time.perf_counter() - started, code)
    return code
