"""An S3-compatible server on loopback for the artifact-store tests: moto's server mode, in a thread.

Each test gets a bucket of its own, so tests never see each other's versions.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Iterator

import pytest

CREDENTIALS = {"key": "testing", "secret": "testing"}


@contextlib.contextmanager
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server on a free port of 127.0.0.1; yields its endpoint URL."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def storage_options(endpoint: str) -> dict[str, Any]:
    """fsspec (s3fs) options reaching ``endpoint`` with the test credentials."""
    return {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def new_bucket(endpoint: str) -> str:
    """Create an empty bucket with a fresh name; returns the name."""
    import boto3

    name = f"recsys-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=CREDENTIALS["key"],
                 aws_secret_access_key=CREDENTIALS["secret"]).create_bucket(Bucket=name)
    return name
