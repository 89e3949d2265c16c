"""Generate the demo catalog: ``items.jsonl``, ``images/*.png``, ``events.csv`` and ``README.md``.

    python -m service.demo.generate            # (re)write the files in service/demo/
    python -m service.demo.generate --check    # regenerate in a temp dir, compare, exit 1 on drift
    python -m service.demo.generate --verify   # consistency checks on the files in service/demo/

Deterministic: every random choice comes from ``random.Random`` instances seeded from ``SEED``
and a fixed label (one stream each for products, articles, image items, pictures and events), so
re-running rewrites byte-identical files (PNG bytes also depend on the Pillow/zlib build; the
text files do not). All text is composed from the hand-written vocabularies in ``_vocab.py``
and all pictures are drawn by ``_draw.py``: no third-party content, Apache-2.0 like the project.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import hashlib
import io
import json
import math
import random
import re
import sys
import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from service.demo import DEMO_DIR
from service.demo import _draw as draw
from service.demo._vocab import (
    AFFINITY,
    ARTICLES,
    COLORS,
    COMPLEMENTS,
    FEATURE_SENTENCES,
    FIRST_NAMES,
    LAST_NAMES,
    OPENERS,
    PATTERNS,
    PRODUCT_CATEGORIES,
    SWATCH_USES,
)

SEED = 20261101
PRODUCTS_PER_CATEGORY = 20
PRODUCT_IMAGE_SHARE = 0.7  # exactly round(0.7 * 20) = 14 products per category get a picture
ARTICLE_IMAGES = 16
ILLUSTRATIONS_PER_CATEGORY = 3
SWATCHES = 13
N_USERS = 150
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 90
START = END - timedelta(days=DAYS)

ITEM_FIELDS = ("id", "kind", "title", "text", "image", "category", "tags", "attributes")
EVENT_HEADER = ("event_id", "user_id", "item_id", "type", "value", "timestamp")
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

# Accent names used in color sentences that are not in COLORS.
EXTRA_RGB = {
    "gray": (150, 152, 158), "gold": (205, 170, 80), "steel": draw.STEEL,
    "copper": (190, 110, 70), "wood": (150, 105, 60), "chrome": (205, 208, 214),
}
VIEWS = {
    "running-shoes": "in side view", "running-socks": "in side view",
    "rain-jackets": "from the front", "backpacks": "from the front",
    "kitchen-knives": "at a diagonal", "coffee-makers": "from the front",
    "headphones": "from the front", "desk-lamps": "from the side",
    "yoga-mats": "half unrolled",
}
THEME_TAGS = {"choose": "buying-guide", "care": "maintenance", "use": "how-to"}
AUTHORS = [f"{f} {l}" for f, l in zip(FIRST_NAMES, LAST_NAMES)]


def stream(seed: int, label: str) -> random.Random:
    """An independent, reproducible random stream (str seeds hash with SHA-512, not ``hash``)."""
    return random.Random(f"{seed}:{label}")


def rgb(name: str) -> tuple[int, int, int]:
    return COLORS.get(name) or EXTRA_RGB[name]


def a_an(phrase: str) -> str:
    first = phrase.split()[0].lower()
    if first[0].isdigit():
        vowel = first.startswith(("8", "11", "18"))
    elif first.startswith(("usb", "uni", "use", "one")):
        vowel = False
    else:
        vowel = first[0] in "aeiou"
    return ("an " if vowel else "a ") + phrase


def fix_articles(s: str) -> str:
    """'a orange cuff' -> 'an orange cuff' (color names never start with a 'you' sound)."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", s)


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def slug(s: str) -> str:
    return s.lower().replace("'", "").replace(" ", "-")


def uniq(seq):
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def plural_noun(noun: str) -> bool:
    return noun.endswith(("headphones", "earbuds"))


# --------------------------------------------------------------------------- catalog


def material_fits(m, sub_key: str, adj: str) -> bool:
    if isinstance(m, str):
        return True
    cond = m[1]
    return sub_key in cond.get("only", [sub_key]) and adj not in cond.get("not_adj", [])


