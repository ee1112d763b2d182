"""``modelstorage simulate``: its namespace, cleanup, report and memory check end to end, and its FedAvg against numpy.

The command runs as a subprocess, as a user runs it. Failures a subprocess
cannot be made to meet (a store that breaks in round 2), the memory probe's
reading of /proc and the cgroups, and the aggregation itself are tested
in-process. Stopping a simulation by a signal is in ``test_cli_signals``.
"""

from __future__ import annotations

import io
import json
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_support import STORES, MiB, assert_one_line_error, finish, modelstorage, start, store_url, table_rows
from rich.progress import Progress

from storage import MemoryModelStorage, StorageError, TempModelStorage
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
from storage.cli.memory import available_memory, simulation_needs
from storage.cli.simulate import RunModels, SimulationConfig, run_simulation


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_url(request, tmp_path, monkeypatch)


USER_MODELS = {"global-round-0": b"the user's own first model", "global-round-1": b"the user's own second model"}


def _plant_user_models(url: str) -> None:
    for model_id, data in USER_MODELS.items():
        assert modelstorage("-u", url, "put", model_id, "-", "--meta", "owner=user", stdin=data).returncode == 0


def _assert_user_models_untouched(url: str) -> None:
    for model_id, data in USER_MODELS.items():
        assert modelstorage("-u", url, "get", model_id).stdout == data
        assert json.loads(modelstorage("-u", url, "meta", model_id).stdout) == {"owner": "user"}


def _ids(url: str) -> list[str]:
    return [m["id"] for m in json.loads(modelstorage("-u", url, "ls", "--json").stdout)]


# -- the command, end to end -------------------------------------------------------------------


def test_simulate_runs_with_a_binary_params_size(tmp_path: Path) -> None:
    result = modelstorage(
        "-u", (tmp_path / "models").as_uri(), "simulate", "--clients", "1", "--rounds", "1", "--params", "16Ki"
    )
    assert result.returncode == 0, result.stderr
    assert "16,384 float32 parameters" in result.stdout.decode()


def test_simulate_keeps_to_its_own_namespace_and_leaves_the_users_models_alone(url: str) -> None:
    _plant_user_models(url)

    result = modelstorage("-u", url, "simulate", "--clients", "2", "--rounds", "2", "--params", "200_000", "--keep")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "2/2 rounds' aggregates matched" in out and "MISMATCH" not in out
    _assert_user_models_untouched(url)

    # --keep leaves the run's global models, with FEDn-style metadata; the updates are gone.
    run_id = out.split(" run ", 1)[1].split()[0]
    listing = {m["id"]: m for m in json.loads(modelstorage("-u", url, "ls", "--json").stdout)}
    ours = sorted(model_id for model_id in listing if model_id not in USER_MODELS)
    assert ours == [f"sim-{run_id}-global-round-{r}" for r in range(3)]
    assert f"kept: {', '.join(ours)}" in out
    last = listing[f"sim-{run_id}-global-round-2"]
    assert last["metadata"] == {"round": 2, "contributors": 2, "sha256": last["sha256"]}

    # Without --keep a second run leaves nothing of its own, and nothing of the first run's is touched.
    again = modelstorage("-u", url, "simulate", "--clients", "2", "--rounds", "1", "--params", "200_000")
    assert again.returncode == 0, again.stderr
    assert sorted(_ids(url)) == sorted([*USER_MODELS, *ours])
    _assert_user_models_untouched(url)


