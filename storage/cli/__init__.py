"""The ``modelstorage`` command: look into a model store and exercise it from the shell.

Data (models, JSON, tables, check results) goes to stdout; progress bars,
confirmations, logs and errors go to stderr. Every error is one line,
``modelstorage: error: <message>``, and a documented exit code.

The command sits above the library: it opens stores only through the
registry (``storage.open_storage``), so it knows no backend by name. Its
modules:

- ``exits``: exit codes and ``CommandError``;
- ``parser``: the command line: arguments, their types, help texts;
- ``run``: parse, dispatch, and turn every outcome into an exit code;
- ``signals``: SIGTERM and SIGHUP stop a command as Ctrl-C does;
- ``commands``: what put, get, ls, meta, rm, purge, check and simulate do;
- ``check``: the step-by-step probe behind ``check``, per kind of store;
- ``stores``: the store under a wrapper such as the read-through cache;
- ``streams``: the reader and writer wrappers models pass through;
- ``render``: everything drawn with rich: consoles, progress bars, tables, log lines;
- ``fedavg``, ``simulate``, ``simulate_report``, ``memory``: the ``simulate``
  command's model format and FedAvg, its rounds, its report, and the memory
  it needs.

rich is an extra (``cli``), numpy another (``simulate``): ``import storage``
needs neither. Of this package only this module, ``exits``, ``signals``,
``streams``, ``stores`` and ``memory`` import without rich, so ``main`` can still say what
is missing; numpy is imported only by ``fedavg`` and ``simulate``, which
``simulate`` loads when it runs.
"""

from __future__ import annotations

import sys

from storage.cli.exits import EXIT_USAGE, PROG


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        from storage.cli.run import run
    except ModuleNotFoundError as exc:
        if exc.name != "rich" and not (exc.name or "").startswith("rich."):
            raise
        # One line, as for every other error; rich would have printed it.
        print(f"{PROG}: error: the {PROG} command needs rich: pip install rich", file=sys.stderr)
        return EXIT_USAGE
    return run(argv)