def make_products(seed: int) -> list[dict]:
    rng = stream(seed, "products")
    items: list[dict] = []
    titles: set[str] = set()
    n = 0
    for cat in PRODUCT_CATEGORIES:
        subtypes = [cat["subtypes"][i % len(cat["subtypes"])] for i in range(PRODUCTS_PER_CATEGORY)]
        rng.shuffle(subtypes)
        with_image = set(rng.sample(range(PRODUCTS_PER_CATEGORY), round(PRODUCT_IMAGE_SHARE * PRODUCTS_PER_CATEGORY)))
        models = list(cat["models"])
        model_brand: dict[str, str] = {}  # a model line belongs to one brand
        rng.shuffle(models)
        for i, sub in enumerate(subtypes):
            n += 1
            while True:
                model = models[i % len(models)] if i < len(models) else rng.choice(models)
                adj, adjfeat = rng.choice(sub["adjs"])
                # no "Pourline 4 8-cup ...": numeric adjectives go without a version number
                version = "" if adj[0].isdigit() else rng.choice(["", "", " 2", " 3", " 4", " 5"])
                title = f"{model}{version} {adj} {sub['noun']}"
                if title not in titles:
                    break
            titles.add(title)
            brand = model_brand.setdefault(model, rng.choice(cat["brands"]))
            color = rng.choice(sub.get("colors", cat["colors"]))
            accent = rng.choice([a for a in cat["accents"] if a != color])
            use = rng.choice(sub["uses"])
            f1, f2 = rng.sample(sub["features"], 2)
            sentences = [
                rng.choice(OPENERS).format(model=model + version, brand=brand,
                                           a_adj=f"a pair of {adj}" if plural_noun(sub["noun"]) else a_an(adj),
                                           noun=sub["noun"], use=use),
            ]
            materials = [m for m in cat["materials"] if material_fits(m, sub["key"], adj)]
            if materials and rng.random() < 0.6:
                m = rng.choice(materials)
                sentences.append(m if isinstance(m, str) else m[0])
            sentences.append(cap(rng.choice(FEATURE_SENTENCES).format(adjfeat=adjfeat, f1=f1, f2=f2)))
            color_sentences = [c for c in cat["color_sentences"] if material_fits(c, sub["key"], adj)]
            c = rng.choice(color_sentences)
            sentences.append(fix_articles((c if isinstance(c, str) else c[0]).format(color=color, accent=accent)))
            price = max(5, int(rng.uniform(*sub["price"]) / 5) * 5) - 0.01
            rating = round(rng.triangular(3.2, 4.9, 4.4), 1)
            pid = f"p-{n:04d}"
            items.append({
                "id": pid,
                "kind": "product",
                "title": title,
                "text": " ".join(sentences),
                "image": f"images/{pid}.png" if i in with_image else None,
                "category": cat["slug"],
                "tags": uniq(sub["tags"] + [slug(adj), slug(color)]),
                "attributes": {"price": round(price, 2), "brand": brand, "color": color, "rating": rating},
                # private, used for pictures and events; stripped before writing
                "_sub": sub["key"], "_shape": sub.get("shape", sub["key"]), "_accent": accent,
                "_style": sub["tags"],
            })
    return items


def make_articles(seed: int) -> list[dict]:
    rng = stream(seed, "articles")
    items: list[dict] = []
    for cat in PRODUCT_CATEGORIES:
        for theme in ("choose", "care", "use"):
            spec = ARTICLES[cat["slug"]][theme]
            # spread the pool over the theme's three articles; other titles' key sentences last
            used: Counter = Counter(j for t in spec["titles"] for j in t[3])
            for title, lead, extra, must in spec["titles"]:
                k = max(len(must), rng.choice([2, 3, 3, 4]))
                rest = [j for j in range(len(spec["pool"])) if j not in must]
                rng.shuffle(rest)
                rest.sort(key=lambda j: used[j])
                picked = sorted(must + rest[: k - len(must)])
                used.update(picked)
                text = " ".join([lead] + [spec["pool"][j] for j in picked])
                items.append({
                    "id": f"a-{len(items) + 1:04d}",
                    "kind": "article",
                    "title": title,
                    "text": text,
                    "image": None,
                    "category": spec["category"],
                    "tags": uniq([cat["slug"], *extra, THEME_TAGS[theme]]),
                    "attributes": {"reading_minutes": 2 + k + rng.randint(0, 3), "author": rng.choice(AUTHORS)},
                    "_related": [cat["slug"], *extra],
                })
    for i in sorted(rng.sample(range(len(items)), ARTICLE_IMAGES)):
        items[i]["image"] = f"images/{items[i]['id']}.png"
    return items


