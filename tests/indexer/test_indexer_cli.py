"""``recsys-indexer`` commands and their exit codes, on the embedded SQLite default."""

import errno
import json
import logging
import sqlite3

import numpy as np
import pytest
import sqlalchemy.exc
from click.testing import CliRunner
from sqlalchemy import select

from indexer.cli import EXIT_IO, EXIT_LOCKED, EXIT_RECALL, cli, io_failure
from indexer.pipeline import Pipeline, build_lock
from service.vectors import artifacts
from service.cli import cli as recsys
from service.store.db import make_engine, make_session_factory, session_scope
from service.store.models import IndexVersion
from service.settings import load_settings

# Loads the real text model, builds indexes or runs servers: `make test-fast` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture
def run(tmp_path, monkeypatch):
    for key in ("RECSYS_DATABASE_URL", "RECSYS_RECALL_FLOOR", "RECSYS_INDEX_MEMORY_BUDGET_MB"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECSYS_CLIP_ENABLED", "false")
    data = tmp_path / "data"
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"i{n}", "kind": "article", "title": f"Note number {n}",
                                         "text": f"Short text about topic {n % 7}."}) + "\n" for n in range(40)))
    runner = CliRunner()
    assert runner.invoke(recsys, ["--data-dir", str(data), "db", "upgrade"]).exit_code == 0
    assert runner.invoke(recsys, ["--data-dir", str(data), "import", "items", str(items)]).exit_code == 0

    def invoke(*args):
        return runner.invoke(cli, ["--data-dir", str(data), *args], catch_exceptions=False)

    invoke.data = data
    return invoke


def test_build_status_list_publish_gc(run):
    first = run("build")
    assert first.exit_code == 0, first.output
    assert "published" in first.output and "recall@10 1.000" in first.output and "clip  skipped" in first.output
    assert "query encoder onnx (min cosine to torch 1.000000" in first.output  # the export and its check
    again = run("build")
    assert again.exit_code == 0 and "nothing changed" in again.output
    second = run("build", "--force")
    assert second.exit_code == 0
    index_path = load_settings({"data_dir": run.data}, environ={}).index_path
    versions = [v.name for v in artifacts.list_versions(index_path)]
    assert len(versions) == 2
    # Same weights: the second version links the first one's export (same file, same checksums).
    newer, older = (artifacts.read_manifest(artifacts.version_dir(index_path, v))["query_encoder"] for v in versions)
    assert newer["reused_from"] == versions[1] and newer["files"] == older["files"]
    model = [artifacts.version_dir(index_path, v) / artifacts.QUERY_ENCODER_DIR / "model.onnx" for v in versions]
    assert model[0].stat().st_ino == model[1].stat().st_ino
    status = json.loads(run("status", "--json").output)
    assert status["published"] == versions[0] and status["spaces"]["text"]["count"] == 40
    assert status["query_encoder"].startswith("onnx") and "query encoder onnx" in run("status").output
    listing = run("list").output
    assert f"* {versions[0]}" in listing and f"  {versions[1]}" in listing
    assert run("publish", versions[1]).exit_code == 0  # roll back
    assert json.loads(run("status", "--json").output)["published"] == versions[1]
    bad = run("publish", "20990101T000000000Z-abcdef")
    assert bad.exit_code == 1 and "cannot publish" in bad.output
    gc = run("gc", "--keep", "1")
    assert gc.exit_code == 0 and versions[0] in gc.output


def test_unmet_recall_floor_exits_3_and_publishes_nothing(run, monkeypatch):
    import indexer.index_build as index_build

    def unreachable(*_a, floor=0.95, **_k):
        raise index_build.RecallTooLow(floor, [({"efSearch": 16}, 0.91), ({"efSearch": 1024}, 0.93)])

    # The tuning itself is tested in test_index_build.py; here: what the scheduler sees.
    monkeypatch.setattr(index_build, "tune_search_params", unreachable)
    res = run("build")
    assert res.exit_code == EXIT_RECALL, res.output
    assert "0.93" in res.output and "published version is unchanged" in res.output
    assert artifacts.current_version(load_settings({"data_dir": run.data}, environ={}).index_path) is None


