"""The ``modelstorage`` command: look into a model store and exercise it from the shell.

Data (models, JSON, tables, check results) goes to stdout; progress bars,
confirmations, logs and errors go to stderr. Every error is one line,
``modelstorage: error: <message>``, and a documented exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from storage import __version__
from storage.config import URL_ENV, open_storage
from storage.errors import (
    BucketNotFoundError,
    ConfigurationError,
    InvalidModelIdError,
    MetadataError,
    ModelExistsError,
    ModelNotFoundError,
    StorageError,
    StoragePermissionError,
)
from storage.ids import check_model_id
from storage.modelstorage import CHUNK_SIZE, Metadata, ModelStorage

PROG = "modelstorage"
logger = logging.getLogger("modelstorage")

EXIT_OK = 0
EXIT_FAILED = 1  # the store or a local file failed, or simulate's aggregate did not match
EXIT_USAGE = 2  # bad arguments, URL, model id or metadata: nothing was done
EXIT_NOT_FOUND = 3
EXIT_EXISTS = 4
EXIT_INTERRUPTED = 130

# `check` runs these steps in order; its exit code names the first that failed.
CHECK_STEPS = (
    ("endpoint reachable", 10),
    ("credentials accepted", 11),
    ("bucket present", 12),
    ("write", 13),
    ("read", 14),
    ("delete", 15),
)
CHECK_PROBE_BYTES = 64 * 1024
PIPED_WIDTH = 160

DESCRIPTION = f"""\
Look into a model store and exercise it: FEDn's ModelStorage on memory, local
files, AWS S3 and MinIO.

The store is chosen with -u/--url (before or after the command), else
${URL_ENV}, else the embedded default: temp files in $FEDN_MODEL_DIR or
<tmp>/modelstorage-<uid>. URLs:
  file:///path/to/dir[?fsync=true]
  memory://                                   (lives only as long as the command)
  s3://bucket/prefix?endpoint_url=http://host:9000&region=...&metadata=tags
  minio://host:9000/bucket/prefix?secure=false&metadata=tags
Credentials come from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, MINIO_ACCESS_KEY/MINIO_SECRET_KEY), never from the URL."""

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    the store failed (unreachable, access denied, corrupt data, ...), a local
       file could not be read or written, or simulate's aggregate did not match
  {EXIT_USAGE}    usage: bad arguments, URL, model id or metadata; nothing was done
  {EXIT_NOT_FOUND}    a model was not found
  {EXIT_EXISTS}    put --no-overwrite: the model exists
  10-15 check: the step that failed (see modelstorage check --help)
  {EXIT_INTERRUPTED}  interrupted"""

EXAMPLES = """\
examples:
  modelstorage -u file:///tmp/models put model-1 weights.npz --meta status=0
  modelstorage -u file:///tmp/models get model-1 -o weights.npz
  export MODELSTORAGE_URL='minio://localhost:9000/fedn-models?secure=false'
  modelstorage ls
  modelstorage check
  modelstorage simulate --clients 4 --rounds 2"""

CHECK_EPILOG = "exit codes:\n  0   every step passed\n" + "\n".join(
    f"  {code}  {step} FAILED" for step, code in CHECK_STEPS
)


class CommandError(Exception):
    """Ends the command with one error line and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# -- argument types ------------------------------------------------------------------


def _positive_count(text: str) -> int:
    """A whole number, also as 10_000_000, 1e7, 200k or 10M."""
    match = re.fullmatch(r"\s*([0-9_.eE+]+)\s*([kKmMgG]?)\s*", text)
    try:
        if match is None:
            raise ValueError
        value = float(match.group(1).replace("_", "")) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _json_value(text: str) -> Metadata:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _key_value(text: str) -> tuple[str, Metadata]:
    """``k=v``: v as a JSON scalar when it parses as one (``status=0`` is int 0), else the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return key, raw
    return key, value if value is None or isinstance(value, (str, int, float, bool)) else raw


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


