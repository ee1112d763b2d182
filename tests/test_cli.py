"""The ``modelstorage`` command end to end: put, get, ls, meta, rm, purge, and what every command shares.

Commands run as ``python -m storage`` subprocesses on a temp-file store in
``tmp_path`` or on SeaweedFS, exactly as a user runs them, with a terminal
(a pty) where one matters; the log lines and the progress columns are tested
in-process too, and so is how the arguments are read. ``check`` is in
``test_cli_check``, ``simulate`` in ``test_cli_simulate``, signals in
``test_cli_signals``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cli_support import (
    STORES,
    MiB,
    assert_one_line_error,
    clean_env,
    cli_bucket,
    modelstorage,
    start,
    store_url,
)
from rich.console import Console
from rich.progress import Progress

from storage.cli.parser import build_parser
from storage.cli.render import BinaryTransferSpeedColumn, configure_logging


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_url(request, tmp_path, monkeypatch)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    # Not a multiple of the 1 MiB chunk, so the last partial chunk is covered too.
    path.write_bytes(os.urandom(2 * MiB + 12345))
    return path


# -- commands, end to end ----------------------------------------------------------


def test_put_get_roundtrip_is_byte_exact(url: str, model_file: Path, tmp_path: Path) -> None:
    assert modelstorage("-u", url, "put", "model-1", str(model_file)).returncode == 0

    out = tmp_path / "out.bin"
    assert modelstorage("-u", url, "get", "model-1", "-o", str(out)).returncode == 0
    assert out.read_bytes() == model_file.read_bytes()

    to_stdout = modelstorage("-u", url, "get", "model-1")
    assert to_stdout.returncode == 0
    assert to_stdout.stdout == model_file.read_bytes()


def test_put_reads_stdin_and_refuses_to_overwrite_on_request(url: str) -> None:
    assert modelstorage("-u", url, "put", "m", "-", stdin=b"first").returncode == 0
    taken = modelstorage("-u", url, "put", "m", "-", "--no-overwrite", stdin=b"second")
    assert_one_line_error(taken, 4, "already exists")
    assert modelstorage("-u", url, "get", "m").stdout == b"first"


def test_ls_shows_each_model_with_its_metadata(url: str, model_file: Path) -> None:
    modelstorage("-u", url, "put", "model-1", str(model_file), "--meta", "status=0")
    modelstorage("-u", url, "put", "model-2", "-", stdin=b"x")

    table = modelstorage("-u", url, "ls")
    assert table.returncode == 0
    text = table.stdout.decode()
    assert "model-1" in text and "model-2" in text and '{"status":0}' in text and "2.0 MiB" in text

    listing = json.loads(modelstorage("-u", url, "ls", "--json").stdout)
    assert [entry["id"] for entry in listing] == ["model-1", "model-2"]
    assert listing[0]["metadata"] == {"status": 0}
    assert listing[0]["size"] == model_file.stat().st_size


def test_meta_values_parse_as_json_scalars_else_strings(url: str) -> None:
    put = modelstorage(
        "-u", url, "put", "m", "-", "--meta-json", '{"a": [1]}', "--meta", "status=0", "--meta", "s=x", stdin=b"x"
    )
    assert put.returncode == 0
    assert json.loads(modelstorage("-u", url, "meta", "m").stdout) == {"a": [1], "status": 0, "s": "x"}


def test_meta_sets_merges_and_replaces(url: str) -> None:
    modelstorage("-u", url, "put", "m", "-", "--meta", "round=1", stdin=b"x")

    merged = modelstorage("-u", url, "meta", "m", "--set", "status=1", "--set", "note=first try")
    assert merged.returncode == 0
    assert json.loads(merged.stdout) == {"round": 1, "status": 1, "note": "first try"}
    assert json.loads(modelstorage("-u", url, "meta", "m").stdout) == {"round": 1, "status": 1, "note": "first try"}

    assert json.loads(modelstorage("-u", url, "meta", "m", "--set-json", "0").stdout) == 0  # FEDn's ModelStatus.OK
    assert_one_line_error(modelstorage("-u", url, "meta", "m", "--set", "a=1"), 2, "not a JSON object")


def test_rm_deletes_and_reports_missing_ids(url: str) -> None:
    modelstorage("-u", url, "put", "a", "-", stdin=b"x")
    modelstorage("-u", url, "put", "b", "-", stdin=b"y")

    assert modelstorage("-u", url, "rm", "a").returncode == 0
    assert [m["id"] for m in json.loads(modelstorage("-u", url, "ls", "--json").stdout)] == ["b"]

    both = modelstorage("-u", url, "rm", "b", "a")
    assert both.returncode == 3
    assert both.stderr.decode() == "deleted b\nmodelstorage: error: not found: a\n"
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []  # b went all the same
    assert modelstorage("-u", url, "rm", "--force", "a").returncode == 0


def test_rm_confirms_what_it_deleted_as_put_and_get_do_unless_quiet(url: str) -> None:
    modelstorage("-u", url, "put", "a", "-", stdin=b"x")
    modelstorage("-u", url, "put", "b", "-", stdin=b"y")
    modelstorage("-u", url, "put", "c", "-", stdin=b"z")

    said = modelstorage("-u", url, "rm", "a", "b")
    assert (said.returncode, said.stdout, said.stderr) == (0, b"", b"deleted a, b\n")
    forced = modelstorage("-u", url, "rm", "--force", "a")
    assert (forced.returncode, forced.stderr) == (0, b"not found, nothing to delete: a\n")
    quiet = modelstorage("-u", url, "rm", "-q", "c")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"", b"")
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []


def test_purge_refuses_without_yes_and_empties_the_store_with_it(url: str) -> None:
    modelstorage("-u", url, "put", "a", "-", stdin=b"x")

    assert_one_line_error(modelstorage("-u", url, "purge"), 2, "--yes")
    assert len(json.loads(modelstorage("-u", url, "ls", "--json").stdout)) == 1

    assert modelstorage("-u", url, "purge", "--yes").returncode == 0
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []


def test_url_comes_from_the_option_either_side_of_the_command_then_env_then_default(url: str, tmp_path: Path) -> None:
    modelstorage("put", "-u", url, "m", "-", stdin=b"x")
    from_env = modelstorage("ls", "--json", env=clean_env(MODELSTORAGE_URL=url))
    assert [m["id"] for m in json.loads(from_env.stdout)] == ["m"]

    # No URL at all: the temp-file store, which FEDN_MODEL_DIR moves, as in FEDn.
    default = clean_env(FEDN_MODEL_DIR=str(tmp_path / "default"))
    modelstorage("put", "d", "-", stdin=b"y", env=default)
    assert (tmp_path / "default" / "d").read_bytes() == b"y"


@pytest.mark.parametrize(
    ("args", "exit_code", "fragment"),
    [
        (["-u", "bogus://x", "ls"], 2, "bogus://"),
        (["get", "no-such-model"], 3, "not found"),
        (["get", "../x"], 2, "invalid model id"),
        (["put", "x", "/no/such/file"], 1, "No such file"),
        (["put", "x"], 2, "required"),
        (["simulate", "--clients", "0"], 2, "at least 1"),
    ],
    ids=["unknown-scheme", "missing-model", "invalid-id", "missing-file", "missing-argument", "bad-count"],
)
def test_errors_are_one_line_with_a_documented_exit_code(
    url: str, args: list[str], exit_code: int, fragment: str
) -> None:
    uses_url = "-u" in args
    assert_one_line_error(modelstorage(*([] if uses_url else ["-u", url]), *args), exit_code, fragment)


def test_commands_other_than_simulate_work_without_numpy(url: str) -> None:
    script = (
        "import sys; sys.modules['numpy'] = None\n"  # any import of numpy now fails
        "from storage.cli import main\n"
        f"assert main(['-u', {url!r}, 'ls']) == 0\n"
        f"sys.exit(main(['-u', {url!r}, 'simulate']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=clean_env(), timeout=60)
    assert_one_line_error(result, 2, "simulate needs numpy: pip install numpy")
    assert b"modelstorage[simulate]" not in result.stderr  # no package index serves that name


def test_without_rich_the_command_says_how_to_get_it() -> None:
    script = (
        "import sys\n"
        "class NoRich:\n"  # as if rich were not installed, whatever the environment has
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'rich':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoRich())\n"
        "from storage.cli import main\n"
        "sys.exit(main(['-u', 'memory://', 'ls']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=clean_env(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == b"modelstorage: error: the modelstorage command needs rich: pip install rich\n"
    assert result.stdout == b""


@pytest.mark.parametrize(
    ("text", "value"),
    [("10M", 10_000_000), ("16Ki", 16_384), ("1e7", 10_000_000), ("10_000_000", 10_000_000), ("200k", 200_000)],
)
def test_params_take_the_sizes_of_the_whole_project(text: str, value: int) -> None:
    assert build_parser().parse_args(["simulate", "--params", text]).params == value


@pytest.mark.parametrize("text", ["abc", "1.5", "0", "-5", "10X"])
def test_a_bad_params_value_is_a_one_line_usage_error(text: str) -> None:
    assert_one_line_error(modelstorage("simulate", "--params", text), 2, "argument --params:", repr(text))


def test_put_from_a_terminal_refuses_at_once_as_get_to_a_terminal_does(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    main, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "storage", "-u", folder.as_uri(), "put", "m", "-"],
            stdin=terminal,
            capture_output=True,
            env=clean_env(),
            timeout=20,  # it used to wait for typing, and store what Ctrl-D ended
        )
    finally:
        os.close(terminal)
        os.close(main)
    assert_one_line_error(result, 2, "refusing to read a model from the terminal", "put m - < FILE")
    assert not folder.exists()  # refused before the store was even opened


@pytest.mark.parametrize("form", ["existing folder", "trailing slash"])
def test_get_into_a_folder_writes_the_model_under_its_id(url: str, tmp_path: Path, form: str) -> None:
    modelstorage("-u", url, "put", "m1", "-", stdin=b"weights")
    folder = tmp_path / "downloads"
    folder.mkdir()
    output = str(folder) if form == "existing folder" else f"{folder}/"

    result = modelstorage("-u", url, "get", "m1", "-o", output)
    assert result.returncode == 0, result.stderr
    assert (folder / "m1").read_bytes() == b"weights"
    assert sorted(p.name for p in folder.iterdir()) == ["m1"]  # no partial file left either
    assert result.stderr.decode() == f"wrote {folder / 'm1'}: 7 B\n"


def test_get_into_a_folder_that_is_not_there_says_so(tmp_path: Path) -> None:
    url = (tmp_path / "models").as_uri()
    modelstorage("-u", url, "put", "m1", "-", stdin=b"weights")
    missing = tmp_path / "no" / "such"
    assert_one_line_error(modelstorage("-u", url, "get", "m1", "-o", f"{missing}/"), 1, f"{missing}/: no such folder")
    assert not (tmp_path / "no").exists()


def test_get_into_the_stores_own_folder_does_not_overwrite_the_model_with_itself(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    url = folder.as_uri()
    modelstorage("-u", url, "put", "m1", "-", "--meta", "round=1", stdin=b"weights")
    refused = modelstorage("-u", url, "get", "m1", "-o", f"{folder}/")
    assert_one_line_error(refused, 2, "is model m1 itself, in the store's folder")
    listing = json.loads(modelstorage("-u", url, "ls", "--json").stdout)
    assert [(m["id"], m["metadata"], m["sha256"] is not None) for m in listing] == [("m1", {"round": 1}, True)]


def test_help_documents_the_exit_codes_of_signals() -> None:
    text = modelstorage("--help").stdout.decode()
    assert "128+N stopped by signal N" in text
    for code, name in (("130", "SIGINT"), ("143", "SIGTERM"), ("129", "SIGHUP")):
        assert f"{code} " in text and name in text


# -- progress bars and log lines ---------------------------------------------------------------


def test_progress_bars_only_on_a_terminal_whatever_force_color_says(tmp_path: Path) -> None:
    # CI systems set FORCE_COLOR (rich also reads TTY_COMPATIBLE) for colours; a log is no place for bars.
    env = clean_env(FORCE_COLOR="1", TTY_COMPATIBLE="1")
    url = (tmp_path / "models").as_uri()
    put = modelstorage("-u", url, "put", "m", "-", stdin=os.urandom(3 * MiB), env=env)
    assert put.returncode == 0
    assert put.stderr.decode().startswith("stored m: 3.0 MiB, sha256 ") and put.stderr.count(b"\n") == 1, put.stderr
    out = tmp_path / "m.out"
    got = modelstorage("-u", url, "get", "m", "-o", str(out), env=env)
    assert got.stderr == f"wrote {out}: 3.0 MiB\n".encode(), got.stderr


def _read_terminal(fd: int, proc: subprocess.Popen) -> bytes:
    seen = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen


def test_progress_bars_on_a_terminal_count_in_mib_and_mib_per_second(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    proc = start("-u", (tmp_path / "models").as_uri(), "put", "m", "-", stdin=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    assert proc.stdin is not None
    try:
        for _ in range(6):  # a transfer long enough for the bars to be drawn a few times
            proc.stdin.write(os.urandom(MiB))
            proc.stdin.flush()
            time.sleep(0.15)
        proc.stdin.close()
        drawn = _read_terminal(main, proc).decode(errors="replace")
    finally:
        os.close(main)
    assert proc.wait(timeout=30) == 0
    assert "MiB/s" in drawn and "MB/s" not in drawn.replace("MiB/s", ""), drawn
    assert "put m" in drawn and "stored m: 6.0 MiB" in drawn


def test_the_speed_column_is_in_the_binary_units_of_the_sizes() -> None:
    progress = Progress(BinaryTransferSpeedColumn(), console=Console(file=io.StringIO()))
    task_id = progress.add_task("x", total=100 * MiB)
    task = progress.tasks[task_id]
    task.finished_speed = 3 * MiB
    assert BinaryTransferSpeedColumn().render(task).plain == "3.0 MiB/s"


def _logged(verbosity: int) -> str:
    buffer = io.StringIO()
    configure_logging(verbosity, Console(file=buffer, width=60))
    try:
        raise ValueError("cannot abort model 'm': it is already committed\n(second line)")
    except ValueError:
        logging.getLogger("modelstorage").warning("could not abort the open write of model %r", "m", exc_info=True)
    return buffer.getvalue()


def test_library_warnings_are_one_line_and_tracebacks_only_at_vv() -> None:
    thread_hook = threading.excepthook
    try:
        line = _logged(0)
        assert line == (
            "modelstorage: warning: could not abort the open write of model 'm' "
            "(ValueError: cannot abort model 'm': it is already committed (second line))\n"
        )
        debug = _logged(2)
        assert debug.startswith(line) and "Traceback" in debug
    finally:
        logging.getLogger("modelstorage").handlers = []
        threading.excepthook = thread_hook


@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_object_store_failures_are_one_line_with_a_documented_exit_code(seaweedfs_endpoint, adapter) -> None:
    ep = seaweedfs_endpoint
    good = {
        "AWS_ACCESS_KEY_ID": ep.access_key,
        "AWS_SECRET_ACCESS_KEY": ep.secret_key,
        "MINIO_ACCESS_KEY": ep.access_key,
        "MINIO_SECRET_KEY": ep.secret_key,
    }
    wrong_secret = "wrong-" + uuid.uuid4().hex
    wrong = {**good, "AWS_SECRET_ACCESS_KEY": wrong_secret, "MINIO_SECRET_KEY": wrong_secret}
    bucket = cli_bucket(ep)

    def url_for(bucket_name: str) -> str:
        if adapter == "s3":
            return f"s3://{bucket_name}/p?endpoint_url={ep.endpoint_url}&region={ep.region}"
        return f"minio://{ep.netloc}/{bucket_name}/p?secure=false"

    missing = modelstorage("-u", url_for("no-such-bucket-" + uuid.uuid4().hex[:8]), "ls", env=clean_env(**good))
    assert_one_line_error(missing, 1, "does not exist", "create")
    denied = modelstorage("-u", url_for(bucket), "ls", env=clean_env(**wrong))
    assert_one_line_error(denied, 1, "denied")
    assert wrong_secret not in denied.stderr.decode() + denied.stdout.decode()
    checked = modelstorage("-u", url_for(bucket), "check", env=clean_env(**wrong))
    assert checked.returncode == 11, checked.stdout
