"""The ``store`` fixture: every test that takes it runs once per registered backend.

Backends are registered in ``backends.py``. A test that also asks for a
capability fixture (``reopen``, ``tamper``, ``plant_outside``) runs only on the
backends whose spec provides that hook, so nothing is skipped and no test is
duplicated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import objectstore_backends  # noqa: F401 - registers the object-store backends
import pytest
from backends import BACKENDS, CAPABILITIES, BackendSpec

from storage import ModelStorage

# A third party's backend, visible to importlib.metadata as if pip had installed it (see plugin/).
PLUGINS = Path(__file__).parent / "plugin"
sys.path.insert(0, str(PLUGINS))

# Session-scoped S3 servers (SeaweedFS, moto's server) that object-store
# entries in backends.py reach through request.getfixturevalue(...).
pytest_plugins = ["server_fixtures", "proxy_fixtures"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_spec" not in metafunc.fixturenames:
        return
    needed = [name for name in CAPABILITIES if name in metafunc.fixturenames]
    specs = [spec for spec in BACKENDS if all(getattr(spec, name) is not None for name in needed)]
    # @pytest.mark.backends(predicate) narrows a test to the backends it is about.
    for marker in metafunc.definition.iter_markers("backends"):
        specs = [spec for spec in specs if marker.args[0](spec)]
    metafunc.parametrize("store_spec", [spec.param() for spec in specs], indirect=True)


@pytest.fixture
def store_spec(request: pytest.FixtureRequest) -> BackendSpec:
    """The registry entry of the backend this test runs on."""
    return request.param


@pytest.fixture
def store(store_spec: BackendSpec, request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
    """A fresh, empty store of the backend under test."""
    with store_spec.factory(request) as fresh:
        yield fresh


@pytest.fixture
def reopen(store_spec: BackendSpec, store: ModelStorage) -> Iterator[Callable[[], ModelStorage]]:
    """Returns a new instance on ``store``'s namespace each call: another process, or a restart."""
    assert store_spec.reopen is not None
    opened: list[ModelStorage] = []

    def another_instance() -> ModelStorage:
        instance = store_spec.reopen(store)
        opened.append(instance)
        return instance

    yield another_instance
    for instance in opened:
        instance.close()


@pytest.fixture
def tamper(store_spec: BackendSpec, store: ModelStorage) -> Callable[[str], None]:
    """Corrupts a committed model's bytes in ``store`` behind its back, keeping its recorded SHA-256."""
    assert store_spec.tamper is not None
    return lambda model_id: store_spec.tamper(store, model_id)


@pytest.fixture
def footprint(store_spec: BackendSpec, store: ModelStorage) -> Callable[[], frozenset[str]]:
    """Everything in and around ``store``'s namespace, to prove an operation touched nothing."""
    return lambda: store_spec.footprint(store)


@pytest.fixture
def plant_outside(store_spec: BackendSpec, store: ModelStorage) -> Callable[[], None]:
    """Puts something just outside ``store``'s namespace, which the store must never touch."""
    assert store_spec.plant_outside is not None
    return lambda: store_spec.plant_outside(store)