# -- shared plumbing -------------------------------------------------------------------


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
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
            disable=self.quiet or not self.err.is_terminal,
        )

    def say(self, message: str) -> None:
        """A confirmation on stderr, unless --quiet."""
        if not self.quiet:
            self.err.print(message, markup=False, highlight=False, soft_wrap=True)

    def describe_store(self) -> str:
        """The store as the user named it, without opening it."""
        if self.url:
            return self.url
        return os.environ.get(URL_ENV) or "the default temp-file store"


class _ProgressReader:
    """A binary reader that advances a progress bar by what is read through it."""

    def __init__(self, raw, advance: Callable[[int], None]) -> None:
        self._raw = raw
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self._advance(len(data))
        return data


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _summary(metadata: Metadata, width: int = 48) -> str:
    text = json.dumps(metadata, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


# -- commands --------------------------------------------------------------------------


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
        reader = _ProgressReader(source, lambda n: progress.advance(task, n))
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
                _copy(reader, sys.stdout.buffer, lambda n: progress.advance(task, n))
                sys.stdout.buffer.flush()
            else:
                with _replacing(Path(args.output)) as target:
                    _copy(reader, target, lambda n: progress.advance(task, n))
    if not to_stdout:
        ctx.say(f"wrote {args.output}: {human_size(stat.size)}")
    return EXIT_OK


def _copy(reader, writer, advance: Callable[[int], None]) -> None:
    while chunk := reader.read(CHUNK_SIZE):
        writer.write(chunk)
        advance(len(chunk))


@contextlib.contextmanager
def _replacing(path: Path):
    """A file that replaces ``path`` only when complete, so a failed get leaves no partial model."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the file the user asked for
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a plain download gets
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    ctx.out.print(table)
    ctx.out.print(f"{len(rows)} model(s) in {title}", markup=False, highlight=False, soft_wrap=True)
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


# -- check -------------------------------------------------------------------------------


def _failed_probe_step(exc: BaseException) -> int:
    """Which of the first three steps a failed first request tells against."""
    if isinstance(exc, (StoragePermissionError, PermissionError)):
        return 1
    if isinstance(exc, BucketNotFoundError):
        return 2
    return 0  # unreachable, or answering something that is not a store


def run_check(store: ModelStorage, report: Callable[[str, bool, float, str], None]) -> int:
    """Probe ``store`` step by step, reporting each; the exit code of the first failure, or 0.

    One HEAD of a model that does not exist proves the endpoint answers, the
    credentials are accepted and the bucket is there (a 404 is followed by a
    bucket check); then a model is written, read back and deleted.
    """
    probe_id = f"modelstorage-check-{os.urandom(6).hex()}"
    payload = os.urandom(CHECK_PROBE_BYTES)
    metadata = {"probe": True}
    names = [name for name, _ in CHECK_STEPS]

    started = time.perf_counter()
    try:
        store.exist(probe_id)
    except (StorageError, OSError) as exc:
        failed = _failed_probe_step(exc)
        for index in range(failed):
            report(names[index], True, 0.0, "")
        report(names[failed], False, time.perf_counter() - started, str(exc))
        return CHECK_STEPS[failed][1]
    elapsed = time.perf_counter() - started
    for name in names[:3]:
        report(name, True, elapsed, "")

    def step(index: int, action: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = action(), True
        except (StorageError, OSError) as exc:
            detail, ok = str(exc), False
        report(names[index], ok, time.perf_counter() - started, detail)
        return ok

    def write() -> str:
        store.put(probe_id, payload, metadata, overwrite=False)
        return f"{human_size(len(payload))} as {probe_id}"

    def read() -> str:
        found = store.get(probe_id, verify=True)
        if found is None or found.getvalue() != payload:
            raise StorageError("the model read back differs from what was written")
        if store.get_model_metadata(probe_id) != metadata:
            raise StorageError("the metadata read back differs from what was written")
        return "bytes, SHA-256 and metadata as written"

    def delete() -> str:
        if not store.delete(probe_id) or store.exist(probe_id):
            raise StorageError("the model is still there after delete")
        return ""

    if not step(3, write):
        return CHECK_STEPS[3][1]
    read_ok = step(4, read)
    deleted = step(5, delete)  # clean up even when the read failed
    if not read_ok:
        return CHECK_STEPS[4][1]
    return EXIT_OK if deleted else CHECK_STEPS[5][1]


def cmd_check(args: argparse.Namespace, ctx: Context) -> int:
    failures: list[str] = []

    def report(name: str, ok: bool, seconds: float, detail: str) -> None:
        status = "[green]ok[/]    " if ok else "[bold red]FAILED[/]"
        timing = f"{seconds * 1000:7.1f} ms" if seconds else " " * 10
        ctx.out.print(f"  {status}  {name:<21} {timing}  {escape(detail)}", highlight=False, soft_wrap=True)
        if not ok:
            failures.append(f"{name} failed: {detail}")

    with ctx.store() as store:
        ctx.out.print(f"checking {escape(repr(store))}", highlight=False, soft_wrap=True)
        code = run_check(store, report)
    if failures:
        raise CommandError(failures[0], code)
    return code


# -- simulate ------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace, ctx: Context) -> int:
    try:
        from storage import simulate
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise CommandError("simulate needs numpy: pip install 'modelstorage[simulate]'", EXIT_USAGE) from None
    if args.params < simulate.MIN_PARAMETERS:
        raise CommandError(f"--params must be at least {simulate.MIN_PARAMETERS}", EXIT_USAGE)
    config = simulate.SimulationConfig(
        clients=args.clients, rounds=args.rounds, parameters=args.params, seed=args.seed, keep=args.keep
    )
    with ctx.store() as store, ctx.progress() as progress:
        try:
            report = simulate.run_simulation(store, config, progress)
        except simulate.SimulationError as exc:
            raise CommandError(str(exc)) from None
    simulate.render_report(report, ctx.out)
    if not report.all_matched:
        raise CommandError("the aggregate of at least one round did not match the reference")
    return EXIT_OK


# -- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Shared options are accepted before and after the command; SUPPRESS keeps
    # a subcommand's unset option from overwriting one given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "-u",
        "--url",
        default=argparse.SUPPRESS,
        help=f"the store (default: ${URL_ENV}, else the temp-file store)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log retries and timings (-vv: debug, and tracebacks for unexpected errors)",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or confirmations"
    )

    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=f"{EXIT_CODES}\n\n{EXAMPLES}",
        formatter_class=formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str, handler, help: str, **kwargs) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help, description=textwrap.fill(help, 79), parents=[common], formatter_class=formatter, **kwargs
        )
        sub.set_defaults(handler=handler)
        return sub

    put = command("put", cmd_put, "store a model from a file or stdin")
    put.add_argument("id", metavar="ID", help="model id: 1-200 of A-Z a-z 0-9 . _ -, not starting with '.'")
    put.add_argument("file", metavar="FILE", help="the model's bytes; - reads stdin")
    put.add_argument(
        "--meta",
        metavar="KEY=VALUE",
        action="append",
        type=_key_value,
        help="a metadata key (repeatable); VALUE is a JSON scalar if it parses as one (status=0 is the integer 0), "
        "else a string",
    )
    put.add_argument(
        "--meta-json", metavar="JSON", type=_json_value, help="the whole metadata as JSON; --meta keys merge into it"
    )
    put.add_argument("--no-overwrite", action="store_true", help=f"fail (exit {EXIT_EXISTS}) if the id is taken")

    get = command("get", cmd_get, "write a model to stdout or a file, verifying its SHA-256")
    get.add_argument("id", metavar="ID")
    get.add_argument("-o", "--output", metavar="FILE", help="write here (replaced only when complete); default stdout")

    ls = command("ls", cmd_ls, "list the models: id, size, sha256, modified time, metadata")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    meta = command("meta", cmd_meta, "print a model's metadata as JSON, after changing it if asked")
    meta.add_argument("id", metavar="ID")
    meta.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        type=_key_value,
        help="set a key of the metadata object (repeatable); VALUE as for put --meta",
    )
    meta.add_argument(
        "--set-json",
        metavar="JSON",
        type=_json_value,
        help="replace the metadata with this JSON value (an object, or e.g. FEDn's status 0); --set keys merge in",
    )

    rm = command("rm", cmd_rm, "delete models")
    rm.add_argument("ids", metavar="ID", nargs="+")
    rm.add_argument("-f", "--force", action="store_true", help=f"no error (exit {EXIT_NOT_FOUND}) for missing ids")

    purge = command("purge", cmd_purge, "delete every model of the store (its folder, or bucket prefix)")
    purge.add_argument("--yes", action="store_true", help="really do it; without it purge refuses (exit 2)")

    command(
        "check",
        cmd_check,
        "check the store step by step: endpoint, credentials, bucket, then write, read and delete a probe model",
        epilog=CHECK_EPILOG,
    )

    simulate = command(
        "simulate",
        cmd_simulate,
        "run federated-learning combiner rounds against the store and report throughput, memory and correctness",
        epilog=SIMULATE_EPILOG,
    )
    simulate.add_argument("--clients", type=_positive_count, default=8, metavar="N", help="clients per round (8)")
    simulate.add_argument("--rounds", type=_positive_count, default=3, metavar="R", help="rounds (3)")
    simulate.add_argument(
        "--params",
        type=_positive_count,
        default=10_000_000,
        metavar="P",
        help="float32 parameters of the model, e.g. 10_000_000, 1e7, 10M (10M = 40 MB)",
    )
    simulate.add_argument("--seed", type=_seed, metavar="S", help="random seed, to repeat a run (default: random)")
    simulate.add_argument("--keep", action="store_true", help="keep the global models global-round-0..R")
    return parser


SIMULATE_EPILOG = """\
Each round, N client threads download the global model, add noise to it and
stream their update into the store in 1 MiB chunks with FEDn's status
protocol (get_ptr(id).write(chunk) + set_model_metadata(id, 1) per chunk;
then set_model_metadata(id, 0), flush, close). The combiner checks each
update's status is OK (0), folds it into a running FedAvg weighted by the
clients' example counts, streaming one update at a time (never all N in
memory), stores global-round-R with metadata {"round", "contributors",
"sha256"} and deletes the updates. Each aggregate is compared with a reference
the clients fold in memory (numpy allclose). Models are stored as
consecutive .npy records (what np.save writes), which stream both ways.

