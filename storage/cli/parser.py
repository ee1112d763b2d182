"""The command line: the commands, their arguments and help texts, and the types that read them.

Every parse error is one line and exit code 2, like any other usage error.
Counts and sizes are read by ``storage.options.parse_quantity``, so ``10M``
means on the command line what it means in a URL.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable

from storage import ConfigurationError, __version__
from storage.cli.check import CHECK_EPILOG
from storage.cli.exits import (
    EXIT_EXISTS,
    EXIT_FAILED,
    EXIT_HANGUP,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    PROG,
    CommandError,
)
from storage.model import Metadata
from storage.options import parse_quantity, parse_seconds
from storage.registry import URL_ENV

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
  128+N stopped by signal N, after removing what it had begun to write (partial
       files, open uploads, simulate's models): {EXIT_INTERRUPTED} Ctrl-C (SIGINT),
       {EXIT_TERMINATED} SIGTERM (kill, docker stop, systemd, timeout), {EXIT_HANGUP} SIGHUP"""

EXAMPLES = """\
examples:
  modelstorage -u file:///tmp/models put model-1 weights.npz --meta status=0
  modelstorage -u file:///tmp/models get model-1 -o weights.npz
  export MODELSTORAGE_URL='minio://localhost:9000/fedn-models?secure=false'
  modelstorage ls
  modelstorage check
  modelstorage simulate --clients 4 --rounds 2"""

