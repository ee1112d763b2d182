"""Retention on every backend: what a rule lets go goes, nothing else, and stale writes with it."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from server_fixtures import EVERY_SERVER

from storage import ConfigurationError, ModelStorage
from storage.retention import Retention

LATER = datetime.now(timezone.utc) + timedelta(days=30)
objectstores = pytest.mark.backends(lambda spec: "objectstore" in {m.name for m in spec.marks})
fine_clocks = pytest.mark.backends(lambda spec: spec.name in ("memory", "tempfile"))


def _round(store: ModelStorage) -> None:
    for n in range(1, 4):
        store.put(f"global-{n}", b"aggregate %d" % n, {"round": n})
    for client in "ab":
        store.put(f"update-{client}", b"update", {"status": 0, "client": client})
    store.put("update-c", b"update", {"status": 1, "client": "c"})


def test_an_age_rule_removes_the_models_it_selects_and_nothing_else(store):
    _round(store)
    rule = Retention(where={"status": 0}, older_than=timedelta(days=1))
    assert store.prune(rule) == []  # nothing is a day old yet
    assert store.prune(rule, now=LATER, dry_run=True) == ["update-a", "update-b"]
    assert len(store.list()) == 6, "a dry run removes nothing"
    assert store.prune(rule, now=LATER) == ["update-a", "update-b"]
    assert store.list() == ["global-1", "global-2", "global-3", "update-c"]


def test_rules_combine_and_a_pattern_selects_by_id(store):
    _round(store)
    removed = store.prune(
        Retention(match="global-*", older_than=timedelta(hours=1)),
        Retention(predicate=lambda stat, metadata: metadata.get("client") == "c", older_than=timedelta(hours=1)),
        now=LATER,
    )
    assert removed == ["global-1", "global-2", "global-3", "update-c"]
    assert store.list() == ["update-a", "update-b"]


@fine_clocks
def test_keep_last_keeps_the_most_recently_written(store):
    for n in range(1, 6):
        store.put(f"global-{n}", b"aggregate", {"round": n})
        time.sleep(0.01)
    assert store.prune(Retention(match="global-*", keep_last=2)) == ["global-1", "global-2", "global-3"]
    assert store.prune(Retention(match="global-*", keep_last=2, older_than=timedelta(days=1))) == []
    assert store.list() == ["global-4", "global-5"]


@objectstores
def test_stale_uploads_and_direct_uploads_never_committed_go_with_a_prune(store, store_spec):
    store.put("m", b"weights")
    upload = store.client.start_upload(store.keys.model_key("crashed"))
    upload.put_part(1, b"half a model")
    data = b"direct"
    store.presign_put("direct", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    rule = Retention(older_than=timedelta(days=365))
    if "moto" not in store_spec.name and "mock_aws" not in store_spec.name:  # moto: every upload started 2010-11-10
        store.prune(rule)
        assert store.pending_uploads() != [], "a fresh upload is no stale one"
    store.prune(rule, now=LATER)
    assert store.pending_uploads() == []
    assert store.list() == ["m"]


def test_a_file_stores_stale_part_files_go_with_a_prune(tmp_path):
    from storage import TempModelStorage

    store = TempModelStorage(tmp_path)
    stale, fresh = tmp_path / ".m.k1ll3d_0.part", tmp_path / ".n.fr3sh000.part"
    for part in (stale, fresh):
        part.write_bytes(b"half a model")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    (tmp_path / "notes.part").write_bytes(b"not the store's")
    store.prune(Retention(older_than=timedelta(days=365)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".n.fr3sh000.part", "notes.part"]


def test_a_rule_says_what_it_keeps():
    with pytest.raises(ConfigurationError, match="last N"):
        Retention(match="global-*")
    with pytest.raises(ConfigurationError):
        Retention(keep_last=-1)


@pytest.mark.parametrize("server", EVERY_SERVER)
@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_lifecycle_rules_replace_the_stores_own_and_leave_the_buckets_others(request, server, adapter):
    from chaos import adapter_store

    endpoint = request.getfixturevalue(server)
    raw, bucket = endpoint.boto3_client(), f"lifecycle-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=bucket)
    theirs = {"ID": "archive", "Status": "Enabled", "Filter": {"Prefix": "archive/"}, "Expiration": {"Days": 90}}
    raw.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [theirs]})
    with adapter_store(adapter, endpoint, bucket, "team/combiner-1", metadata="tags") as store:
        rules = store.lifecycle_rules(expire_after=timedelta(days=2), where={"status": 0})
        store.apply_lifecycle(rules)
        store.apply_lifecycle(store.lifecycle_rules(expire_after=timedelta(days=3), where={"status": 0}))
        set_rules = raw.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        ids = sorted(rule["ID"] for rule in set_rules)
        assert ids == sorted(["archive", *(rule["ID"] for rule in rules)])
        expire = next(rule for rule in set_rules if rule["ID"].endswith(":expire"))
        assert expire["Expiration"]["Days"] == 3
        assert store.upload_backstop() == 1
    with adapter_store(adapter, endpoint, bucket, "team/combiner-1", metadata="sidecar") as sidecar_store:
        with pytest.raises(ConfigurationError, match="metadata='tags'"):
            sidecar_store.lifecycle_rules(expire_after=timedelta(days=2), where={"status": 0})
        assert len(sidecar_store.lifecycle_rules(expire_after=timedelta(days=2))) == 4  # models, sidecars, uploads x2
