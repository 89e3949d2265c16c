"""The training stage (indexer.train) on a synthetic catalog with a known structure, no encoder.

Three "tastes" of 20 items each; every user sticks to one taste. Any model worth publishing
finds a user's held-out item among their taste's other items, so a deliberately bad model
(random scores) must score clearly worse, and the gate must refuse it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import select

import indexer.train as train
from indexer.train import train_model
from service.recommend import collab, event_window
from service.settings import load_settings
from service.store.events import read_events, record_events
from service.store.items import upsert_items
from service.store.models import Event
from service.store.records import EventRecord, ItemRecord
from service.vectors import artifacts

TASTES, PER_TASTE, USERS, PER_USER = 3, 20, 90, 8
START = dt.datetime(2026, 1, 1)


@pytest.fixture
def taste_world(session_factory, settings):
    """Items t{taste}-{i}, users u{n} of taste n % 3, each with 8 purchases in their taste."""
    rng = np.random.default_rng(7)
    with session_factory() as session:
        upsert_items(session=session, records=[
            ItemRecord(external_id=f"t{t}-{i}", kind="product", title=f"taste {t} item {i}", category=f"c{t}")
            for t in range(TASTES) for i in range(PER_TASTE)])
        events = []
        for u in range(USERS):
            taste = u % TASTES
            # Popular items of a taste come first (a head and a tail, as in real catalogs).
            picks = rng.choice(PER_TASTE, size=PER_USER, replace=False, p=_zipf(PER_TASTE))
            for step, i in enumerate(picks.tolist()):
                events.append(EventRecord(f"e{u}-{step}", f"u{u}", f"t{taste}-{i}", "purchase", None,
                                          START + dt.timedelta(days=u % 10, hours=step)))
        record_events(session=session, records=events)
        session.commit()
    return settings


def _zipf(n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


def _settings(base, **overrides):
    return load_settings({"data_dir": base.data_dir, "database_url": base.database_url, **overrides}, environ={})


def random_fit(family, data, **params):
    """A model that is bad everywhere: EASE's shape with random weights."""
    model = collab.fit(family, data, **params)
    model.B = np.random.default_rng(0).random(model.B.shape).astype(np.float32)
    return model


