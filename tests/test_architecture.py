"""The layers hold: import-linter's contracts (pyproject.toml) pass, and a crossing is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 kept, 0 broken" in out.stdout


def test_a_lower_layer_importing_the_web_layer_is_caught(tmp_path):
    # A copy of the code with one crossing: storage reaching up into the web layer's runtime.
    for name in ("service", "indexer"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "demo", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    items = tmp_path / "service" / "store" / "items.py"
    items.write_text(items.read_text() + "\n\nfrom service.web.runtime import db_session  # noqa: E402\n")
    factory_user = tmp_path / "service" / "web" / "ops.py"
    factory_user.write_text(factory_user.read_text() + "\n\nfrom service.web.app import create_app  # noqa: E402\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "service layers" in out.stdout and "BROKEN" in out.stdout
    assert "service.store.items -> service.web.runtime" in out.stdout
    assert "nothing imports the app factory BROKEN" in out.stdout
