"""``recsys-indexer``: build, inspect, publish (roll back) and garbage-collect index versions.

Exit codes a scheduler can act on:

====  ================================================================
0     success (built and published, or nothing changed)
1     the build failed (the published version is unchanged)
2     bad usage or configuration
3     the recall floor could not be met (index too lossy for the budget)
4     a quality gate refused the new model or fine-tuned encoder (kept unpublished; --force publishes it anyway)
74    disk full or I/O error (free space, then run it again); the published version is unchanged
75    another build is running (try again later)
130   interrupted (Ctrl-C or SIGTERM); the published version is unchanged
====  ================================================================
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path

import click

from service.vectors import artifacts
from service.vectors.object_store import RemoteStore
from service.cli import Context, pass_ctx

EXIT_FAILED, EXIT_RECALL, EXIT_GATE, EXIT_IO, EXIT_LOCKED, EXIT_INTERRUPTED = 1, 3, 4, 74, 75, 130
log = logging.getLogger("recsys.indexer")

# errno -> what a disk or I/O failure is called in the one-line message (exit 74).
_IO_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large",
              errno.EIO: "I/O error", errno.EROFS: "read-only file system"}
# FAISS (RuntimeError) and SQL drivers report the same failures only in words.
_IO_TEXTS = (("no space left on device", "disk full"), ("database or disk is full", "disk full"),
             ("disk quota exceeded", "disk quota exceeded"), ("disk i/o error", "I/O error"),
             ("input/output error", "I/O error"), ("read-only file system", "read-only file system"))
# numpy's tofile (under np.save) reports a full disk as a short write, without an errno.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def io_failure(exc: BaseException | None) -> str | None:
    """``"disk full (No space left on device)"`` when ``exc`` or what caused it is a disk/I/O failure."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _IO_ERRNOS:
            return f"{_IO_ERRNOS[exc.errno]} ({exc.strerror or os.strerror(exc.errno)})"
        text = str(exc)
        for needle, what in _IO_TEXTS:
            at = text.lower().find(needle)
            if at >= 0:
                return f"{what} ({text[at:at + len(needle)]})"
        if isinstance(exc, OSError) and (short := _SHORT_WRITE.search(text)):
            return f"disk full (short write: {short.group(0)})"
        # SQLAlchemy keeps the driver's error on .orig; otherwise follow the raise ... from chain.
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return None


def _one_line(exc: BaseException) -> str:
    """Type and first line of the message (SQL errors append the statement on later lines)."""
    from indexer.pipeline import BuildError

    text = (str(exc).strip().splitlines() or [""])[0][:500]
    if isinstance(exc, (BuildError, artifacts.ArtifactError)):  # ours: the message says it all
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raise_interrupt(signum, _frame):
    # SIGTERM (scheduler stop, container shutdown) unwinds like Ctrl-C so the build cleans up.
    raise KeyboardInterrupt(f"signal {signum}")