def test_training_chooses_a_model_by_validation_and_saves_it(taste_world, session_factory, tmp_path):
    result = train_model(taste_world, session_factory, tmp_path, space=None, published=None)
    section = result.section
    assert result.refused is None and section["status"] == "trained"
    assert section["family"] in collab.FAMILIES + (collab.ENSEMBLE,)
    assert section["interactions"] == USERS * PER_USER and section["watermark_event_id"] > 0
    assert section["profile"] == {"space": "text", "way": "mean", "validation_ndcg": {}}  # no space: no choice
    assert section["cold_place"] == {"rank": None}  # no content: nothing fills the place, no bar chosen
    tried = {row["family"] for row in section["validation"]["candidates"]}
    assert tried == set(collab.FAMILIES) | {collab.ENSEMBLE}  # every family fits this budget
    best = max(section["validation"]["candidates"], key=lambda r: r["ndcg"])
    assert (best["family"], best["params"]) == (section["family"], section["params"])
    # The ensembles: every pair of the families' best fits (the stronger alone first), then the
    # best pair with each other family as a third part, each weight tried for the last part.
    singles = [r for r in section["validation"]["candidates"] if r["family"] != collab.ENSEMBLE]
    ensembles = [r for r in section["validation"]["candidates"] if r["family"] == collab.ENSEMBLE]
    per_family = {}
    for row in singles:
        if row["params"]["binary"] == ensembles[0]["params"]["binary"]:
            per_family[row["family"]] = max(per_family.get(row["family"], -1.0), row["ndcg"])
    ranked = sorted(per_family, key=lambda f: -per_family[f])
    parts = [[p["family"] for p in r["params"]["parts"]] for r in ensembles]
    pairs = [[a, b] for i, a in enumerate(ranked) for b in ranked[i + 1:]]
    n_pairs = len(pairs) * len(collab.ENSEMBLE_WEIGHTS)
    assert parts[:n_pairs] == [p for p in pairs for _ in collab.ENSEMBLE_WEIGHTS]
    assert [r["params"]["weights"] for r in ensembles[:n_pairs]] == [[1.0, w] for w in collab.ENSEMBLE_WEIGHTS] * len(pairs)
    best_pair = max(ensembles[:n_pairs], key=lambda r: r["ndcg"])
    pair = [p["family"] for p in best_pair["params"]["parts"]]
    assert parts[n_pairs:] == [pair + [f] for f in ranked if f not in pair for _ in collab.ENSEMBLE_WEIGHTS]
    assert all(r["params"]["weights"][:2] == best_pair["params"]["weights"] for r in ensembles[n_pairs:])
    # Every fit is scored once per online seed weighting (no refit): same fit, each decay.
    decays: dict[tuple, list[float]] = {}
    for row in singles:
        fitted = {k: v for k, v in row["params"].items() if k != "seed_decay"}
        decays.setdefault((row["family"], tuple(sorted(fitted.items()))), []).append(row["params"]["seed_decay"])
    assert all(d == list(collab.SEED_DECAYS) for d in decays.values())
    assert section["blend"].get("model") == 1.0  # the model helps here: validation blends it in
    # Within-taste held-out items are findable: far above the ~3/60 chance level.
    assert section["metrics"]["model"]["ndcg"] > 0.2
    assert section["gate"] == {"tolerance": taste_world.train_gate_tolerance, "reference": None, "passed": True}
    # Every file the manifest lists is there with its checksum, and loads memory-mapped.
    folder = tmp_path / collab.MODEL_DIR
    for name, meta in section["files"].items():
        assert artifacts.file_entry(folder / name) == meta
    model = collab.load_model(folder, section["family"], section["params"])
    assert len(model.item_ids) == TASTES * PER_TASTE
    # Every item an event names, liked or not: what tells an old item from a new one in serving.
    assert collab.TOUCHED_FILE in section["files"]
    with session_factory() as session:
        named = sorted(session.scalars(select(Event.item_id).distinct()))
    assert collab.load_touched(folder).tolist() == named and section["touched_items"] == len(named)
    # The newest behaviour_max_events events (here all of them), as the SQL reader gives them.
    with session_factory() as session:
        stored = read_events(session=session)
    window = event_window.load(folder, section["window"])
    assert event_window.WINDOW_FILE in section["files"] and window.complete
    np.testing.assert_array_equal(window.events.ids, stored.ids)
    assert window.events.types == stored.types and window.events.values == stored.values
    # Capped: the newest 7 of the same read, as the newest-first reader would give them.
    _log, _mark, capped = train.read_log(_settings(taste_world, behaviour_max_events=7), session_factory)
    with session_factory() as session:
        newest = read_events(session=session, newest=7)
    assert not capped.complete and capped.events.types == newest.types
    np.testing.assert_array_equal(capped.events.ids, newest.ids)
    assert capped.events.ids.base is None  # a copy: the whole log's arrays are not kept alive
    for part in getattr(model, "parts", [model]):
        assert part.params["seed_decay"] in collab.SEED_DECAYS


def test_too_few_interactions_skip_training(taste_world, session_factory, tmp_path):
    strict = _settings(taste_world, train_min_interactions=10_000)
    result = train_model(strict, session_factory, tmp_path, space=None, published=None)
    assert result.section["status"] == "skipped" and "train_min_interactions" in result.section["reason"]
    # No model, but the newest events still go into the version: workers start from them.
    folder = tmp_path / collab.MODEL_DIR
    assert sorted(p.name for p in folder.iterdir()) == [event_window.WINDOW_FILE]
    window = result.section["window"]
    assert result.section["files"] == {window["file"]: artifacts.file_entry(folder / window["file"])}
    assert window["complete"] and window["events"] == result.section["events"] > 0


def test_the_gate_refuses_a_worse_model_and_passes_an_equal_one(taste_world, session_factory, tmp_path, monkeypatch):
    ease_only = _settings(taste_world, train_families='["ease"]')
    good = train_model(ease_only, session_factory, tmp_path / "good", space=None, published=None).section
    # The same recipe again: equal by construction, so it passes.
    again = train_model(ease_only, session_factory, tmp_path / "again", space=None, published=good)
    assert again.refused is None and again.section["gate"]["passed"]
    # A model that is bad everywhere is blended out on validation: nothing worse is served.
    blended_out = train_model(ease_only, session_factory, tmp_path / "out", space=None, published=good, fit=random_fit)
    assert "model" not in blended_out.section["blend"] and blended_out.refused is None
    # When validation misses it (noise on a small catalog, here forced), the gate catches it:
    # the random model against the published recipe refit on the same split.
    monkeypatch.setattr(train, "choose_blend", lambda *_a: ({"model": 1.0}, 0.0))
    monkeypatch.setattr(train, "choose_ranker", lambda *_a: (None, {"used": False, "reason": "forced off"}))
    bad = train_model(ease_only, session_factory, tmp_path / "bad", space=None, published=good, fit=random_fit)
    gate = bad.section["gate"]
    assert bad.refused is not None and "below the published" in bad.refused
    assert gate["passed"] is False and gate["reference"]["recipe"]["family"] == "ease"
    assert bad.section["metrics"]["model"]["ndcg"] < gate["floor"] <= bad.section["metrics"]["published_recipe"]["ndcg"]


