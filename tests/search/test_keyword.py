"""Keyword search (FTS5 / tsvector) and the typeahead suggester, on SQLite and PostgreSQL."""

import json
import random
import threading

import pytest
from sqlalchemy import select, text, update

from service.store.importing import import_items
from service.search.keyword import MAX_KEYWORD_LIMIT, MAX_QUERY_TOKENS, fts5_match_expression, keyword_search, query_terms
from service.search.suggest import MAX_SUGGEST_LIMIT, Suggester
from service.store.models import Item

IMAGE = "sunrise.png"  # beside the imported file; the import puts it in the image store

CATALOG = [
    {"id": "p-trail", "kind": "product", "title": "Trailblaze 3 waterproof trail running shoe",
     "text": "A grippy outsole for muddy singletrack and a gusseted tongue that keeps grit out.",
     "category": "running-shoes", "tags": ["trail", "waterproof"]},
    {"id": "p-road", "kind": "product", "title": "Skyline road running shoe",
     "text": "Cushioned daily trainer for pavement miles.", "category": "running-shoes", "tags": ["road"]},
    {"id": "p-tent", "kind": "product", "title": "Alpine dome tent",
     "text": "Sleeps two with a vestibule for boots.", "category": "tents", "tags": ["camping"]},
    {"id": "p-stove", "kind": "product", "title": "Camp stove",
     "text": "Boil water at the tent door: pairs with any tent, and packs inside a tent pocket.",
     "category": "cooking", "tags": ["camping"]},
    {"id": "p-mug", "kind": "product", "title": "Café crème enamel mug",
     "text": "Holds 350 ml.", "category": "kitchen", "tags": ["Kaffeehaus", "émail"]},
    {"id": "p-sock", "kind": "product", "title": "Merino running socks",
     "text": "Cushioned socks.", "category": "socks", "tags": []},
    {"id": "a-guide", "kind": "article", "title": "How to choose trail running shoes",
     "text": "Lugs, rock plates and drop explained.", "category": "guides", "tags": ["trail"]},
    {"id": "a-care", "kind": "article", "title": "Caring for your kit",
     "text": "Rinse mud off a waterproof trail running shoe after every run, then let it dry away from heat.",
     "category": "guides", "tags": []},
    {"id": "i-sunrise", "kind": "image", "title": "Sunrise over the trail", "image": IMAGE,
     "text": "", "category": "photos", "tags": []},
    {"id": "p-gone", "kind": "product", "title": "Discontinued trail running shoe",
     "text": "No longer sold.", "category": "running-shoes", "tags": []},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def catalog(tmp_path, session_factory, settings):
    """The catalog imported, then p-gone soft-deleted; returns external id -> item id."""
    from PIL import Image

    Image.new("RGB", (8, 8), (250, 160, 40)).save(tmp_path / IMAGE)
    import_items(write_jsonl(tmp_path / "items.jsonl", CATALOG), session_factory=session_factory, settings=settings,
                 progress=False)
    import_items(
        write_jsonl(tmp_path / "delete.jsonl", [{"id": "p-gone", "deleted": True}]),
        session_factory=session_factory,
        progress=False,
    )
    with session_factory() as s:
        return dict(s.execute(select(Item.external_id, Item.id)).all())


def search(session_factory, ids, query, limit=10, **filters):
    """External ids of the results, best first."""
    by_pk = {pk: ext for ext, pk in ids.items()}
    with session_factory() as s:
        return [by_pk[pk] for pk, _ in keyword_search(session=s, query=query, limit=limit, **filters)]


# --- keyword search ------------------------------------------------------------------------


def test_multi_word_query_ranks_relevant_items_first(session_factory, catalog):
    # All four words are in the trail shoe's title; the care article has them in its text only.
    assert search(session_factory, catalog, "waterproof trail running shoe") == ["p-trail", "a-care"]
    found = search(session_factory, catalog, "trail running shoe")
    # Every word must match: the road shoe (no "trail") and the image (no "running") are out.
    assert set(found) == {"p-trail", "a-guide", "a-care"}
    assert found[-1] == "a-care"


def test_scores_are_best_first(session_factory, catalog):
    with session_factory() as s:
        scores = [score for _, score in keyword_search(session=s, query="running", limit=10)]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5


def test_title_match_outranks_body_match(session_factory, catalog):
    # The stove mentions "tent" three times in its text; the tent has it once, in the title.
    assert search(session_factory, catalog, "tent") == ["p-tent", "p-stove"]


def test_prefix_of_last_word_matches_while_typing(session_factory, catalog):
    assert set(search(session_factory, catalog, "runn")) == {"p-trail", "p-road", "p-sock", "a-guide", "a-care"}
    assert search(session_factory, catalog, "skyline runn") == ["p-road"]
    # Only the last word is a prefix, and a trailing space says the word is complete.
    assert search(session_factory, catalog, "runn shoe") == []
    assert search(session_factory, catalog, "sock ") == []
    assert search(session_factory, catalog, "sock") == ["p-sock"]


def test_category_and_tags_are_searchable(session_factory, catalog):
    assert search(session_factory, catalog, "cooking") == ["p-stove"]
    assert search(session_factory, catalog, "kaffeehaus") == ["p-mug"]


def test_accents_and_case_are_ignored(session_factory, catalog):
    assert search(session_factory, catalog, "CAFE CREME") == ["p-mug"]
    assert search(session_factory, catalog, "café") == ["p-mug"]
    assert search(session_factory, catalog, "email") == ["p-mug"]  # tag "émail"


@pytest.mark.parametrize(
    "query",
    ['"shoe AND (', "*", "-", "NEAR", 'NEAR("a" "b", 2)', '"', "'", "shoe'", "a:*", "!!&|", "(trail OR road)",
     "title:shoe", "^trail", "shoe -trail", "trail + running", "\\", "%_", "{x}", "a\x00b", "🥾 trail", "   "],
)
def test_query_syntax_in_user_text_never_raises(session_factory, catalog, query):
    search(session_factory, catalog, query)


def test_random_user_text_never_raises(session_factory, catalog):
    alphabet = list('"*-^:()+{}[]\'\\%_.,;!?&|~ NEARNOTANDOR') + list("abcé²½") + [
        "\u0301", "\u200b", "\U0001F97E", "日本", "\x00", "\t", "ß", "ﬁ", "\u00a0",
    ]
    rng = random.Random(0)
    with session_factory() as s:
        for _ in range(300):
            query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            keyword_search(session=s, query=query, limit=5)


def test_punctuation_only_query_returns_nothing(session_factory, catalog):
    for query in ["", "   ", "*", "-", '"', "()", "?!.", "___"]:
        assert search(session_factory, catalog, query) == []


def test_syntax_words_are_plain_words(session_factory, catalog):
    # Operators in user text are words to find, not operators: "trail OR road" needs all three.
    assert search(session_factory, catalog, "trail OR road") == []
    assert search(session_factory, catalog, "shoe NOT trail") == []
    assert search(session_factory, catalog, '"road" shoe*') == ["p-road"]


def test_deleted_items_are_never_returned(session_factory, catalog):
    assert "p-gone" not in search(session_factory, catalog, "discontinued")
    assert "p-gone" not in search(session_factory, catalog, "trail running shoe")
    with session_factory.begin() as s:
        s.execute(update(Item).where(Item.external_id == "p-gone").values(deleted_at=None))
    assert search(session_factory, catalog, "discontinued") == ["p-gone"]


def test_hard_deleted_items_leave_the_index(session_factory, catalog):
    with session_factory.begin() as s:
        s.execute(Item.__table__.delete().where(Item.external_id == "p-tent"))
    assert search(session_factory, catalog, "tent ") == ["p-stove"]


def test_kind_and_category_filters(session_factory, catalog):
    assert set(search(session_factory, catalog, "trail", kinds=["article", "image"])) == {"a-guide", "a-care", "i-sunrise"}
    assert search(session_factory, catalog, "trail", kinds=["image"]) == ["i-sunrise"]
    assert search(session_factory, catalog, "running", category="socks") == ["p-sock"]
    assert search(session_factory, catalog, "running", kinds=["product"], category="guides") == []


def test_a_short_prefix_ranks_only_the_newest_matches_and_a_longer_one_all(session_factory, catalog, monkeypatch):
    from service.search import keyword

    monkeypatch.setattr(keyword, "PREFIX_CANDIDATES", 3)
    # "ru" matches the road shoe, the trail shoe, the socks, the guide and the care article; the
    # trail shoe is the oldest (imported first) and falls outside the 3 newest candidates.
    short = search(session_factory, catalog, "ru", category=None)
    assert short and "p-trail" not in short and len(short) <= 3
    newest = sorted((pk for ext, pk in catalog.items() if ext in short), reverse=True)
    assert newest == sorted(newest, reverse=True)
    # Every match is ranked once the prefix is 4 letters; other words narrow the matches first.
    assert "p-trail" in search(session_factory, catalog, "runn")
    assert "p-trail" in search(session_factory, catalog, "waterproof ru")  # the first word narrows first


def test_limit(session_factory, catalog):
    assert len(search(session_factory, catalog, "running", limit=2)) == 2


def test_title_update_is_reflected(tmp_path, session_factory, catalog):
    rows = [dict(r) for r in CATALOG if r["id"] == "p-tent"]
    rows[0]["title"] = "Alpine dome shelter"
    rows[0]["tags"] = ["bivouac"]
    import_items(write_jsonl(tmp_path / "update.jsonl", rows), session_factory=session_factory, progress=False)
    assert search(session_factory, catalog, "shelter") == ["p-tent"]
    assert search(session_factory, catalog, "bivouac") == ["p-tent"]
    assert search(session_factory, catalog, "camping") == ["p-stove"]
    # The old title word is gone from the tent; only the stove's body still says tent.
    assert search(session_factory, catalog, "tent ") == ["p-stove"]


def test_updates_of_other_columns_keep_the_index(session_factory, catalog):
    with session_factory.begin() as s:
        s.execute(update(Item).where(Item.external_id == "p-tent").values(attributes={"price": 1}))
    assert search(session_factory, catalog, "tent")[0] == "p-tent"


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": MAX_KEYWORD_LIMIT + 1}, {"limit": True}, {"limit": 10, "kinds": []},
     {"limit": 10, "kinds": ["video"]}, {"limit": 10, "kinds": "product"}, {"limit": 10, "category": 3}],
)
def test_invalid_arguments_raise_value_error(session_factory, kwargs):
    with session_factory() as s, pytest.raises(ValueError):
        keyword_search(session=s, query="shoe", **kwargs)


