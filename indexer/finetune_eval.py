"""The fine-tuning gate's held-out data and metrics: is a text encoder better for this catalog?

:func:`hold_out` cuts the event log once, before any pair is made:

- **cold items**: a seeded share of the items with enough positives; none of their events
  makes a pair (:mod:`service.recommend.cold_eval`);
- **recent behaviour**: each sampled user's last positive interaction (not on a cold item) and
  everything after it;
- **search**: a seeded share of the distinct queries that led to a positive event; every event
  carrying one of those queries.

Fine-tuning pairs come only from the events :attr:`HeldOut.keep` allows. :func:`encoder_metrics`
then scores an encoder's item vectors on what was held out, each through the code the service
runs: content-only recommendations (``for_user`` with the profile source alone, through
:class:`~service.recommend.offline_eval.Evaluator`) scored by NDCG@10 on recent behaviour and by
Recall@10 on the cold items (whole catalog ranked), and search MRR@10 of the held-out queries
through ``search_text`` in semantic mode (what ``GET /search`` calls) over an exact index. :func:`gate` compares two encoders
on those figures, per user (or query), paired.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from service.recommend.cold_eval import COLD, ColdEvaluator, ColdSplit, cold_split
from service.recommend.evaluation import Split, paired_difference
from service.recommend.offline_eval import Blend, Evaluator, EventLog, sample_split, split_log
from service.search.hybrid import search_text
from service.store.items import Filters
from service.settings import Settings
from service.vectors.index_store import LoadedSpace

K = 10
CONTENT_ONLY = Blend({"profile": 1.0}, fallbacks=False)
METRICS = ("content_ndcg_at_10", "cold_recall_at_10", "search_mrr_at_10")


@dataclass(frozen=True)
class HeldOut:
    """What the gate scores on, and which events fine-tuning may learn from."""

    log: EventLog  # every event, with queries
    cold: ColdSplit
    split: Split  # recent behaviour: the last positive of sampled users of ``cold.world``
    keep: np.ndarray  # per event of ``log``: may make fine-tuning pairs
    search: list[tuple[str, int]]  # held-out (query, clicked item)
    cold_truth: dict[Any, set[int]]  # sampled users -> their positive cold items

    def describe(self) -> dict[str, int]:
        return {"events": len(self.log), "pair_events": int(self.keep.sum()), "cold_items": len(self.cold.cold_items),
                "cold_users": len(self.cold_truth), "recent_users": int(len(self.split.users)),
                "search_pairs": len(self.search)}


def _query_held(query: str, fraction: float, seed: int) -> bool:
    # A stable hash (not Python's salted one): the same queries are held out on every run.
    return zlib.crc32(f"{seed}:{query}".encode("utf-8", "surrogatepass")) % 10_000 < fraction * 10_000


def hold_out(log: EventLog, settings: Settings, session_factory: sessionmaker[Session], *, eval_users: int,
             cold_fraction: float = 0.1, cold_min_positives: int = 5, query_fraction: float = 0.2,
             seed: int = 0) -> HeldOut:
    """Cut ``log`` (read with queries) into the gate's held-out sets and the events pairs may use."""
    if log.queries is None:
        raise ValueError("hold_out needs the event log read with its queries")
    cold = cold_split(log, settings, fraction=cold_fraction, min_positives=cold_min_positives, seed=seed)
    world = cold.world
    split = sample_split(world, split_log(world, n_test=1, n_valid=0, min_train=1), eval_users, seed=seed)
    recent = Evaluator(world, split, None, settings, session_factory, k=K).world("test").rows
    keep = np.zeros(len(log), dtype=bool)
    keep[cold.world_rows[recent]] = True
    search: dict[tuple[str, int], None] = {}
    for i, query in enumerate(log.queries):
        text = (query or "").strip()
        if text and _query_held(text, query_fraction, seed):
            keep[i] = False
            if log.weights[i] > 0 and not cold.on_cold[i]:
                search[(text, int(log.items[i]))] = None
    rng = np.random.default_rng(seed)
    users = sorted(cold.truth, key=str)
    if len(users) > eval_users:
        users = [users[j] for j in np.sort(rng.choice(len(users), eval_users, replace=False))]
    return HeldOut(log, cold, split, keep, list(search), {u: cold.truth[u] for u in users})


