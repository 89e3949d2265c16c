"""Realistic catalog text and search-bar workloads for the benchmarks (no network, deterministic).

* :func:`make_catalog`: ``n`` product and article items (about 88% / 12%) in the service's import
  format, composed from the demo vocabularies in ``service/demo/_vocab.py``: invented brands and
  models, product copy, buying/care/how-to articles; unique ids and titles;
* :func:`make_queries`: distinct search-bar phrases (2-6 words) composed from the same vocabulary,
  never equal to a title ("not seen before");
* :func:`make_prefixes`: typeahead prefixes of 1-8 characters, typed from real titles.

Used by ``bench_service`` (catalog, queries, prefixes), ``bench_recommend`` and ``bench_rebuild``
(catalog). Seeds are part of the output: changing a generator changes every cached data folder
built from it (bump the benchmark's ``DATA_FORMAT``).
"""

from __future__ import annotations

import random
import re
from typing import Callable

from service.demo._vocab import ARTICLES, FIRST_NAMES, LAST_NAMES, PRODUCT_CATEGORIES
from service.demo.generate import (
    FEATURE_SENTENCES, OPENERS, a_an, cap, fix_articles, material_fits, plural_noun, slug, uniq,
)


# =============================================================================================
# Catalog: realistic product and article text composed from the demo vocabularies
# =============================================================================================

VERSIONS = ["", "", " 2", " 3", " 4", " 5"]
AUTHORS = [f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES]
YEARS = ["2024", "2025", "2026"]


