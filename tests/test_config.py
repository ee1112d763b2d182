"""open_storage(url): which store a URL or the environment names, and which URLs are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from storage import ConfigurationError, MemoryModelStorage, TempModelStorage, open_storage


@pytest.fixture(autouse=True)
def no_storage_env(monkeypatch):
    monkeypatch.delenv("MODELSTORAGE_URL", raising=False)
    monkeypatch.delenv("FEDN_MODEL_DIR", raising=False)


def test_memory_url_opens_a_memory_store():
    store = open_storage("memory://")
    assert isinstance(store, MemoryModelStorage)
    store.put("model", b"weights")
    assert store.get("model").read() == b"weights"


def test_memory_urls_open_separate_stores():
    open_storage("memory://").put("model", b"weights")
    assert open_storage("memory://").exist("model") is False


def test_file_url_opens_a_temp_store_on_that_folder(tmp_path):
    folder = tmp_path / "models"
    store = open_storage(f"file://{folder}")
    assert isinstance(store, TempModelStorage)
    assert store.directory == folder
    assert store.fsync is False
    store.put("model", b"weights")
    assert (folder / "model").read_bytes() == b"weights"


@pytest.mark.parametrize("spelling", ["true", "1", "yes", "on", "TRUE"])
def test_file_url_fsync_option_turns_fsync_on(tmp_path, spelling):
    store = open_storage(f"file://{tmp_path}/models?fsync={spelling}")
    assert isinstance(store, TempModelStorage)
    assert store.fsync is True
    assert store.directory == tmp_path / "models"


def test_file_url_fsync_false_keeps_it_off(tmp_path):
    assert open_storage(f"file://{tmp_path}/models?fsync=false").fsync is False


def test_file_url_path_is_percent_decoded(tmp_path):
    store = open_storage(f"file://{tmp_path}/my%20models")
    assert store.directory == tmp_path / "my models"


def test_file_url_with_localhost_is_local(tmp_path):
    assert open_storage(f"file://localhost{tmp_path}/models").directory == tmp_path / "models"


def test_no_url_and_no_env_gives_the_temp_store(tmp_path, monkeypatch):
    # FEDN_MODEL_DIR keeps the default store out of the real temp folder.
    monkeypatch.setenv("FEDN_MODEL_DIR", str(tmp_path / "fedn"))
    store = open_storage()
    assert isinstance(store, TempModelStorage)
    assert store.directory == tmp_path / "fedn"


def test_modelstorage_url_env_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSTORAGE_URL", "memory://")
    assert isinstance(open_storage(), MemoryModelStorage)
    monkeypatch.setenv("MODELSTORAGE_URL", f"file://{tmp_path}/from-env")
    store = open_storage()
    assert isinstance(store, TempModelStorage)
    assert store.directory == tmp_path / "from-env"


def test_an_explicit_url_beats_the_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSTORAGE_URL", f"file://{tmp_path}/from-env")
    assert isinstance(open_storage("memory://"), MemoryModelStorage)
    assert not (tmp_path / "from-env").exists()


@pytest.mark.parametrize("url", ["ftp://host/models", "http://host/models", "gs://bucket/models", "/a/plain/path"])
def test_an_unknown_scheme_is_a_configuration_error(url):
    with pytest.raises(ConfigurationError) as raised:
        open_storage(url)
    assert isinstance(raised.value, ValueError)
    assert "memory://" in str(raised.value)


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/prefix",
        f"minio://minioadmin:{SECRET}@localhost:9000/bucket/prefix?secure=false",
        f"memory://user:{SECRET}@",
        f"file://user:{SECRET}@localhost/tmp/models",
    ],
    ids=["s3", "minio", "memory", "file"],
)
def test_credentials_in_a_url_are_refused_without_echoing_them(url):
    with pytest.raises(ConfigurationError) as raised:
        open_storage(url)
    message = str(raised.value)
    assert SECRET not in message
    assert SECRET not in repr(raised.value)
    assert "credential" in message.lower()


@pytest.mark.parametrize(
    "url",
    ["memory://?verbose=1", "file://{tmp}/models?bogus=1", "file://{tmp}/models?fsync=true&cache=1"],
    ids=["memory", "file", "file-with-a-known-one-too"],
)
def test_an_unknown_option_is_refused_and_creates_nothing(tmp_path, url):
    with pytest.raises(ConfigurationError) as raised:
        open_storage(url.format(tmp=tmp_path))
    assert isinstance(raised.value, ValueError)
    assert not (tmp_path / "models").exists()


def test_an_unreadable_fsync_value_is_refused(tmp_path):
    with pytest.raises(ConfigurationError):
        open_storage(f"file://{tmp_path}/models?fsync=maybe")


@pytest.mark.parametrize("url", ["file://otherhost/models", "file://"])
def test_a_file_url_must_name_a_local_folder(url):
    with pytest.raises(ConfigurationError):
        open_storage(url)


def test_importing_storage_loads_no_cloud_sdk():
    check = "import storage, sys; assert 'boto3' not in sys.modules and 'minio' not in sys.modules"
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr


def test_opening_local_stores_loads_no_cloud_sdk(tmp_path):
    check = (
        "import sys; from storage import open_storage; "
        f"open_storage('memory://'); open_storage('file://{tmp_path}/models'); "
        "assert 'boto3' not in sys.modules and 'minio' not in sys.modules"
    )
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
