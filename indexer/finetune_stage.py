"""The fine-tuning stage: behaviour → training pairs → a fine-tuned text encoder → the gate.

1. Every event is read from SQL with its search query and weighted as the service weighs it;
   :func:`indexer.finetune_eval.hold_out` holds out cold items, each sampled user's most recent
   positive and a share of the search queries before any pair is made.
2. Pairs (:mod:`indexer.finetune_pairs`) from the remaining positive events: item → item within
   ``finetune_window_days``, query → item from search clicks; the heaviest ``finetune_max_pairs``,
   turned into texts exactly as the text space embeds items. Behaviour alone teaches the encoder
   which items go together and makes it forget how a short query finds its item (a test saw
   search MRR@10 fall from 0.77 to 0.30), so each item also gets a query-like probe of itself
   (:mod:`indexer.probes`) as a pair: the encoder keeps matching typed queries. A seeded tenth
   of all pairs is held out for early stopping.
3. The **pretrained** base encoder (``text_model``; never a previous fine-tune, so repeated
   fine-tunes do not drift) is fine-tuned (:mod:`indexer.finetune`) and saved.
4. The catalog is embedded with it (through the build's vector cache, so the build that follows
   reuses the vectors) and both it and the published encoder are scored on the held-out data;
   the gate (:func:`indexer.finetune_eval.gate`) decides.

The caller (:meth:`indexer.pipeline.Pipeline.finetune`) builds the version with the result.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from indexer.finetune import FitOptions, FitReport, PairTexts, fit_text_encoder
from indexer.finetune_eval import HeldOut, encoder_metrics, gate, hold_out, memory_space
from indexer.finetune_pairs import EventRows, Pairs, build_pairs
from indexer.probes import probe_text
from service.recommend.offline_eval import load_event_log
from service.settings import Settings
from service.store.db import session_scope
from service.store.items import chunked, embedding_text
from service.store.models import Item
from service.store.events import event_watermark

log = logging.getLogger("recsys.indexer")

FINAL = "final"
VALID_SHARE = 0.1
MAX_VALID = 2000

# (ids, vectors) of every live item under an encoder: the build's embed stage, with its cache.
Embed = Callable[[Any], tuple[np.ndarray, np.ndarray]]
LoadEncoder = Callable[..., Any]  # (None) the pretrained base; (folder, name) that fine-tune


@dataclass
class FinetuneResult:
    """``status``: "skipped" (too little behaviour), "fine-tuned" (passed the gate) or "refused"."""

    status: str
    encoder: Any | None  # the fine-tuned TextEncoder (None when skipped)
    model_dir: Path | None  # its saved sentence-transformers folder
    section: dict[str, Any]  # the manifest's "encoder" section (without files)
    refused: str | None = None
    message: str = ""


def pair_texts(pairs: Pairs, texts: dict[int, str], *, max_pairs: int, seed: int,
               probes: dict[int, str] | None = None) -> PairTexts:
    """The heaviest pairs whose items still exist, as (anchor, positive) texts.

    Probe pairs (``probes``: item -> a query-like text of it) come first, then query pairs (a
    click after a search is the most direct signal of what a text should find), then item pairs,
    which are symmetric, so each is turned a seeded random way round.
    """
    rng = np.random.default_rng(seed)
    anchors: list[str] = []
    positives: list[str] = []
    for item, probe in sorted((probes or {}).items()):
        if item in texts and probe and len(anchors) < max_pairs:
            anchors.append(probe)
            positives.append(texts[item])
    for (query, item), _w in sorted(pairs.query_pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        if item in texts and len(anchors) < max_pairs:
            anchors.append(query)
            positives.append(texts[item])
    for (a, b), _w in sorted(pairs.item_pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(anchors) >= max_pairs:
            break
        if a in texts and b in texts:
            first, second = (a, b) if rng.random() < 0.5 else (b, a)
            anchors.append(texts[first])
            positives.append(texts[second])
    return PairTexts(anchors, positives)


def texts_and_probes(session_factory: sessionmaker[Session], ids: list[int], *,
                      seed: int) -> tuple[dict[int, str], dict[int, str]]:
    """What the text space embeds for each item, and a query-like probe of each (seeded)."""
    rng = np.random.default_rng(seed)
    texts: dict[int, str] = {}
    probes: dict[int, str] = {}
    with session_scope(session_factory) as session:
        for chunk in chunked(ids):
            rows = session.execute(select(Item.id, Item.title, Item.text).where(Item.id.in_(chunk)).order_by(Item.id))
            for pk, title, text in rows:
                texts[pk] = embedding_text(title, text)
                probes[pk] = probe_text(title, text, rng)
    return texts, probes


def split_pairs(pairs: PairTexts, *, seed: int) -> tuple[PairTexts, PairTexts]:
    """(train, valid): a seeded tenth (at most ``MAX_VALID``, at least 1) held out for early stopping."""
    n = len(pairs)
    n_valid = min(MAX_VALID, max(1, int(round(VALID_SHARE * n))))
    order = np.random.default_rng(seed).permutation(n)
    valid, train = np.sort(order[:n_valid]), np.sort(order[n_valid:])

    def take(idx: np.ndarray) -> PairTexts:
        return PairTexts([pairs.anchors[i] for i in idx], [pairs.positives[i] for i in idx])

    return take(train), take(valid)


@dataclass
class Behaviour:
    """What every fine-tune learns from: the events' watermark, the gate's held-out data and the
    pairs made from the rest (the same seed cuts the same held-out sets for text and CLIP)."""

    watermark: dict[str, Any]
    held: HeldOut
    pairs: Pairs


def read_behaviour(settings: Settings, session_factory: sessionmaker[Session], *, seed: int = 0) -> Behaviour:
    """Every event with its query, held out first (:func:`hold_out`), then the pairs of the rest."""
    with session_scope(session_factory) as session:
        watermark = event_watermark(session)
        event_log = load_event_log(session, settings, queries=True)
    held = hold_out(event_log, settings, session_factory, eval_users=settings.train_eval_users, seed=seed)
    pairs = build_pairs(EventRows.from_log(event_log), window_seconds=settings.finetune_window_days * 86_400.0,
                        keep=held.keep, max_pairs_per_user=settings.finetune_max_pairs_per_user)
    return Behaviour(watermark, held, pairs)


def too_few_pairs(pairs: Pairs, settings: Settings, what: str) -> str | None:
    """Why there is too little behaviour to fine-tune ``what`` on (None: enough)."""
    found = len(pairs.item_pairs) + len(pairs.query_pairs)
    if found >= settings.finetune_min_pairs:
        return None
    return (f"fine-tuning skipped: {found} training pairs from behaviour, fewer than "
            f"finetune_min_pairs={settings.finetune_min_pairs}; the {what} stays as it is")


def gate_encoders(published: Any, candidate: Any, *, embed: Embed, encode_of: Callable[[Any], Callable],
                  held: HeldOut, settings: Settings, session_factory: sessionmaker[Session],
                  section: dict[str, Any], label: str) -> str | None:
    """Score both encoders' spaces on ``held`` (:func:`encoder_metrics`; queries through
    ``encode_of(encoder)``), gate the candidate, record it all in ``section``; why it is refused."""
    log.info("finetune: scoring the fine-tuned and the published %s encoder on held-out behaviour", label)
    scores = {}
    for name, encoder in (("published", published), ("candidate", candidate)):
        item_ids, vectors = embed(encoder)
        space = memory_space(item_ids, vectors, {"name": encoder.name, "revision": encoder.revision})
        # Only items of the space can be found: a held-out click on another one would score 0 for both.
        members = set(item_ids.tolist())
        scored = replace(held, search=[(q, i) for q, i in held.search if i in members])
        scores[name] = encoder_metrics(space, encode_of(encoder), scored, settings, session_factory)
    refused, table = gate(scores["candidate"], scores["published"], settings.finetune_gate_tolerance)
    section.update(
        status="refused" if refused else "fine-tuned", name=candidate.name, revision=candidate.revision,
        compared_with={"name": published.name, "revision": published.revision},
        metrics={name: s.metrics for name, s in scores.items()},
        gate={"tolerance": settings.finetune_gate_tolerance, "refused": refused, "comparison": table},
    )
    for name, row in table.items():
        log.info("finetune %s: %s %.4f (published %.4f, %+.4f ± %.4f)", label, name, row["candidate"],
                 row["published"], row["diff"], row["se"])
    return refused


def finetune_text(settings: Settings, session_factory: sessionmaker[Session], *, published: Any, embed: Embed,
                  load_encoder: LoadEncoder, work_dir: Path, progress: bool = False,
                  fit: Callable[..., FitReport] = fit_text_encoder, seed: int = 0,
                  behaviour: Behaviour | None = None) -> FinetuneResult:
    """Fine-tune the pretrained text encoder on behaviour and gate it against ``published``
    (the encoder the published version's text space was built with)."""
    started = time.perf_counter()
    behaviour = behaviour or read_behaviour(settings, session_factory, seed=seed)
    held, pairs = behaviour.held, behaviour.pairs
    ids = sorted({i for pair in pairs.item_pairs for i in pair} | {i for _q, i in pairs.query_pairs})
    texts, probes = texts_and_probes(session_factory, ids, seed=seed)
    # A probe that is word for word a held-out query would let the gate's search figure flatter.
    held_queries = {query for query, _item in held.search}
    probes = {item: probe for item, probe in probes.items() if probe not in held_queries}
    all_pairs = pair_texts(pairs, texts, max_pairs=settings.finetune_max_pairs, seed=seed,
                           probes=probes if pairs.item_pairs or pairs.query_pairs else None)
    section: dict[str, Any] = {
        "watermark": behaviour.watermark, "held_out": held.describe(),
        "pairs": {"item_pairs": len(pairs.item_pairs), "query_pairs": len(pairs.query_pairs),
                  "probe_pairs": len(probes), "used": len(all_pairs)},
        "base": {"setting": settings.text_model},
    }
    skipped = too_few_pairs(pairs, settings, "encoder")
    if skipped:
        log.info(skipped)
        return FinetuneResult("skipped", None, None, {**section, "status": "skipped"}, message=skipped)

    train, valid = split_pairs(all_pairs, seed=seed)
    base = load_encoder(None)
    section["base"].update(name=base.name, revision=base.revision)
    options = FitOptions(epochs=settings.finetune_epochs, batch_size=settings.finetune_batch_size,
                         learning_rate=settings.finetune_learning_rate, seed=seed)
    report = fit(base.model, train, valid, work_dir=work_dir, options=options, device=base.device, progress=progress)
    final = Path(work_dir) / FINAL
    if final.exists():
        shutil.rmtree(final)
    base.model.save(str(final))
    candidate = load_encoder(final, f"{base.name}+finetuned")
    refused = gate_encoders(published, candidate, embed=embed, encode_of=lambda e: e.encode_query, held=held,
                            settings=settings, session_factory=session_factory, section=section, label="text")
    section.update(fit=report.as_dict(), seconds=round(time.perf_counter() - started, 2))
    return FinetuneResult(section["status"], candidate, final, section, refused,
                          f"fine-tuned encoder {'refused: ' + refused if refused else 'passed the gate'}")


__all__ = ["Behaviour", "FinetuneResult", "finetune_text", "gate_encoders", "pair_texts", "read_behaviour",
           "split_pairs", "texts_and_probes", "too_few_pairs"]