def make_image_items(seed: int) -> list[dict]:
    rng = stream(seed, "image-items")
    items: list[dict] = []
    for cat in PRODUCT_CATEGORIES:
        for sub in rng.sample(cat["subtypes"], ILLUSTRATIONS_PER_CATEGORY):
            color = rng.choice(sub.get("colors", cat["colors"]))
            accent = rng.choice([a for a in cat["accents"] if a != color])
            noun = sub["noun"]
            obj = f"a pair of {color} {noun}" if plural_noun(noun) else a_an(f"{color} {noun}")
            iid = f"i-{len(items) + 1:04d}"
            items.append({
                "id": iid,
                "kind": "image",
                "title": f"{cap(color)} {noun} illustration",
                "text": f"A flat, stylized illustration of {obj} {VIEWS[cat['slug']]}, on a pale background "
                        f"with a soft shadow. It fits listings and articles about {cat['label']}.",
                "image": f"images/{iid}.png",
                "category": cat["slug"],
                "tags": uniq(["illustration", *sub["tags"][:2], slug(color)]),
                "attributes": {"color": color, "style": "illustration", "width": draw.SIZE, "height": draw.SIZE},
                "_sub": sub["key"], "_shape": sub.get("shape", sub["key"]), "_accent": accent,
            })
    names = sorted(COLORS)
    for k in range(SWATCHES):
        key, word, phrase = PATTERNS[k % len(PATTERNS)]
        while True:
            c1, c2 = rng.sample(names, 2)
            if abs(draw.luminance(COLORS[c1]) - draw.luminance(COLORS[c2])) > 45:
                break
        iid = f"i-{len(items) + 1:04d}"
        items.append({
            "id": iid,
            "kind": "image",
            "title": f"{cap(c1)} and {c2} {word} swatch",
            "text": f"A square fabric swatch with {phrase} in {c2} on a {c1} ground. {rng.choice(SWATCH_USES)}",
            "image": f"images/{iid}.png",
            "category": "swatches",
            "tags": ["swatch", key, slug(c1), slug(c2)],
            "attributes": {"color": c1, "style": "swatch", "width": draw.SIZE, "height": draw.SIZE},
            "_pattern": key, "_colors": (c1, c2),
        })
    return items


def make_pictures(seed: int, products, articles, image_items) -> dict[str, bytes]:
    """PNG bytes per image path."""
    rng = stream(seed, "pictures")
    out: dict[str, bytes] = {}
    cats = {c["slug"]: c for c in PRODUCT_CATEGORIES}
    for it in products + [i for i in image_items if i["category"] in cats]:
        if it["image"]:
            out[it["image"]] = draw.product_png(it["category"], it["_shape"], rgb(it["attributes"]["color"]),
                                                rgb(it["_accent"]), rng.randrange(len(draw.BACKGROUNDS)), rng)
    for it in articles:
        if it["image"]:
            cat = cats[it["_related"][0]]
            # prefer the sub-type the title is about ("trail" shoes, "espresso", "santoku" ...)
            title = it["title"].lower()
            named = [s for s in cat["subtypes"] if s["key"].split("-")[0] in title]
            sub = rng.choice(named or cat["subtypes"])
            color = rng.choice(sub.get("colors", cat["colors"]))
            accent = rng.choice([a for a in cat["accents"] if a != color])
            out[it["image"]] = draw.product_png(cat["slug"], sub.get("shape", sub["key"]), rgb(color), rgb(accent),
                                                rng.randrange(len(draw.BACKGROUNDS)), rng)
    for it in image_items:
        if it["category"] == "swatches":
            c1, c2 = it["_colors"]
            out[it["image"]] = draw.swatch_png(rgb(c1), rgb(c2), it["_pattern"],
                                               rng.randrange(len(draw.BACKGROUNDS)), rng)
    return out


