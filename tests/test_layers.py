"""The layers the folders show hold: checked statically (the import contracts) and at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("adapters", "boto3", "botocore", "minio", "urllib3", "rich", "numpy", "storage.cli")


def test_the_import_contracts_in_pyproject_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_fail_on_a_core_module_that_imports_an_adapter(tmp_path):
    # The check itself can fail: a copy of the tree with one forbidden import breaks a contract.
    copy = tmp_path / "tree"
    for name in ("storage", "adapters"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    ids = copy / "storage" / "ids.py"
    ids.write_text(ids.read_text() + "\nimport adapters.s3modelstorage  # noqa\n")
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode != 0
    assert "storage.ids -> adapters.s3modelstorage" in result.stdout


@pytest.mark.parametrize("module", ["storage", "storage.registry", "storage.tempmodelstorage"])
def test_importing_the_core_loads_no_sdk_no_rich_no_numpy(module):
    check = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m == 'storage.cli')\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
