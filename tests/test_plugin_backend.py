"""A backend from another distribution joins by its entry point alone: the registry, the command and the suite see it.

``plugin/`` holds ``modelstorage_sqlite`` as ``pip install`` would leave it (a
package and its ``.dist-info`` with ``entry_points.txt``); ``conftest.py``
puts it on ``sys.path``, and ``backends.py`` registers it once, which runs the
conformance suite and the state machine on it (``[sqlite-plugin]``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

from conftest import PLUGINS

from storage import open_storage, registry


def test_the_entry_point_is_what_finds_the_backend():
    (entry,) = [ep for ep in metadata.entry_points(group=registry.GROUP) if ep.name == "sqlite"]
    assert entry.dist.name == "modelstorage-sqlite"
    assert "sqlite" not in registry._registered  # not registered in code: found as installed
    assert "sqlite://" in registry.known_schemes()


def test_a_url_of_its_scheme_opens_it(tmp_path):
    with open_storage(f"sqlite://{tmp_path}/models.db") as store:
        store.put("m", b"weights", {"round": 1})
        assert type(store).__module__ == "modelstorage_sqlite"
    with open_storage(f"sqlite://{tmp_path}/models.db") as again:
        assert again.get("m").read() == b"weights"
        assert again.get_model_metadata("m") == {"round": 1}


def test_the_command_uses_it_unchanged(tmp_path):
    url = f"sqlite://{tmp_path}/models.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    model = tmp_path / "weights.bin"
    model.write_bytes(b"\0" * 1000)
    run = [sys.executable, "-m", "storage", "-q", "-u", url]
    subprocess.run([*run, "put", "m", str(model), "--meta", "status=0"], env=env, check=True, timeout=60)
    listed = subprocess.run([*run, "ls", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert '"id": "m"' in listed.stdout and '"status": 0' in listed.stdout
