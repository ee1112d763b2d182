"""The ``modelstorage`` command end to end, and the simulator's FedAvg against numpy.

Commands run as ``python -m storage`` subprocesses on a temp-file store in
``tmp_path``, exactly as a user runs them; the aggregation and the
``check`` step logic are tested in-process, where failures can be injected,
and so is how the arguments are read.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from storage import (
    BucketNotFoundError,
    MemoryModelStorage,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from storage.cli.check import CHECK_STEPS, run_check
from storage.cli.fedavg import (
    IN_PROGRESS,
    OK,
    FedAvg,
    FednUpload,
    ModelSpec,
    SimulationError,
    Update,
    aggregate_updates,
    compare_models,
    write_model,
)
from storage.cli.parser import build_parser

MiB = 1024 * 1024


def modelstorage(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None):
    """Run the command; every run, failed or not, must be free of tracebacks."""
    result = subprocess.run(
        [sys.executable, "-m", "storage", *args],
        input=stdin if stdin is not None else b"",  # never the test runner's own stdin
        capture_output=True,
        env=env if env is not None else _clean_env(),
        timeout=60,
    )
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODELSTORAGE_URL", "FEDN_MODEL_DIR", "COLUMNS")}
    return {**env, **extra}


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == exit_code, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("modelstorage: error: "), stderr
    for fragment in fragments:
        assert fragment in stderr


_CLI_BUCKETS: dict[str, str] = {}


def _cli_bucket(endpoint) -> str:
    if endpoint.endpoint_url not in _CLI_BUCKETS:
        _CLI_BUCKETS[endpoint.endpoint_url] = f"cli-{uuid.uuid4().hex[:12]}"
        endpoint.boto3_client().create_bucket(Bucket=_CLI_BUCKETS[endpoint.endpoint_url])
    return _CLI_BUCKETS[endpoint.endpoint_url]


@pytest.fixture(params=["tempfile", "s3-seaweedfs", "minio-seaweedfs"])
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store every command test runs on: a temp-file folder, or a fresh prefix on SeaweedFS."""
    if request.param == "tempfile":
        return (tmp_path / "models").as_uri()
    endpoint = request.getfixturevalue("seaweedfs_endpoint")
    # The command's subprocesses take their credentials from the environment, as users do.
    for name, value in (
        ("AWS_ACCESS_KEY_ID", endpoint.access_key),
        ("AWS_SECRET_ACCESS_KEY", endpoint.secret_key),
        ("MINIO_ACCESS_KEY", endpoint.access_key),
        ("MINIO_SECRET_KEY", endpoint.secret_key),
    ):
        monkeypatch.setenv(name, value)
    prefix = f"cli-{uuid.uuid4().hex[:8]}"
    bucket = _cli_bucket(endpoint)
    if request.param == "s3-seaweedfs":
        return f"s3://{bucket}/{prefix}?endpoint_url={endpoint.endpoint_url}&region={endpoint.region}"
    return f"minio://{endpoint.netloc}/{bucket}/{prefix}?secure=false"


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

    assert_one_line_error(modelstorage("-u", url, "rm", "b", "a"), 3, "not found: a")
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []  # b went all the same
    assert modelstorage("-u", url, "rm", "--force", "a").returncode == 0


def test_purge_refuses_without_yes_and_empties_the_store_with_it(url: str) -> None:
    modelstorage("-u", url, "put", "a", "-", stdin=b"x")

    assert_one_line_error(modelstorage("-u", url, "purge"), 2, "--yes")
    assert len(json.loads(modelstorage("-u", url, "ls", "--json").stdout)) == 1

    assert modelstorage("-u", url, "purge", "--yes").returncode == 0
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []


def test_check_passes_every_step_and_leaves_nothing_behind(url: str) -> None:
    result = modelstorage("-u", url, "check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    for step, _ in CHECK_STEPS:
        assert any(line.split()[0] == "ok" and step in line for line in lines[1:]), lines
    assert "FAILED" not in result.stdout.decode()
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []


def test_url_comes_from_the_option_either_side_of_the_command_then_env_then_default(url: str, tmp_path: Path) -> None:
    modelstorage("put", "-u", url, "m", "-", stdin=b"x")
    from_env = modelstorage("ls", "--json", env=_clean_env(MODELSTORAGE_URL=url))
    assert [m["id"] for m in json.loads(from_env.stdout)] == ["m"]

    # No URL at all: the temp-file store, which FEDN_MODEL_DIR moves, as in FEDn.
    default = _clean_env(FEDN_MODEL_DIR=str(tmp_path / "default"))
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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=_clean_env(), timeout=60)
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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=_clean_env(), timeout=60)
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