def test_any_other_failure_exits_1_with_a_message(run, monkeypatch):
    monkeypatch.setenv("RECSYS_INDEX_MEMORY_BUDGET_MB", "0.001")
    res = run("build")
    assert res.exit_code == 1 and "too small" in res.output and "Traceback" not in res.output


def test_a_running_build_makes_another_exit_75(run):
    index_dir = load_settings({"data_dir": run.data}, environ={}).index_path
    with build_lock(index_dir):
        res = run("build")
    assert res.exit_code == EXIT_LOCKED and "another build" in res.output


# --- failures a scheduler must be able to act on ----------------------------------------------


def _settings(run):
    return load_settings({"data_dir": run.data}, environ={})


def _rows(run) -> list[tuple[str, str, str | None]]:
    engine = make_engine(_settings(run))
    try:
        with session_scope(make_session_factory(engine)) as s:
            return [(r.version, r.status, r.message) for r in s.scalars(select(IndexVersion).order_by(IndexVersion.id))]
    finally:
        engine.dispose()


def _failure_line(res) -> str:
    """The build's message: exactly one line on stderr, and no traceback anywhere."""
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    # (model loading may draw a progress bar on stderr too: not ours to judge)
    lines = [line for line in res.stderr.splitlines() if "build" in line]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _no_space(real):
    def save(path, *args, **kwargs):
        if artifacts.BUILDING_PREFIX in str(path):  # the version being written; the vector cache still works
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)
    return save


def test_a_full_disk_is_one_line_naming_the_stage_and_exit_74(run, monkeypatch):
    assert run("build").exit_code == 0
    published = artifacts.current_version(_settings(run).index_path)
    monkeypatch.setattr(np, "save", _no_space(np.save))
    res = run("build", "--force")
    assert res.exit_code == EXIT_IO == 74
    assert _failure_line(res) == ("build failed in stage index:text: disk full (No space left on device). "
                                  "The published version is unchanged.")
    index_dir = _settings(run).index_path
    assert artifacts.current_version(index_dir) == published
    assert artifacts.stale_builds(index_dir) == [] and len(artifacts.list_versions(index_dir)) == 1
    last = _rows(run)[-1]
    assert last[1] == "failed" and "index:text" in last[2] and "No space left" in last[2]


def test_faiss_and_sqlite_disk_full_are_recognised():
    faiss_error = RuntimeError("Error in faiss::FileIOWriter::operator() at impl/io.cpp:98: "
                               "write error in /x/.index.faiss.tmp: 0 != 4096 (No space left on device)")
    assert io_failure(faiss_error) == "disk full (No space left on device)"
    sql_error = sqlalchemy.exc.OperationalError("INSERT INTO index_versions ...", {}, sqlite3.OperationalError("database or disk is full"))
    assert io_failure(sql_error) == "disk full (database or disk is full)"
    numpy_error = OSError("115200 requested and 26592 written")  # what np.save raises on a full disk
    assert io_failure(numpy_error) == "disk full (short write: 115200 requested and 26592 written)"
    try:
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError as exc:
            raise ValueError("could not write the cache") from exc
    except ValueError as wrapped:
        assert io_failure(wrapped) == "I/O error (Input/output error)"
    assert io_failure(ValueError("memory budget too small")) is None
    assert io_failure(PermissionError(errno.EACCES, "Permission denied")) is None


