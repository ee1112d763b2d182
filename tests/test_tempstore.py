"""What only the temp-file store promises: its folder layout, restarts, and strangers in its folder."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest
from backends import tree

from storage import ConfigurationError, IntegrityError, ModelNotFoundError, StorageError, TempModelStorage, open_storage
from storage.writer import CHUNK_SIZE

OK, IN_PROGRESS = 0, 1


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def store(folder: Path):
    with TempModelStorage(folder) as fresh:
        yield fresh


def test_a_restarted_combiner_sees_every_model_and_its_metadata(folder):
    models = {"global-0": (b"seed", {"round": 0}), "update-a": (os.urandom(CHUNK_SIZE + 1), OK), "empty": (b"", {})}
    with TempModelStorage(folder) as before_restart:
        for model_id, (data, metadata) in models.items():
            before_restart.put(model_id, data, metadata)
        before_restart.set_model_metadata("global-0", {"round": 0, "status": "aggregated"})
    with TempModelStorage(folder) as after_restart:
        assert after_restart.list() == sorted(models)
        for model_id, (data, _) in models.items():
            assert after_restart.get(model_id).read() == data
            assert after_restart.stat(model_id).sha256 == hashlib.sha256(data).hexdigest()
            assert after_restart.get(model_id, verify=True).read() == data
        assert after_restart.get_model_metadata("global-0") == {"round": 0, "status": "aggregated"}
        assert after_restart.get_model_metadata("update-a") == OK
        assert after_restart.get_model_metadata("empty") == {}


def test_the_model_file_holds_exactly_the_bytes_as_fedn_writes_them(store, folder):
    data = os.urandom(5000)
    store.put("model", data, OK)
    assert (folder / "model").read_bytes() == data


def test_a_model_file_written_by_another_tool_is_read_by_id_but_not_listed_until_given_metadata(store, folder):
    (folder / "from-fedn").write_bytes(b"weights")
    assert store.list() == []
    assert store.exist("from-fedn") is True
    assert store.get("from-fedn").read() == b"weights"
    assert store.get_model_metadata("from-fedn") == {}
    assert store.stat("from-fedn").sha256 is None
    store.set_model_metadata("from-fedn", OK)  # given a record by name, it is the store's model
    assert store.get_model_metadata("from-fedn") == OK
    assert store.list() == ["from-fedn"]


def test_fedn_model_dir_is_the_default_folder(tmp_path, monkeypatch):
    configured = tmp_path / "fedn-models"
    monkeypatch.setenv("FEDN_MODEL_DIR", str(configured))
    with TempModelStorage() as store:
        assert store.directory == configured
        store.put("model", b"weights")
    assert (configured / "model").read_bytes() == b"weights"


def test_without_fedn_model_dir_the_default_is_a_private_per_user_folder_in_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDN_MODEL_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TempModelStorage() as store:
        mine = store.directory
        store.put("model", b"weights")
    assert mine.parent == tmp_path
    assert (mine / "model").read_bytes() == b"weights"
    assert stat.S_IMODE(os.stat(mine).st_mode) & 0o077 == 0, "other users can read the models"
    monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 4242)
    with TempModelStorage() as someone_elses:
        assert someone_elses.directory.parent == tmp_path
        assert someone_elses.directory != mine


def test_a_write_in_progress_is_only_a_hidden_part_file(store, folder):
    writer = store.get_ptr("model")
    writer.write(b"weights")
    names = os.listdir(folder)
    assert len(names) == 1
    assert fnmatch.fnmatch(names[0], ".model.*.part")
    part_inode = os.stat(folder / names[0]).st_ino
    writer.close()
    # Same inode: the part file was renamed into place, not copied.
    assert os.stat(folder / "model").st_ino == part_inode
    assert not fnmatch.filter(os.listdir(folder), "*.part")


def test_a_replacement_in_progress_leaves_the_committed_file_untouched(store, folder):
    store.put("model", b"version 1", OK)
    writer = store.get_ptr("model")
    writer.write(b"version 2")
    assert (folder / "model").read_bytes() == b"version 1"
    assert len(fnmatch.filter(os.listdir(folder), ".model.*.part")) == 1
    writer.close()
    assert (folder / "model").read_bytes() == b"version 2"
    assert not fnmatch.filter(os.listdir(folder), "*.part")


def test_a_killed_writers_part_file_is_never_listed_and_delete_all_removes_it(store, folder):
    store.put("model", b"weights")
    leftover = folder / ".model.k1ll3d_0.part"  # as mkstemp names a write's part file
    leftover.write_bytes(b"half a model")
    orphan = folder / ".orphan.x7abc9de.part"
    orphan.write_bytes(b"half another model")
    assert store.list() == ["model"]
    assert store.exist("orphan") is False
    assert store.get("model").read() == b"weights"
    assert store.delete_all() is True
    assert os.listdir(folder) == []


def test_delete_all_leaves_what_is_not_ours_alone(store, folder, tmp_path):
    outside_target = tmp_path / "outside.bin"
    outside_target.write_bytes(b"not a model of this store")
    (folder / ".bashrc").write_text("export PATH")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "blob").write_bytes(b"cached")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "ckpt-1").write_bytes(b"checkpoint")
    (folder / ".notes.txt").write_text("hidden, but not a record or a part file")
    for n in range(3):
        store.put(f"model-{n}", b"weights", {"round": n})
    foreign = tree(folder) - {f"model-{n}" for n in range(3)} - {f".model-{n}.meta.json" for n in range(3)}

    store.delete_all()

    assert tree(folder) == foreign
    assert outside_target.read_bytes() == b"not a model of this store"
    assert store.list() == []


def test_a_file_swapped_outside_the_store_keeps_its_record_and_shows_as_changed(store, folder):
    written = store.put("model", b"version 1", {"round": 1})
    # Another tool swaps the file without telling the store.
    replacement = folder / "replacement.tmp"
    replacement.write_bytes(b"version 2 from elsewhere")
    os.replace(replacement, folder / "model")
    assert store.get("model").read() == b"version 2 from elsewhere"
    assert store.get_model_metadata("model") == {"round": 1}
    stat = store.stat("model")
    assert (stat.changed, stat.sha256, stat.size) == (True, written.sha256, len(b"version 2 from elsewhere"))
    with pytest.raises(IntegrityError):
        store.get("model", verify=True)


def test_metadata_set_after_an_outside_swap_does_not_adopt_the_new_file(store, folder):
    written = store.put("model", b"version 1", {"round": 1})
    replacement = folder / "replacement.tmp"
    replacement.write_bytes(b"version 2 from elsewhere")
    os.replace(replacement, folder / "model")
    store.set_model_metadata("model", OK)
    assert store.get_model_metadata("model") == OK
    assert (store.stat("model").changed, store.stat("model").sha256) == (True, written.sha256)


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_makes_each_commit_durable(folder, monkeypatch, fsync):
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    with TempModelStorage(folder, fsync=fsync) as store:
        store.put("model", b"version 1", OK)
        after_put = len(synced)
        with store.get_ptr("model") as writer:
            writer.write(b"version 2")
            store.set_model_metadata("model", IN_PROGRESS)
        store.set_model_metadata("model", OK)
        assert store.get("model", verify=True).read() == b"version 2"
        assert store.get_model_metadata("model") == OK
        assert store.delete("model") is True
    if fsync:
        # The file, its metadata record and the folder entry of the rename.
        assert after_put >= 3
    else:
        assert synced == []


# A subfolder whose name is a valid id (a user's checkpoints, say) is not a
# model, and every method must agree on that.
NOT_A_MODEL = {
    "exist": lambda store: store.exist("checkpoints") is False,
    "list": lambda store: store.list() == [],
    "get": lambda store: store.get("checkpoints") is None,
    "open": lambda store: _raises(ModelNotFoundError, store.open, "checkpoints"),
    "stat": lambda store: _raises(ModelNotFoundError, store.stat, "checkpoints"),
    "get_model_metadata": lambda store: _raises(ModelNotFoundError, store.get_model_metadata, "checkpoints"),
    "delete": lambda store: store.delete("checkpoints") is False,
}


def _raises(error: type[BaseException], call, *args) -> bool:
    try:
        call(*args)
    except error:
        return True
    return False


@pytest.mark.parametrize("answers_as_missing", NOT_A_MODEL.values(), ids=NOT_A_MODEL.keys())
def test_a_subdirectory_named_like_a_model_is_treated_as_missing(store, folder, answers_as_missing):
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "ckpt-1").write_bytes(b"checkpoint")
    assert answers_as_missing(store)
    assert (folder / "checkpoints" / "ckpt-1").read_bytes() == b"checkpoint"


# A symlink could serve a file from outside the folder; every method must agree
# whether it is a model, and delete_all must never reach its target.
def test_exist_get_and_list_agree_about_a_symlink_in_the_folder(store, folder, tmp_path):
    target = tmp_path / "outside.bin"
    target.write_bytes(b"a file outside the store")
    (folder / "linked").symlink_to(target)
    listed = "linked" in store.list()
    assert store.exist("linked") is listed
    assert (store.get("linked") is not None) is listed
    store.delete_all()
    assert store.exist("linked") is False
    assert target.read_bytes() == b"a file outside the store"


# Another process's delete_all removes in-progress .part files too; the write
# that loses its file must fail with the library's error, committing nothing.
def test_a_write_whose_part_file_another_instance_removed_fails_with_a_storage_error(folder):
    with TempModelStorage(folder) as writer_side, TempModelStorage(folder) as cleaner:
        writer = writer_side.get_ptr("model")
        writer.write(b"weights")
        cleaner.delete_all()
        with pytest.raises(StorageError):
            writer.close()
        assert writer_side.exist("model") is False
        assert writer_side.get_ptr("model") is not writer


def _put_large_model(folder: str, data: bytes) -> None:
    TempModelStorage(folder).put("child", data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_child_forked_after_large_writes_writes_large_models_too(store, folder):
    """Large writes are hashed on helper threads; a forked child has none of its parent's."""
    import multiprocessing

    data = os.urandom(4 * CHUNK_SIZE)
    store.put("parent", data)  # the parent's hashing threads now exist, idle
    child = multiprocessing.get_context("fork").Process(target=_put_large_model, args=(str(folder), data))
    child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung and child.exitcode == 0
    assert store.get("child", verify=True).getvalue() == data


