"""``recsys`` command line: database migrations, catalog and event import, stats, the demo.

Exit codes: 0 success, 1 the work failed (bad rows, database error), 2 bad usage.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path

import click

from service.settings import SettingsError, describe, load_settings

log = logging.getLogger("recsys")


class Context:
    """Settings, engine and session factory, opened on first use by a command."""

    def __init__(self, overrides: dict):
        self.overrides = overrides
        self._settings = None
        self._engine = None
        self._factory = None

    @classmethod
    def from_options(cls, data_dir: Path | None, database_url: str | None) -> "Context":
        """A context whose settings take the global CLI options as overrides."""
        overrides: dict = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if database_url:
            overrides["database_url"] = database_url
        return cls(overrides)

    @property
    def settings(self):
        if self._settings is None:
            try:
                self._settings = load_settings(self.overrides)
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from exc
        return self._settings

    @property
    def engine(self):
        if self._engine is None:
            from service.store.db import make_engine

            self._engine = make_engine(self.settings)
        return self._engine

    @property
    def session_factory(self):
        if self._factory is None:
            from service.store.db import make_session_factory

            self._factory = make_session_factory(self.engine)
        return self._factory

    def require_migrated(self) -> None:
        """Stop with a clear message when the database is behind the code."""
        from service.store.db import current_revision, head_revision

        current, head = current_revision(self.engine), head_revision()
        if current != head:
            raise click.ClickException(
                f"database is at revision {current or 'none'}, code expects {head}: run `recsys db upgrade`"
            )


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Overrides RECSYS_DATA_DIR.")
@click.option("--database-url", help="Overrides RECSYS_DATABASE_URL.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for SQL).")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, database_url: str | None, verbose: int) -> None:
    """Recommendation and semantic-search service."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context.from_options(data_dir, database_url)


# --- database -----------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
def db_upgrade(c: Context, revision: str) -> None:
    """Migrate the database up (creates it when missing)."""
    from service.store.db import current_revision, upgrade

    upgrade(c.engine, revision)
    click.echo(f"database at revision {current_revision(c.engine)} ({c.engine.url.render_as_string()})")


@db.command("downgrade")
@click.option("--revision", default="base", show_default=True)
@click.confirmation_option(prompt="This drops tables and their data. Continue?")
@pass_ctx
def db_downgrade(c: Context, revision: str) -> None:
    """Migrate the database down (``base`` drops everything)."""
    from service.store.db import current_revision, downgrade

    downgrade(c.engine, revision)
    click.echo(f"database at revision {current_revision(c.engine) or 'base'}")


@db.command("check")
@pass_ctx
def db_check(c: Context) -> None:
    """Check that the database is at head and matches the models (exit 1 if not)."""
    from service.store.db import current_revision, drift, head_revision

    current, head = current_revision(c.engine), head_revision()
    diffs = drift(c.engine) if current == head else []
    click.echo(f"revision: {current or 'none'} (head {head}); drift: {len(diffs)} difference(s)")
    for d in diffs:
        click.echo(f"  {d}")
    if current != head or diffs:
        sys.exit(1)


# --- import -------------------------------------------------------------------------------


def _print_summary(kind: str, summary) -> None:
    parts = [f"inserted {summary.inserted}"]
    if kind == "items":
        parts += [f"updated {summary.updated}", f"unchanged {summary.unchanged}", f"deleted {summary.deleted}"]
    else:
        parts += [f"duplicates {summary.duplicates}"]
    parts.append(f"rejected {summary.rejected}")
    rate = f", {summary.rows / summary.seconds:,.0f} rows/s" if summary.seconds > 0 else ""
    click.echo(f"{kind}: {summary.file}: {summary.rows} rows: " + ", ".join(parts) + f" ({summary.seconds:.2f} s{rate})")
    if summary.report_path:
        click.echo(f"  rejected rows written to {summary.report_path}")


def _default_report(c: Context, path: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(c.settings.data_dir) / "import-reports" / f"{path.name}.{stamp}.rejected.csv"


def _run_import(c: Context, kind: str, path: Path, fmt, skip_bad: bool, report: Path | None, **kwargs) -> None:
    from service.store.importing import ImportRejected, import_events, import_items

    c.require_migrated()
    if skip_bad and report is None:
        report = _default_report(c, path)
    func = import_items if kind == "items" else import_events
    if kind == "items":
        kwargs["settings"] = c.settings  # the image store, the fetch guard and the import root
    if kind == "events":
        kwargs["event_types"] = c.settings.event_types
        kwargs["event_limits"] = {"value_limit": c.settings.event_value_limit,
                                  "max_future_skew_seconds": c.settings.max_future_skew_seconds}
    try:
        summary = func(
            path, session_factory=c.session_factory, fmt=fmt, skip_bad=skip_bad, report=report,
            progress=sys.stderr.isatty(), **kwargs,
        )
    except ImportRejected as exc:
        s = exc.summary
        click.echo(f"{kind}: {s.file}: {s.rejected} bad row(s) of {s.rows}; nothing was written.", err=True)
        for e in s.errors[:20]:
            click.echo(f"  {e}", err=True)
        if len(s.errors) > 20:
            click.echo(f"  ... {len(s.errors) - 20} more", err=True)
        if s.report_path:
            click.echo(f"  full list in {s.report_path}", err=True)
        click.echo("  fix the rows, or pass --skip-bad to import the good rows and write a report.", err=True)
        sys.exit(1)
    except ValueError as exc:  # unknown format and the like
        raise click.UsageError(str(exc)) from exc
    _print_summary(kind, summary)


_fmt_option = click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Default: from the file name.")
_skip_option = click.option("--skip-bad", is_flag=True, help="Import the good rows, report the bad ones.")
_report_option = click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="CSV of rejected rows (file, line, field, reason)."
)
_file_arg = click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))


