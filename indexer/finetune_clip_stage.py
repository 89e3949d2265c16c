"""The CLIP fine-tuning stage: behaviour → (image, text) pairs → fine-tuned CLIP weights → the gate.

The same held-out cut and behaviour pairs as the text stage (:func:`indexer.finetune_stage.read_behaviour`,
same seed: the same cold items, users and queries are held out), turned into pairs CLIP can learn
from, the text side always what a user types or reads, the image side an item's picture:

- (clicked item's image, the query that led to the click): how image search is asked;
- (an item's image, its own title), for every item with an image that is not held out: CLIP's own
  pre-training task on the catalog's domain, so typed titles keep finding their pictures;
- (one item's image, the title of an item engaged with alongside it): what behaviour adds.

The **pretrained** weights (``clip_model`` + ``clip_pretrained``; never a previous fine-tune) are
trained with :func:`indexer.finetune_clip.finetune_clip` (open_clip's contrastive loss, early
stopping on held-out pairs, a resumable checkpoint), then both encoders embed the catalog's images
and are gated on the held-out behaviour exactly as text encoders are
(:func:`indexer.finetune_stage.gate_encoders`: content-only NDCG@10 and cold-item Recall@10 over the
CLIP space, search MRR@10 of held-out queries through the CLIP text tower).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from indexer.finetune_clip import ClipFinetuneReport, finetune_clip
from indexer.finetune_pairs import Pairs
from indexer.finetune_stage import (
    FINAL,
    Behaviour,
    Embed,
    FinetuneResult,
    LoadEncoder,
    gate_encoders,
    read_behaviour,
    too_few_pairs,
)
from service.settings import Settings
from service.store.db import session_scope
from service.store.images import ImageStore, is_key
from service.store.models import Item
from service.vectors import artifacts
from service.vectors.encoders import _is_cuda

log = logging.getLogger("recsys.indexer")

# Fewest (image, text) pairs worth a contrastive fit (finetune_clip needs 2 to train, 2 held out).
MIN_CLIP_PAIRS = 16


def item_images(session_factory: sessionmaker[Session], image_store: ImageStore) -> dict[int, tuple[Path, str]]:
    """``{item: (image file, title)}`` for every live item whose image is in the store."""
    out: dict[int, tuple[Path, str]] = {}
    with session_scope(session_factory) as session:
        rows = session.execute(select(Item.id, Item.image_location, Item.title)
                               .where(Item.deleted_at.is_(None), Item.image_location.is_not(None)).order_by(Item.id))
        for pk, location, title in rows:
            # A legacy location (a path or URL outside the store) is never read, as in the build.
            if is_key(location) and image_store.exists(location):
                out[pk] = (image_store.path_of(location), title or "")
    return out


def clip_pairs(pairs: Pairs, images: dict[int, tuple[Path, str]], *, exclude: set[int], skip_texts: set[str],
               max_pairs: int, seed: int) -> list[tuple[Path, str]]:
    """(image, text) training pairs, at most ``max_pairs``: query pairs first (heaviest first), then
    each item's own title, then co-engagement (image of one item, title of the other, a seeded way
    round). ``exclude``: items whose image or title must not be trained on (held-out cold items);
    ``skip_texts``: texts never used (held-out queries)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[Path, str]] = []

    def add(item: int, text: str) -> None:
        if len(out) < max_pairs and item in images and item not in exclude and text and text not in skip_texts:
            out.append((images[item][0], text))

    for (query, item), _w in sorted(pairs.query_pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        add(item, query)
    for item, (_path, title) in sorted(images.items()):
        add(item, title)
    for (a, b), _w in sorted(pairs.item_pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(out) >= max_pairs:
            break
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        if second in images and second not in exclude:
            add(first, images[second][1])
    return out


def report_dict(report: ClipFinetuneReport) -> dict[str, Any]:
    """The fit's figures for the manifest (no paths, no per-image errors beyond their count)."""
    return {"pairs": report.pairs, "train_pairs": report.train_pairs, "valid_pairs": report.valid_pairs,
            "skipped_images": report.skipped_images, "epochs_run": report.epochs_run,
            "resumed_from_epoch": report.resumed_from_epoch, "best_epoch": report.best_epoch,
            "train_loss": [round(x, 5) for x in report.train_loss],
            "valid_loss": [round(x, 5) for x in report.valid_loss], "steps": report.steps,
            "seconds": round(report.seconds, 2), "pairs_per_second": round(report.pairs_per_second, 2),
            "peak_rss_mb": None if report.peak_rss_mb is None else round(report.peak_rss_mb, 1)}


def finetune_clip_space(settings: Settings, session_factory: sessionmaker[Session], *, published: Any,
                        embed: Embed, load_encoder: LoadEncoder, work_dir: Path, image_store: ImageStore,
                        progress: bool = False, fit: Callable[..., ClipFinetuneReport] = finetune_clip,
                        seed: int = 0, behaviour: Behaviour | None = None) -> FinetuneResult:
    """Fine-tune the pretrained CLIP weights on behaviour and gate them against ``published`` (the
    encoder the published version's CLIP space was built with). ``load_encoder(None)``: the
    pretrained base; ``load_encoder(file, name)``: fine-tuned weights."""
    started = time.perf_counter()
    behaviour = behaviour or read_behaviour(settings, session_factory, seed=seed)
    held, pairs = behaviour.held, behaviour.pairs
    images = item_images(session_factory, image_store)
    training = clip_pairs(pairs, images, exclude=set(held.cold.cold_items),
                          skip_texts={query for query, _item in held.search},
                          max_pairs=settings.finetune_max_pairs, seed=seed)
    section: dict[str, Any] = {
        "watermark": behaviour.watermark, "held_out": held.describe(),
        "pairs": {"item_pairs": len(pairs.item_pairs), "query_pairs": len(pairs.query_pairs),
                  "items_with_images": len(images), "used": len(training)},
        "base": {"setting": {"model": settings.clip_model, "pretrained": settings.clip_pretrained}},
    }
    skipped = too_few_pairs(pairs, settings, "CLIP encoder")
    if not skipped and len(training) < MIN_CLIP_PAIRS:
        skipped = (f"CLIP fine-tuning skipped: {len(training)} (image, text) pairs, fewer than {MIN_CLIP_PAIRS} "
                   "(items with pictures in the image store); the CLIP encoder stays as it is")
    if skipped:
        log.info(skipped)
        return FinetuneResult("skipped", None, None, {**section, "status": "skipped"}, message=skipped)

    base = load_encoder(None)
    section["base"].update(name=base.name, revision=base.revision)
    final = Path(work_dir) / FINAL
    if final.exists():
        shutil.rmtree(final)
    weights = final / artifacts.CLIP_WEIGHTS
    checkpoint = Path(work_dir) / "checkpoint"
    options = {"out_path": weights, "epochs": settings.finetune_epochs, "batch_size": settings.finetune_batch_size,
               "learning_rate": settings.finetune_clip_learning_rate, "patience": 1, "seed": seed,
               "checkpoint_dir": checkpoint, "progress": progress}
    try:
        report = fit(base, training, **options)
    except ValueError as exc:
        if not checkpoint.exists() or "holds a fine-tuning run" not in str(exc):
            raise
        # A killed run's checkpoint resumes only the same pairs; new behaviour since: start over.
        log.info("CLIP fine-tune: the checkpoint in %s is of other pairs; starting over", checkpoint)
        shutil.rmtree(checkpoint)
        report = fit(base, training, **options)
    # finetune_clip trains fp32 weights, under bf16 autocast on CUDA.
    section["fit"] = {**report_dict(report), "device": str(base.device),
                      "precision": "bf16 autocast" if _is_cuda(base.device) else "fp32"}
    if report.best_epoch == 0:
        msg = ("CLIP fine-tuning skipped: no epoch lowered the held-out contrastive loss "
               f"({report.valid_loss[0]:.4f} for the pretrained weights); the CLIP encoder stays as it is")
        log.info(msg)
        return FinetuneResult("skipped", None, None, {**section, "status": "skipped"}, message=msg)
    candidate = load_encoder(weights, f"{base.name}+finetuned")
    refused = gate_encoders(published, candidate, embed=embed, encode_of=lambda e: e.encode_text, held=held,
                            settings=settings, session_factory=session_factory, section=section, label="CLIP")
    section["seconds"] = round(time.perf_counter() - started, 2)
    return FinetuneResult(section["status"], candidate, final, section, refused,
                          f"fine-tuned CLIP encoder {'refused: ' + refused if refused else 'passed the gate'}")


__all__ = ["clip_pairs", "finetune_clip_space", "item_images"]
