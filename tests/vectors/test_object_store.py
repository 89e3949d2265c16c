"""The artifact store (``artifact_url``) and a host's mirror of it, on a real S3 server on loopback
(moto's server mode) and on a ``file://`` folder: upload, verification, compare-and-swap publishing,
downloads that verify every checksum, and refusals that leave the local copy untouched."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from service.vectors import artifacts
from service.vectors.mirror import VersionMirror
from service.vectors.object_store import PointerConflict, RemoteStore, publish
from tests.s3_server import new_bucket, s3_endpoint, storage_options


@pytest.fixture(scope="module")
def endpoint():
    with s3_endpoint() as url:
        yield url


@pytest.fixture(params=["s3", "file"])
def store(request, tmp_path) -> RemoteStore:
    """An empty store: a bucket of its own on the S3 server, or a local folder through file://."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("endpoint")
        return RemoteStore(f"s3://{new_bucket(endpoint)}/indexes", storage_options(endpoint))
    return RemoteStore(f"file://{tmp_path / 'store'}")


def make_version(index_dir, version: str, seed: int = 0) -> None:
    """A small complete version folder: one space's arrays, an encoder file, a manifest."""
    folder = index_dir / f"{artifacts.BUILDING_PREFIX}{version}"
    (folder / "text").mkdir(parents=True)
    (folder / "encoder" / "1_Pooling").mkdir(parents=True)
    np.save(folder / "text" / "ids.npy", np.arange(10, dtype=np.int64) + seed)
    np.save(folder / "text" / "vectors.npy", np.random.default_rng(seed).random((10, 4), dtype=np.float32))
    (folder / "encoder" / "1_Pooling" / "config.json").write_text(json.dumps({"seed": seed}))
    manifest = {"format": artifacts.FORMAT_VERSION, "version": version,
                "spaces": {"text": {"dim": 4, "files": artifacts.tree_entries(folder / "text")}},
                "encoder": {"files": artifacts.tree_entries(folder / "encoder")}}
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    artifacts.finish_version(index_dir, folder, version)


V1, V2, V3 = "20261130T010000000Z-aaaaaa", "20261130T020000000Z-bbbbbb", "20261130T030000000Z-cccccc"


def test_publish_uploads_verifies_and_swaps_the_pointer(store, tmp_path):
    builder = tmp_path / "builder"
    make_version(builder, V1)
    assert store.read_pointer().version is None and store.list_versions() == []
    publish(store, artifacts.version_dir(builder, V1), V1)
    assert store.read_pointer().version == V1
    assert store.list_versions() == [V1]
    assert store.verify(V1)["version"] == V1
    # Publishing what the store already holds uploads nothing and swaps the pointer only.
    make_version(builder, V2, seed=2)
    publish(store, artifacts.version_dir(builder, V2), V2)
    publish(store, artifacts.version_dir(builder, V1), V1)  # a rollback
    assert store.read_pointer().version == V1 and store.list_versions() == [V2, V1]
    store.delete_version(V2)
    assert store.list_versions() == [V1]


def test_a_publisher_that_read_an_old_pointer_loses_and_changes_nothing(store, tmp_path):
    builder = tmp_path / "builder"
    for i, v in enumerate((V1, V2, V3)):
        make_version(builder, v, seed=i)
    nothing = store.read_pointer()  # both builds start while nothing is published
    publish(store, artifacts.version_dir(builder, V1), V1, expected=nothing)
    with pytest.raises(PointerConflict):  # If-None-Match: * (or the locked compare) fails
        publish(store, artifacts.version_dir(builder, V2), V2, expected=nothing)
    assert store.read_pointer().version == V1
    seen = store.read_pointer()
    publish(store, artifacts.version_dir(builder, V3), V3, expected=seen)
    with pytest.raises(PointerConflict):  # If-Match the ETag read before V3 was published
        store.swap_pointer(V2, seen)
    assert store.read_pointer().version == V3


def test_concurrent_publishers_exactly_one_wins(store, tmp_path):
    builder = tmp_path / "builder"
    names = [f"20261130T04000000{i}Z-dddddd" for i in range(4)]
    for i, v in enumerate(names):
        make_version(builder, v, seed=i)
        store.upload(artifacts.version_dir(builder, v), v)
    start = store.read_pointer()
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(len(names))

    def attempt(v: str) -> None:
        barrier.wait()
        try:
            store.swap_pointer(v, start)
            outcomes[v] = "won"
        except PointerConflict:
            outcomes[v] = "lost"

    threads = [threading.Thread(target=attempt, args=(v,)) for v in names]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert len(winners) == 1 and store.read_pointer().version == winners[0], outcomes


def test_download_verifies_every_checksum_and_refuses_a_corrupt_object(store, tmp_path):
    builder, host = tmp_path / "builder", tmp_path / "host"
    make_version(builder, V1)
    store.upload(artifacts.version_dir(builder, V1), V1)
    got = store.download(V1, host)
    assert got == artifacts.version_dir(host, V1)
    artifacts.verify_version(got, checksums=True)
    # The same bytes count, other content: passes the size check, fails the checksum.
    make_version(builder, V2)
    store.upload(artifacts.version_dir(builder, V2), V2)
    ids = store._version_path(V2, "text", "ids.npy")
    data = bytearray(store.fs.cat_file(ids))
    data[-1] ^= 0xFF
    store.fs.pipe_file(ids, bytes(data))
    with pytest.raises(artifacts.ArtifactError, match="checksum"):
        store.download(V2, host)
    assert not artifacts.version_dir(host, V2).exists()
    assert [p.name for p in host.iterdir() if p.name.startswith(".fetching-")] == []
    # A resized object is refused before anything is downloaded.
    store.fs.pipe_file(ids, bytes(data) + b"more")
    with pytest.raises(artifacts.ArtifactError, match="bytes"):
        store.verify(V2)


