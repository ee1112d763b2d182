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
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
)
from storage.model import Metadata
from storage.options import parse_quantity
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
  {EXIT_INTERRUPTED}  interrupted"""

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
memory), stores global-round-R with metadata {"round", "contributors",
"sha256"} and deletes the updates. Each aggregate is compared with a reference
the clients fold in memory (numpy allclose). Models are stored as
consecutive .npy records (what np.save writes), which stream both ways.

Reported per round: upload and download MiB/s over all clients, aggregation
time and MiB/s, the aggregation's peak allocation (tracemalloc) and the
process's peak RSS (resource.getrusage). The table goes to stdout, progress
bars to stderr. Without --url it runs on the temp-file store.

exit codes: 0 every round matched; 1 a mismatch or a storage failure; 2 usage
or numpy missing (pip install numpy)."""


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

    get = command("get", "write a model to stdout or a file, verifying its SHA-256")
    get.add_argument("id", metavar="ID")
    get.add_argument("-o", "--output", metavar="FILE", help="write here (replaced only when complete); default stdout")

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

    rm = command("rm", "delete models")
    rm.add_argument("ids", metavar="ID", nargs="+")
    rm.add_argument("-f", "--force", action="store_true", help=f"no error (exit {EXIT_NOT_FOUND}) for missing ids")

    purge = command("purge", "delete every model of the store (its folder, or bucket prefix)")
    purge.add_argument("--yes", action="store_true", help="really do it; without it purge refuses (exit 2)")

    command(
        "check",
        "check the store step by step: endpoint, credentials, bucket, then write, read and delete a probe model",
        epilog=CHECK_EPILOG,
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
    simulate.add_argument("--keep", action="store_true", help="keep the global models global-round-0..R")
    return parser
