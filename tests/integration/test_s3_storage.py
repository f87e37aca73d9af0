"""Checkpoints on S3-compatible storage, against a real local S3 endpoint (moto's server)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("boto3", reason="S3 storage needs boto3 (pip install 'learnd[s3]')")
moto_server = pytest.importorskip("moto.server", reason="the S3 test endpoint needs moto[server]")

import boto3  # noqa: E402

from learnd.adapters.kafka.broker import free_port  # noqa: E402
from learnd.adapters.storage.local import CheckpointError  # noqa: E402
from learnd.adapters.storage.s3 import S3CheckpointStore  # noqa: E402


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="models")
    yield url
    server.stop()


def state(n):
    return {"format": 1, "n": n, "w": torch.full((4,), float(n))}


def test_save_keep_and_load_newest(s3):
    store = S3CheckpointStore("models", "fraud/", keep=2, endpoint_url=s3)
    assert store.load_latest() is None
    keys = [store.save(state(i)) for i in range(4)]
    listed = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="models")["Contents"]
    assert (
        sorted(o["Key"] for o in listed)
        == keys[-2:]
        == ["fraud/ckpt-000000000003.pt", "fraud/ckpt-000000000004.pt"]
    )
    loaded = store.load_latest()
    assert loaded["n"] == 3 and torch.equal(loaded["w"], torch.full((4,), 3.0))


def test_corrupt_newest_falls_back_and_all_corrupt_refuses(s3):
    store = S3CheckpointStore("models", "m/", keep=5, endpoint_url=s3)
    store.save(state(1))
    key = store.save(state(2))
    client = boto3.client("s3", endpoint_url=s3)
    client.put_object(Bucket="models", Key=key, Body=b"truncated")
    assert store.load_latest()["n"] == 1 and store.fallbacks == 1
    client.put_object(Bucket="models", Key="m/ckpt-000000000001.pt", Body=b"junk")
    with pytest.raises(CheckpointError, match="none of the 2 checkpoints in s3://models/m/"):
        store.load_latest()


def test_unreachable_storage_is_an_oserror(s3):
    store = S3CheckpointStore("no-such-bucket", "x/", endpoint_url=s3)
    with pytest.raises(OSError, match="checkpoint upload to s3://no-such-bucket/x/ failed"):
        store.save(state(1))