@cli.group("import")
def import_group() -> None:
    """Import catalogs and events from JSON Lines or CSV."""


@import_group.command("items")
@_file_arg
@_fmt_option
@_skip_option
@_report_option
@click.option("--import-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image paths must lie inside this folder (overrides RECSYS_IMPORT_ROOT; default: the file's folder).")
@pass_ctx
def import_items_cmd(c: Context, path: Path, fmt, skip_bad: bool, report: Path | None, import_root: Path | None) -> None:
    """Upsert catalog items by external id (unchanged rows are left alone); images go to the image store."""
    _run_import(c, "items", path, fmt, skip_bad, report, import_root=import_root)


@import_group.command("events")
@_file_arg
@_fmt_option
@_skip_option
@_report_option
@click.option("--batch-size", type=click.IntRange(min=1), help="Events per transaction (default: setting).")
@pass_ctx
def import_events_cmd(c: Context, path: Path, fmt, skip_bad: bool, report: Path | None, batch_size: int | None) -> None:
    """Import events in batches; duplicates (same event id) are skipped and counted."""
    _run_import(c, "events", path, fmt, skip_bad, report, batch_size=batch_size or c.settings.import_batch_size)


# --- images -------------------------------------------------------------------------------


@cli.group()
def images() -> None:
    """The content-addressed image store."""


@images.command("migrate")
@click.option("--import-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Legacy file paths are copied only from inside this folder (default: RECSYS_IMPORT_ROOT; one is required).")
@pass_ctx
def images_migrate(c: Context, import_root: Path | None) -> None:
    """Move legacy image locations (paths and URLs from before the image store) into the store, or clear them.

    A file inside the import root is copied, a URL is fetched through the guard, anything else is
    cleared (one line per item). The next index build re-embeds the changed items.
    """
    from service.store.db import session_scope
    from service.store.image_migration import migrate_legacy_images
    from service.store.image_sources import ImageSources

    c.require_migrated()
    root = import_root or (Path(c.settings.import_root) if c.settings.import_root else None)
    if root is None:
        raise click.UsageError("give --import-root (or set RECSYS_IMPORT_ROOT): legacy file paths are copied only from inside it")
    sources = ImageSources.from_settings(c.settings)
    with session_scope(c.session_factory) as session:
        report = migrate_legacy_images(session=session, sources=sources, import_root=root,
                                       workers=c.settings.image_workers)
    for line in report.lines:
        click.echo(f"  {line}")
    click.echo(f"legacy image locations: {report.legacy}: stored {report.stored}, cleared {report.cleared}")
    if report.stored or report.cleared:
        click.echo("run `recsys-indexer build` to re-embed the changed items")


# --- inspection ---------------------------------------------------------------------------


def stats_dict(c: Context) -> dict:
    from service.store.db import session_scope
    from service.store.events import count_events, count_users
    from service.store.items import count_items

    with session_scope(c.session_factory) as session:
        return {
            "database": c.engine.url.render_as_string(),
            "items": count_items(session=session),
            "users": count_users(session=session),
            "events": count_events(session=session),
        }


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def stats(c: Context, as_json: bool) -> None:
    """Print what is stored."""
    c.require_migrated()
    data = stats_dict(c)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_stats(data)


def _print_stats(data: dict) -> None:
    click.echo(f"database: {data['database']}")
    items = data["items"]
    live = sum(v for k, v in items.items() if k != "deleted")
    click.echo(f"items:  {live} live ({', '.join(f'{k} {v}' for k, v in sorted(items.items()) if k != 'deleted')}), "
               f"{items.get('deleted', 0)} deleted")
    click.echo(f"users:  {data['users']}")
    events = data["events"]
    click.echo(f"events: {sum(events.values())} ({', '.join(f'{k} {v}' for k, v in sorted(events.items()))})")