def test_query_building_quotes_every_term():
    terms, prefix = query_terms('shoe AND ("trail"*')
    assert terms == ["shoe", "AND", "trail"] and prefix is False
    assert fts5_match_expression(terms, prefix) == '"shoe" "AND" "trail"'
    terms, prefix = query_terms("Cafe\u0301 runn")  # decomposed accent: still one word
    assert terms == ["Café", "runn"] and prefix is True
    assert fts5_match_expression(terms, prefix) == '"Café" "runn"*'
    assert query_terms("a b c r") == (["a", "b", "c", "r"], False)  # one letter: no prefix
    many = " ".join(f"w{i}" for i in range(MAX_QUERY_TOKENS + 5))
    assert query_terms(many) == ([f"w{i}" for i in range(MAX_QUERY_TOKENS)], False)


def test_index_objects_exist_at_head(engine):
    """A later migration that rebuilds items (batch mode on SQLite) must not lose them."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE name LIKE 'items_fts%'").scalars())
            assert {"items_fts", "items_fts_ai", "items_fts_ad", "items_fts_au"} <= names
        else:
            assert conn.exec_driver_sql(
                "SELECT attgenerated FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'search_vector'"
            ).scalar() == "s"
            assert conn.exec_driver_sql("SELECT to_regclass('ix_items_search_vector') IS NOT NULL").scalar()
            assert conn.exec_driver_sql("SELECT to_regclass('items_fts_prefixes') IS NOT NULL").scalar()
            assert conn.exec_driver_sql(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'items_fts_prefixes_sync' AND NOT tgisinternal"
            ).scalar() == 1


# --- suggester -----------------------------------------------------------------------------


def titles(results):
    return [r["title"] for r in results]


@pytest.fixture
def suggester(session_factory, catalog):
    with session_factory() as s:
        return Suggester.load(s)


def test_suggest_matches_title_start_and_word_start(suggester):
    assert titles(suggester.suggest("shoe")) == [
        "Skyline road running shoe",
        "How to choose trail running shoes",
        "Trailblaze 3 waterproof trail running shoe",
    ]
    assert titles(suggester.suggest("trail")) == [
        "Trailblaze 3 waterproof trail running shoe",  # title start first
        "Sunrise over the trail",
        "How to choose trail running shoes",
    ]
    assert titles(suggester.suggest("trail runn")) == [
        "How to choose trail running shoes",
        "Trailblaze 3 waterproof trail running shoe",
    ]
    assert suggester.suggest("ailblaze") == []  # not a word start


def test_suggest_result_shape(suggester):
    assert suggester.suggest("alpine") == [
        {"id": "p-tent", "title": "Alpine dome tent", "kind": "product", "category": "tents"}
    ]


def test_suggest_ignores_case_and_accents(suggester):
    for prefix in ["cafe", "CAFÉ", "Cafe cre", "crème", "CREME EN"]:
        assert titles(suggester.suggest(prefix)) == ["Café crème enamel mug"], prefix


def test_suggest_trailing_separator_completes_the_word(suggester):
    assert titles(suggester.suggest("trail ")) == [
        "Sunrise over the trail",
        "How to choose trail running shoes",
        "Trailblaze 3 waterproof trail running shoe",  # "trailblaze" alone would not match
    ]
    assert titles(suggester.suggest("trail-r")) == ["How to choose trail running shoes", "Trailblaze 3 waterproof trail running shoe"]


def test_suggest_excludes_deleted_items(suggester):
    assert suggester.suggest("discontinued") == []


def test_suggest_kind_filter_and_limit(suggester):
    assert titles(suggester.suggest("trail", kind="image")) == ["Sunrise over the trail"]
    assert titles(suggester.suggest("trail", kind="article")) == ["How to choose trail running shoes"]
    assert len(suggester.suggest("r", limit=2)) == 2
    assert len(suggester.suggest("r", limit=MAX_SUGGEST_LIMIT)) == 4


def test_suggest_popularity_ranks_within_match_class(session_factory, catalog):
    popularity = {catalog["p-trail"]: 10.0, catalog["a-guide"]: 5.0}
    with session_factory() as s:
        sg = Suggester.load(s, popularity=popularity)
    assert titles(sg.suggest("shoe")) == [
        "Trailblaze 3 waterproof trail running shoe",
        "How to choose trail running shoes",
        "Skyline road running shoe",
    ]
    # Title-start matches (shorter first at equal popularity) still come before popular word matches.
    assert titles(sg.suggest("s"))[:4] == [
        "Sunrise over the trail",
        "Skyline road running shoe",
        "Trailblaze 3 waterproof trail running shoe",
        "How to choose trail running shoes",
    ]


def test_suggest_random_prefixes_never_raise(suggester):
    alphabet = list("abcdefghijklmnopqrstuvwxyz -'\"*éÉ²_") + ["\u0301", "\x00", "\U0001F97E", "ß"]
    rng = random.Random(0)
    for _ in range(2000):
        prefix = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        assert len(suggester.suggest(prefix, limit=3)) <= 3


@pytest.mark.parametrize("prefix", ["", "   ", "\t\n", "--", "'"])
def test_suggest_blank_prefix_returns_nothing(suggester, prefix):
    assert suggester.suggest(prefix) == []


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": MAX_SUGGEST_LIMIT + 1}, {"limit": 2.0}, {"kind": "video"}])
def test_suggest_invalid_arguments(suggester, kwargs):
    with pytest.raises(ValueError):
        suggester.suggest("shoe", **kwargs)


def test_suggest_categories(suggester):
    assert suggester.suggest_categories("shoe") == [{"category": "running-shoes", "count": 2}]
    assert suggester.suggest_categories("running", kind="product") == [{"category": "running-shoes", "count": 2}]
    assert suggester.suggest_categories("g", kind="image") == []


def test_refresh_after_catalog_changes(tmp_path, session_factory, suggester):
    with session_factory() as s:
        assert not suggester.needs_refresh(s)
    import_items(
        write_jsonl(tmp_path / "more.jsonl", [
            {"id": "p-new", "kind": "product", "title": "Trail gaiters", "text": "", "category": "accessories"},
            {"id": "p-road", "deleted": True},
        ]),
        session_factory=session_factory,
        progress=False,
    )
    assert titles(suggester.suggest("gait")) == []  # not refreshed yet
    with session_factory() as s:
        assert suggester.needs_refresh(s)
        assert suggester.refresh(s) == 9
        assert not suggester.needs_refresh(s)
    assert titles(suggester.suggest("gait")) == ["Trail gaiters"]
    assert "Skyline road running shoe" not in titles(suggester.suggest("s", limit=50))


def test_non_finite_popularity_is_rejected():
    with pytest.raises(ValueError, match="nan"):
        Suggester.from_rows([(1, "x", "Ice axe", "product", None)], popularity={1: float("nan")})


def test_refresh_keeps_popularity_unless_replaced(session_factory, catalog):
    with session_factory() as s:
        sg = Suggester.load(s, popularity={catalog["a-guide"]: 1.0})
        sg.refresh(s)
        assert titles(sg.suggest("shoe"))[0] == "How to choose trail running shoes"
        sg.refresh(s, popularity={})
        assert titles(sg.suggest("shoe"))[0] == "Skyline road running shoe"


def test_from_rows_needs_refresh_against_a_database(session_factory, catalog):
    sg = Suggester.from_rows([(1, "x", "Ice axe", "product", None)])
    assert titles(sg.suggest("axe")) == ["Ice axe"]
    with session_factory() as s:
        assert sg.needs_refresh(s)


def test_readers_see_a_whole_build_during_refresh():
    """Suggest in threads while another thread swaps builds: every answer comes from one build."""
    old = [(i, f"o{i}", f"old title {i}", "product", None) for i in range(2000)]
    new = [(i, f"n{i}", f"new title {i}", "article", None) for i in range(2000)]
    sg = Suggester.from_rows(old)
    builds = [Suggester.from_rows(new)._snapshot, Suggester.from_rows(old)._snapshot]
    stop = threading.Event()
    errors = []

    def read():
        while not stop.is_set():
            got = sg.suggest("title", limit=5)
            prefixes = {r["id"][0] for r in got}
            if len(got) != 5 or len(prefixes) != 1:
                errors.append(got)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for i in range(200):
        sg._snapshot = builds[i % 2]
    stop.set()
    for t in readers:
        t.join()
    assert errors == []


# --- a short prefix: the newest PREFIX_CANDIDATES matches ranked, by every plan ----------------

WORDS = ["water", "waterproof", "wave", "walnut", "warm", "trail", "travel", "tree", "trim", "run", "runner",
         "rust", "ruby", "dome", "down", "light", "lime", "zipper"]


@pytest.fixture
def many(session_factory, engine):
    """150 items of random words (every 7th soft-deleted), with planner statistics on PostgreSQL.

    Each text also holds a few of 130 filler words: PostgreSQL estimates a prefix's matches from
    its most common lexemes only when it has 100 of them or more.
    """
    from sqlalchemy import insert

    from service.store.models import utcnow

    rng = random.Random(7)
    now = utcnow()
    rows = []
    for i in range(150):
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
        rows.append({
            "external_id": f"m-{i:03d}", "kind": ("product", "article", "image")[i % 3], "title": title,
            "text": " ".join([rng.choice(WORDS) for _ in range(rng.randint(0, 12))] + [f"x{i % 130}", f"x{rng.randrange(130)}"]),
            "category": f"c{i % 4}",
            "tags": [rng.choice(WORDS)], "attributes": {}, "content_hash": f"{i:064x}", "created_at": now,
            "updated_at": now, "deleted_at": now if i % 7 == 3 else None,
        })
    with session_factory.begin() as s:
        s.execute(insert(Item), rows)
        if engine.dialect.name == "postgresql":
            s.execute(text("ANALYZE items"))


def newest_ranked(session, query, cap, limit, **filters):
    """The reference: every match ranked (no cap), then the newest ``cap`` kept, best ``limit`` first."""
    from service.search import keyword

    saved = keyword.SHORT_PREFIX_CHARS
    keyword.SHORT_PREFIX_CHARS = 0  # no prefix is short: every match is ranked
    try:
        every = keyword_search(session=session, query=query, limit=MAX_KEYWORD_LIMIT, **filters)
    finally:
        keyword.SHORT_PREFIX_CHARS = saved
    newest = sorted(every, key=lambda r: r[0], reverse=True)[:cap]
    return sorted(newest, key=lambda r: (-r[1], r[0]))[:limit]


SHORT_QUERIES = [("wa", {}), ("tr", {}), ("ru", {}), ("wat", {}), ("li", {}), ("zi", {}), ("trail ru", {}), ("WÁ", {}),
                 ("wa", {"kinds": ["article"]}), ("tr", {"category": "c2"}), ("do", {"kinds": ["image", "product"]}),
                 ("qq", {})]


@pytest.mark.parametrize("plan", ["chosen", "no table", "walk", "bitmap"])
def test_short_prefix_returns_the_newest_matches_ranked(session_factory, engine, many, monkeypatch, plan):
    """On PostgreSQL "chosen" answers one-word prefixes from the prefix table; the other plans
    are what a query with more words or filters uses."""
    from service.search import keyword

    if plan != "chosen":
        if engine.dialect.name != "postgresql":
            pytest.skip("one plan on SQLite")
        monkeypatch.setattr(keyword, "_pg_prefix_table", lambda *args: None)
        if plan != "no table":
            monkeypatch.setattr(keyword, "_pg_walk_is_cheaper", lambda *args: plan == "walk")
    monkeypatch.setattr(keyword, "PREFIX_CANDIDATES", 9)
    compared = 0
    # One session: psycopg prepares a statement run 5 times on a connection, which must not change results.
    with session_factory() as s:
        for query, filters in SHORT_QUERIES * 2:
            got = keyword_search(session=s, query=query, limit=5, **filters)
            want = newest_ranked(s, query, 9, 5, **filters)
            assert got == want, (query, filters)
            compared += bool(want)
    assert compared >= 16


def test_short_prefix_cap_changes_the_candidates(session_factory, many, monkeypatch):
    """Guards the comparison above against passing trivially: with the cap, older matches drop out."""
    from service.search import keyword

    monkeypatch.setattr(keyword, "PREFIX_CANDIDATES", 9)
    with session_factory() as s:
        every = newest_ranked(s, "wa", MAX_KEYWORD_LIMIT, MAX_KEYWORD_LIMIT)
        capped = keyword_search(session=s, query="wa", limit=MAX_KEYWORD_LIMIT)
    assert len(every) > 30 and len(capped) == 9
    assert {pk for pk, _ in capped} == set(sorted((pk for pk, _ in every), reverse=True)[:9])
    assert capped != every[:9]  # the uncapped best 9 include older items


def _prefix_rows(session, table: bool):
    """items_fts_prefixes as stored, or as computed afresh from items by migration 0006's SQL."""
    from importlib import import_module

    if table:
        sql = "SELECT prefix, item_id, score FROM items_fts_prefixes"
    else:
        migration = import_module("migrations.versions.2026_12_01_0006_keyword_prefixes")
        sql = (f"SELECT r.* FROM items CROSS JOIN LATERAL ({migration._rows_sql('items')}) AS r "
               "WHERE items.deleted_at IS NULL")
    return sorted(tuple(row) for row in session.execute(text(sql)))