@click.group()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Overrides RECSYS_DATA_DIR.")
@click.option("--database-url", help="Overrides RECSYS_DATABASE_URL.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug log, with the traceback of a failed build.")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run on a Ray cluster ('auto' = the local one; HOST:6379 or ray://HOST:10001). Overrides RECSYS_RAY_ADDRESS.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, database_url: str | None, quiet: bool, verbose: bool,
        ray_address: str | None) -> None:
    """Offline index rebuilds: embed the catalog, build FAISS indexes, publish versions."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:  # our loggers only: libraries' debug output would drown the build's
        logging.getLogger("recsys").setLevel(logging.DEBUG)
    ctx.obj = Context.from_options(data_dir, database_url)
    if ray_address is not None:
        ctx.obj.overrides["ray_address"] = ray_address


@cli.command()
@click.option("--full", is_flag=True, help="Re-embed every item (ignore the vector cache).")
@click.option("--force", is_flag=True,
              help="Build a new version even when nothing changed, and publish it even if the quality gate refuses its model.")
@click.option("--no-publish", is_flag=True, help="Build and verify, but leave the current version published.")
@pass_ctx
def build(c: Context, full: bool, force: bool, no_publish: bool) -> None:
    """Build a new index version from the catalog (incremental by default), train its model, publish it."""
    _run_pipeline(c, lambda p: p.run(full=full, force=force, publish=not no_publish), "build")


@cli.command()
@click.option("--force", is_flag=True, help="Publish the new model even if the quality gate refuses it.")
@click.option("--no-publish", is_flag=True, help="Train and evaluate, but leave the current version published.")
@pass_ctx
def train(c: Context, force: bool, no_publish: bool) -> None:
    """Retrain the collaborative model on the events now in SQL (the published spaces are reused)."""
    _run_pipeline(c, lambda p: p.train(force=force, publish=not no_publish), "training")


@cli.command()
@click.option("--force", is_flag=True, help="Publish the fine-tuned encoders even if their quality gates refuse them.")
@click.option("--no-publish", is_flag=True, help="Fine-tune, build and evaluate, but leave the current version published.")
@pass_ctx
def finetune(c: Context, force: bool, no_publish: bool) -> None:
    """Fine-tune the text encoder (and CLIP, with finetune_clip and CLIP weights configured) on behaviour
    and search clicks, then build and publish a version with them.

    Published only if content-only recommendations, cold items and search do not get worse on
    held-out behaviour; `recsys-indexer publish <previous version>` rolls encoders and index back together.
    """
    _run_pipeline(c, lambda p: p.finetune(force=force, publish=not no_publish), "fine-tuning")


def _run_pipeline(c: Context, action, what: str) -> None:
    """Run a build or a training, turning every failure into one line and an exit code."""
    from indexer.index_build import RecallTooLow
    from indexer.pipeline import BuildLocked, Pipeline, failed_stage

    c.require_migrated()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    pipeline = Pipeline(c.settings, c.session_factory, progress=sys.stderr.isatty())
    try:
        report = action(pipeline)
    except BuildLocked as exc:
        click.echo(f"{what} skipped: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except RecallTooLow as exc:
        click.echo(f"{what} failed: {exc}. The published version is unchanged.", err=True)
        sys.exit(EXIT_RECALL)
    except KeyboardInterrupt:
        click.echo(f"{what} interrupted; the published version is unchanged.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the scheduler gets one line and an exit code
        stage = failed_stage(exc) or pipeline.failed_stage
        where = f" in stage {stage}" if stage else ""
        log.debug("%s failed%s", what, where, exc_info=exc)  # the traceback, at -v only
        io = io_failure(exc)
        click.echo(f"{what} failed{where}: {io or _one_line(exc)}. The published version is unchanged.", err=True)
        sys.exit(EXIT_IO if io else EXIT_FAILED)
    _print_build(report)
    if report.status == "refused":
        sys.exit(EXIT_GATE)


def _probe_part(info: dict) -> str:
    """`` (probes 0.961)`` when the recall check also ran on query-like probes."""
    probes = info.get("recall_probes")
    return f" (probes {probes:.3f})" if probes is not None else ""


def _query_encoder_line(manifest: dict) -> str | None:
    """The version's ONNX query encoder and its measured agreement, or why there is none."""
    section = manifest.get("query_encoder")
    if section:
        a = section.get("agreement", {})
        top = f", top-10 agreement {a['top10_agreement']:.3f}" if "top10_agreement" in a else ""
        return (f"{section['backend']} (min cosine to torch {a.get('min_cosine', float('nan')):.6f}{top}, "
                f"{a.get('onnx_ms_p50', float('nan')):.2f} ms per query vs torch {a.get('torch_ms_p50', float('nan')):.2f})")
    skipped = manifest.get("query_encoder_skipped")
    return f"torch (no export: {skipped})" if skipped else None