def setting_help(settings_class: type | None = None) -> dict[str, str]:
    """Meaning of each setting, from the comment lines above its field in the dataclass.

    A comment block covers the field right below it and every field that follows without a blank
    line or a comment of its own (``clip_model`` and ``clip_pretrained`` share one). A field with
    no comment gets "". Reads the source with :mod:`inspect` and :mod:`ast`, so the comments in
    ``service/settings.py`` stay the single place a setting is explained.
    """
    import ast
    import inspect
    import textwrap

    if settings_class is None:
        from service.settings import Settings as settings_class
    source = textwrap.dedent(inspect.getsource(settings_class))
    lines = source.splitlines()
    cls = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef))
    meanings: dict[str, str] = {}
    current = ""
    previous_end = cls.lineno
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            gap = lines[previous_end:node.lineno - 1]  # between the previous statement and this one
            block: list[str] = []
            for line in reversed(gap):
                if not line.strip().startswith("#"):
                    break
                block.insert(0, line.strip().lstrip("#").strip())
            if block:
                current = _join_comment(block)
            elif gap:  # a blank line (or code) ends the previous comment's reach
                current = ""
            meanings[node.target.id] = current
        previous_end = node.end_lineno or node.lineno
    return meanings


def _join_comment(parts: list[str]) -> str:
    text = ""
    for part in parts:
        if not text:
            text = part
        elif text.endswith("-") and text[-2:-1].isalnum():  # "single-" + "threaded"
            text += part
        else:
            text += " " + part
    return text


def settings_markdown() -> str:
    """Markdown table of every setting: name, environment variable, default, meaning.

    The README's configuration reference is this output, pasted between its
    ``<!-- settings:start -->`` and ``<!-- settings:end -->`` markers (tests/test_readme.py checks it).
    """

    def cell(text: str) -> str:
        # Outside `code spans`, escape what Markdown would read as a tag (<data_dir>) or emphasis
        # (**); a pipe must be escaped everywhere in a table row, code spans included.
        parts = text.replace("\n", " ").split("`")
        for i in range(0, len(parts), 2):
            parts[i] = parts[i].replace("<", "\\<").replace("*", "\\*")
        return "`".join(parts).replace("|", "\\|")

    def default_cell(raw: str) -> str:
        value = json.loads(raw)
        if value == "":
            return "*(empty)*"
        text = value if isinstance(value, str) else json.dumps(value)
        return "`" + text.replace("|", "\\|") + "`"

    meanings = setting_help()
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, env, default in describe():
        rows.append(f"| `{name}` | `{env}` | {default_cell(default)} | {cell(meanings.get(name, ''))} |")
    return "\n".join(rows) + "\n"


@cli.command("config")
@click.option("--markdown", is_flag=True,
              help="Print the reference table (setting, variable, default, meaning) for README.md instead of the effective values.")
@pass_ctx
def config_cmd(c: Context, markdown: bool) -> None:
    """Print every setting: name, environment variable, effective value."""
    if markdown:
        # Defaults only, never the environment: the output is the same on every machine.
        click.echo(settings_markdown(), nl=False)
        return
    settings = c.settings
    for name, env, _default in describe():
        click.echo(f"{name:24} {env:32} {json.dumps(getattr(settings, name), default=str)}")


@cli.command()
@pass_ctx
def demo(c: Context) -> None:
    """Set up the embedded default with the shipped demo catalog and show what was stored."""
    from service.store.db import upgrade
    from service.demo import EVENTS_FILE, ITEMS_FILE

    upgrade(c.engine)
    click.echo(f"data directory: {Path(c.settings.data_dir).resolve()}")
    # The demo's images sit beside its catalog, whatever import_root says.
    _run_import(c, "items", ITEMS_FILE, None, False, None, import_root=ITEMS_FILE.parent)
    _run_import(c, "events", EVENTS_FILE, None, False, None, batch_size=c.settings.import_batch_size)
    _print_stats(stats_dict(c))


@cli.command("eval")
@click.option("--holdout", "n_test", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Most recent positive interactions held out per user (test).")
@click.option("--valid", "n_valid", type=click.IntRange(0, 100), default=2, show_default=True,
              help="Interactions before those held out for validation (tuning).")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Cut-off of the metrics.")
@click.option("--tune", is_flag=True, help="Search the blend weights on the validation split.")
@click.option("--write-settings", is_flag=True, help="With --tune: write the best weights to the settings file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results as JSON.")
@pass_ctx
def eval_cmd(c: Context, n_test: int, n_valid: int, k: int, tune: bool, write_settings: bool, json_out: Path | None) -> None:
    """Offline evaluation: hold out each user's latest interactions and score the recommender.

    Uses the published index's text space for content and the stored events for behaviour;
    reports Recall@k, NDCG@k, catalog coverage and popularity bias per blend setting.
    """
    from service.recommend.offline_eval import run_cli_evaluation

    if write_settings and not (tune and n_valid):
        raise click.UsageError("--write-settings needs --tune and a validation split (--valid >= 1)")
    c.require_migrated()
    try:
        report = run_cli_evaluation(c.settings, c.session_factory, n_test=n_test, n_valid=n_valid, k=k,
                                    tune=tune, write=write_settings, echo=click.echo)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        click.echo(f"results written to {json_out}")


def main() -> None:
    cli(prog_name="recsys")


if __name__ == "__main__":
    main()