def _put_model(folder: str, model_id: str, data: bytes) -> None:
    TempModelStorage(folder).put(model_id, data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_two_processes_committing_one_id_leave_bytes_and_record_that_belong_together(store, folder, monkeypatch):
    """A commit is two renames; another process's whole commit must not fit between them."""
    import multiprocessing

    parent, model_path = os.getpid(), str(folder / "m")
    real_replace, children = os.replace, []

    def replace_then_let_another_process_commit(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if os.getpid() == parent and os.fspath(dst) == model_path and not children:
            child = multiprocessing.get_context("fork").Process(target=_put_model, args=(str(folder), "m", b"child"))
            children.append(child)
            child.start()
            child.join(timeout=1.5)  # it finishes here unless our commit holds it off

    monkeypatch.setattr(os, "replace", replace_then_let_another_process_commit)
    store.put("m", b"parent")
    monkeypatch.undo()
    children[0].join(timeout=60)
    assert children[0].exitcode == 0
    assert store.stat("m").changed is False
    assert store.get("m", verify=True).getvalue() == b"child"


def test_a_large_model_written_while_the_interpreter_exits_is_committed(folder):
    """An atexit handler may store a last model; the hashing threads are gone by then."""
    import subprocess
    import sys

    script = (
        "import atexit, sys\n"
        "from storage import TempModelStorage\n"
        "store = TempModelStorage(sys.argv[1])\n"
        "atexit.register(lambda: store.put('last', b'x' * (4 * 2**20)))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], cwd=repo, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    assert TempModelStorage(folder).get("last", verify=True).getvalue() == b"x" * (4 * 2**20)


# -- what the store did not write ------------------------------------------------------------------


def _ours_and_theirs(folder: Path) -> TempModelStorage:
    store = TempModelStorage(folder)
    store.put("model-1", b"weights", {"round": 1})
    for name, text in (("notes.txt", "mine"), ("README.md", "mine too"), (".hidden.part", "not a store's part")):
        (folder / name).write_text(text)
    (folder / "fedn-update").write_bytes(b"written by FEDn's own class")
    return store


def test_list_and_delete_all_see_only_the_models_the_store_wrote(tmp_path):
    store = _ours_and_theirs(tmp_path)
    store.get_ptr("model-2").write(b"an open write")  # its .part file is the store's own
    assert store.list() == ["model-1"]
    assert store.delete_all() is True
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".hidden.part", "README.md", "fedn-update", "notes.txt"]


def test_a_file_another_tool_put_there_is_still_read_by_its_id(tmp_path):
    store = _ours_and_theirs(tmp_path)
    assert store.exist("fedn-update")
    assert store.get("fedn-update").read() == b"written by FEDn's own class"
    assert store.get_model_metadata("fedn-update") == {}
    assert "fedn-update" not in store.list()


def test_opening_a_missing_folder_without_create_makes_nothing(tmp_path):
    missing = tmp_path / "typo" / "models"
    with pytest.raises(ConfigurationError, match="does not exist"):
        TempModelStorage(missing, create=False)
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_storage(missing.as_uri(), create=False)
    assert not (tmp_path / "typo").exists()
    assert open_storage(missing.as_uri()).list() == []  # a store that may write makes its folder
    assert missing.is_dir()


# -- bytes changed outside the store ------------------------------------------------------------------


def test_bytes_changed_outside_the_store_keep_their_record_and_fail_a_verified_read(tmp_path):
    store = TempModelStorage(tmp_path)
    written = store.put("m", b"weights of round 1", {"round": 1})
    with open(tmp_path / "m", "r+b") as f:  # an ordinary edit: the file's mtime moves
        f.write(b"W")
    stat = store.stat("m")
    assert stat.changed and stat.sha256 == written.sha256
    assert store.get_model_metadata("m") == {"round": 1}
    with pytest.raises(IntegrityError):
        store.get("m", verify=True)
    store.set_model_metadata("m", {"round": 2})  # new metadata does not adopt the changed bytes
    assert store.stat("m").changed
    with pytest.raises(IntegrityError):
        store.get("m", verify=True)
    assert TempModelStorage(tmp_path).stat("m").changed  # after a restart too


def test_a_file_touched_but_not_changed_still_verifies(tmp_path):
    store = TempModelStorage(tmp_path)
    store.put("m", b"weights")
    os.utime(tmp_path / "m", (0, 0))
    assert store.stat("m").changed
    assert store.get("m", verify=True).read() == b"weights"


def test_a_model_the_store_writes_again_is_its_own_again(tmp_path):
    store = TempModelStorage(tmp_path)
    store.put("m", b"weights")
    (tmp_path / "m").write_bytes(b"replaced by hand")
    store.put("m", b"weights 2")
    assert not store.stat("m").changed
    assert store.get("m", verify=True).read() == b"weights 2"