class _ContentOnlyEvaluator:
    """Scores the content source alone with a validation NDCG per power (what choose_profile reads)."""

    def __init__(self, by_power: dict[int, float], space=object()):
        self.space, self.by_power, self.profile_power, self.runs = space, by_power, 0, []

    def run(self, blend, *, phase):
        assert blend.weights == {"profile": 1.0} and not blend.fallbacks and phase == "valid"
        self.runs.append(self.profile_power)
        return {"ndcg": self.by_power[self.profile_power]}


@pytest.mark.parametrize("forced, by_power, way", [
    ("auto", {0: 0.10, 3: 0.13, 8: 0.12}, "pow3"),
    ("auto", {0: 0.10, 3: 0.10, 8: 0.10}, "mean"),  # ties go to the mean
    ("mean", {0: 0.10, 3: 0.13, 8: 0.12}, "mean"),  # the setting forces a way: nothing is scored
    ("pow8", {0: 0.10, 3: 0.13, 8: 0.12}, "pow8"),
])
def test_choose_profile_takes_the_best_way_on_validation_unless_the_setting_forces_one(forced, by_power, way, settings):
    from service.recommend.ranking import PROFILE_WAYS

    ev = _ContentOnlyEvaluator(by_power)
    chosen, scores = train.choose_profile(ev, load_settings({"data_dir": settings.data_dir, "content_scoring": forced},
                                                            environ={}))
    assert chosen == way and ev.profile_power == PROFILE_WAYS[way]  # left on the evaluator for the blend
    assert (scores == {} and ev.runs == []) if forced != "auto" else set(scores) == set(PROFILE_WAYS)
    no_space = _ContentOnlyEvaluator(by_power, space=None)
    assert train.choose_profile(no_space, settings) == ("mean", {}) and no_space.runs == []


class _PlaceEvaluator:
    """Validation NDCG of the served recipe per cold-place bar (None: no place), as
    choose_cold_rank reads it."""

    def __init__(self, by_rank: dict, space=object()):
        self.space, self.by_rank, self.cold_rank, self.settings, self.runs = space, by_rank, None, None, []

    def run(self, blend, *, phase, model, ranker):
        assert blend.served and phase == "valid" and model == "the model"
        rank = self.cold_rank if self.settings.cold_item_slots else None
        self.runs.append(rank)
        return {"ndcg": self.by_rank[rank]}


@pytest.mark.parametrize("by_rank, chosen", [
    ({None: 0.100, 5: 0.0999, 10: 0.0995, 20: 0.0985, 50: 0.0975, 100: 0.096}, 20),  # 2%: down to 0.098
    ({None: 0.100, 5: 0.100, 10: 0.100, 20: 0.100, 50: 0.100, 100: 0.100}, 100),  # free: the widest bar
    ({None: 0.100, 5: 0.090, 10: 0.089, 20: 0.088, 50: 0.087, 100: 0.086}, 5),  # all too dear: the narrowest
])
def test_the_cold_place_bar_is_the_widest_that_keeps_validation_within_the_tolerance(by_rank, chosen, settings):
    from service.recommend.ranking import COLD_RANKS

    ev = _PlaceEvaluator(by_rank)
    rank, record = train.choose_cold_rank(ev, settings, "the model", {"model": 1.0}, None)
    assert rank == chosen and ev.cold_rank == chosen  # left on the evaluator for the test metrics
    assert ev.runs == [None, *COLD_RANKS] and ev.settings is None  # the evaluator's settings are restored
    assert record["without_place"] == 0.100 and record["tolerance"] == settings.cold_item_warm_tolerance
    assert set(record["validation_ndcg"]) == {str(r) for r in COLD_RANKS}