# --------------------------------------------------------------------------- events


def _weighted(rng: random.Random, items, weights):
    return rng.choices(items, weights=weights, k=1)[0]


def _overlap(a, b) -> float:
    return len(set(a) & set(b)) / max(1, len(set(b)))


def make_events(seed: int, products, articles, image_items) -> list[tuple]:
    """Rows (event_id, user_id, item_id, type, value, timestamp), sorted by time."""
    rng = stream(seed, "events")
    cat_slugs = [c["slug"] for c in PRODUCT_CATEGORIES]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for p in products:
        by_cat[p["category"]].append(p)
    # long-tailed popularity per category; better-rated items tend to rank higher
    pop: dict[str, float] = {}
    for cat, ps in by_cat.items():
        ranked = sorted(ps, key=lambda p: -(p["attributes"]["rating"] + rng.gauss(0, 0.6)))
        for r, p in enumerate(ranked):
            pop[p["id"]] = 1.0 / (r + 1) ** 1.1
    arts_by_cat: dict[str, list[dict]] = defaultdict(list)
    for a in articles:
        for c in a["_related"]:
            arts_by_cat[c].append(a)
    for r, a in enumerate(sorted(articles, key=lambda a: rng.random())):
        pop[a["id"]] = 1.0 / (r + 1) ** 0.8
    imgs_by_cat: dict[str, list[dict]] = defaultdict(list)
    for im in image_items:
        imgs_by_cat[im["category"]].append(im)
        pop[im["id"]] = 1.0
    cat_weight = {"running-shoes": 1.7, "running-socks": 0.6, "rain-jackets": 1.0, "backpacks": 1.0,
                  "kitchen-knives": 1.0, "coffee-makers": 1.3, "headphones": 1.3, "desk-lamps": 0.9,
                  "yoga-mats": 1.0}

    raw: list[tuple] = []  # (seconds since START, user index, seq, item_id, type, value)
    horizon = DAYS * 86400
    hour_w = [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.2, 2.4, 3.0, 2.4, 2.0, 2.2, 3.2, 3.0, 2.2, 2.0, 2.2, 2.8,
              3.6, 4.6, 5.0, 4.6, 3.4, 2.0]

    for u in range(N_USERS):
        seq = 0

        def emit(t: float, item: str, typ: str, value: str = "") -> None:
            nonlocal seq
            seq += 1
            raw.append((int(t), u, seq, item, typ, value))

        primary = _weighted(rng, cat_slugs, [cat_weight[c] for c in cat_slugs])
        tastes = [primary]
        for _ in range(_weighted(rng, [0, 1, 2], [0.3, 0.45, 0.25])):
            pool = [c for c in AFFINITY[primary] if c not in tastes] if rng.random() < 0.8 else []
            pool = pool or [c for c in cat_slugs if c not in tastes]
            tastes.append(rng.choice(pool))
        taste_w = [1.0, 0.5, 0.3][: len(tastes)]
        anchor = _weighted(rng, by_cat[primary], [pop[p["id"]] for p in by_cat[primary]])
        style = anchor["_style"]  # e.g. running/trail/outdoor or running/road/racing
        n_sessions = max(3, min(60, round(rng.lognormvariate(math.log(21), 0.65))))
        starts = []
        for _ in range(n_sessions):
            while True:
                day = rng.randrange(DAYS)
                weekday = (START + timedelta(days=day)).weekday()
                if rng.random() < (1.0 if weekday >= 5 else 0.78):
                    break
            hour = _weighted(rng, range(24), hour_w)
            starts.append(day * 86400 + hour * 3600 + rng.randrange(3600))
        starts.sort()

        viewed: dict[str, list[str]] = defaultdict(list)
        purchased: set[str] = set()
        clock = -1.0
        for start in starts:
            t = float(start)
            if t < clock + 1800:
                t = clock + rng.uniform(1800, 4 * 3600)
            if t >= horizon - 3600:
                break
            focus = (_weighted(rng, tastes, taste_w) if rng.random() < 0.9 else rng.choice(cat_slugs))
            item_w = lambda p: pop[p["id"]] * (0.5 + 3 * _overlap(p["_style"], style) ** 2)  # noqa: E731

            def read_article(cat: str, t: float) -> float:
                arts = arts_by_cat[cat]
                a = _weighted(rng, arts, [pop[x["id"]] * (1 + _overlap(x["_related"], tastes)) for x in arts])
                t += rng.uniform(10, 90)
                emit(t, a["id"], "view")
                if rng.random() < 0.35:
                    t += rng.uniform(30, 200)
                    emit(t, a["id"], "click")
                return t + rng.uniform(20, 240)

            if rng.random() < 0.3:
                t = read_article(focus, t)
            if rng.random() < 0.08:
                ims = imgs_by_cat[focus] + imgs_by_cat["swatches"]
                im = rng.choice(ims)
                t += rng.uniform(5, 60)
                emit(t, im["id"], "view")
                if rng.random() < 0.25:
                    t += rng.uniform(5, 40)
                    emit(t, im["id"], "click")

            # browse the focus category
            n_views = _weighted(rng, range(1, 9), [12, 20, 20, 16, 12, 9, 6, 5])
            cands = by_cat[focus]
            shown: list[dict] = []
            for _ in range(n_views):
                if viewed[focus] and rng.random() < 0.2:
                    pid = rng.choice(viewed[focus])
                    p = next(x for x in cands if x["id"] == pid)
                else:
                    p = _weighted(rng, cands, [item_w(x) for x in cands])
                if p not in shown:
                    shown.append(p)
            cart: list[dict] = []
            in_taste = focus in tastes
            for p in shown:
                t += rng.uniform(15, 150)
                emit(t, p["id"], "view")
                viewed[focus].append(p["id"])
                p_click = min(0.8, 0.26 * (1.35 if in_taste else 0.8) * (0.8 + 0.8 * _overlap(p["_style"], style)))
                if rng.random() < p_click:
                    t += rng.uniform(5, 40)
                    emit(t, p["id"], "click")
                    t += rng.uniform(30, 240)
                    rebuy_ok = p["category"] == "running-socks" or p["id"] not in purchased
                    if rebuy_ok and rng.random() < (0.27 if in_taste else 0.12):
                        t += rng.uniform(5, 30)
                        emit(t, p["id"], "cart")
                        cart.append(p)
            if rng.random() < 0.2:
                t = read_article(focus, t)

            bought: list[dict] = []
            for p in cart:
                if rng.random() < 0.55:
                    t += rng.uniform(60, 400)
                    emit(t, p["id"], "purchase")
                    purchased.add(p["id"])
                    bought.append(p)

            # complements: shoes -> socks / packs, jackets -> packs, lamps <-> headphones ...
            for b in bought:
                comps = COMPLEMENTS.get(b["category"], [])
                if not comps or rng.random() > 0.55:
                    continue
                ccat = rng.choice(comps)
                if ccat not in tastes:
                    tastes.append(ccat)
                    taste_w.append(0.3)
                cc = by_cat[ccat]
                w = [pop[x["id"]] * (0.3 + 4 * _overlap(x["_style"], b["_style"]) ** 2) for x in cc]
                seen_c: list[dict] = []
                for _ in range(_weighted(rng, [1, 2, 3], [4, 3, 2])):
                    p = _weighted(rng, cc, w)
                    if p not in seen_c:
                        seen_c.append(p)
                for p in seen_c:
                    t += rng.uniform(15, 120)
                    emit(t, p["id"], "view")
                    viewed[ccat].append(p["id"])
                    if rng.random() < 0.5:
                        t += rng.uniform(5, 40)
                        emit(t, p["id"], "click")
                        rebuy_ok = p["category"] == "running-socks" or p["id"] not in purchased
                        if rebuy_ok and rng.random() < 0.45:
                            t += rng.uniform(20, 120)
                            emit(t, p["id"], "cart")
                            if rng.random() < 0.6:
                                t += rng.uniform(60, 300)
                                emit(t, p["id"], "purchase")
                                purchased.add(p["id"])
                                bought.append(p)
                if rng.random() < 0.35:
                    t = read_article(b["category"], t)

            # some purchases get a rating a few days later
            for b in bought:
                if rng.random() < 0.4:
                    tr = t + rng.uniform(1, 20) * 86400
                    if tr < horizon:
                        val = max(1, min(5, round(rng.gauss(b["attributes"]["rating"], 0.9))))
                        emit(tr, b["id"], "rating", str(val))
            clock = t

    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    rows = []
    for k, (sec, u, _, item, typ, value) in enumerate(raw, start=1):
        ts = (START + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append((f"e-{k:06d}", f"u-{u + 1:03d}", item, typ, value, ts))
    return rows


# --------------------------------------------------------------------------- writing


def public(item: dict) -> dict:
    return {k: item[k] for k in ITEM_FIELDS}


def items_jsonl(items: list[dict]) -> bytes:
    return "".join(json.dumps(public(it), ensure_ascii=False) + "\n" for it in items).encode("utf-8")


def events_csv(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENT_HEADER)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _table(counter: Counter) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in sorted(counter.items()))


