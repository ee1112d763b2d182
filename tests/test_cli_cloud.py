"""The command's cloud side, as a user runs it: presigned URLs (url, commit) and retention (prune, lifecycle).

And what reading commands must not do to a file store: make a folder where a
path was mistyped, or delete without saying what.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import uuid

import pytest
from cli_support import (
    assert_one_line_error,
    clean_env,
    credentials_env,
    modelstorage,
    seaweedfs_url,
)

MiB = 1024 * 1024


@pytest.fixture(params=["s3", "minio"])
def url(request, seaweedfs_endpoint, monkeypatch) -> str:
    credentials_env(seaweedfs_endpoint, monkeypatch)
    return seaweedfs_url(seaweedfs_endpoint, request.param, f"cloud-{uuid.uuid4().hex[:8]}", part_size="5MiB")


def _send(request: dict, body: bytes | None) -> int:
    call = urllib.request.Request(request["url"], data=body, method=request["method"], headers=request["headers"])
    with urllib.request.urlopen(call, timeout=30) as response:
        response.read()
        return response.status


@pytest.mark.parametrize("size", [1000, 2 * 5 * MiB + 1], ids=["one PUT", "three parts"])
def test_a_client_uploads_by_the_plan_url_prints_and_commit_makes_it_a_model(url, tmp_path, size):
    data = os.urandom(size)
    sha256 = hashlib.sha256(data).hexdigest()
    planned = modelstorage("-u", url, "url", "m", "--put", "--size", str(size), "--sha256", sha256, "--expires", "10m")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    part = plan["part_size"]
    assert [_send(r, data[n * part : (n + 1) * part]) for n, r in enumerate(plan["requests"])] == [200] * len(
        plan["requests"]
    )
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []  # not a model yet
    committed = modelstorage("-u", url, "commit", "m", "--meta", "status=0", "--no-overwrite")
    assert committed.returncode == 0, committed.stderr
    assert "committed m" in committed.stderr.decode()
    link = modelstorage("-u", url, "url", "m", "--expires", "60").stdout.decode().strip()
    with urllib.request.urlopen(link, timeout=30) as response:
        assert response.read() == data
    (listed,) = json.loads(modelstorage("-u", url, "ls", "--json").stdout)
    assert (listed["id"], listed["sha256"], listed["metadata"]) == ("m", sha256, {"status": 0})


def test_a_wrong_upload_is_not_committed(url):
    data = os.urandom(1000)
    plan = json.loads(
        modelstorage(
            "-u", url, "url", "m", "--put", "--size", "1000", "--sha256", hashlib.sha256(data).hexdigest()
        ).stdout
    )
    (request,) = plan["requests"]
    with pytest.raises(urllib.error.HTTPError):  # SeaweedFS checks the signed checksum
        _send(request, b"x" + data[1:])
    assert_one_line_error(modelstorage("-u", url, "commit", "m"), 3, "nothing was uploaded")


def test_url_needs_an_object_store_and_says_so(tmp_path):
    folder = (tmp_path / "models").as_uri()
    modelstorage("-u", folder, "put", "m", "-", stdin=b"weights")
    assert_one_line_error(modelstorage("-u", folder, "url", "m"), 2, "object store")


def test_prune_deletes_what_its_rule_lets_go_after_a_dry_run_that_deletes_nothing(tmp_path):
    folder = (tmp_path / "models").as_uri()
    for n in range(1, 5):
        modelstorage("-u", folder, "put", f"global-{n}", "-", stdin=b"aggregate", env=clean_env())
    modelstorage("-u", folder, "put", "update-a", "-", "--meta", "status=0", stdin=b"update")
    dry = modelstorage("-u", folder, "prune", "--match", "global-*", "--keep-last", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.decode().split() == ["global-1", "global-2"]
    assert "would delete 2" in dry.stderr.decode()
    assert len(json.loads(modelstorage("-u", folder, "ls", "--json").stdout)) == 5
    done = modelstorage("-u", folder, "prune", "--match", "global-*", "--keep-last", "2")
    assert done.stdout.decode().split() == ["global-1", "global-2"]
    left = [m["id"] for m in json.loads(modelstorage("-u", folder, "ls", "--json").stdout)]
    assert left == ["global-3", "global-4", "update-a"]
    assert_one_line_error(modelstorage("-u", folder, "prune"), 2, "--keep-last")


def test_lifecycle_prints_the_rules_and_sets_them_with_apply(seaweedfs_endpoint, monkeypatch):
    credentials_env(seaweedfs_endpoint, monkeypatch)
    url = seaweedfs_url(seaweedfs_endpoint, "s3", f"life-{uuid.uuid4().hex[:8]}", metadata="tags")
    shown = modelstorage("-u", url, "lifecycle", "--older-than", "2d", "--where", "status=0")
    rules = json.loads(shown.stdout)["Rules"]
    expire = next(rule for rule in rules if rule["ID"].endswith(":expire"))
    assert expire["Expiration"] == {"Days": 2}
    assert expire["Filter"]["And"]["Tags"] == [{"Key": "status", "Value": "0"}]
    assert "--apply" in shown.stderr.decode()
    applied = modelstorage("-u", url, "lifecycle", "--older-than", "2d", "--where", "status=0", "--apply")
    assert applied.returncode == 0, applied.stderr
    bucket = url.split("/")[2]
    set_ids = {
        r["ID"] for r in seaweedfs_endpoint.boto3_client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    }
    assert {rule["ID"] for rule in rules} <= set_ids
    checked = modelstorage("-u", url, "check")
    assert "aborts incomplete uploads after 1 day" in checked.stdout.decode()
    sidecar = url.replace("metadata=tags", "metadata=sidecar")
    assert_one_line_error(
        modelstorage("-u", sidecar, "lifecycle", "--older-than", "2d", "--where", "status=0"),
        2,
        "the URL option metadata=tags",
    )


def test_reading_commands_make_no_folder_where_a_path_was_mistyped(tmp_path):
    typo = tmp_path / "typo" / "models"
    for command in (
        ["ls"],
        ["get", "m", "-o", str(tmp_path / "out")],
        ["meta", "m"],
        ["rm", "m"],
        ["check"],
        ["purge"],
    ):
        assert_one_line_error(modelstorage("-u", typo.as_uri(), *command), 2, "does not exist")
    assert not (tmp_path / "typo").exists()


def test_purge_without_yes_lists_what_it_would_delete_and_deletes_nothing(tmp_path):
    folder = tmp_path / "models"
    modelstorage("-u", folder.as_uri(), "put", "m1", "-", stdin=b"weights")
    (folder / "notes.txt").write_text("mine")
    refused = modelstorage("-u", folder.as_uri(), "purge")
    assert_one_line_error(refused, 2, "would delete the 1 model(s)", "--yes")
    assert refused.stdout.decode().split() == ["m1"]
    assert modelstorage("-u", folder.as_uri(), "purge", "--yes").returncode == 0
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_model_changed_outside_the_store_shows_in_ls_and_get_writes_nothing(tmp_path):
    folder = tmp_path / "models"
    modelstorage("-u", folder.as_uri(), "put", "m", "-", "--meta", "round=1", stdin=b"weights of round 1")
    with open(folder / "m", "r+b") as f:
        f.write(b"W")
    (listed,) = json.loads(modelstorage("-u", folder.as_uri(), "ls", "--json").stdout)
    assert listed["changed"] is True and listed["metadata"] == {"round": 1}
    out = tmp_path / "copy.bin"
    assert_one_line_error(modelstorage("-u", folder.as_uri(), "get", "m", "-o", str(out)), 1, "corrupt")
    assert not out.exists()
