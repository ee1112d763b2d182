"""The command's exit codes, and the one exception that ends a command with one of them.

Nothing here imports rich, so ``storage.cli.main`` can report a missing rich
with the same program name and exit code as every other usage error.
"""

from __future__ import annotations

import signal

from storage import (
    ConfigurationError,
    InvalidModelIdError,
    MetadataError,
    ModelExistsError,
    ModelNotFoundError,
    StorageError,
)

PROG = "modelstorage"

EXIT_OK = 0
EXIT_FAILED = 1  # the store or a local file failed, or simulate's aggregate did not match
EXIT_USAGE = 2  # bad arguments, URL, model id or metadata: nothing was done
EXIT_NOT_FOUND = 3
EXIT_EXISTS = 4
EXIT_SIGNAL_BASE = 128  # a command stopped by signal N exits 128 + N, as a shell reports it
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + signal.SIGINT  # 130: Ctrl-C
EXIT_TERMINATED = EXIT_SIGNAL_BASE + signal.SIGTERM  # 143: kill, docker stop, systemd, timeout
EXIT_HANGUP = EXIT_SIGNAL_BASE + signal.SIGHUP  # 129: the terminal or the ssh session went away


class CommandError(Exception):
    """Ends the command with one error line and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(exc: StorageError) -> int:
    if isinstance(exc, ModelNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, ModelExistsError):
        return EXIT_EXISTS
    if isinstance(exc, (InvalidModelIdError, ConfigurationError, MetadataError)):
        return EXIT_USAGE
    return EXIT_FAILED


def one_line(message: object) -> str:
    """``message`` with its whitespace runs, newlines included, folded into single spaces."""
    return " ".join(str(message).split()) or "unknown error"