def readme(seed: int, items: list[dict], rows: list[tuple], sizes: dict[str, int], n_images: int) -> bytes:
    kinds = Counter(it["kind"] for it in items)
    cats = Counter(f"{it['kind']} / {it['category']}" for it in items)
    types = Counter(r[3] for r in rows)
    users = len({r[1] for r in rows})
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
    text = f"""# Demo catalog

A small, self-contained catalog for trying the service without any external data: products,
articles and pictures with text for semantic search, PNG images for image search, and a
behaviour log for recommendations. Everything here is **generated by this repository** and is
licensed under the project's **Apache-2.0** licence. There is no third-party content: all text is
composed from vocabularies written for this project (brands, models and authors are invented)
and all pictures are drawn with Pillow primitives.

Do not edit these files by hand; change the generator and rerun it:

```
python -m service.demo.generate            # rewrite items.jsonl, events.csv, images/, README.md
python -m service.demo.generate --check    # regenerate in a temp dir; exit 1 if anything differs
python -m service.demo.generate --verify   # consistency checks on the files in this folder
```

The generator is seeded (`SEED = {seed}` in `generate.py`; `--seed` overrides it) and uses a
separate `random.Random` stream per part (products, articles, image items, pictures, events), so
re-running it rewrites byte-identical files. PNG bytes also depend on the Pillow/zlib build;
the text files do not.

## Files

| file | size | contents |
|---|---|---|
| `items.jsonl` | {mb(sizes['items.jsonl'])} | {len(items)} items, one JSON object per line |
| `images/` | {mb(sizes['images'])} | {n_images} RGB PNGs, {draw.SIZE}x{draw.SIZE} |
| `events.csv` | {mb(sizes['events.csv'])} | {len(rows)} events from {users} users |
| `generate.py`, `_vocab.py`, `_draw.py` | | the generator, its vocabularies, its drawing code |

## items.jsonl

Each line: `{{"id", "kind", "title", "text", "image", "category", "tags", "attributes"}}`.
`image` is a path relative to this folder (`images/<id>.png`) or `null`.

| kind | count |
|---|---|
{_table(kinds)}

| kind / category | count |
|---|---|
{_table(cats)}

* **Products** (`p-0001`...): {PRODUCTS_PER_CATEGORY} per category over {len(PRODUCT_CATEGORIES)} categories. Each
  category has invented brands and model names, 2-4 sub-types (e.g. trail / road / racing /
  stability shoes), and per sub-type: title adjectives each paired with the feature that
  justifies it, use cases, features, tags and a price range. The title is
  `<model>[ <version>] <adjective> <noun>`; the text is an opening sentence (model, brand, use),
  optionally a material/construction sentence, a feature sentence (the adjective's feature plus
  two more) and a color sentence, so 3-4 sentences. `attributes`:
  `{{"price", "brand", "color", "rating"}}`. {round(PRODUCT_IMAGE_SHARE * 100)}% of the products
  in each category have a picture.
* **Articles** (`a-0001`...): for every product category, three themes (how to choose ->
  `buying-guides`; care -> `care-tips`; use -> `outdoor`, `cooking`, `home-office` or `fitness`),
  three titles per theme. An article is its own lead sentence plus 2-4 sentences drawn (in
  order) from the theme's pool, always including the ones its title is about (the zipper
  article always has the zipper sentence), so 3-5 sentences. `tags` name the product categories it relates
  to (e.g. "Packing list for a rainy trail race": rain-jackets, running-shoes, backpacks,
  running-socks) and the theme. `attributes`: `{{"reading_minutes", "author"}}`.
  {ARTICLE_IMAGES} articles have a picture of their main product category.
* **Images** (`i-0001`...): {ILLUSTRATIONS_PER_CATEGORY} product illustrations per product category (category =
  that product category) and {SWATCHES} fabric swatches (category `swatches`), each with a title and
  a one- or two-sentence caption. `attributes`: `{{"color", "style", "width", "height"}}`.

## images/

Drawn by `_draw.py` on a 3x canvas and scaled down (LANCZOS) to {draw.SIZE}x{draw.SIZE} RGB, saved with
`optimize=True`. Each picture is a flat illustration in the item's `color` (with its accent
color for laces, webbing, rivets, cuffs...) on a light vertical gradient with a soft drop
shadow; the shape follows the category and sub-type: side-view shoe (lugs on trail shoes, a
thicker midsole on stability shoes), sock (no-show, quarter, crew, knee-high), jacket (longer
city coat), backpack (daypack, commuter, trekking pack with lid, running vest with flasks),
knife (chef, santoku with dimples, paring, serrated bread knife), coffee maker (drip machine,
espresso machine, pour-over, French press), headphones (over-ear, earbuds with case, studio with
coiled cable, headset with boom mic), lamp (architect, LED bar, mushroom, clip-on) and a half
unrolled yoga mat (speckled cork). Swatches are square fabric patterns (stripes, pinstripes,
gingham, dots, chevron, waves, plaid, color block, grid) in two named colors.

## events.csv

Header `event_id,user_id,item_id,type,value,timestamp`; `value` is 1-5 for `rating` and empty
otherwise; timestamps are ISO 8601 UTC within the {DAYS} days before {END:%Y-%m-%d}; `event_id`
is `e-000001`... in time order.

| type | count |
|---|---|
{_table(types)}

How it is simulated:

* **Tastes.** Each of the {N_USERS} users (`u-001`...) has a main category (running shoes are the
  most common) and 0-2 more, usually from that category's affinity list (running shoes ->
  socks, backpacks, rain jackets, headphones, yoga mats; knives <-> coffee makers; headphones <->
  desk lamps ...), and a "style" (the sub-type tags of one popular product in the main
  category, e.g. running / trail / outdoor or running / road / racing) that makes products
  with matching tags, in any category, more likely to be viewed and clicked.
* **Popularity** is long-tailed: within a category, items are ranked (better-rated items tend to
  rank higher) and weighted 1/rank^1.1; articles 1/rank^0.8.
* **Sessions.** Activity per user is log-normal (median 21 sessions, 3-60), on random days
  (weekends a little busier) at realistic hours (evening peak), never overlapping. A session
  focuses on one of the user's categories (10% on a random one), may start from an article
  (30%) or a picture (8%), then views 1-8 products; each view may become a click, a click may
  become a cart, and carts are purchased at checkout with probability 0.55. Users come back to
  products they viewed before (20% of views).
* **Funnel.** Every cart and purchase follows a view and a click of the same item by the same
  user in the same session; articles and pictures are only viewed or clicked; a product is not
  bought twice (socks excepted); about 40% of purchases get a rating 1-20 days later, around the
  product's `rating` attribute.
* **Co-engagement.** After a purchase, 55% of users go on to a complementary category (running
  shoes -> socks or backpacks, strongly preferring items whose sub-type tags match the
  purchase, so trail shoes lead to trail socks and running vests; rain
  jackets -> backpacks; lamps <-> headphones ...), which joins their tastes, and 35% read an
  article about what they bought (e.g. the trail running or shoe care articles).

## Licence

Copyright the project authors. Licensed under the Apache License, Version 2.0, like the rest of
the repository. The catalog is synthetic: any resemblance of an invented brand or model name to
a real one is coincidental, and the prices, ratings and behaviour are not real data.
"""
    return text.encode("utf-8")