def test_a_forced_bar_or_no_place_chooses_nothing(settings):
    by_rank = {None: 0.1, **{r: 0.1 for r in (5, 10, 20, 50, 100)}}
    forced = load_settings({"data_dir": settings.data_dir, "cold_item_rank": "7"}, environ={})
    ev = _PlaceEvaluator(by_rank)
    assert train.choose_cold_rank(ev, forced, "the model", {}, None) == (None, {"forced": 7}) and ev.runs == []
    off = load_settings({"data_dir": settings.data_dir, "cold_item_slots": 0}, environ={})
    assert train.choose_cold_rank(_PlaceEvaluator(by_rank), off, "the model", {}, None) == (None, {})
    assert train.choose_cold_rank(_PlaceEvaluator(by_rank, space=None), settings, "the model", {}, None) == (None, {})


@pytest.mark.parametrize("place, shown", [({"rank": 50}, True), ({"rank": "50"}, False), (None, False), ([50], False)])
def test_the_status_line_names_the_cold_place_bar(place, shown):
    from indexer.cli import _model_line

    section = {"status": "trained", "family": "ease", "params": {}, "blend": {"model": 1.0}, "metrics": {},
               "cold_place": place}
    assert ("takes the cold place from content rank 50" in _model_line(section)) is shown


@pytest.mark.parametrize("profile", ["pow8", ["pow8"], {"way": 3}, {"space": "text"}, None])
def test_the_status_line_shrugs_off_a_malformed_profile_section(profile):
    from indexer.cli import _model_line

    section = {"status": "trained", "family": "ease", "params": {}, "blend": {"model": 1.0}, "metrics": {}}
    assert "content scored" not in _model_line({**section, "profile": profile})
    good = _model_line({**section, "profile": {"space": "text", "way": "pow8"}})
    assert "content scored by pow8 in the text space" in good


def test_ensembles_never_hold_more_fits_than_the_budget():
    """Every pair, then the best pair plus a third: fits are reused across combinations, but
    when the budget cannot hold them all, those of families outside the next combination go."""
    import gc
    import itertools
    import weakref
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    n = 4000
    users, items = rng.integers(0, 300, n), rng.integers(0, 80, n)
    arrays = (users, items, np.ones(n), np.arange(n, dtype=float))
    ev = SimpleNamespace(world_arrays=lambda phase: arrays)
    settings = SimpleNamespace(event_half_life_days=0.0)
    inputs = {"half_life_days": 0.0, "binary": True}
    params = {"ease": {"l2": 10.0}, "item_knn": {"neighbours": 20, "user_damping": 0.0},
              "rp3beta": {"alpha": 0.5, "beta": 0.3, "neighbours": 20}, "sequence": {"window": 5}}
    table = [{"family": f, "params": dict(p, **inputs, seed_decay=1.0), "ndcg": 0.5 - 0.1 * k}
             for k, (f, p) in enumerate(params.items())]
    asked = [train.Asked({int(i): 1.0 for i in items[u * 5:u * 5 + 5]}, frozenset(), {int(items[-1 - u])})
             for u in range(20)]
    data = collab.interaction_matrix(*arrays, half_life_days=0.0, binary=True)
    spec = lambda fs: {"parts": [{"family": f, "params": dict(params[f], **inputs)} for f in fs]}  # noqa: E731
    # Every pair passes the budget by its estimate; each fitted model is made a third of the
    # budget (padding, as EASE's matrix is at scale), so three fits cannot be held at once.
    budget = max(collab.estimate_bytes(collab.ENSEMBLE, data, spec(pair))
                 for pair in itertools.combinations(params, 2))
    live: weakref.WeakSet = weakref.WeakSet()
    calls: list[str] = []

    def counting_fit(family, data, **p):
        gc.collect()
        assert sum(m.nbytes for m in live) + collab.estimate_bytes(family, data, p) <= budget, (family, calls)
        model = collab.fit(family, data, **p)
        model.arrays["padding"] = np.zeros(budget // 3 - model.nbytes, dtype=np.uint8)
        live.add(model)
        calls.append(family)
        return model

    rows = train.ensemble_rows(ev, settings, counting_fit, table, asked, budget)
    pairs = [[p["family"] for p in r["params"]["parts"]] for r in rows if len(r["params"]["parts"]) == 2]
    assert len(pairs) == 6 * len(collab.ENSEMBLE_WEIGHTS)  # every pair of four families
    assert len(calls) > len(params)  # some fits were dropped and fitted again
