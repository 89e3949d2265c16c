"""Fine-tuning the text encoder (issue 13): held-out data, pairs, the fit, the gate, versions.

The synthetic catalog: items with made-up, unrelated-looking names in three "tastes"; users
stick to one taste, so co-engagement says which names belong together while the pretrained
encoder cannot know it. A fine-tune on that behaviour must pull a taste's names together.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

import numpy as np
import pytest
from sqlalchemy import select

import indexer.pipeline as pipeline_mod
from indexer.finetune import FitOptions, PairTexts, fit_text_encoder
from indexer.finetune_eval import EncoderScore, gate, hold_out
from indexer.finetune_stage import finetune_text, pair_texts, split_pairs
from indexer.finetune_pairs import EventRows, Pairs, build_pairs
from indexer.pipeline import Pipeline, publish_version
from service.recommend.offline_eval import load_event_log
from service.settings import load_settings
from service.store.events import record_events
from service.store.items import upsert_items
from service.store.records import EventRecord, ItemRecord
from service.vectors import artifacts
from service.vectors.text_encoder import load_text_encoder

pytestmark = pytest.mark.slow  # a real MiniLM is fine-tuned

START = dt.datetime(2026, 1, 1)
# Nonsense names: nothing in them says which belong together.
NAMES = ["zorvex", "quillane", "brasht", "molloq", "tenvira", "glusp", "yarnick", "phelbow", "cradius",
         "vintorq", "splatch", "orrimund", "kestrabe", "dunnivar", "flimsk", "hobrane", "jaxtell", "nurvola"]
_SYLLABLES = ["zor", "qui", "bra", "mol", "ten", "glu", "yar", "phe", "cra", "vin", "spl", "orr", "kes", "dun"]
# The catalog: 60 such names (20 per taste), so ten recommendations are a real choice.
CATALOG = NAMES + [f"{_SYLLABLES[i % 14]}{_SYLLABLES[(i * 5 + 3) % 14]}{_SYLLABLES[(i * 3 + 7) % 14]}"
                   for i in range(42)]
TASTES = 3


@pytest.fixture(scope="module")
def base_encoder():
    return load_text_encoder(load_settings({}, environ={}))


def _settings(base, **overrides):
    return load_settings({"data_dir": base.data_dir, "database_url": base.database_url, "clip_enabled": False,
                          "finetune_min_pairs": 20, "finetune_epochs": 2, "finetune_batch_size": 16,
                          "train_min_interactions": 20, **overrides}, environ={})


def taste_of(i: int) -> int:
    return i % TASTES


# What each taste is about, for a catalog whose titles say it (the pretrained encoder can tell).
TASTE_WORDS = ["trail running shoe", "chef's kitchen knife", "espresso coffee machine"]


def _taste_catalog(session_factory, settings, titles):
    """60 items n0..n59 (taste = index % 3), 90 users each buying 5 items of their taste over hours."""
    rng = np.random.default_rng(3)
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id=f"n{i}", kind="product", title=title)
                                               for i, title in enumerate(titles)])
        events = []
        for u in range(90):
            members = [i for i in range(len(titles)) if taste_of(i) == u % TASTES]
            for step, i in enumerate(rng.permutation(members)[:5].tolist()):
                query = titles[i][:4] if step == 0 and u % 2 else None  # some clicks come from a search
                events.append(EventRecord(f"e{u}-{step}", f"u{u}", f"n{i}", "purchase", None,
                                          START + dt.timedelta(days=u % 7, hours=step), query=query))
        record_events(session=session, records=events)
        session.commit()
    return _settings(settings)


@pytest.fixture
def taste_catalog(session_factory, settings):
    """Nonsense names: only behaviour says which belong together."""
    return _taste_catalog(session_factory, settings, CATALOG)


@pytest.fixture
def titled_catalog(session_factory, settings):
    """Titles that say the taste: the pretrained encoder already groups them."""
    return _taste_catalog(session_factory, settings,
                          [f"{name} {TASTE_WORDS[taste_of(i)]}" for i, name in enumerate(CATALOG)])


def _mean_cos(encoder, groups, texts=NAMES) -> tuple[float, float]:
    """(mean cosine within a taste, mean cosine across tastes) of the item names (or ``texts``)."""
    v = encoder.encode(list(texts))
    sims = v @ v.T
    n = len(texts)
    same = [sims[a, b] for a in range(n) for b in range(a + 1, n) if groups[a] == groups[b]]
    other = [sims[a, b] for a in range(n) for b in range(a + 1, n) if groups[a] != groups[b]]
    return float(np.mean(same)), float(np.mean(other))


# --- held-out data and pairs -------------------------------------------------------------------


def test_pairs_never_come_from_held_out_events(taste_catalog, session_factory):
    with session_factory() as session:
        log = load_event_log(session, taste_catalog, queries=True)
    held = hold_out(log, taste_catalog, session_factory, eval_users=1000, cold_fraction=0.2, cold_min_positives=3,
                    query_fraction=0.5, seed=0)
    assert len(held.cold.cold_items) > 0 and len(held.split.users) > 0 and held.search
    on_cold = np.isin(log.items, held.cold.cold_items)
    assert not (held.keep & on_cold).any(), "no event on a cold item may make a pair"
    held_queries = {q for q, _ in held.search}
    assert not any(held.keep[i] for i, q in enumerate(log.queries) if q in held_queries)
    # Each evaluated user's last positive (outside the cold items) and what follows are held out.
    world = held.cold.world
    for row in world.positive[held.split.test_idx].tolist():
        full_row = held.cold.world_rows[row]
        assert not held.keep[full_row]
    rows = EventRows(log.users, log.items, log.weights, log.times, list(log.queries))
    pairs = build_pairs(rows, window_seconds=30 * 86400, keep=held.keep)
    kept_items = set(log.items[held.keep].tolist())
    assert {i for pair in pairs.item_pairs for i in pair} <= kept_items
    assert not set(held.cold.cold_items.tolist()) & {i for pair in pairs.item_pairs for i in pair}
    assert not held_queries & {q for q, _ in pairs.query_pairs}


def test_pair_texts_put_queries_first_and_skip_missing_items():
    pairs = Pairs({(1, 2): 3.0, (2, 3): 1.0, (3, 99): 5.0}, {("tent", 1): 1.0})
    texts = {1: "one", 2: "two", 3: "three"}
    out = pair_texts(pairs, texts, max_pairs=10, seed=0)
    assert (out.anchors[0], out.positives[0]) == ("tent", "one")
    assert len(out) == 3  # (3, 99) names a deleted item
    assert {frozenset((a, p)) for a, p in zip(out.anchors[1:], out.positives[1:])} == {
        frozenset(("one", "two")), frozenset(("two", "three"))}
    assert len(pair_texts(pairs, texts, max_pairs=2, seed=0)) == 2
    train, valid = split_pairs(PairTexts([str(i) for i in range(50)], [str(i) for i in range(50)]), seed=0)
    assert len(valid) == 5 and len(train) == 45 and not set(train.anchors) & set(valid.anchors)


def test_gate_refuses_only_a_clear_loss():
    per_user = np.linspace(0.2, 0.8, 200)
    old = EncoderScore({"content_ndcg_at_10": 0.5, "cold_recall_at_10": None, "search_mrr_at_10": None},
                       {"content_ndcg_at_10": per_user})
    worse = EncoderScore({"content_ndcg_at_10": 0.4, "cold_recall_at_10": None, "search_mrr_at_10": None},
                         {"content_ndcg_at_10": per_user - 0.1})
    noisy = np.random.default_rng(0).normal(0, 0.3, 200)
    tie = EncoderScore({"content_ndcg_at_10": 0.49}, {"content_ndcg_at_10": per_user - 0.01 + noisy})
    refused, table = gate(worse, old, 0.02)
    assert refused and "content_ndcg_at_10" in refused and table["content_ndcg_at_10"]["refuses"]
    assert gate(old, old, 0.02)[0] is None
    assert gate(tie, old, 0.02)[0] is None  # within noise: not refused


# --- the fit -------------------------------------------------------------------------------------


def test_a_tiny_fine_tune_pulls_co_engaged_names_together(tmp_path):
    encoder = load_text_encoder(load_settings({}, environ={}))
    groups = [taste_of(i) for i in range(len(NAMES))]
    before_same, before_other = _mean_cos(encoder, groups)
    members = {t: [n for i, n in enumerate(NAMES) if groups[i] == t] for t in range(TASTES)}
    anchors, positives = [], []
    for t, names in members.items():
        for a in names:
            for b in names:
                if a != b:
                    anchors.append(a)
                    positives.append(b)
    train = PairTexts(anchors, positives)
    report = fit_text_encoder(encoder.model, train, PairTexts(anchors[::7], positives[::7]), work_dir=tmp_path,
                              options=FitOptions(epochs=3, batch_size=12, learning_rate=2e-4))
    after_same, after_other = _mean_cos(encoder, groups)
    assert after_same - after_other > (before_same - before_other) + 0.2, (before_same, before_other, after_same,
                                                                           after_other)
    assert report.valid_loss[-1] < report.valid_loss[0] and report.steps > 0 and report.train_pairs == len(train)
    # Resumable: the same data again finds the last checkpoint and has nothing left to do.
    again = fit_text_encoder(encoder.model, train, PairTexts(anchors[::7], positives[::7]), work_dir=tmp_path,
                             options=FitOptions(epochs=3, batch_size=12, learning_rate=2e-4))
    assert again.resumed_from is not None


# --- through the pipeline and the service --------------------------------------------------------


@pytest.fixture
def sqlite_only(engine):
    """The fine-tune's pipeline paths read SQL like the rebuild does; the held-out split and pair
    test covers PostgreSQL. Each run fine-tunes a model: once is enough."""
    if engine.dialect.name != "sqlite":
        pytest.skip("fine-tuning through the pipeline runs on SQLite only (PostgreSQL: the pairs test)")


def _app_overrides(settings):
    return {"data_dir": str(settings.data_dir), "database_url": settings.database_url, "clip_enabled": False}


def _build(settings, session_factory, **kwargs):
    return Pipeline(settings, session_factory, **kwargs).run(force=True)


def test_finetune_publishes_a_version_carrying_its_encoder_and_rollback_restores_both(sqlite_only,
        titled_catalog, session_factory, base_encoder):
    first = _build(titled_catalog, session_factory)
    assert first.status == "published" and "encoder" not in first.manifest
    report = Pipeline(titled_catalog, session_factory).finetune()
    assert report.status == "published", report.message
    section = report.manifest["encoder"]
    assert section["status"] == "fine-tuned" and section["revision"] != base_encoder.revision
    assert section["base"]["revision"] == base_encoder.revision and section["watermark"]["events"] == 450
    assert report.manifest["spaces"]["text"]["encoder"]["revision"] == section["revision"]
    assert section["metrics"]["candidate"]["content_ndcg_at_10"] is not None
    folder = artifacts.version_dir(titled_catalog.index_path, report.version)
    artifacts.verify_version(folder, checksums=True)  # the encoder's files are checksummed too
    tuned = load_text_encoder(titled_catalog, path=folder / artifacts.ENCODER_DIR)
    assert tuned.revision == section["revision"]
    # The fine-tuned space says what behaviour says: a taste's items are closer than before.
    titles = [f"{name} {TASTE_WORDS[taste_of(i)]}" for i, name in enumerate(CATALOG)]
    groups = [taste_of(i) for i in range(len(titles))]
    before, after = _mean_cos(base_encoder, groups, titles), _mean_cos(tuned, groups, titles)
    assert after[0] - after[1] > before[0] - before[1]
    # A plain rebuild keeps the fine-tuned encoder (same base setting) without retraining it.
    rebuilt = _build(titled_catalog, session_factory)
    assert rebuilt.manifest["encoder"]["revision"] == section["revision"]
    assert rebuilt.manifest["encoder"]["inherited_from"] == report.version
    assert rebuilt.manifest["spaces"]["text"]["encoder"]["revision"] == section["revision"]
    assert rebuilt.manifest["spaces"]["text"]["cached"] == len(CATALOG)  # vectors from the cache
    # Rollback: publishing the first version serves the pretrained encoder and its index again.
    publish_version(titled_catalog, session_factory, first.version)
    old = artifacts.read_manifest(artifacts.version_dir(titled_catalog.index_path, first.version))
    assert "encoder" not in old and old["spaces"]["text"]["encoder"]["revision"] == base_encoder.revision


def damaging_fit(model, train, valid, **kwargs):
    """A fine-tune gone wrong: every weight scrambled (the gate must refuse what it makes)."""
    import torch

    report = fit_text_encoder(model, train, valid, **{**kwargs, "options": FitOptions(epochs=1, batch_size=16)})
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p[torch.randperm(p.shape[0], generator=gen)] if p.dim() else p)
    return report


def test_a_fine_tune_that_makes_held_out_metrics_worse_is_not_published(sqlite_only, titled_catalog, session_factory):
    first = _build(titled_catalog, session_factory)
    finetuner = functools.partial(finetune_text, fit=damaging_fit)
    report = Pipeline(titled_catalog, session_factory, finetuner=finetuner).finetune()
    assert report.status == "refused", (report.message, report.manifest["encoder"]["gate"])
    assert "fine-tuned text encoder" in report.message
    assert artifacts.current_version(titled_catalog.index_path) == first.version
    gate_record = report.manifest["encoder"]["gate"]
    assert gate_record["refused"] and any(row["refuses"] for row in gate_record["comparison"].values())


def test_too_little_behaviour_skips_fine_tuning(sqlite_only, session_factory, settings):
    s = _settings(settings)
    with session_factory() as session:
        upsert_items(session=session, records=[ItemRecord(external_id="a", kind="product", title="tent")])
        session.commit()
    _build(s, session_factory)
    report = Pipeline(s, session_factory).finetune()
    assert report.status == "up-to-date" and "fewer than finetune_min_pairs" in report.message


def test_the_served_versions_encoder_embeds_queries(sqlite_only, titled_catalog, session_factory, base_encoder):
    from service.web.app import create_app

    first = _build(titled_catalog, session_factory)
    tuned = Pipeline(titled_catalog, session_factory).finetune()
    assert tuned.status == "published"
    app = create_app(_app_overrides(titled_catalog))
    rt = app.extensions["recsys"]
    rt.store.refresh()
    assert rt.store.current.name == tuned.version
    served = rt.text_encoder()
    assert served.revision == tuned.manifest["encoder"]["revision"] != base_encoder.revision
    with app.test_client() as client:
        got = client.get("/search", query_string={"q": NAMES[0], "mode": "semantic", "k": 3})
        assert got.status_code == 200, got.get_json()
    cached = rt.query_cache.wrap("text", served, served.encode_query)
    assert np.allclose(cached(NAMES[0]), served.encode(NAMES[0]), atol=1e-5)
    # Rollback: the pretrained encoder embeds queries again.
    publish_version(titled_catalog, session_factory, first.version)
    rt.store.refresh()
    assert rt.store.current.name == first.version
    assert rt.text_encoder().revision == base_encoder.revision


def test_a_version_whose_encoder_cannot_be_loaded_is_refused_and_the_old_one_keeps_serving(sqlite_only,
        titled_catalog, session_factory):
    from service.web.app import create_app

    first = _build(titled_catalog, session_factory)
    tuned = Pipeline(titled_catalog, session_factory, ).finetune(publish=False)
    assert tuned.status == "ready"
    app = create_app(_app_overrides(titled_catalog))
    rt = app.extensions["recsys"]
    rt.store.refresh()
    assert rt.store.current.name == first.version
    # The encoder folder loses its weights, and its ONNX export (what encodes queries by default)
    # its graph (a broken copy); the manifest is rewritten to match, so only loading can tell.
    folder = artifacts.version_dir(titled_catalog.index_path, tuned.version)
    manifest = artifacts.read_manifest(folder)
    for rel in list(manifest["encoder"]["files"]):
        if rel.endswith((".safetensors", ".bin")):
            (folder / artifacts.ENCODER_DIR / rel).write_bytes(b"not weights")
    manifest["encoder"]["files"] = artifacts.tree_entries(folder / artifacts.ENCODER_DIR)
    (folder / artifacts.QUERY_ENCODER_DIR / manifest["query_encoder"]["model_file"]).write_bytes(b"not a graph")
    manifest["query_encoder"]["files"] = artifacts.tree_entries(folder / artifacts.QUERY_ENCODER_DIR)
    artifacts.write_json_atomic(folder / artifacts.MANIFEST, manifest)
    artifacts.set_current(titled_catalog.index_path, tuned.version)
    rt.store.refresh()
    assert rt.store.current.name == first.version
    with app.test_client() as client:
        got = client.get("/search", query_string={"q": NAMES[0], "mode": "semantic", "k": 3})
        assert got.status_code == 200 and got.get_json()["index_version"] == first.version


def test_a_scheduled_rebuild_with_a_refused_fine_tune_still_publishes_the_catalog(sqlite_only, titled_catalog,
                                                                                  session_factory):
    settings = _settings(titled_catalog, finetune_on_rebuild=True, finetune_min_new_events=1)
    finetuner = functools.partial(finetune_text, fit=damaging_fit)
    report = Pipeline(settings, session_factory, finetuner=finetuner).run()
    assert report.status == "published" and "encoder" not in report.manifest  # built with the pretrained one
    attempt = json.loads((settings.index_path / pipeline_mod.FINETUNE_ATTEMPT).read_text())
    assert attempt["status"] == "refused" and attempt["watermark"]["events"] == 450
    # No new behaviour since that attempt: the next scheduled build does not fine-tune again.
    calls = []
    again = Pipeline(settings, session_factory, finetuner=lambda *a, **k: calls.append(1)).run()
    assert again.status == "up-to-date" and not calls


def test_the_gates_search_figure_comes_from_the_search_endpoints_function(taste_catalog, session_factory):
    """Search MRR@10 goes through ``search_text`` (as ``GET /search`` does): ranks count from 1, and a
    deleted item is never found, however close its vector."""
    import dataclasses

    from indexer.finetune_eval import encoder_metrics, memory_space
    from service.store.models import Item

    with session_factory() as session:
        log = load_event_log(session, taste_catalog, queries=True)
        ids = sorted(session.scalars(select(Item.id)).all())
    held = hold_out(log, taste_catalog, session_factory, eval_users=10, seed=0)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    space = memory_space(np.asarray(ids), vectors, {"name": "fake", "revision": "r"})
    second = vectors[0] + 0.8 * vectors[1]  # ids[0] first, ids[1] close behind
    queries = {"exact": vectors[0], "second": second / np.linalg.norm(second), "gone": vectors[2]}
    with session_factory() as session:
        session.get(Item, ids[2]).deleted_at = dt.datetime(2026, 2, 1)
        session.commit()
    held = dataclasses.replace(held, search=[("exact", ids[0]), ("second", ids[1]), ("gone", ids[2])])
    score = encoder_metrics(space, lambda q: queries[q], held, taste_catalog, session_factory)
    assert score.per_unit["search_mrr_at_10"].tolist() == [1.0, 0.5, 0.0]
    assert score.metrics["search_mrr_at_10"] == pytest.approx(0.5)
