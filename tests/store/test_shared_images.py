"""A shared image store (``image_url``) behind each host's image folder, on moto's S3 server on
loopback: a blob written through one host is readable through another, which checks its hash."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.store.images import ImageMissing, ImageStore, key_of
from tests.s3_server import new_bucket, s3_endpoint, storage_options


@pytest.fixture(scope="module")
def endpoint():
    with s3_endpoint() as url:
        yield url


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def hosts(endpoint: str, tmp_path, n: int = 2) -> list[ImageStore]:
    url = f"s3://{new_bucket(endpoint)}/images"
    return [ImageStore(tmp_path / f"host{i}", max_pixels=10_000, max_bytes=1 << 20, url=url,
                       options=storage_options(endpoint)) for i in range(n)]


def test_a_blob_written_through_one_host_is_read_through_another(endpoint, tmp_path):
    a, b = hosts(endpoint, tmp_path)
    data = png((200, 30, 30))
    key = a.put(data)
    assert not b.path_of(key).exists()
    assert b.exists(key) and b.path_of(key).read_bytes() == data  # fetched into b's folder
    assert b.read(key) == data and b.mimetype(key) == "image/png"
    missing = key_of(b"never stored")
    assert not b.exists(missing)
    with pytest.raises(ImageMissing):
        b.open(missing)


def test_a_damaged_blob_in_the_shared_store_is_never_served(endpoint, tmp_path):
    a, b = hosts(endpoint, tmp_path)
    key = a.put(png((30, 60, 200)))
    fs, _ = a._remote
    fs.pipe_file(a._remote_path(key), png((0, 0, 0)))  # other bytes under the key
    assert not b.exists(key) and not b.path_of(key).exists()
    with pytest.raises(ImageMissing):
        b.read(key)
    assert a.read(key) == a.path_of(key).read_bytes()  # the writer's own copy is intact


def test_a_blob_over_the_size_limit_is_not_fetched(endpoint, tmp_path):
    a, b = hosts(endpoint, tmp_path)
    key = a.put(png((30, 160, 60)))
    b.max_bytes = 10
    assert not b.exists(key)