def test_simulate_runs_with_a_binary_params_size(tmp_path: Path) -> None:
    result = modelstorage(
        "-u", (tmp_path / "models").as_uri(), "simulate", "--clients", "1", "--rounds", "1", "--params", "16Ki"
    )
    assert result.returncode == 0, result.stderr
    assert "16,384 float32 parameters" in result.stdout.decode()


def test_simulate_runs_rounds_that_match_the_reference(url: str) -> None:
    result = modelstorage("-u", url, "simulate", "--clients", "2", "--rounds", "2", "--params", "200_000", "--keep")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "2/2 rounds' aggregates matched" in out and "MISMATCH" not in out

    # --keep leaves the global models, with FEDn-style metadata; the updates are gone.
    listing = {m["id"]: m for m in json.loads(modelstorage("-u", url, "ls", "--json").stdout)}
    assert sorted(listing) == ["global-round-0", "global-round-1", "global-round-2"]
    last = listing["global-round-2"]
    assert last["metadata"] == {"round": 2, "contributors": 2, "sha256": last["sha256"]}


# -- check's steps, with failures injected --------------------------------------------


class _FailingStore(MemoryModelStorage):
    """A memory store whose one operation fails as a remote store's would."""

    def __init__(self, failing: str, error: BaseException | None = None) -> None:
        super().__init__()
        self.failing = failing
        self.error = error or StorageError("injected failure")

    def exist(self, model_id):
        if self.failing == "exist":
            raise self.error
        return super().exist(model_id)

    def put(self, model_id, data, metadata=None, *, overwrite=True):
        if self.failing == "put":
            raise self.error
        return super().put(model_id, data, metadata, overwrite=overwrite)

    def get(self, model_id, *, verify=False):
        if self.failing == "get":
            return io.BytesIO(b"not what was written")
        return super().get(model_id, verify=verify)

    def delete(self, model_id):
        if self.failing == "delete":
            return False
        return super().delete(model_id)


