"""Fixtures shared by test files in several folders.

``s3`` gives a fresh bucket on moto's standalone S3 server (one server on a free port of
127.0.0.1 for the whole session), with ``fsspec``/``s3fs`` pointed at it; tests skip when
``moto``, ``s3fs`` or ``boto3`` is missing.
"""

from __future__ import annotations

import logging
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest

#: The region of the moto buckets (any non-default one exercises ``LocationConstraint``).
S3_REGION = "us-west-2"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of moto's S3 server, started once for the session and reset at its end."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    pytest.importorskip("boto3")
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        # moto keeps its buckets in this process: drop them
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """``(bucket, boto3 client)``: a new bucket, with s3fs pointed at the local server and
    test credentials in the environment (no real AWS profile or endpoint can leak in)."""
    import boto3
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setitem(
        fsspec.config.conf,
        "s3",
        {
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_REGION},
            "key": "testing",
            "secret": "testing",
        },
    )
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=S3_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"toolkit-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": S3_REGION})
    s3fs.S3FileSystem.clear_instance_cache()
    yield bucket, client
    s3fs.S3FileSystem.clear_instance_cache()  # no cached file system keeps pointing at the server