def _model_line(section: dict) -> str:
    """One line on a version's collaborative model: recipe, test metrics against the references, gate."""
    if section.get("status") != "trained":
        return f"none ({section.get('reason', section.get('status'))})"
    metrics = section.get("metrics", {})
    ranked = bool((section.get("ranker") or {}).get("used"))
    served = "the learned ranker" if ranked else f"blend {json.dumps(section['blend'])}"
    parts = [f"{section['family']} {json.dumps(section['params'])}, served by {served}"]
    if not ranked and "model" not in section["blend"]:
        parts.append("not blended in (validation preferred the blend without it)")
    profile = section.get("profile")
    if isinstance(profile, dict) and isinstance(profile.get("way"), str):
        parts.append(f"content scored by {profile['way']} in the {profile.get('space')} space")
    place = section.get("cold_place")
    if isinstance(place, dict) and isinstance(place.get("rank"), int):
        parts.append(f"a new item takes the cold place from content rank {place['rank']}")
    labels = {"model": "as served", "without_model": "without model", "published_recipe": "published recipe"}
    for name, label in labels.items():
        if name in metrics:
            m = metrics[name]
            parts.append(f"{label}: NDCG@10 {m['ndcg']:.4f} recall@10 {m['recall']:.4f}")
    gate = section.get("gate", {})
    if gate.get("reference"):
        parts.append("gate " + ("passed" if gate.get("passed") else "FORCED" if gate.get("forced") else "REFUSED"))
    return "; ".join(parts)


def _echo_window(section: dict) -> None:
    """One line on the events a version carries for workers to start from (nothing when it has none)."""
    window = section.get("window")
    if not isinstance(window, dict) or not window.get("events"):
        return
    extent = "the whole log" if window.get("complete") else "the newest"
    click.echo(f"  event window {window['events']} events, ids {window.get('first_event_id')}-"
               f"{window.get('max_event_id')} ({extent}): workers load them from here and read only newer ones from SQL")


def _encoder_line(section: dict) -> str:
    """One line on a version's fine-tuned text encoder: identity, held-out metrics against the published one, gate."""
    parts = [f"{section.get('name')}@{section.get('revision')} (from {section.get('base', {}).get('name')})"]
    if section.get("inherited_from"):
        parts.append(f"kept from {section['inherited_from']}")
    metrics = section.get("metrics") or {}
    new, old = metrics.get("candidate") or {}, metrics.get("published") or {}
    shown = [f"{name} {new[name]:.4f} (was {old[name]:.4f})" for name in new if new.get(name) is not None
             and old.get(name) is not None]
    if shown:
        parts.append(", ".join(shown))
    gate = section.get("gate") or {}
    if gate:
        parts.append("gate " + ("FORCED" if gate.get("forced") else "REFUSED" if gate.get("refused") else "passed"))
    return "; ".join(parts)