@pytest.mark.parametrize(
    ("store", "failed_step"),
    [
        (_FailingStore("exist", StorageUnavailableError("down")), "endpoint reachable"),
        (_FailingStore("exist", StoragePermissionError("denied")), "credentials accepted"),
        (_FailingStore("exist", BucketNotFoundError("no bucket")), "bucket present"),
        (_FailingStore("put"), "write"),
        (_FailingStore("get"), "read"),
        (_FailingStore("delete"), "delete"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_check_exit_code_names_the_first_failed_step(store: _FailingStore, failed_step: str) -> None:
    reported: list[tuple[str, bool]] = []
    code = run_check(store, lambda name, ok, seconds, detail: reported.append((name, ok)))
    assert code == dict(CHECK_STEPS)[failed_step]
    assert [name for name, ok in reported if not ok] == [failed_step]
    if failed_step == "read":
        assert ("delete", True) in reported and store.list() == []  # cleaned up anyway


def test_check_passes_on_a_working_store() -> None:
    reported: list[tuple[str, bool]] = []
    assert run_check(MemoryModelStorage(), lambda name, ok, seconds, detail: reported.append((name, ok))) == 0
    assert reported == [(name, True) for name, _ in CHECK_STEPS]


# -- the simulator's FedAvg and FEDn upload ---------------------------------------------


SPEC = ModelSpec.with_parameters(3 * MiB // 4 + 5)  # layers over and under the 1 MiB chunk


def _client_models(count: int, seed: int = 0) -> tuple[list[list[np.ndarray]], list[int]]:
    rng = np.random.default_rng(seed)
    models = [[rng.standard_normal(size, dtype=np.float32) for size in SPEC.layer_sizes] for _ in range(count)]
    return models, [int(n) for n in rng.integers(1, 1000, size=count)]


def _upload(store, model_id: str, layers: list[np.ndarray]) -> None:
    upload = FednUpload(store, model_id)
    write_model(layers, upload)
    upload.finish()


def _numpy_fedavg(models: list[list[np.ndarray]], examples: list[int]) -> list[np.ndarray]:
    """The textbook formula, independent of the code under test."""
    return [
        np.average(np.stack([model[i] for model in models]).astype(np.float64), axis=0, weights=examples).astype(
            np.float32
        )
        for i in range(len(SPEC.layer_sizes))
    ]


class _ReaderCountingStore(MemoryModelStorage):
    """Tracks how many models are open for reading at once, and whole-model reads."""

    def __init__(self) -> None:
        super().__init__()
        self.open_now = self.most_open = self.whole_reads = 0

    def open(self, model_id, *, verify=False):
        reader = super().open(model_id, verify=verify)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        close = reader.close

        def closing() -> None:
            if not reader.closed:
                self.open_now -= 1
            close()

        reader.close = closing
        return reader

    def get(self, model_id, *, verify=False):
        self.whole_reads += 1
        return super().get(model_id, verify=verify)


def test_streaming_fedavg_matches_numpy_reading_one_update_at_a_time() -> None:
    store = _ReaderCountingStore()
    models, examples = _client_models(4)
    for k, layers in enumerate(models):
        _upload(store, f"update-{k}", layers)

    fedavg = aggregate_updates(store, [Update(f"update-{k}", n) for k, n in enumerate(examples)], SPEC)

    comparison = compare_models(fedavg.result(), _numpy_fedavg(models, examples))
    assert comparison.matched, comparison
    assert (fedavg.contributors, fedavg.examples) == (4, sum(examples))
    assert store.most_open == 1 and store.whole_reads == 0


def test_aggregate_of_a_store_that_swapped_an_update_is_a_mismatch() -> None:
    store = MemoryModelStorage()
    models, examples = _client_models(3)
    reference = FedAvg(SPEC)
    for k, layers in enumerate(models):
        reference.fold(layers, examples[k])
        _upload(store, f"update-{k}", layers)
    impostor, _ = _client_models(1, seed=99)
    store.put("update-1", _serialized(impostor[0]), OK)  # valid, complete, OK, and wrong

    fedavg = aggregate_updates(store, [Update(f"update-{k}", n) for k, n in enumerate(examples)], SPEC)

    comparison = compare_models(fedavg.result(), reference.result())
    assert not comparison.matched and comparison.max_abs_difference > 1e-3


def test_aggregate_refuses_an_update_still_in_progress() -> None:
    store = MemoryModelStorage()
    models, _ = _client_models(1)
    store.put("update-0", _serialized(models[0]), IN_PROGRESS)
    with pytest.raises(SimulationError, match="status 1"):
        aggregate_updates(store, [Update("update-0", 10)], SPEC)


@pytest.mark.parametrize("damage", ["short layer", "trailing bytes", "truncated"])
def test_aggregate_refuses_an_update_that_is_not_a_model_of_the_spec(damage: str) -> None:
    models, _ = _client_models(1)
    layers = models[0]
    data = _serialized(layers)
    if damage == "short layer":
        data = _serialized([layers[0][:-1], *layers[1:]])
    elif damage == "trailing bytes":
        data += b"\0"
    else:
        data = data[:-10]
    store = MemoryModelStorage()
    store.put("update-0", data, OK)
    with pytest.raises(SimulationError):
        aggregate_updates(store, [Update("update-0", 10)], SPEC)


def test_fedn_upload_follows_the_status_protocol() -> None:
    calls: list[tuple] = []

    class Recording(MemoryModelStorage):
        def get_ptr(self, model_id):
            writer = super().get_ptr(model_id)
            return _RecordingPointer(writer, calls)

        def set_model_metadata(self, model_id, model_metadata):
            calls.append(("set_model_metadata", model_metadata))
            return super().set_model_metadata(model_id, model_metadata)

    store = Recording()
    models, _ = _client_models(1)
    _upload(store, "update-0", models[0])

    data = _serialized(models[0])
    chunks = -(-len(data) // MiB)
    expected = [("write", MiB), ("set_model_metadata", IN_PROGRESS)] * (chunks - 1)
    expected += [("write", len(data) - (chunks - 1) * MiB), ("set_model_metadata", IN_PROGRESS)]
    expected += [("set_model_metadata", OK), ("flush",), ("close",)]
    assert calls == expected
    assert store.get("update-0").getvalue() == data and store.get_model_metadata("update-0") == OK


class _RecordingPointer:
    def __init__(self, writer, calls: list[tuple]) -> None:
        self._writer = writer
        self._calls = calls

    def write(self, chunk) -> int:
        self._calls.append(("write", len(chunk)))
        return self._writer.write(chunk)

    def flush(self) -> None:
        self._calls.append(("flush",))
        self._writer.flush()

    def close(self) -> None:
        self._calls.append(("close",))
        self._writer.close()


def _serialized(layers: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    write_model(layers, buffer)
    return buffer.getvalue()


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
    bucket = _cli_bucket(ep)

    def url_for(bucket_name: str) -> str:
        if adapter == "s3":
            return f"s3://{bucket_name}/p?endpoint_url={ep.endpoint_url}&region={ep.region}"
        return f"minio://{ep.netloc}/{bucket_name}/p?secure=false"

    missing = modelstorage("-u", url_for("no-such-bucket-" + uuid.uuid4().hex[:8]), "ls", env=_clean_env(**good))
    assert_one_line_error(missing, 1, "does not exist", "create")
    denied = modelstorage("-u", url_for(bucket), "ls", env=_clean_env(**wrong))
    assert_one_line_error(denied, 1, "denied")
    assert wrong_secret not in denied.stderr.decode() + denied.stdout.decode()
    checked = modelstorage("-u", url_for(bucket), "check", env=_clean_env(**wrong))
    assert checked.returncode == 11, checked.stdout
