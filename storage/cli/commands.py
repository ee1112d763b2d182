"""What each command does with its arguments: put, get, ls, meta, rm, purge, check, simulate.

A command gets the parsed arguments and a Context, returns an exit code,
and ends early by raising CommandError or letting a StorageError through;
``run`` turns either into one error line. The check probe and the
simulation's rounds live in ``check`` and ``simulate``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from storage import ModelNotFoundError, ModelStorage, TempModelStorage, check_model_id, open_storage
from storage.cli.check import run_check
from storage.cli.exits import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CommandError, one_line
from storage.cli.memory import available_memory, simulation_needs
from storage.cli.render import human_size, models_table, print_check_step, print_plain, progress_bars
from storage.cli.stores import underlying_store
from storage.cli.streams import ProgressReader, copy_stream, replacing
from storage.model import Metadata
from storage.registry import URL_ENV

logger = logging.getLogger("modelstorage")


@dataclass
class Context:
    """What every command gets: where the store is, how chatty to be, where to write."""

    url: str | None
    quiet: bool
    out: Console
    err: Console

    @contextlib.contextmanager
    def store(self, *, create: bool = False) -> Iterator[ModelStorage]:
        """The store, opened for this command; only a command that writes models (``create``) makes a
        file store's folder, so a mistyped path is an error instead of a new empty store."""
        started = time.perf_counter()
        store = open_storage(self.url, create=create)
        logger.info("opened %r in %.3fs", store, time.perf_counter() - started)
        with store:
            yield store

    def progress(self) -> Progress:
        """Progress bars on stderr; off with --quiet or when stderr is not a terminal."""
        return progress_bars(self.err, quiet=self.quiet)

    def say(self, message: str) -> None:
        """A confirmation on stderr, unless --quiet."""
        if not self.quiet:
            print_plain(self.err, message)

    def describe_store(self) -> str:
        """The store as the user named it, without opening it."""
        if self.url:
            return self.url
        return os.environ.get(URL_ENV) or "the default temp-file store"


def build_metadata(base: Metadata | None, pairs: list[tuple[str, Metadata]], what: str, instead: str) -> Metadata:
    """``base`` (a whole JSON value) with ``pairs`` merged in as keys; None if neither is given."""
    if not pairs:
        return base
    if base is None:
        base = {}
    if not isinstance(base, dict):
        raise CommandError(
            f"{what} is {json.dumps(base)}, not a JSON object, so keys cannot be set on it; {instead}", EXIT_USAGE
        )
    return {**base, **dict(pairs)}


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # closed
        return False


