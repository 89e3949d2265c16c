"""README.md's configuration reference is generated from the code: ``recsys config --markdown``.

The table between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` must be exactly what
the command prints. After adding or changing a setting (or the comment above it in
service/settings.py), regenerate it with::

    .venv/bin/python tests/test_readme.py --write

or run ``.venv/bin/recsys config --markdown`` and paste its output between the markers.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path

from click.testing import CliRunner

from service.cli import cli, setting_help
from service.settings import Settings, describe

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
REGENERATE = ("regenerate it with `.venv/bin/python tests/test_readme.py --write` (or paste the output of "
              "`.venv/bin/recsys config --markdown` between the settings:start/settings:end markers in README.md)")


def generated_table() -> str:
    res = CliRunner().invoke(cli, ["config", "--markdown"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def readme_table(text: str) -> str:
    """The README's table: the lines between the markers, less HTML comments."""
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs one {START} ... {END} block"
    block = text.split(START, 1)[1].split(END, 1)[0]
    lines = [line for line in block.strip().splitlines() if not line.strip().startswith("<!--")]
    return "\n".join(lines) + "\n"


def write_readme() -> bool:
    """Replace the README's table with the generated one; True when the file changed."""
    text = README.read_text()
    current = readme_table(text)
    table = generated_table()
    if current == table:
        return False
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    comments = [line for line in block.strip().splitlines() if line.strip().startswith("<!--")]
    README.write_text(head + START + "\n" + "".join(c + "\n" for c in comments) + table + END + tail)
    return True


def test_readme_settings_table_matches_recsys_config_markdown():
    table = generated_table()
    current = readme_table(README.read_text())
    if current != table:
        diff = "".join(difflib.unified_diff(current.splitlines(True), table.splitlines(True),
                                            "README.md", "recsys config --markdown"))
        raise AssertionError(f"README.md's settings table is out of date: {REGENERATE}\n{diff}")


def test_readme_says_how_to_regenerate_the_table():
    block = README.read_text().split(START, 1)[1].split(END, 1)[0]
    assert "recsys config --markdown" in block


def test_markdown_has_one_row_per_setting_with_variable_default_and_meaning():
    rows = [line for line in generated_table().splitlines()[2:] if line.startswith("|")]
    settings = describe()
    assert len(rows) == len(settings)
    for row, (name, env, _default) in zip(rows, settings):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[:2] == [f"`{name}`", f"`{env}`"], row
        assert cells[2] and cells[3], row


def test_every_setting_is_explained_by_a_comment():
    meanings = setting_help()
    missing = [f.name for f in dataclasses.fields(Settings) if not meanings.get(f.name)]
    assert not missing, (f"settings with no comment above them in service/settings.py: {missing}; "
                         f"add one (it becomes the README's 'meaning'), then {REGENERATE}")


def test_markdown_ignores_the_environment(monkeypatch):
    """The reference shows defaults: the same output on every machine, even with a bad variable set."""
    clean = generated_table()
    monkeypatch.setenv("RECSYS_IMPORT_BATCH_SIZE", "many")
    monkeypatch.setenv("RECSYS_MAX_K", "7")
    assert generated_table() == clean
    res = CliRunner().invoke(cli, ["config"])
    assert res.exit_code == 2  # the plain command still validates the effective settings


def test_markdown_escapes_what_markdown_would_swallow():
    table = generated_table()
    assert "| `data_dir` | `RECSYS_DATA_DIR` | `data` |" in table
    assert "| `database_url` | `RECSYS_DATABASE_URL` | *(empty)* |" in table
    # "<data_dir>" would be read as an HTML tag and vanish.
    assert "<data_dir>" not in table.replace("\\<data_dir>", "")


@dataclasses.dataclass
class _Example:
    """Docstring: not a comment."""

    # First: one line.
    first: int = 1
    # Shared by two fields: a long comment that wraps inside a compound-
    # word and a second line.
    second: str = "x"
    third: str = "y"

    fourth: bool = False
    # Detached comment.

    fifth: float = 0.5
    sixth: dict = dataclasses.field(
        default_factory=dict  # not a comment of a setting
    )
    # Seventh: after a multi-line field.
    seventh: int = 7

    @property
    def derived(self) -> int:
        return self.first


def test_comment_parsing_rules():
    assert setting_help(_Example) == {
        "first": "First: one line.",
        "second": "Shared by two fields: a long comment that wraps inside a compound-word and a second line.",
        "third": "Shared by two fields: a long comment that wraps inside a compound-word and a second line.",
        "fourth": "",  # a blank line ends a comment's reach
        "fifth": "",  # a comment separated by a blank line belongs to no field
        "sixth": "",
        "seventh": "Seventh: after a multi-line field.",
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (rewrite README.md's settings table from `recsys config --markdown`)")
    print("README.md updated" if write_readme() else "README.md already up to date")