def test_a_full_database_that_cannot_even_record_the_failure_keeps_the_first_error(run, monkeypatch):
    assert run("build").exit_code == 0
    published = artifacts.current_version(_settings(run).index_path)
    full = sqlalchemy.exc.OperationalError("UPDATE index_versions ...", {}, sqlite3.OperationalError("database or disk is full"))
    record = Pipeline._record

    def record_until_full(self, version, status, path, **kw):
        if status != "building":  # "ready" fails first, then recording "failed" fails too
            raise full
        return record(self, version, status, path, **kw)

    monkeypatch.setattr(Pipeline, "_record", record_until_full)
    res = run("build", "--force")
    assert res.exit_code == EXIT_IO
    assert _failure_line(res).startswith("build failed in stage finish: disk full (database or disk is full)")
    index_dir = _settings(run).index_path
    assert artifacts.current_version(index_dir) == published and artifacts.stale_builds(index_dir) == []


def test_an_unexpected_error_is_one_line_with_stage_and_type_and_exit_1(run, monkeypatch, caplog):
    import service.vectors.vector_index

    def broken(*_a, **_k):
        raise RuntimeError("the index writer broke\nwith a second line")

    monkeypatch.setattr(service.vectors.vector_index, "write_index", broken)
    res = run("build")
    assert res.exit_code == 1
    assert _failure_line(res) == ("build failed in stage index:text: RuntimeError: the index writer broke. "
                                  "The published version is unchanged.")
    assert not [r for r in caplog.records if r.exc_info]
    # -v puts the traceback in the log (not in the scheduler's one line).
    try:
        with caplog.at_level(logging.DEBUG, logger="recsys"):
            res = run("-v", "build")
    finally:
        logging.getLogger("recsys").setLevel(logging.NOTSET)
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    assert [r for r in caplog.records if r.exc_info and "build failed in stage index:text" in r.getMessage()]


def test_status_calls_a_killed_build_killed_and_a_running_one_building(run):
    assert run("build").exit_code == 0
    settings = _settings(run)
    version = artifacts.new_version_name()
    # What SIGKILL leaves: a "building" row and a private folder, and nobody holding the lock.
    folder = artifacts.start_version(settings.index_path, version)
    engine = make_engine(settings)
    with session_scope(make_session_factory(engine)) as s:
        s.add(IndexVersion(version=version, status="building", path=str(folder), item_count=0, manifest={}))
    engine.dispose()

    data = json.loads(run("status", "--json").output)
    assert data["last_build"]["version"] == version and data["last_build"]["status"] == "killed"
    assert "no build is running" in data["last_build"]["message"] and data["stale_builds"] == [folder.name]
    text = run("status")
    assert text.exit_code == 0 and f"last build: {version} killed (interrupted: no build is running; run recsys-indexer gc)" in text.output
    with build_lock(settings.index_path):  # a live build holds the lock: it is building
        assert json.loads(run("status", "--json").output)["last_build"]["status"] == "building"
        assert f"last build: {version} building" in run("status").output
    # gc removes the folder and closes the row, so status stops pointing at gc.
    assert folder.name in run("gc", "--keep", "3").output
    after = json.loads(run("status", "--json").output)
    assert after["last_build"]["status"] == "failed" and after["stale_builds"] == []


def test_status_reports_a_garbage_pointer_instead_of_crashing(run):
    assert run("build").exit_code == 0
    (_settings(run).index_path / artifacts.CURRENT).write_bytes(b"\xff\xfe garbage")
    res = run("status")
    assert res.exit_code == 1 and "published: none usable" in res.output and "not UTF-8" in res.output
    assert json.loads(run("status", "--json").output)["published"] is None


def test_ray_option_reaches_the_build_and_a_dead_cluster_is_one_line(run, monkeypatch):
    pytest.importorskip("ray")
    import indexer.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBED_PARTITION", 8)  # 40 items: 5 partitions, so the cluster is needed
    res = run("--ray", "127.0.0.1:9", "build")  # nothing listens on the discard port
    assert res.exit_code == 1, res.output
    assert "no Ray cluster answers at 127.0.0.1:9" in res.output and "Traceback" not in res.output
    assert artifacts.current_version(load_settings({"data_dir": run.data}, environ={}).index_path) is None
