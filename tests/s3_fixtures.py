"""A real S3 API on loopback (moto's server) for the run-store tests, reached the way users reach S3: the standard
AWS environment variables and ``AWS_ENDPOINT_URL_S3``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCESS_KEY = "AKIATESTARCHIVE0001"
SECRET_KEY = "secret-of-the-loopback-s3-only"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An S3 client of the loopback server; the process's AWS environment points at it too."""
    for name, value in aws_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def new_bucket(s3: Any) -> Callable[..., str]:
    """Factory: a fresh bucket; ``locked=True``: versioned, Object Lock in compliance mode for a day by default."""

    def make(locked: bool = False) -> str:
        name = f"audits-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
        if locked:
            s3.put_object_lock_configuration(
                Bucket=name,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
                },
            )
        return name

    return make


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