@pytest.mark.parametrize("rel", ["../../escape.npy", "/etc/passwd", ".hidden", "a//b", "..", "x\x00y"])
def test_a_manifest_naming_a_path_outside_its_version_is_refused(store, tmp_path, rel):
    builder, host = tmp_path / "builder", tmp_path / "host"
    make_version(builder, V1)
    store.upload(artifacts.version_dir(builder, V1), V1)
    manifest = store.read_manifest(V1)
    manifest["spaces"]["text"]["files"][rel] = {"bytes": 3, "sha256": "0" * 64}
    store.fs.pipe_file(store._version_path(V1, artifacts.MANIFEST), json.dumps(manifest).encode())
    with pytest.raises(artifacts.ArtifactError, match="unsafe"):
        store.download(V1, host)
    assert not (tmp_path / "escape.npy").exists() and not artifacts.version_dir(host, V1).exists()


def test_a_garbage_pointer_is_reported_not_raised(store):
    store.fs.makedirs(store.root, exist_ok=True)
    store.fs.pipe_file(store._path(artifacts.CURRENT), b"../../../etc/passwd\n")
    pointer = store.read_pointer()
    assert pointer.version is None and "no valid version" in pointer.pointer.error
    store.fs.pipe_file(store._path(artifacts.CURRENT), b"x" * 10_000)
    assert "over" in store.read_pointer().pointer.error


def test_the_mirror_follows_the_store_and_keeps_a_good_version_when_a_bad_one_is_published(store, tmp_path):
    builder, host = tmp_path / "builder", tmp_path / "host"
    for i, v in enumerate((V1, V2, V3)):
        make_version(builder, v, seed=i)
    mirror = VersionMirror(store, host, keep=1)
    assert mirror.sync() is False and artifacts.current_version(host) is None  # nothing published yet
    publish(store, artifacts.version_dir(builder, V1), V1)
    assert mirror.sync() is True and artifacts.current_version(host) == V1
    assert mirror.sync() is False  # nothing new: no download, no swap
    publish(store, artifacts.version_dir(builder, V2), V2)
    assert mirror.sync() is True and artifacts.current_version(host) == V2
    # V3 is published, then one of its objects is damaged in the store: refused, V2 stays.
    publish(store, artifacts.version_dir(builder, V3), V3)
    vectors = store._version_path(V3, "text", "vectors.npy")
    data = bytearray(store.fs.cat_file(vectors))
    data[200] ^= 0x01
    store.fs.pipe_file(vectors, bytes(data))
    assert mirror.sync() is False and artifacts.current_version(host) == V2
    assert "checksum" in mirror.status()["refused"][V3] and mirror.status()["published"] == V3
    # A rollback in the store reaches the host (V1 was pruned locally: fetched again).
    publish(store, artifacts.version_dir(builder, V1), V1)
    assert mirror.sync() is True and artifacts.current_version(host) == V1
    assert mirror.status()["error"] is None


def test_an_unreachable_store_is_noted_and_retried_without_raising(tmp_path):
    dead = RemoteStore("s3://nowhere/indexes", storage_options("http://127.0.0.1:9"))
    dead.fs.retries = 1
    mirror = VersionMirror(dead, tmp_path / "host")
    assert mirror.sync() is False
    assert "unreachable" in mirror.status()["error"]


def test_the_store_settings_come_from_the_environment():
    from service.settings import SettingsError, load_settings

    s = load_settings(environ={"RECSYS_ARTIFACT_URL": "s3://bucket/idx",
                               "RECSYS_ARTIFACT_OPTIONS": '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'})
    assert s.artifact_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    assert RemoteStore.from_settings(s).url == "s3://bucket/idx"
    assert RemoteStore.from_settings(load_settings(environ={})) is None
    for bad in ({"RECSYS_ARTIFACT_URL": "/just/a/path"}, {"RECSYS_ARTIFACT_OPTIONS": "[1, 2]"},
                {"RECSYS_RAY_WORKERS": "-1"}):
        with pytest.raises(SettingsError):
            load_settings(environ=bad)


def test_gc_keeps_the_newest_versions_in_the_store_and_never_the_published_one(tmp_path, session_factory, settings):
    import dataclasses

    from indexer.pipeline import garbage_collect

    s = dataclasses.replace(settings, artifact_url=f"file://{tmp_path / 'store'}")
    store = RemoteStore.from_settings(s)
    builder = tmp_path / "builder"
    names = [V1, V2, V3, "20261130T050000000Z-eeeeee"]
    for i, v in enumerate(names):
        make_version(builder, v, seed=i)
        store.upload(artifacts.version_dir(builder, v), v)
    publish(store, artifacts.version_dir(builder, V1), V1)  # the oldest is the published one (a rollback)
    removed = garbage_collect(s, session_factory, keep=2)
    assert store.list_versions() == [names[3], V1]
    assert store.read_pointer().version == V1
    assert {r.rsplit("/", 1)[-1] for r in removed} == {V2, V3}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"\xff\xfe", b'{"format": 1}', b"null"])
def test_a_manifest_that_is_not_one_is_refused_locally_and_in_the_store(store, tmp_path, body):
    builder = tmp_path / "builder"
    make_version(builder, V1)
    store.upload(artifacts.version_dir(builder, V1), V1)
    store.fs.pipe_file(store._version_path(V1, artifacts.MANIFEST), body)
    with pytest.raises(artifacts.ArtifactError):
        store.read_manifest(V1)
    (artifacts.version_dir(builder, V1) / artifacts.MANIFEST).write_bytes(body)
    with pytest.raises(artifacts.ArtifactError):
        artifacts.read_manifest(artifacts.version_dir(builder, V1))
