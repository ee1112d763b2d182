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
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from storage import ModelNotFoundError, ModelStorage, check_model_id, open_storage
from storage.cli.check import run_check
from storage.cli.exits import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CommandError
from storage.cli.render import human_size, models_table, print_check_step, print_plain, progress_bars
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
    def store(self) -> Iterator[ModelStorage]:
        started = time.perf_counter()
        store = open_storage(self.url)
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


def cmd_put(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    metadata = build_metadata(args.meta_json, args.meta or [], "--meta-json", "put every key in --meta-json")
    if args.file == "-":
        source, total = sys.stdin.buffer, None
    else:
        source = open(args.file, "rb")  # noqa: SIM115 - closed below, once the store has read it
        total = os.fstat(source.fileno()).st_size
    with source, ctx.store() as store, ctx.progress() as progress:
        task = progress.add_task(f"put {args.id}", total=total)
        reader = ProgressReader(source, lambda n: progress.advance(task, n))
        stat = store.put(args.id, reader, metadata, overwrite=not args.no_overwrite)
    ctx.say(f"stored {stat.model_id}: {human_size(stat.size)}, sha256 {stat.sha256}")
    return EXIT_OK


def cmd_get(args: argparse.Namespace, ctx: Context) -> int:
    check_model_id(args.id)
    to_stdout = args.output in (None, "-")
    if to_stdout and ctx.out.file.isatty():
        raise CommandError("refusing to write a binary model to the terminal: use -o FILE or redirect", EXIT_USAGE)
    with ctx.store() as store:
        stat = store.stat(args.id)
        # Models written by other tools have no recorded digest to verify against.
        with store.open(args.id, verify=stat.sha256 is not None) as reader, ctx.progress() as progress:
            task = progress.add_task(f"get {args.id}", total=stat.size)
            if to_stdout:
                copy_stream(reader, sys.stdout.buffer, lambda n: progress.advance(task, n))
                sys.stdout.buffer.flush()
            else:
                with replacing(Path(args.output)) as target:
                    copy_stream(reader, target, lambda n: progress.advance(task, n))
    if not to_stdout:
        ctx.say(f"wrote {args.output}: {human_size(stat.size)}")
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
    with ctx.store() as store:
        missing = [model_id for model_id in args.ids if not store.delete(model_id)]
    if missing and not args.force:
        raise CommandError(f"not found: {', '.join(missing)}", EXIT_NOT_FOUND)
    return EXIT_OK


def cmd_purge(args: argparse.Namespace, ctx: Context) -> int:
    if not args.yes:
        raise CommandError(f"purge deletes every model in {ctx.describe_store()}; add --yes to do it", EXIT_USAGE)
    with ctx.store() as store:
        store.delete_all()
        ctx.say(f"deleted every model in {store!r}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, ctx: Context) -> int:
    failures: list[str] = []

    def report(name: str, ok: bool, seconds: float, detail: str) -> None:
        print_check_step(ctx.out, name, ok, seconds, detail)
        if not ok:
            failures.append(f"{name} failed: {detail}")

    with ctx.store() as store:
        print_plain(ctx.out, f"checking {store!r}")
        code = run_check(store, report)
    if failures:
        raise CommandError(failures[0], code)
    return code


def cmd_simulate(args: argparse.Namespace, ctx: Context) -> int:
    # Imported here: numpy is needed by simulate alone, and only if it is installed.
    try:
        from storage.cli.fedavg import MIN_PARAMETERS, SimulationError
        from storage.cli.simulate import SimulationConfig, run_simulation
        from storage.cli.simulate_report import render_report
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise CommandError("simulate needs numpy: pip install numpy", EXIT_USAGE) from None
    if args.params < MIN_PARAMETERS:
        raise CommandError(f"--params must be at least {MIN_PARAMETERS}", EXIT_USAGE)
    config = SimulationConfig(
        clients=args.clients, rounds=args.rounds, parameters=args.params, seed=args.seed, keep=args.keep
    )
    with ctx.store() as store, ctx.progress() as progress:
        try:
            report = run_simulation(store, config, progress)
        except SimulationError as exc:
            raise CommandError(str(exc)) from None
    render_report(report, ctx.out)
    if not report.all_matched:
        raise CommandError("the aggregate of at least one round did not match the reference")
    return EXIT_OK


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