@pytest.mark.postgres
def test_postgres_prefix_table_follows_every_write(tmp_path, session_factory, engine, many, catalog):
    """Insert, update of an indexed column, soft delete, undelete and hard delete: the table holds
    what a fresh computation from items gives, and answers one-word prefixes."""
    from service.search import keyword

    if engine.dialect.name != "postgresql":
        pytest.skip("the prefix table is PostgreSQL's")
    with session_factory.begin() as s:
        assert len(_prefix_rows(s, True)) > 1000
        assert _prefix_rows(s, True) == _prefix_rows(s, False)
        s.execute(update(Item).where(Item.external_id == "p-tent").values(title="Quokka tarp"))
        s.execute(update(Item).where(Item.external_id == "m-001").values(deleted_at=Item.updated_at))
        s.execute(update(Item).where(Item.external_id == "m-003").values(deleted_at=None))
        s.execute(update(Item).where(Item.external_id == "m-004").values(attributes={"colour": "red"}))
        s.execute(Item.__table__.delete().where(Item.external_id == "m-005"))
    with session_factory() as s:
        assert _prefix_rows(s, True) == _prefix_rows(s, False)
        tent = s.scalar(select(Item.id).where(Item.external_id == "p-tent"))
        assert [pk for pk, _ in keyword._pg_prefix_table(s, {"query": "quo", "cap": 9, "limit": 5})] == [tent]
        assert keyword._pg_prefix_table(s, {"query": "Qu", "cap": 9, "limit": 5})  # folded like the documents
        # Not one lexeme of 2-3 letters: the query plans answer instead.
        assert keyword._pg_prefix_table(s, {"query": "quokk", "cap": 9, "limit": 5}) is None
        assert keyword._pg_prefix_table(s, {"query": "a", "cap": 9, "limit": 5}) is None