def plural(noun: str) -> str:
    """English plural of a catalog noun ('knife' -> 'knives', 'French press' -> 'French presses')."""
    if plural_noun(noun):
        return noun
    if noun.endswith("knife"):
        return noun[:-5] + "knives"
    if noun.endswith(("ss", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def short_noun(noun: str) -> str:
    """What a shopper types for a noun: its last one or two words ('trail running shoe' -> 'running shoe')."""
    words = noun.split()
    return " ".join(words[-2:]) if len(words) > 2 else noun


def _subtypes() -> list[tuple[dict, dict]]:
    return [(cat, sub) for cat in PRODUCT_CATEGORIES for sub in cat["subtypes"]]


def make_product(rng: random.Random, n: int, titles: set[str]) -> dict:
    """One product listing: title, several sentences of copy, tags, price/brand/color/rating."""
    cat = rng.choice(PRODUCT_CATEGORIES)
    sub = rng.choice(cat["subtypes"])
    for _ in range(1000):
        model = rng.choice(cat["models"])
        adj, adjfeat = rng.choice(sub["adjs"])
        version = "" if adj[0].isdigit() else rng.choice(VERSIONS)
        brand = rng.choice(cat["brands"])
        color = rng.choice(sub.get("colors", cat["colors"]))
        form = rng.random()
        if form < 0.55:
            title = f"{brand} {model}{version} {adj} {sub['noun']}, {color}"
        elif form < 0.85:
            title = f"{model}{version} {adj} {sub['noun']} by {brand} ({color})"
        else:
            title = f"{brand} {model}{version} {sub['noun']} - {adj}, {color}"
        if title not in titles:
            break
    else:  # pragma: no cover - the space has ~2M titles
        raise RuntimeError("could not find a new product title")
    titles.add(title)
    accent = rng.choice([a for a in cat["accents"] if a != color])
    use = rng.choice(sub["uses"])
    f1, f2 = rng.sample(sub["features"], 2)
    sentences = [rng.choice(OPENERS).format(
        model=model + version, brand=brand, noun=sub["noun"], use=use,
        a_adj=f"a pair of {adj}" if plural_noun(sub["noun"]) else a_an(adj))]
    materials = [m for m in cat["materials"] if material_fits(m, sub["key"], adj)]
    if materials and rng.random() < 0.6:
        m = rng.choice(materials)
        sentences.append(m if isinstance(m, str) else m[0])
    sentences.append(cap(rng.choice(FEATURE_SENTENCES).format(adjfeat=adjfeat, f1=f1, f2=f2)))
    colors = [c for c in cat["color_sentences"] if material_fits(c, sub["key"], adj)]
    c = rng.choice(colors)
    sentences.append(fix_articles((c if isinstance(c, str) else c[0]).format(color=color, accent=accent)))
    price = max(5, int(rng.uniform(*sub["price"]) / 5) * 5) - 0.01
    return {
        "id": f"p-{n:06d}",
        "kind": "product",
        "title": title,
        "text": " ".join(sentences),
        "image": None,
        "category": cat["slug"],
        "tags": uniq(sub["tags"] + [slug(adj), slug(color)]),
        "attributes": {"price": round(price, 2), "brand": brand, "color": color,
                       "rating": round(rng.triangular(3.2, 4.9, 4.4), 1)},
    }


_ARTICLE_TITLES = {
    "choose": [
        "How to choose {a_adj_noun} for {use}",
        "{Adj} {nouns} for {use}: a buyer's guide",
        "The best {adj} {nouns} of {year}",
        "{Adj} or {adj2}? Picking your next {noun}",
        "What to look for in {a_adj_noun} ({year} edition)",
        "{brand} vs {brand2}: which {noun} for {use}?",
        "The best {nouns} for {generic}",
        "{Adj} {nouns} under {price}: what you get",
    ],
    "care": [
        "Caring for {a_adj_noun} after {use}",
        "How to clean and store your {adj} {noun}",
        "{k} ways to make your {adj} {noun} last longer",
        "Fixing the most common {noun} problems: {adj} models",
        "How to look after your {brand} {model}{version}",
        "When to replace {a_adj_noun}: {k} signs",
    ],
    "use": [
        "{model}{version} review: {a_adj_noun} tested on {use}",
        "{k} tips for {use} with {a_adj_noun}",
        "Getting the most from your {adj} {noun}",
        "{model}{version} long-term test: {k} months with {a_adj_noun}",
        "{brand} {model}{version} vs {model2}: {adj} {nouns} compared",
    ],
}
_GENERIC = ["beginners", "travel", "everyday use", "small kitchens", "the office", "winter", "summer",
            "wide feet", "home workouts", "commuting", "gifts", "students", "tight budgets"]


def make_article(rng: random.Random, n: int, titles: set[str]) -> dict:
    """One article: a templated title about a sub-type, a lead, 2-4 sentences from the demo pool."""
    cat = rng.choice(PRODUCT_CATEGORIES)
    sub = rng.choice(cat["subtypes"])
    theme = rng.choice(list(_ARTICLE_TITLES))
    spec = ARTICLES[cat["slug"]][theme]
    noun = sub["noun"]
    title = ""
    for attempt in range(400):
        # The small themed templates fill up at 100k items; model reviews have room for ~70k titles.
        templates = _ARTICLE_TITLES[theme] if attempt < 20 else _ARTICLE_TITLES["use"][:1] + _ARTICLE_TITLES["use"][3:]
        (adj, adjfeat), (adj2, _) = rng.sample(sub["adjs"], 2)
        use = rng.choice(sub["uses"])
        (model, model2), version = rng.sample(cat["models"], 2), rng.choice(VERSIONS)
        brand, brand2 = rng.sample(cat["brands"], 2)
        a_adj_noun = (f"a pair of {adj} {noun}" if plural_noun(noun) else a_an(f"{adj} {noun}"))
        lo, hi = sub["price"]
        title = rng.choice(templates).format(
            a_adj_noun=a_adj_noun, adj=adj, Adj=cap(adj), adj2=adj2, noun=noun, nouns=plural(noun), use=use,
            year=rng.choice(YEARS), k=rng.choice([3, 5, 6, 7, 10, 12]), model=model, model2=model2,
            version=version, brand=brand, brand2=brand2, generic=rng.choice(_GENERIC),
            price=f"${int(rng.uniform(lo, hi) / 10) * 10}")
        if title not in titles:
            break
    else:  # pragma: no cover - the review templates alone have room for ~70k titles
        raise RuntimeError("could not find a new article title")
    titles.add(title)
    _t, lead, extra, _must = rng.choice(spec["titles"])
    k = rng.choice([2, 3, 3, 4])
    pool = rng.sample(spec["pool"], min(k, len(spec["pool"])))
    f1, f2 = rng.sample(sub["features"], 2)
    body = [lead, *pool,
            f"For {use}, look for {adjfeat}; {f1} and {f2} are worth having too."]
    return {
        "id": f"a-{n:06d}",
        "kind": "article",
        "title": title,
        "text": " ".join(body),
        "image": None,
        "category": spec["category"],
        "tags": uniq([cat["slug"], *extra, {"choose": "buying-guide", "care": "maintenance", "use": "how-to"}[theme]]),
        "attributes": {"reading_minutes": 2 + k + rng.randint(0, 3), "author": rng.choice(AUTHORS)},
    }


def make_catalog(n: int, seed: int = 7, article_share: float = 0.12) -> list[dict]:
    """``n`` items (about 88% products, 12% articles), unique ids and titles, deterministic."""
    rng = random.Random(f"bench-service-catalog:{seed}")
    titles: set[str] = set()
    items = []
    for i in range(1, n + 1):
        items.append(make_article(rng, i, titles) if rng.random() < article_share else make_product(rng, i, titles))
    return items


# =============================================================================================
# Queries and typeahead prefixes
# =============================================================================================

_GENERIC_FOR = ["beginners", "travel", "everyday use", "gifts", "students", "daily use", "a small budget",
                "home", "professionals", "first timers"]
_CARE_VERBS = ["how to clean", "how to store", "how to dry", "how to fix", "how to choose", "how to use"]
_STOP = {"a", "an", "the", "that", "which", "and", "with", "for", "to", "of", "on", "in", "it", "its"}


def _feature_keyword(feature: str) -> str | None:
    """'a rock plate that shields the forefoot' -> 'rock plate' (what people type after 'with')."""
    words = re.sub(r"[^\w\s'-]", " ", feature).split()
    while words and words[0].lower() in {"a", "an", "the", "two", "one"}:
        words = words[1:]
    head = []
    for w in words:
        if w.lower() in _STOP or w.lower() in {"that", "so", "which", "at", "from", "up", "under", "over"}:
            break
        head.append(w)
        if len(head) == 3:
            break
    return " ".join(head).lower() if head else None


def _words_ok(q: str) -> bool:
    return 2 <= len(q.split()) <= 6


def make_queries(n: int, titles: set[str], seed: int = 11) -> list[str]:
    """``n`` distinct search-bar queries (2-6 words, lower case as typed), none equal to a title."""
    rng = random.Random(f"bench-service-queries:{seed}")
    pairs = _subtypes()
    low_titles = {t.lower() for t in titles}
    out: list[str] = []
    seen: set[str] = set()

    def short_use(use: str, room: int) -> str:
        words = [w for w in use.split() if w.lower() not in {"and", "like"}]
        return " ".join(words[: max(1, room)])

    makers: list[Callable[[dict, dict], str]] = [
        lambda c, s: f"{rng.choice(s['adjs'])[0]} {s['noun']}",
        lambda c, s: f"{rng.choice(s['adjs'])[0]} {short_noun(s['noun'])} {rng.choice(s.get('colors', c['colors']))}",
        lambda c, s: f"{rng.choice(s.get('colors', c['colors']))} {short_noun(s['noun'])}",
        lambda c, s: f"{short_noun(s['noun'])} for {short_use(rng.choice(s['uses']), 6 - 1 - len(short_noun(s['noun']).split()))}",
        lambda c, s: f"best {plural(short_noun(s['noun']))} for {rng.choice(_GENERIC_FOR)}",
        lambda c, s: f"{rng.choice(c['brands']).lower()} {short_noun(s['noun'])}",
        lambda c, s: f"{rng.choice(c['models']).lower()} {rng.choice(['', '2 ', '3 ', '4 '])}review",
        lambda c, s: f"{short_noun(s['noun'])} under {rng.choice([30, 50, 75, 100, 150, 200, 250, 300, 500])}",
        lambda c, s: f"{rng.choice(_CARE_VERBS)} {short_noun(s['noun'])}",
        lambda c, s: (f"{short_noun(s['noun'])} with {kw}" if (kw := _feature_keyword(rng.choice(s['features']))) else ""),
        lambda c, s: f"cheap {rng.choice(s['adjs'])[0]} {plural(short_noun(s['noun']))}",
        lambda c, s: f"{rng.choice(s['adjs'])[0]} {rng.choice(s['tags'])} {short_noun(s['noun']).split()[-1]}",
        lambda c, s: f"{rng.choice(c['models']).lower()} vs {rng.choice(c['models']).lower()}",
        lambda c, s: f"{rng.choice(s['adjs'])[0]} {short_noun(s['noun'])} for {rng.choice(_GENERIC_FOR)}",
        lambda c, s: f"{rng.choice(c['brands']).lower()} {rng.choice(c['models']).lower()}",
        lambda c, s: f"{rng.choice(c['models']).lower()} {short_noun(s['noun']).split()[-1]} {rng.choice(s.get('colors', c['colors']))}",
        lambda c, s: f"{rng.choice(s.get('colors', c['colors']))} {rng.choice(s['adjs'])[0]} {short_noun(s['noun']).split()[-1]}",
        lambda c, s: (f"{kw} {short_noun(s['noun']).split()[-1]}" if (kw := _feature_keyword(rng.choice(s['features']))) else ""),
        lambda c, s: f"{rng.choice(s['adjs'])[0]} {short_noun(s['noun'])} {rng.choice(c['brands']).lower()}",
        lambda c, s: f"{short_noun(s['noun'])} for {rng.choice(_GENERIC_FOR)} under {rng.choice([50, 100, 150, 200, 300])}",
        lambda c, s: f"{rng.choice(_CARE_VERBS)} {rng.choice(s['adjs'])[0]} {short_noun(s['noun']).split()[-1]}",
        lambda c, s: f"{rng.choice(['womens', 'mens', 'kids', 'unisex'])} {rng.choice(s['adjs'])[0]} {short_noun(s['noun'])}",
    ]
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise RuntimeError(f"only {len(out)} distinct queries could be made (asked for {n})")
        cat, sub = rng.choice(pairs)
        q = " ".join(rng.choice(makers)(cat, sub).lower().split())
        if not q or not _words_ok(q) or q in seen or q in low_titles:
            continue
        seen.add(q)
        out.append(q)
    return out


def make_prefixes(titles: list[str], n: int, seed: int = 13) -> list[str]:
    """Prefixes of 1-8 characters as a user types a title (every keystroke of a few titles)."""
    rng = random.Random(f"bench-service-prefixes:{seed}")
    out: list[str] = []
    while len(out) < n:
        title = rng.choice(titles)
        words = title.split()
        # Half start at the title's first word, half at a later word (people type the model or the noun).
        start = 0 if rng.random() < 0.5 else rng.randrange(len(words))
        typed = " ".join(words[start:]).lower()
        for length in range(1, min(8, len(typed)) + 1):
            out.append(typed[:length])
    return out[:n]
