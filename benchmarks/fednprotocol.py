"""FEDn's model protocol, as a FEDn combiner drives its model storage (fedn 0.33,
``fedn/network/combiner/modelservice.py``, ``roundhandler.py``, ``updatehandler.py``).

- Upload (``ModelService.Upload``): for each 1 MiB chunk of the gRPC stream,
  ``get_ptr(id).write(chunk)`` and ``set_model_metadata(id, IN_PROGRESS)``; at
  the end ``set_model_metadata(id, OK)``, ``get_ptr(id).flush()`` and
  ``get_ptr(id).close()``. Clients' updates arrive this way, and so does the
  combiner's aggregate (``ModelService.set_model`` runs ``Upload`` in process).
- Download (``ModelService.Download``): ``get_model_metadata(id)`` must be
  OK, then ``get(id)``, read in 1 MiB pieces, each sent as one gRPC message.
  One call per client, on the gRPC server's threads, so N clients read the
  same global model N times, concurrently.
- Aggregation (``UpdateHandler``): each update is read with ``get(id)`` and,
  with ``delete_models_storage`` (the default), deleted once aggregated.

Standard library only: this runs in FEDn's own interpreter too, where the
store is FEDn's ``TempModelStorage`` and neither this project nor its SDKs are
installed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

OK, IN_PROGRESS = 0, 1
"""``fedn.ModelStatus`` values the protocol sets."""
CHUNK_SIZE = 1024 * 1024
"""FEDn's ``CHUNK_SIZE``: gRPC message size both ways."""

FEDN_REQUIREMENT = "fedn==0.33.*"
DEFAULT_FEDN_VENV = Path.home() / ".cache" / "modelstorage-bench" / "fedn-0.33"
"""Where ``python -m benchmarks --make-fedn-venv`` installs FEDn: its pins (boto3 1.38 among them) would
replace what this project's environment has, so FEDn gets an interpreter of its own, outside the checkout."""
FEDN_PYTHON_VARIABLE = "MODELSTORAGE_BENCH_FEDN_PYTHON"


def chunks_of(data: bytes) -> list[bytes]:
    """``data`` as the gRPC stream would deliver it: a new bytes object per 1 MiB."""
    return [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]


def upload(store, model_id: str, chunks: list[bytes]) -> None:
    """``ModelService.Upload`` for one model."""
    for chunk in chunks:
        store.get_ptr(model_id).write(chunk)
        store.set_model_metadata(model_id, IN_PROGRESS)
    store.set_model_metadata(model_id, OK)
    store.get_ptr(model_id).flush()
    store.get_ptr(model_id).close()


def download(store, model_id: str) -> int:
    """``ModelService.Download`` for one client: the bytes it would send, counted."""
    status = store.get_model_metadata(model_id)
    if status != OK:
        raise RuntimeError(f"model {model_id} not ready: status {status!r}")
    found = store.get(model_id)
    if found is None:
        raise RuntimeError(f"model {model_id} not found")
    served = 0
    with found as f:
        while piece := f.read(CHUNK_SIZE):
            served += len(piece)
    return served


def read_update(store, model_id: str) -> int:
    """What the combiner does with one client's update: read it whole (``get``), then delete it."""
    found = store.get(model_id)
    if found is None:
        raise RuntimeError(f"update {model_id} not found")
    with found, found.getbuffer() as view:  # the aggregator's helper loads from it; no copy is measured
        size = view.nbytes
    store.delete(model_id)
    return size


def same_bytes(found: io.BytesIO | None, chunks: list[bytes]) -> bool:
    if found is None:
        return False
    with found:
        return found.read() == b"".join(chunks)


# -- which interpreter has FEDn ------------------------------------------------------


def fedn_version(python: str) -> str | None:
    """The fedn version ``python`` can import, or None."""
    probe = "import importlib.metadata as m, fedn.network.storage.models.tempmodelstorage; print(m.version('fedn'))"
    try:
        proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    except OSError:
        return None
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None


def find_fedn(explicit: str | None) -> tuple[str, str] | None:
    """(interpreter, fedn version) to run FEDn's store with: ``explicit``, else ``$MODELSTORAGE_BENCH_FEDN_PYTHON``,
    else this interpreter if it has fedn, else the one ``--make-fedn-venv`` made; None if none has it."""
    if explicit:
        version = fedn_version(explicit)
        if version is None:
            raise SystemExit(f"--fedn-python {explicit}: cannot import fedn's TempModelStorage there")
        return explicit, version
    for python in (os.environ.get(FEDN_PYTHON_VARIABLE), sys.executable, str(DEFAULT_FEDN_VENV / "bin" / "python")):
        if python and (python == sys.executable or Path(python).exists()):
            version = fedn_version(python)
            if version is not None:
                return python, version
    return None


def make_fedn_venv(log=print) -> int:
    """Make the default FEDn interpreter: a venv from this interpreter's Python with fedn 0.33 from PyPI."""
    base = getattr(sys, "_base_executable", sys.executable)
    log(f"making {DEFAULT_FEDN_VENV} with {base}, then installing {FEDN_REQUIREMENT} into it")
    subprocess.run([base, "-m", "venv", str(DEFAULT_FEDN_VENV)], check=True)
    python = str(DEFAULT_FEDN_VENV / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", FEDN_REQUIREMENT], check=True)
    log(f"fedn {fedn_version(python)} at {python}")
    return 0