def _print_build(report) -> None:
    click.echo(report.message)
    if report.status == "up-to-date" or report.manifest is None:
        return
    for name, info in report.manifest["spaces"].items():
        click.echo(
            f"  {name:5} {info['count']:>8} vectors  dim {info['dim']:<4} {info['index_key']:<14} "
            f"recall@10 {info['recall_at_10']:.3f}{_probe_part(info)}  params {json.dumps(info['search_params'])}  "
            f"embedded {info['embedded']}, cached {info['cached']}, errors {info['error_count']}"
        )
    for name, reason in report.manifest.get("skipped_spaces", {}).items():
        click.echo(f"  {name:5} skipped: {reason}")
    if "encoder" in report.manifest:
        click.echo(f"  encoder {_encoder_line(report.manifest['encoder'])}")
    query_line = _query_encoder_line(report.manifest)
    if query_line:
        click.echo(f"  query encoder {query_line}")
    if "behaviour" in report.manifest:
        click.echo(f"  model {_model_line(report.manifest['behaviour'])}")
        _echo_window(report.manifest["behaviour"])
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
    click.echo(f"  timings: {timings}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Context, as_json: bool) -> None:
    """Show the published version, stale builds and the last build recorded in SQL."""
    from sqlalchemy import select

    from indexer.pipeline import build_running
    from service.store.db import session_scope
    from service.store.models import IndexVersion

    index_dir = c.settings.index_path
    pointer = artifacts.read_pointer(index_dir)
    current = pointer.version
    data: dict = {"index_dir": str(index_dir), "published": current, "stale_builds": [p.name for p in artifacts.stale_builds(index_dir)]}
    if pointer.error:
        data["error"] = pointer.error
    if current:
        try:
            manifest = artifacts.verify_version(artifacts.version_dir(index_dir, current), checksums=False)
            data["spaces"] = {k: {"count": v["count"], "index_key": v["index_key"], "recall_at_10": v["recall_at_10"],
                                  "recall_probes": v.get("recall_probes"), "probes": v.get("probes")}
                              for k, v in manifest["spaces"].items()}
            query_line = _query_encoder_line(manifest)
            if query_line:
                data["query_encoder"] = query_line
            data["skipped_spaces"] = manifest.get("skipped_spaces", {})
            if "behaviour" in manifest:
                from indexer.pipeline import behaviour_summary

                data["model"] = behaviour_summary(manifest["behaviour"])
            from indexer.pipeline import ENCODER_SECTIONS, encoder_summary

            for key in ENCODER_SECTIONS.values():  # the fine-tuned text and CLIP encoders
                if key in manifest:
                    data[key] = encoder_summary(manifest[key])
            data["built_seconds"] = manifest.get("timings", {}).get("total")
        except artifacts.ArtifactError as exc:
            data["error"] = str(exc)
    remote = RemoteStore.from_settings(c.settings)
    if remote is not None:  # what every service host follows (this folder is only this host's copy)
        try:
            stored = remote.read_pointer()
            data["artifact_store"] = {"url": remote.url, "published": stored.version, "error": stored.pointer.error}
        except Exception as exc:  # noqa: BLE001 - any client error: the store is unreachable
            data["artifact_store"] = {"url": remote.url, "published": None, "error": f"unreachable: {_one_line(exc)}"}
    with session_scope(c.session_factory) as session:
        last = session.scalar(select(IndexVersion).order_by(IndexVersion.created_at.desc(), IndexVersion.id.desc()).limit(1))
        if last is not None:
            data["last_build"] = {"version": last.version, "status": last.status, "message": last.message}
            if last.status == "building" and not build_running(index_dir):
                # SIGKILL (OOM killer, kill -9) leaves the row at "building"; only a live build holds the lock.
                data["last_build"].update(status="killed", message="interrupted: no build is running; run recsys-indexer gc")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"published: {current or ('none usable' if pointer.error else 'nothing yet (run recsys-indexer build)')}")
        for name, info in data.get("spaces", {}).items():
            click.echo(f"  {name:5} {info['count']:>8} vectors  {info['index_key']:<14} "
                       f"recall@10 {info['recall_at_10']:.3f}{_probe_part(info)}")
        for name, reason in data.get("skipped_spaces", {}).items():
            click.echo(f"  {name:5} skipped: {reason}")
        if "encoder" in data:
            click.echo(f"  encoder {_encoder_line(data['encoder'])}")
        if "clip_encoder" in data:
            click.echo(f"  CLIP encoder {_encoder_line(data['clip_encoder'])}")
        if "query_encoder" in data:
            click.echo(f"  query encoder {data['query_encoder']}")
        if "model" in data:
            click.echo(f"  model {_model_line(data['model'])}")
            _echo_window(data["model"])
        if "error" in data:
            click.echo(f"  PROBLEM: {data['error']}")
        if "artifact_store" in data:
            st = data["artifact_store"]
            click.echo(f"artifact store: {st['url']} publishes {st['published'] or 'nothing'}"
                       + (f" (PROBLEM: {st['error']})" if st["error"] else ""))
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
    except artifacts.ArtifactError as exc:  # a PointerConflict too: another publisher got there first
        click.echo(f"cannot publish {version}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except OSError as exc:  # the artifact store (or the disk) failed: nothing was published
        click.echo(f"cannot publish {version}: {type(exc).__name__}: {exc}", err=True)
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
