"""``recsys-indexer`` commands and their exit codes, on the embedded SQLite default."""

import json

import pytest
from click.testing import CliRunner

from indexer.cli import EXIT_LOCKED, EXIT_RECALL, cli
from indexer.pipeline import build_lock
from service import artifacts
from service.cli import cli as recsys
from service.settings import load_settings


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
    again = run("build")
    assert again.exit_code == 0 and "nothing changed" in again.output
    second = run("build", "--force")
    assert second.exit_code == 0
    versions = [v.name for v in artifacts.list_versions(load_settings({"data_dir": run.data}, environ={}).index_path)]
    assert len(versions) == 2
    status = json.loads(run("status", "--json").output)
    assert status["published"] == versions[0] and status["spaces"]["text"]["count"] == 40
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