def memory_space(ids: np.ndarray, vectors: np.ndarray, encoder: Mapping[str, Any]) -> LoadedSpace:
    """A text space held in memory with an exact index, for scoring vectors before they are built."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])  # answers rows, as a built index does
    index.add(vectors)
    return LoadedSpace("text", index, np.asarray(ids, dtype=np.int64), vectors, {}, dict(encoder, dim=vectors.shape[1]))


@dataclass
class EncoderScore:
    """Held-out metrics of one encoder, and the per-user (per-query) values the gate pairs."""

    metrics: dict[str, float | None]
    per_unit: dict[str, np.ndarray]


def encoder_metrics(space: LoadedSpace, encode_query: Callable[[str], np.ndarray], held: HeldOut,
                    settings: Settings, session_factory: sessionmaker[Session]) -> EncoderScore:
    """Content-only NDCG@10 (recent behaviour), cold-item Recall@10 and search MRR@10 of ``space``'s
    vectors; a metric with nothing held out for it is None."""
    metrics: dict[str, float | None] = dict.fromkeys(METRICS)
    per_unit: dict[str, np.ndarray] = {}
    ev = ColdEvaluator(held.cold.world, held.split, space, settings, session_factory, k=K, cold_truth=held.cold_truth)
    if len(held.split.users):
        lists: dict[Any, list[int]] = {}
        ev.run(CONTENT_ONLY, phase="test", lists=lists)
        per_unit["content_ndcg_at_10"] = ev.per_user_ndcg(lists, "test")
        metrics["content_ndcg_at_10"] = float(np.nanmean(per_unit["content_ndcg_at_10"]))
    if held.cold_truth:
        lists = {}
        ev.run(CONTENT_ONLY, phase=COLD, lists=lists)
        truth = ev.truth(COLD)
        per_unit["cold_recall_at_10"] = np.array([len(set(lists.get(u, [])[:K]) & rel) / min(K, len(rel))
                                                  for u, rel in truth.items()])
        metrics["cold_recall_at_10"] = float(per_unit["cold_recall_at_10"].mean())
    if held.search:
        rr = []
        with session_factory() as session:
            for query, item in held.search:
                page = search_text(session=session, query=query, mode="semantic", k=K, offset=0, filters=Filters(),
                                   space=space, encode=encode_query)
                found = [hit.id for hit, _score, _signals in page.hits]
                rr.append(1.0 / (found.index(item) + 1) if item in found else 0.0)
        per_unit["search_mrr_at_10"] = np.asarray(rr)
        metrics["search_mrr_at_10"] = float(np.mean(rr))
    return EncoderScore(metrics, per_unit)


def gate(candidate: EncoderScore, published: EncoderScore, tolerance: float) -> tuple[str | None, dict[str, Any]]:
    """(why the candidate is refused or None, the comparison per metric).

    A metric refuses the candidate when it is below the published encoder's by more than
    ``tolerance`` (a fraction) *and* the paired difference is more than two standard errors below
    zero, as the model gate decides: small held-out sets are noisy.
    """
    table: dict[str, Any] = {}
    reasons = []
    for name in METRICS:
        new, old = candidate.metrics.get(name), published.metrics.get(name)
        if new is None or old is None:
            continue
        diff = paired_difference(candidate.per_unit[name], published.per_unit[name])
        worse = new < old * (1 - tolerance) and diff["mean"] + 2 * diff["se"] < 0
        table[name] = {"candidate": new, "published": old, "diff": diff["mean"], "se": diff["se"],
                       "n": diff["users"], "refuses": bool(worse)}
        if worse:
            reasons.append(f"{name} {new:.4f} < published {old:.4f} (-{(1 - new / old) * 100:.1f}%, "
                           f"{diff['mean']:+.4f} ± {diff['se']:.4f})")
    return ("; ".join(reasons) or None), table


__all__ = ["CONTENT_ONLY", "EncoderScore", "HeldOut", "METRICS", "encoder_metrics", "gate", "hold_out", "memory_space"]