def cmd_put(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    metadata = build_metadata(args.meta_json, args.meta or [], "--meta-json", "put every key in --meta-json")
    if args.file == "-":
        if sys.stdin is None:
            raise CommandError("stdin is closed: give FILE, or pipe the model in", EXIT_USAGE)
        # Typed bytes are no model, and Ctrl-D would store an empty one: as get refuses to write to a terminal.
        if _is_terminal(sys.stdin):
            hint = f"give FILE, or pipe or redirect the model in (put {args.id} - < FILE)"
            raise CommandError(f"refusing to read a model from the terminal: {hint}", EXIT_USAGE)
        source, total = sys.stdin.buffer, None
    else:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below, once the store has read it
        total = os.fstat(source.fileno()).st_size
    # An interrupt (Ctrl-C, SIGTERM, SIGHUP) while the store reads: put aborts its write as the exception leaves it.
    with source, ctx.store(create=True) as store, ctx.progress() as progress:
        task = progress.add_task(f"put {args.id}", total=total)
        reader = ProgressReader(source, lambda n: progress.advance(task, n))
        stat = store.put(args.id, reader, metadata, overwrite=not args.no_overwrite)
    ctx.say(f"stored {stat.model_id}: {human_size(stat.size)}, sha256 {stat.sha256}")
    return EXIT_OK


def output_path(output: str, model_id: str) -> Path:
    """Where ``get -o OUTPUT`` writes: OUTPUT, or the model's id inside it when OUTPUT names a folder.

    A folder is one that exists, or any path ending in a separator (which must then exist).
    """
    path = Path(output)
    if path.is_dir():
        return path / model_id
    if output.endswith(("/", os.sep)):
        raise CommandError(f"{output}: no such folder (create it, or name a file)", EXIT_FAILED)
    return path


def _is_the_model_file(store: ModelStorage, model_id: str, target: Path) -> bool:
    store = underlying_store(store)
    return isinstance(store, TempModelStorage) and target.resolve() == (store.directory / model_id).resolve()


def cmd_get(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    to_stdout = args.output in (None, "-")
    if to_stdout and _is_terminal(ctx.out.file):
        raise CommandError("refusing to write a binary model to the terminal: use -o FILE or redirect", EXIT_USAGE)
    target = None if to_stdout else output_path(args.output, args.id)
    with ctx.store() as store:
        if target is not None and _is_the_model_file(store, args.id, target):
            # Replacing it would give it a new inode, and the store's record of its SHA-256 and metadata would lapse.
            raise CommandError(
                f"{target} is model {args.id} itself, in the store's folder: name another file", EXIT_USAGE
            )
        stat = store.stat(args.id)
        # Models written by other tools have no recorded digest to verify against.
        with store.open(args.id, verify=stat.sha256 is not None) as reader, ctx.progress() as progress:
            task = progress.add_task(f"get {args.id}", total=stat.size)
            if target is None:
                copy_stream(reader, sys.stdout.buffer, lambda n: progress.advance(task, n))
                sys.stdout.buffer.flush()
            else:
                # The model goes to a temporary file that replaces target when complete; an interrupt removes it.
                with replacing(target) as part:
                    copy_stream(reader, part, lambda n: progress.advance(task, n))
    if target is not None:
        ctx.say(f"wrote {target}: {human_size(stat.size)}")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.store() as store:
        rows = []
        for model_id in store.list():
            try:
                rows.append((store.stat(model_id), store.get_model_metadata(model_id)))
            except ModelNotFoundError:
                continue  # deleted while we were listing
        title = repr(store)
    if args.json:
        listing = [
            {
                "id": stat.model_id,
                "size": stat.size,
                "sha256": stat.sha256,
                "modified": stat.last_modified.isoformat(),
                "changed": stat.changed,
                "metadata": metadata,
            }
            for stat, metadata in rows
        ]
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    ctx.out.print(models_table(rows))
    print_plain(ctx.out, f"{len(rows)} model(s) in {title}")
    return EXIT_OK


def cmd_meta(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    changing = args.set_json is not None or bool(args.set)
    with ctx.store() as store:
        current = store.get_model_metadata(args.id)
        if changing:
            base = current if args.set_json is None else args.set_json
            changed = build_metadata(base, args.set or [], f"the metadata of {args.id!r}", "replace it with --set-json")
            store.set_model_metadata(args.id, changed)
            current = store.get_model_metadata(args.id)  # what the store kept, as others will read it
    print(json.dumps(current, indent=2))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    for model_id in args.ids:  # every id is checked before anything is deleted
        check_model_id(model_id)
    deleted: list[str] = []
    missing: list[str] = []
    with ctx.store() as store:
        for model_id in args.ids:
            (deleted if store.delete(model_id) else missing).append(model_id)
    if deleted:
        ctx.say(f"deleted {', '.join(deleted)}")
    if missing and not args.force:
        raise CommandError(f"not found: {', '.join(missing)}", EXIT_NOT_FOUND)
    if missing:
        ctx.say(f"not found, nothing to delete: {', '.join(missing)}")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace, ctx: Context) -> int:
    with ctx.store() as store:
        if not args.yes:
            ids = store.list()
            for model_id in ids:
                print(model_id)
            raise CommandError(
                f"purge would delete the {len(ids)} model(s) listed on stdout from {store!r}; add --yes to do it",
                EXIT_USAGE,
            )
        store.delete_all()
        ctx.say(f"deleted every model in {store!r}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, ctx: Context) -> int:
    failures: list[str] = []

    def report(name: str, ok: bool | None, seconds: float, detail: str) -> None:
        if ok is False:
            # Said once: on the error line (stderr), where scripts and people look for why.
            failures.append(f"{name} failed: {one_line(detail)}")
            detail = ""
        print_check_step(ctx.out, name, ok, seconds, detail)

    with ctx.store() as store:
        print_plain(ctx.out, f"checking {store!r}")
        code = run_check(store, report)
    if failures:
        raise CommandError("; ".join(failures), code)
    return code


def cmd_simulate(args: argparse.Namespace, ctx: Context) -> int:
    # Imported here: numpy is needed by simulate alone, and only if it is installed.
    try:
        from storage.cli.fedavg import MIN_PARAMETERS, SimulationError
        from storage.cli.simulate import RunModels, SimulationConfig, run_simulation
        from storage.cli.simulate_report import print_heading, print_round, print_summary
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise CommandError("simulate needs numpy: pip install numpy", EXIT_USAGE) from None
    if args.params < MIN_PARAMETERS:
        raise CommandError(f"--params must be at least {MIN_PARAMETERS}", EXIT_USAGE)
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    config = SimulationConfig(
        clients=args.clients, rounds=args.rounds, parameters=args.params, seed=seed, keep=args.keep
    )
    with ctx.store(create=True) as store:
        check_memory(args, store)
        models = RunModels()
        print_heading(ctx.out, config, args.params, models.run_id, repr(store))
        with ctx.progress() as progress:
            try:
                report = run_simulation(
                    store, config, progress, models=models, on_round=lambda r: print_round(ctx.out, r)
                )
            except SimulationError as exc:
                raise CommandError(str(exc)) from None
            except MemoryError:
                raise CommandError(
                    f"simulate ran out of memory ({_memory_hint(args)}): use a smaller --params or fewer --clients"
                ) from None
    print_summary(ctx.out, report)
    if not report.all_matched:
        raise CommandError("the aggregate of at least one round did not match the reference")
    return EXIT_OK


def _memory_hint(args: argparse.Namespace) -> str:
    return f"--params {args.params:,} with {args.clients} client(s)"


def check_memory(args: argparse.Namespace, store: ModelStorage) -> None:
    """Refuse (usage error) a simulation the machine has no memory for, before anything is allocated."""
    needed = simulation_needs(args.params, args.clients, store)
    available = available_memory()
    logger.info(
        "simulate needs about %s of memory; %s available", human_size(needed), available and human_size(available)
    )
    if available is not None and needed > available:
        raise CommandError(
            f"{_memory_hint(args)} needs about {human_size(needed)} of memory and {human_size(available)} is "
            "available: use a smaller --params or fewer --clients",
            EXIT_USAGE,
        )


COMMANDS = {
    "put": cmd_put,
    "get": cmd_get,
    "ls": cmd_ls,
    "meta": cmd_meta,
    "rm": cmd_rm,
    "purge": cmd_purge,
    "check": cmd_check,
    "simulate": cmd_simulate,
}
"""The handler of each command ``parser.build_parser`` defines, by name."""