def build(seed: int) -> dict[str, bytes]:
    """All output files, relative path -> bytes."""
    products = make_products(seed)
    articles = make_articles(seed)
    image_items = make_image_items(seed)
    items = products + articles + image_items
    pictures = make_pictures(seed, products, articles, image_items)
    rows = make_events(seed, products, articles, image_items)
    files = {"items.jsonl": items_jsonl(items), "events.csv": events_csv(rows), **pictures}
    sizes = {"items.jsonl": len(files["items.jsonl"]), "events.csv": len(files["events.csv"]),
             "images": sum(len(b) for b in pictures.values())}
    files["README.md"] = readme(seed, items, rows, sizes, len(pictures))
    return files


def write(files: dict[str, bytes], out_dir: Path) -> None:
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for old in (out_dir / "images").glob("*.png"):
        if f"images/{old.name}" not in files:
            old.unlink()
    for rel, data in sorted(files.items()):
        path = out_dir / rel
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def digest(out_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted([out_dir / "items.jsonl", out_dir / "events.csv", out_dir / "README.md",
                     *(out_dir / "images").glob("*.png")]):
        h.update(p.relative_to(out_dir).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def verify(out_dir: Path = DEMO_DIR) -> dict:
    """Check the files on disk; raise AssertionError on a problem, return counts otherwise."""
    items = [json.loads(line) for line in (out_dir / "items.jsonl").read_text("utf-8").splitlines()]
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids)), "duplicate item ids"
    for it in items:
        assert tuple(it) == ITEM_FIELDS, f"{it['id']}: fields {tuple(it)}"
        if it["image"] is not None:
            assert (out_dir / it["image"]).is_file(), f"{it['id']}: missing {it['image']}"
    kind = {it["id"]: it["kind"] for it in items}
    with (out_dir / "events.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == EVENT_HEADER, rows[0]
    rows = rows[1:]
    assert len({r[0] for r in rows}) == len(rows), "duplicate event ids"
    seen: set[tuple[str, str]] = set()
    bought: set[tuple[str, str]] = set()
    last = ""
    for eid, user, item, typ, value, ts in rows:
        assert item in kind, f"{eid}: unknown item {item}"
        assert typ in EVENT_TYPES, f"{eid}: type {typ}"
        assert ts >= last, f"{eid}: not in time order"
        last = ts
        dt = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert START <= dt < END, f"{eid}: {ts} outside the window"
        if kind[item] != "product":
            assert typ in ("view", "click"), f"{eid}: {typ} on {kind[item]} {item}"
        if typ == "rating":
            assert value in {"1", "2", "3", "4", "5"}, f"{eid}: rating {value!r}"
        else:
            assert value == "", f"{eid}: value {value!r} on {typ}"
        if typ in ("cart", "purchase"):
            assert (user, item) in seen, f"{eid}: {typ} without a prior view/click"
        if typ == "purchase":
            bought.add((user, item))
        if typ == "rating":
            assert (user, item) in bought, f"{eid}: rating without a prior purchase"
        if typ in ("view", "click"):
            seen.add((user, item))
    return {
        "items": Counter(it["kind"] for it in items),
        "events": Counter(r[3] for r in rows),
        "users": len({r[1] for r in rows}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m service.demo.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=DEMO_DIR, help="output folder (default: service/demo)")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare with --out")
    ap.add_argument("--verify", action="store_true", help="only run the consistency checks on --out")
    args = ap.parse_args(argv)
    if args.verify:
        print(verify(args.out))
        return 0
    files = build(args.seed)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write(files, Path(tmp))
            names = sorted(files)
            _, mismatch, errors = filecmp.cmpfiles(args.out, tmp, names, shallow=False)
            extra = sorted(f"images/{p.name}" for p in (args.out / "images").glob("*.png")
                           if f"images/{p.name}" not in files)
            if mismatch or errors or extra:
                print(f"demo catalog out of date: differs {mismatch}, missing {errors}, extra {extra}")
                return 1
        print(f"demo catalog up to date ({len(files)} files)")
        return 0
    write(files, args.out)
    print(f"wrote {len(files)} files to {args.out} (sha256 {digest(args.out)[:16]})")
    print(verify(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