def test_each_round_is_printed_as_it_ends_even_through_a_pipe(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    proc = start("-u", folder.as_uri(), "simulate", "--clients", "1", "--rounds", "500", "--params", "100k")
    assert proc.stdout is not None
    seen = ""
    while (line := proc.stdout.readline().decode()) and not table_rows(seen + line):
        seen += line
    assert seen.startswith("500 round(s) x 1 client(s)"), seen
    assert table_rows(seen + line), line
    # Stopped at round 1's row: a table printed only at the end would be complete by now, verdict and all.
    proc.send_signal(signal.SIGTERM)
    code, rest, err = finish(proc)
    assert "aggregates" not in rest, "the table came whole, once the run was over"
    assert len(table_rows(seen + line + rest)) < 100
    assert code == 143, err
    assert list(folder.iterdir()) == []


def test_params_the_memory_cannot_hold_are_a_usage_error_before_anything_is_allocated(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    result = modelstorage("-u", folder.as_uri(), "simulate", "--params", "1e12")
    assert_one_line_error(result, 2, "--params 1,000,000,000,000 with 8 client(s) needs about", "TiB", "available")
    assert result.stdout == b""
    assert list(folder.iterdir()) == []


def test_running_out_of_memory_anyway_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # The check passes (the machine has the memory), but the process may not take it: an address-space limit.
    limit = 1024 * MiB

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    folder = tmp_path / "models"
    proc = start(
        "-u", folder.as_uri(), "simulate", "--clients", "2", "--rounds", "1", "--params", "100M", preexec_fn=limited
    )
    code, _, err = finish(proc)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("modelstorage: error: simulate ran out of memory (--params 100,000,000 with 2 client(s))")
    assert list(folder.iterdir()) == []


def test_the_memory_estimate_covers_what_a_run_takes(tmp_path: Path) -> None:
    result = modelstorage(
        "-u", (tmp_path / "models").as_uri(), "simulate", "--clients", "4", "--rounds", "1", "--params", "5M"
    )
    assert result.returncode == 0, result.stderr
    (row,) = table_rows(result.stdout.decode())
    peak_rss = float(row.split()[-2].replace(",", "")) * MiB
    estimate = simulation_needs(5_000_000, 4, TempModelStorage(tmp_path / "models"))
    assert peak_rss <= estimate, (peak_rss / MiB, estimate / MiB)
    assert estimate < 2 * peak_rss, "the estimate should not refuse runs that fit"


# -- the memory probe --------------------------------------------------------------------------


def _fake_proc(tmp_path: Path, meminfo: str | None, cgroup: str = "0::/\n") -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    if meminfo is not None:
        (proc / "meminfo").write_text(meminfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def test_available_memory_is_memavailable(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, "MemTotal:  8000000 kB\nMemFree:  100 kB\nMemAvailable:  4000000 kB\n")
    assert available_memory(str(proc), str(tmp_path / "no-cgroups")) == 4_000_000 * 1024


def test_available_memory_is_capped_by_a_cgroup_v2_limit_less_its_reclaimable_cache(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, "MemAvailable:  4000000 kB\n", "0::/\n")
    cgroups = tmp_path / "cgroup"
    cgroups.mkdir()
    (cgroups / "memory.max").write_text(f"{1024 * MiB}\n")
    (cgroups / "memory.current").write_text(f"{600 * MiB}\n")
    (cgroups / "memory.stat").write_text(f"anon 1\ninactive_file {200 * MiB}\n")
    assert available_memory(str(proc), str(cgroups)) == 624 * MiB  # 1024 - (600 - 200)
    (cgroups / "memory.max").write_text("max\n")
    assert available_memory(str(proc), str(cgroups)) == 4_000_000 * 1024


def test_available_memory_reads_a_cgroup_v1_limit_at_the_process_s_path(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, "MemAvailable:  4000000 kB\n", "5:memory:/jobs/one\n0::/\n")
    folder = tmp_path / "cgroup" / "memory" / "jobs" / "one"
    folder.mkdir(parents=True)
    (folder / "memory.limit_in_bytes").write_text(f"{512 * MiB}\n")
    (folder / "memory.usage_in_bytes").write_text(f"{100 * MiB}\n")
    (folder / "memory.stat").write_text("total_inactive_file 0\n")
    assert available_memory(str(proc), str(tmp_path / "cgroup")) == 412 * MiB


def test_without_meminfo_the_probe_falls_back_to_sysconf_or_says_it_does_not_know(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, None)
    found = available_memory(str(proc), str(tmp_path / "no-cgroups"))
    assert found is None or found > 0


# -- cleanup when a run fails, in-process --------------------------------------------------------


class _BreaksInRoundTwo(MemoryModelStorage):
    """A store whose write of one round-2 update fails, and that records every id the run touches."""

    def __init__(self) -> None:
        super().__init__()
        self.touched: set[str] = set()

    def get_ptr(self, model_id):
        self.touched.add(model_id)
        if model_id.endswith("round-2-client-1"):
            raise StorageError("injected: the store stopped taking writes")
        return super().get_ptr(model_id)

    def open(self, model_id, *, verify=False):
        self.touched.add(model_id)
        return super().open(model_id, verify=verify)

    def delete(self, model_id):
        self.touched.add(model_id)
        return super().delete(model_id)


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep"])
def test_a_failed_run_removes_what_it_wrote_and_nothing_else(keep: bool) -> None:
    store = _BreaksInRoundTwo()
    for model_id, data in USER_MODELS.items():
        store.put(model_id, data, {"owner": "user"})
    models = RunModels()
    config = SimulationConfig(clients=3, rounds=3, parameters=50_000, seed=1, keep=keep)

    with pytest.raises(StorageError, match="injected"), Progress(disable=True) as progress:
        run_simulation(store, config, progress, models=models)

    kept = [models.global_model(0), models.global_model(1)] if keep else []
    assert store.list() == sorted([*USER_MODELS, *kept])
    assert all(store.get(model_id).getvalue() == data for model_id, data in USER_MODELS.items())
    assert {model_id for model_id in store.touched if not model_id.startswith(models.prefix)} == set()


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
