"""How much memory ``simulate`` needs, and how much the machine can give it.

Checked before anything is allocated, so ``--params 1e12`` is a usage error
that names both numbers, not a MemoryError (or the OOM killer) minutes in.
Plain Python: no numpy, no rich.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from storage import MemoryModelStorage, ModelStorage
from storage.cli.stores import underlying_store

MiB = 1024 * 1024
FLOAT32_BYTES = 4

PROCESS_BASELINE = 100 * MiB
"""The interpreter with numpy, rich and an SDK loaded, before any model."""

# The peak, in sizes of the model (M = 4 bytes x parameters), of what simulate
# holds at once; measured: 10 M parameters, 8 clients peak at 670 MiB RSS.
PER_CLIENT = 2.5
"""While clients train: each holds its copy of the model (1 M) and the noise for its largest layer (1/2 M);
and what a client freed can stay in its thread's malloc arena while the others allocate (up to 1 M more,
seen with the machine busy: 411 MiB where 303 is usual, for 5 M parameters and 4 clients)."""
SAVE_BUFFER = 16 * MiB
"""np.save hands a stream its array in pieces of up to 16 MiB, each copied once more: two per uploading client."""
WHILE_CLIENTS_TRAIN = 3.0
"""Beside them, the reference FedAvg's float64 sums (2 M) and one layer of them being added (1 M)."""
WHILE_AGGREGATING = 6.0
"""Two running float64 sums (4 M), then two float32 results (2 M) and their comparison's temporaries."""


def simulation_needs(parameters: int, clients: int, store: ModelStorage) -> int:
    """Bytes a simulation of ``parameters`` float32 weights and ``clients`` clients needs at its peak on ``store``."""
    model = parameters * FLOAT32_BYTES
    uploading = clients * min(model, 2 * SAVE_BUFFER)
    arrays = max(model * (clients * PER_CLIENT + WHILE_CLIENTS_TRAIN) + uploading, model * WHILE_AGGREGATING)
    return PROCESS_BASELINE + int(arrays) + _held_by_store(store, model, clients)


def _held_by_store(store: ModelStorage, model: int, clients: int) -> int:
    store = underlying_store(store)
    if isinstance(store, MemoryModelStorage):
        return model * (clients + 2)  # a round's updates, and the global models before and after it
    # An object store buffers each open write's parts: part_size x (max_concurrency + 1) at most.
    options = getattr(store, "options", None)
    part_size = getattr(options, "part_size", None)
    concurrency = getattr(options, "max_concurrency", None)
    if isinstance(part_size, int) and isinstance(concurrency, int):
        return clients * min(model, part_size * (concurrency + 1))
    return 0


def available_memory(proc: str = "/proc", cgroups: str = "/sys/fs/cgroup") -> int | None:
    """Bytes the process can still allocate without swapping, or None where the system does not say.

    Linux: MemAvailable, and no more than the memory cgroup (a container's
    limit) leaves. Elsewhere: the free physical pages, where sysconf knows them.
    """
    available = _mem_available(Path(proc, "meminfo"))
    if available is None:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    room = _cgroup_room(Path(proc, "self", "cgroup"), Path(cgroups))
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _mem_available(meminfo: Path) -> int | None:
    for name, value in _fields(meminfo, ":"):
        if name == "MemAvailable":  # "MemAvailable:   22744344 kB"; kernels before 3.14 lack it
            number, _, unit = value.partition(" ")
            with contextlib.suppress(ValueError):
                return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    return None


# (limit, usage, reclaimable page cache in memory.stat) in cgroup v2 and v1
_CGROUP_FILES = (
    ("", "memory.max", "memory.current", "inactive_file"),
    ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
)


def _cgroup_room(self_cgroup: Path, root: Path) -> int | None:
    """What the memory cgroup's limit leaves, counting reclaimable page cache as free; None without a limit."""
    paths = {}
    for _, controllers, path in (line.split(":", 2) for line in _lines(self_cgroup) if line.count(":") >= 2):
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path.lstrip("/")
    for controller, limit_file, usage_file, cache_field in _CGROUP_FILES:
        if controller not in paths:
            continue
        # Inside a container the cgroup's own folder is the mount's root; on a host, the path under it.
        for folder in (root / controller / paths[controller], root / controller):
            try:
                limit = (folder / limit_file).read_text(encoding="ascii").strip()
                usage = int((folder / usage_file).read_text(encoding="ascii"))
            except (OSError, ValueError):
                continue
            if not limit.isdigit():
                return None  # "max": no limit
            cache = next((v for k, v in _fields(folder / "memory.stat", " ") if k == cache_field), "0")
            cache = int(cache) if cache.isdigit() else 0
            return max(int(limit) - max(usage - cache, 0), 0)
    return None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return []


def _fields(path: Path, separator: str) -> list[tuple[str, str]]:
    fields = []
    for line in _lines(path):
        name, _, value = line.partition(separator)
        if value.strip():
            fields.append((name.strip(), value.strip()))
    return fields