SIMULATE_EPILOG = """\
Each round, N client threads download the global model, add noise to it and
stream their update into the store in 1 MiB chunks with FEDn's status
protocol (get_ptr(id).write(chunk) + set_model_metadata(id, 1) per chunk;
then set_model_metadata(id, 0), flush, close). The combiner checks each
update's status is OK (0), folds it into a running FedAvg weighted by the
clients' example counts, streaming one update at a time (never all N in
memory), stores the round's global model with metadata {"round",
"contributors", "sha256"} and deletes the updates. Each aggregate is compared
with a reference the clients fold in memory (numpy allclose). Models are
stored as consecutive .npy records (what np.save writes), which stream both
ways.

Every model a run writes is named sim-<run id>-... (global-round-R,
round-R-client-K), with a random run id printed first: simulate never reads,
replaces or deletes a model it did not write. Whatever way it ends (done, an
error, Ctrl-C, SIGTERM, SIGHUP) it deletes what it wrote, and aborts what it
had begun to write; --keep keeps the global models.

Before it allocates anything, simulate compares the memory it will need with
what the machine (or the container) has available, and refuses a run that
does not fit.

Reported per round, as the round ends: upload and download MiB/s over all
clients, aggregation time and MiB/s, the aggregation's peak allocation
(tracemalloc) and the process's peak RSS (resource.getrusage). The table goes
to stdout, progress bars to stderr when it is a terminal. Without --url it
runs on the temp-file store.

exit codes: 0 every round matched; 1 a mismatch or a storage failure; 2 usage
(--params too large for the memory available included) or numpy missing (pip
install numpy); 128+N stopped by signal N, as every command."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other error of the command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# -- argument types ------------------------------------------------------------------


def _count(option: str) -> Callable[[str], int]:
    """A whole number >= 1 for ``option``, read as every size and count of this project is."""

    def parse(text: str) -> int:
        try:
            return parse_quantity(option, text, minimum=1)
        except ConfigurationError as exc:
            # argparse starts the line with "argument --params: " already.
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from None

    return parse


def _whole(option: str) -> Callable[[str], int]:
    """A whole number >= 0 for ``option``."""

    def parse(text: str) -> int:
        try:
            return parse_quantity(option, text)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from None

    return parse


def _seconds(option: str) -> Callable[[str], float]:
    """A duration for ``option``: ``90``, ``15m``, ``2h``, ``7d``."""

    def parse(text: str) -> float:
        try:
            return parse_seconds(option, text)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{option} ")) from None

    return parse


def _sha256(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hex digits, as sha256sum prints it)")
    return text.lower()


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


# -- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line; ``args.command`` names the command, None if there is none."""
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

    def command(name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help, description=textwrap.fill(help, 79), parents=[common], formatter_class=formatter, **kwargs
        )

    put = command("put", "store a model from a file or stdin")
    put.add_argument("id", metavar="ID", help="model id: 1-200 of A-Z a-z 0-9 . _ -, not starting with '.'")
    put.add_argument("file", metavar="FILE", help="the model's bytes; - reads stdin (a pipe or a file, not a terminal)")
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

    get = command("get", "write a model to stdout or a file, verifying its SHA-256")
    get.add_argument("id", metavar="ID")
    get.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (replaced only when complete; a folder, or a path ending in /, gets a file named ID); "
        "default stdout",
    )

    ls = command("ls", "list the models: id, size, sha256, modified time, metadata")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    meta = command("meta", "print a model's metadata as JSON, after changing it if asked")
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

    rm = command("rm", "delete models, saying which on stderr")
    rm.add_argument("ids", metavar="ID", nargs="+")
    rm.add_argument("-f", "--force", action="store_true", help=f"no error (exit {EXIT_NOT_FOUND}) for missing ids")

    purge = command("purge", "delete every model of the store (its folder, or bucket prefix)")
    purge.add_argument("--yes", action="store_true", help="really do it; without it purge refuses (exit 2)")

    command(
        "check",
        "check the store step by step: what it needs (an object store's endpoint, credentials and bucket; "
        "a folder that is writable), then write, read and delete a probe model",
        epilog=CHECK_EPILOG,
    )

    url = command("url", "a presigned URL: for a client to download a model, or (--put) to upload one itself")
    url.add_argument("id", metavar="ID")
    url.add_argument("--put", action="store_true", help="an upload plan: one PUT, or one per part (JSON on stdout)")
    url.add_argument("--size", type=_whole("--size"), metavar="BYTES", help="with --put: the model's size")
    url.add_argument("--sha256", type=_sha256, metavar="HEX", help="with --put: the model's SHA-256")
    url.add_argument(
        "--expires", type=_seconds("--expires"), default=900.0, metavar="AGE", help="valid this long (15m; up to 7d)"
    )
    url.add_argument("--json", action="store_true", help="the request as JSON (URL, method, headers, expiry)")

    commit = command("commit", "make a model of what a client uploaded with a url --put plan, once it checks out")
    commit.add_argument("id", metavar="ID")
    commit.add_argument("--meta", metavar="KEY=VALUE", action="append", type=_key_value, help="as for put")
    commit.add_argument("--meta-json", metavar="JSON", type=_json_value, help="as for put")
    commit.add_argument("--no-overwrite", action="store_true", help=f"fail (exit {EXIT_EXISTS}) if the id is taken")

    def selection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--where",
            metavar="KEY=VALUE",
            action="append",
            type=_key_value,
            help="only models whose metadata has KEY=VALUE (repeatable; VALUE as for put --meta)",
        )
        sub.add_argument(
            "--older-than", type=_seconds("--older-than"), metavar="AGE", help="last modified longer ago (7d, 12h)"
        )

    prune = command("prune", "delete the models a retention rule lets go, and what stale writes left behind")
    prune.add_argument("--match", default="*", metavar="GLOB", help="only ids matching this pattern (global-*)")
    selection(prune)
    prune.add_argument("--keep-last", type=_whole("--keep-last"), metavar="N", help="of those, keep the N newest")
    prune.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")

    lifecycle = command(
        "lifecycle",
        "the bucket lifecycle rules that prune the store on the server side (expiry by age, and by metadata in "
        "metadata=tags stores; incomplete uploads aborted), as JSON",
    )
    selection(lifecycle)
    lifecycle.add_argument(
        "--abort-uploads-after", type=_seconds("--abort-uploads-after"), metavar="AGE", help="default 1d"
    )
    lifecycle.add_argument(
        "--apply", action="store_true", help="set them on the bucket (the bucket's other rules stay)"
    )

    simulate = command(
        "simulate",
        "run federated-learning combiner rounds against the store and report throughput, memory and correctness",
        epilog=SIMULATE_EPILOG,
    )
    simulate.add_argument("--clients", type=_count("--clients"), default=8, metavar="N", help="clients per round (8)")
    simulate.add_argument("--rounds", type=_count("--rounds"), default=3, metavar="R", help="rounds (3)")
    simulate.add_argument(
        "--params",
        type=_count("--params"),
        default=10_000_000,
        metavar="P",
        help="float32 parameters of the model, e.g. 10_000_000, 1e7, 10M or 16Mi "
        "(k, M, G are powers of 1000, Ki, Mi, Gi of 1024; 10M = 40 MB)",
    )
    simulate.add_argument("--seed", type=_seed, metavar="S", help="random seed, to repeat a run (default: random)")
    simulate.add_argument(
        "--keep", action="store_true", help="keep the global models sim-<run id>-global-round-0..R (updates always go)"
    )
    return parser
