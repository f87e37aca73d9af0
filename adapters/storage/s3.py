"""Checkpoint storage on S3-compatible object storage (AWS S3, MinIO, Ceph, R2, ...).

An object PUT is atomic: readers see the whole new checkpoint or none of it, so no temp-and-
rename dance is needed. Keys are ``<prefix>ckpt-<seq>.pt``; the newest ``keep`` are kept and a
corrupt newest one falls back to the previous, loudly, as on a local disk. Credentials come from
boto3's usual chain (environment, shared files, instance roles). Needs ``pip install
'learnd[s3]'``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

import torch

from learnd.adapters.storage.local import load_newest, to_plain

_NAME = re.compile(r"ckpt-(\d{12})\.pt$")


class S3CheckpointStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        keep: int = 3,
        client=None,
        endpoint_url: str | None = None,
    ):
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url)
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix
        self.keep = keep
        self.fallbacks = 0

    def _keys(self) -> list[tuple[int, str]]:
        found = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                m = _NAME.search(obj["Key"])
                if m and obj["Key"][len(self.prefix) :] == m.group(0):
                    found.append((int(m.group(1)), obj["Key"]))
        return sorted(found)

    def save(self, state: Mapping[str, Any]) -> str:
        buf = io.BytesIO()
        torch.save(to_plain(dict(state)), buf)
        try:
            existing = self._keys()
            seq = existing[-1][0] + 1 if existing else 1
            key = f"{self.prefix}ckpt-{seq:012d}.pt"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=buf.getvalue())
            for _, old in existing[: max(0, len(existing) + 1 - self.keep)]:
                self.s3.delete_object(Bucket=self.bucket, Key=old)
        except self._errors as e:
            raise OSError(
                f"checkpoint upload to s3://{self.bucket}/{self.prefix} failed: {e}"
            ) from e
        return key

    def load_latest(self) -> dict[str, Any] | None:
        try:
            keys = [k for _, k in reversed(self._keys())]
        except self._errors as e:
            raise OSError(f"cannot list s3://{self.bucket}/{self.prefix}: {e}") from e

        def fetch(key: str) -> io.BytesIO:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return io.BytesIO(body)

        state, skipped = load_newest(keys, fetch, f"s3://{self.bucket}/{self.prefix}")
        self.fallbacks += skipped
        return state