@pytest.mark.postgres
def test_postgres_one_word_prefixes_come_from_the_table(session_factory, engine, many, monkeypatch):
    from service.search import keyword

    if engine.dialect.name != "postgresql":
        pytest.skip("the prefix table is PostgreSQL's")
    used = []
    real = keyword._pg_prefix_table
    monkeypatch.setattr(keyword, "_pg_prefix_table", lambda *args: used.append(real(*args)) or used[-1])
    with session_factory() as s:
        assert keyword_search(session=s, query="wa", limit=5)
        assert keyword_search(session=s, query="trail ru", limit=5)  # two words: the query plans
        assert keyword_search(session=s, query="wa", limit=5, kinds=["article"])  # filtered: the query plans
    assert len(used) == 1 and used[0]


@pytest.mark.postgres
@pytest.mark.parametrize("walk", [True, False])
def test_postgres_short_prefix_plan_shapes(session_factory, engine, many, walk):
    """The walk reads the primary key backwards whatever the cost model prefers (on 150 rows it
    would scan and sort); the other plan finds every match first and never walks."""
    from service.search import keyword

    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL plans")
    with session_factory() as s:
        previous = keyword._pg_set_local(s, keyword.PG_WALK_SETTINGS) if walk else None
        plan = "\n".join(s.execute(text("EXPLAIN " + keyword._pg_capped_sql(walk, "")),
                                   {"query": "wa", "prefix": True, "cap": 9, "limit": 5}).scalars())
        if walk:
            keyword._pg_set_local(s, previous)
    assert ("Index Scan Backward using pk_items" in plan) == walk, plan
    if not walk:
        assert "CTE m" in plan


@pytest.mark.postgres
def test_postgres_walk_is_chosen_for_common_prefixes_only(session_factory, engine, many):
    from service.search import keyword

    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL plans")
    with session_factory() as s:
        def walks(query):
            return keyword._pg_walk_is_cheaper(s, "", {"query": query, "prefix": True, "cap": 9}, False)

        assert walks("wa")  # most rows match: a few rows read per match kept
        assert not walks("zzq")  # nothing matches: the walk would read every row


@pytest.mark.postgres
def test_postgres_walk_restores_the_planner_settings(session_factory, engine, many, monkeypatch):
    from service.search import keyword

    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL settings")
    monkeypatch.setattr(keyword, "_pg_walk_is_cheaper", lambda *args: True)
    with session_factory() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))  # the caller's own setting is kept too
        before = {name: s.execute(text(f"SHOW {name}")).scalar() for name in keyword.PG_WALK_SETTINGS}
        assert keyword_search(session=s, query="wa", limit=5)
        after = {name: s.execute(text(f"SHOW {name}")).scalar() for name in keyword.PG_WALK_SETTINGS}
    assert after == before and before["enable_seqscan"] == "off" and before["enable_bitmapscan"] == "on"