Reported per round: upload and download MiB/s over all clients, aggregation
time and MiB/s, the aggregation's peak allocation (tracemalloc) and the
process's peak RSS (resource.getrusage). The table goes to stdout, progress
bars to stderr. Without --url it runs on the temp-file store.

exit codes: 0 every round matched; 1 a mismatch or a storage failure; 2 usage
or numpy missing (pip install 'modelstorage[simulate]')."""


# -- main ------------------------------------------------------------------------------------


def _configure_logging(verbosity: int, console: Console) -> None:
    """Library logs through rich on stderr; retries only with -v (they are noise otherwise)."""
    handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    library = logging.getLogger("modelstorage")
    library.handlers = [handler]
    library.propagate = False
    library.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    logging.getLogger("modelstorage.retry").setLevel(logging.ERROR if verbosity == 0 else logging.NOTSET)


def _exit_code(exc: StorageError) -> int:
    if isinstance(exc, ModelNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, ModelExistsError):
        return EXIT_EXISTS
    if isinstance(exc, (InvalidModelIdError, ConfigurationError, MetadataError)):
        return EXIT_USAGE
    return EXIT_FAILED


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "unknown error"


def main(argv: list[str] | None = None) -> int:
    err = Console(stderr=True)
    out = Console()
    for console in (out, err):
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = PIPED_WIDTH  # rich's default of 80 would fold ids and wrap lines in files and pipes

    def fail(message: object, code: int) -> int:
        err.print(f"{PROG}: error: {_one_line(message)}", markup=False, highlight=False, soft_wrap=True)
        return code

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except CommandError as exc:
        return fail(exc, exc.exit_code)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    verbosity = getattr(args, "verbose", 0)
    ctx = Context(getattr(args, "url", None), getattr(args, "quiet", False), out, err)
    _configure_logging(verbosity, err)
    started = time.perf_counter()
    try:
        code = args.handler(args, ctx)
    except CommandError as exc:
        code = fail(exc, exc.exit_code)
    except StorageError as exc:
        code = fail(exc, _exit_code(exc))
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


if __name__ == "__main__":
    sys.exit(main())
