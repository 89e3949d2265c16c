"""``recsys-indexer``: build, inspect, publish (roll back) and garbage-collect index versions.

Exit codes a scheduler can act on:

====  ================================================================
0     success (built and published, or nothing changed)
1     the build failed (the published version is unchanged)
2     bad usage or configuration
3     the recall floor could not be met (index too lossy for the budget)
75    another build is running (try again later)
130   interrupted (Ctrl-C or SIGTERM); the published version is unchanged
====  ================================================================
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from service import artifacts
from service.cli import Context, pass_ctx

EXIT_FAILED, EXIT_RECALL, EXIT_LOCKED, EXIT_INTERRUPTED = 1, 3, 75, 130
log = logging.getLogger("recsys.indexer")


def _raise_interrupt(signum, _frame):
    # SIGTERM (scheduler stop, container shutdown) unwinds like Ctrl-C so the build cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


@click.group()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Overrides RECSYS_DATA_DIR.")
@click.option("--database-url", help="Overrides RECSYS_DATABASE_URL.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, database_url: str | None, quiet: bool) -> None:
    """Offline index rebuilds: embed the catalog, build FAISS indexes, publish versions."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context.from_options(data_dir, database_url)


@cli.command()
@click.option("--full", is_flag=True, help="Re-embed every item (ignore the vector cache).")
@click.option("--force", is_flag=True, help="Build a new version even when nothing changed.")
@click.option("--no-publish", is_flag=True, help="Build and verify, but leave the current version published.")
@pass_ctx
def build(c: Context, full: bool, force: bool, no_publish: bool) -> None:
    """Build a new index version from the catalog (incremental by default) and publish it."""
    from indexer.index_build import RecallTooLow
    from indexer.pipeline import BuildError, BuildLocked, Pipeline

    c.require_migrated()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    pipeline = Pipeline(c.settings, c.session_factory, progress=sys.stderr.isatty())
    try:
        report = pipeline.run(full=full, force=force, publish=not no_publish)
    except BuildLocked as exc:
        click.echo(f"build skipped: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except RecallTooLow as exc:
        click.echo(f"build failed: {exc}. The published version is unchanged.", err=True)
        sys.exit(EXIT_RECALL)
    except KeyboardInterrupt:
        click.echo("build interrupted; the published version is unchanged.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (BuildError, ValueError, OSError, artifacts.ArtifactError) as exc:
        # Whatever broke, the scheduler gets exit 1 and one line; the log has the details.
        click.echo(f"build failed: {exc}. The published version is unchanged.", err=True)
        sys.exit(EXIT_FAILED)
    _print_build(report)


def _print_build(report) -> None:
    click.echo(report.message)
    if report.status == "up-to-date" or report.manifest is None:
        return
    for name, info in report.manifest["spaces"].items():
        click.echo(
            f"  {name:5} {info['count']:>8} vectors  dim {info['dim']:<4} {info['index_key']:<14} "
            f"recall@10 {info['recall_at_10']:.3f}  params {json.dumps(info['search_params'])}  "
            f"embedded {info['embedded']}, cached {info['cached']}, errors {info['error_count']}"
        )
    for name, reason in report.manifest.get("skipped_spaces", {}).items():
        click.echo(f"  {name:5} skipped: {reason}")
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
    click.echo(f"  timings: {timings}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Show the published version, stale builds and the last build recorded in SQL."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import IndexVersion

    index_dir = c.settings.index_path
    current = artifacts.current_version(index_dir)
    data: dict = {"index_dir": str(index_dir), "published": current, "stale_builds": [p.name for p in artifacts.stale_builds(index_dir)]}
    if current:
        try:
            manifest = artifacts.verify_version(artifacts.version_dir(index_dir, current), checksums=False)
            data["spaces"] = {k: {"count": v["count"], "index_key": v["index_key"], "recall_at_10": v["recall_at_10"]}
                              for k, v in manifest["spaces"].items()}
            data["skipped_spaces"] = manifest.get("skipped_spaces", {})
            data["built_seconds"] = manifest.get("timings", {}).get("total")
        except artifacts.ArtifactError as exc:
            data["error"] = str(exc)
    with session_scope(c.session_factory) as session:
        last = session.scalar(select(IndexVersion).order_by(IndexVersion.created_at.desc(), IndexVersion.id.desc()).limit(1))
        if last is not None:
            data["last_build"] = {"version": last.version, "status": last.status, "message": last.message}
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"published: {current or 'nothing yet (run recsys-indexer build)'}")
        for name, info in data.get("spaces", {}).items():
            click.echo(f"  {name:5} {info['count']:>8} vectors  {info['index_key']:<14} recall@10 {info['recall_at_10']:.3f}")
        for name, reason in data.get("skipped_spaces", {}).items():
            click.echo(f"  {name:5} skipped: {reason}")
        if "error" in data:
            click.echo(f"  PROBLEM: {data['error']}")
        if "last_build" in data:
            lb = data["last_build"]
            click.echo(f"last build: {lb['version']} {lb['status']}" + (f" ({lb['message']})" if lb["message"] else ""))
        if data["stale_builds"]:
            click.echo(f"stale build folders (run gc): {', '.join(data['stale_builds'])}")
    if "error" in data:
        sys.exit(EXIT_FAILED)


@cli.command("list")
@pass_ctx
def list_cmd(c: Context) -> None:
    """List versions, newest first (* = published)."""
    versions = artifacts.list_versions(c.settings.index_path)
    if not versions:
        click.echo("no versions")
        return
    for v in versions:
        mark = "*" if v.published else " "
        if v.error:
            click.echo(f"{mark} {v.name}  BROKEN: {v.error}")
            continue
        spaces = ", ".join(f"{k} {i['count']} ({i['index_key']}, recall {i['recall_at_10']:.3f})" for k, i in v.manifest["spaces"].items())
        click.echo(f"{mark} {v.name}  items {v.manifest.get('item_count', '?')}  {spaces}")


@cli.command()
@click.argument("version")
@pass_ctx
def publish(c: Context, version: str) -> None:
    """Publish VERSION (after verifying its checksums): also how to roll back."""
    from indexer.pipeline import publish_version

    try:
        publish_version(c.settings, c.session_factory, version)
    except artifacts.ArtifactError as exc:
        click.echo(f"cannot publish {version}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"published {version}")


@cli.command()
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, help="Versions to keep, the published one included.")
@pass_ctx
def gc(c: Context, keep: int) -> None:
    """Delete old versions and leftovers of killed builds."""
    from indexer.pipeline import garbage_collect

    removed = garbage_collect(c.settings, c.session_factory, keep)
    click.echo(f"removed {len(removed)}: {', '.join(removed)}" if removed else "nothing to remove")


def main() -> None:
    cli(prog_name="recsys-indexer")


if __name__ == "__main__":
    main()
