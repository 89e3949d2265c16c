"""The ``recsys`` command line, run in-process with click's runner on the embedded SQLite default."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.demo import ITEMS_FILE


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args, **kw):
        return runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), *args], catch_exceptions=False, **kw)

    return invoke


def test_import_requires_a_migrated_database(run, tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"id": "a", "kind": "product", "title": "A"}\n')
    res = run("import", "items", str(f))
    assert res.exit_code == 1 and "recsys db upgrade" in res.output


def test_upgrade_check_import_and_stats(run, tmp_path):
    assert run("db", "upgrade").exit_code == 0
    check = run("db", "check")
    assert check.exit_code == 0 and "drift: 0" in check.output
    f = tmp_path / "items.jsonl"
    f.write_text('{"id": "a", "kind": "product", "title": "A"}\n{"id": "b", "kind": "article", "title": "B"}\n')
    res = run("import", "items", str(f))
    assert res.exit_code == 0, res.output
    assert "inserted 2, updated 0, unchanged 0" in res.output
    res = run("import", "items", str(f))
    assert "inserted 0, updated 0, unchanged 2" in res.output
    stats = json.loads(run("stats", "--json").output)
    assert stats["items"] == {"product": 1, "article": 1, "deleted": 0}


def test_bad_row_exits_1_and_names_line_and_field(run, tmp_path):
    run("db", "upgrade")
    f = tmp_path / "items.jsonl"
    f.write_text('{"id": "a", "kind": "product", "title": "A"}\n{"id": "b", "kind": "product"}\n')
    res = run("import", "items", str(f))
    assert res.exit_code == 1
    assert "items.jsonl:2: title: required" in res.output and "nothing was written" in res.output
    assert json.loads(run("stats", "--json").output)["items"]["deleted"] == 0
    assert "product" not in json.loads(run("stats", "--json").output)["items"]

    res = run("import", "items", str(f), "--skip-bad")
    assert res.exit_code == 0 and "rejected 1" in res.output and "rejected rows written to" in res.output


def test_unknown_format_is_a_usage_error(run, tmp_path):
    run("db", "upgrade")
    f = tmp_path / "items.txt"
    f.write_text("x")
    res = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"), "import", "items", str(f)])
    assert res.exit_code == 2 and "--format" in res.output


def test_bad_setting_is_a_usage_error(run, monkeypatch):
    monkeypatch.setenv("RECSYS_IMPORT_BATCH_SIZE", "many")
    res = CliRunner().invoke(cli, ["config"])
    assert res.exit_code == 2 and "import_batch_size" in res.output


def test_demo_twice_reports_everything_unchanged(run, tmp_path, monkeypatch):
    # The demo's images sit beside its catalog: an import_root set elsewhere does not apply to it.
    monkeypatch.setenv("RECSYS_IMPORT_ROOT", str(tmp_path))
    first = run("demo")
    assert first.exit_code == 0, first.output
    assert "updated 0, unchanged 0" in first.output and "rejected 0" in first.output
    rows = [json.loads(line) for line in ITEMS_FILE.read_text().splitlines()]
    images = [ITEMS_FILE.parent / r["image"] for r in rows if r.get("image")]
    stored = {p.name for p in (tmp_path / "data" / "images").rglob("*") if p.is_file()}
    assert len(images) == 182 and stored == {hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    second = run("demo")
    assert second.exit_code == 0
    items_line = next(line for line in second.output.splitlines() if line.startswith("items:") and "rows" in line)
    assert "inserted 0, updated 0" in items_line and "unchanged" in items_line
    events_line = next(line for line in second.output.splitlines() if line.startswith("events:") and "rows" in line)
    assert "inserted 0" in events_line
    assert "events:" in second.output and "users:" in second.output
