"""Keyword search over items in the database (typeahead lives in :mod:`service.search.suggest`).

:func:`keyword_search` runs in the database: FTS5 with ``bm25()`` on SQLite, the generated
``items.search_vector`` with ``ts_rank_cd`` on PostgreSQL (both made by migration 0002). User
text never reaches either query language as syntax: on SQLite every word is quoted, on
PostgreSQL ``plainto_tsquery`` reads the text as plain words. All words must match (AND), and
the last one also matches as a prefix while the user is still typing it (a prefix of 2-3 letters
ranks only the newest ``PREFIX_CANDIDATES`` matches; on PostgreSQL such a prefix typed alone is
read pre-ranked from ``items_fts_prefixes``, see ``PG_PREFIX_TABLE_SQL``, and after other words
the newest matches of a common prefix are found by walking the primary key backwards, see
``PG_WALK_ROW_COST``). Scores are "higher is better" but are not comparable across backends.

"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from service.store.models import ITEM_KINDS

MAX_KEYWORD_LIMIT = 1000
# A one-letter prefix matches a large share of the vocabulary: it costs much and ranks little.
MIN_PREFIX_CHARS = 2
# Pasted paragraphs would become huge conjunctions that match nothing anyway.
MAX_QUERY_TOKENS = 16
# A query whose last word is a prefix of at most SHORT_PREFIX_CHARS ("wa", "tra" while typing)
# matches a large share of the catalog, and ranking every match cost up to 144 ms at 100k items
# on PostgreSQL (p99): such a query ranks only its newest PREFIX_CANDIDATES matches. The next
# letter typed makes the prefix selective again and the ranking whole.
SHORT_PREFIX_CHARS = 3
PREFIX_CANDIDATES = 2000

# bm25() weights per FTS5 column, in table order: title, text, category, tags.
SQLITE_BM25_WEIGHTS = (10.0, 1.0, 4.0, 4.0)
# ts_rank_cd weights for labels {D, C, B, A}: text is D, category/tags B, title A.
PG_RANK_WEIGHTS = "{0.1, 0.2, 0.4, 1.0}"
# 1: divide by 1 + log(document length), so a long body does not outvote a title.
PG_RANK_NORMALIZATION = 1


# Letters and digits; underscore is punctuation to both FTS5's unicode61 and PostgreSQL's parser.
WORD = re.compile(r"[^\W_]+")


class KeywordSearchUnavailable(RuntimeError):
    """The database dialect has no keyword search (only SQLite and PostgreSQL do)."""


def query_terms(query: str) -> tuple[list[str], bool]:
    """Split user text into search words; the flag says whether the last word is a prefix.

    The last word is a prefix unless the text ends with a separator (the user finished it) or
    it is shorter than MIN_PREFIX_CHARS. Words past MAX_QUERY_TOKENS are dropped.
    """
    words, prefix, _ = _split_query(query)
    return words, prefix


def _split_query(query: str) -> tuple[list[str], bool, str]:
    """(words, last word is a prefix, the text up to the last kept word)."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    # NFC: a decomposed accent would otherwise end a word early. NUL: PostgreSQL rejects it.
    query = unicodedata.normalize("NFC", query).replace("\x00", " ")
    matches = list(WORD.finditer(query))
    if not matches:
        return [], False, ""
    kept = matches[:MAX_QUERY_TOKENS]
    end = kept[-1].end()
    # A cut-off query was not typed up to its last kept word; text after it means it is done.
    typing = end == len(query) and len(kept) == len(matches)
    words = [m.group() for m in kept]
    return words, typing and len(words[-1]) >= MIN_PREFIX_CHARS, query[:end]


def fts5_match_expression(terms: Sequence[str], prefix: bool) -> str:
    """An FTS5 MATCH string: each term a quoted string (never syntax), implicit AND."""
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    if prefix and quoted:
        quoted[-1] += "*"
    return " ".join(quoted)


def _check_filters(limit: int, kinds: Sequence[str] | None, category: str | None) -> list[str] | None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_KEYWORD_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_KEYWORD_LIMIT}, got {limit!r}")
    if category is not None and not isinstance(category, str):
        raise ValueError(f"category must be a string or None, got {category!r}")
    if kinds is None:
        return None
    if isinstance(kinds, str):
        raise ValueError(f"kinds must be a sequence of kinds, not the string {kinds!r}")
    kinds = list(kinds)
    if not kinds:
        raise ValueError("kinds must not be empty (pass None for every kind)")
    for kind in kinds:
        if kind not in ITEM_KINDS:
            raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(ITEM_KINDS)}")
    return kinds


def keyword_search(
    *,
    session: Session,
    query: str,
    limit: int,
    kinds: Sequence[str] | None = None,
    category: str | None = None,
) -> list[tuple[int, float]]:
    """Live items matching every word of ``query``, as (item id, score), best first.

    Raises:
        ValueError: limit outside 1..MAX_KEYWORD_LIMIT, an unknown or empty ``kinds``.
        KeywordSearchUnavailable: the database is neither SQLite nor PostgreSQL.
    """
    kinds = _check_filters(limit, kinds, category)
    terms, prefix, text_ = _split_query(query)
    if not terms:
        return []
    dialect = session.get_bind().dialect.name
    filters, params = "", {"limit": limit}
    if kinds is not None:
        filters += " AND items.kind IN :kinds"
        params["kinds"] = kinds
    if category is not None:
        filters += " AND items.category = :category"
        params["category"] = category
    # Broad while typing: rank the newest matches only (see PREFIX_CANDIDATES).
    capped = prefix and len(terms[-1]) <= SHORT_PREFIX_CHARS
    params["cap"] = PREFIX_CANDIDATES
    if dialect == "sqlite":
        weights = ", ".join(str(w) for w in SQLITE_BM25_WEIGHTS)
        # bm25() is computed for the rows the inner query returns: at most :cap of them when capped.
        stmt = text(
            f"SELECT id, score FROM (SELECT items.id AS id, bm25(items_fts, {weights}) AS score "
            "FROM items_fts JOIN items ON items.id = items_fts.rowid "
            f"WHERE items_fts MATCH :match AND items.deleted_at IS NULL{filters}"
            + (" ORDER BY items_fts.rowid DESC LIMIT :cap" if capped else "")
            + ") ORDER BY score, id LIMIT :limit"
        )
        params["match"] = fts5_match_expression(terms, prefix)
        sign = -1.0  # bm25: more negative is better
    elif dialect == "postgresql":
        params.update(query=text_, prefix=prefix)
        if capped:
            if len(terms) == 1 and not filters:
                ranked = _pg_prefix_table(session, params)
                if ranked is not None:
                    return ranked
            return _pg_newest_matches_ranked(session, filters, params, kinds is not None)
        stmt = text(
            f"SELECT items.id, {_pg_rank('items.search_vector', 't.q')} AS score "
            f"FROM items CROSS JOIN ({PG_TSQUERY_SQL}) AS t "
            f"WHERE items.search_vector @@ t.q AND items.deleted_at IS NULL{filters} "
            "ORDER BY score DESC, items.id LIMIT :limit"
        )
        sign = 1.0
    else:
        raise KeywordSearchUnavailable(f"no keyword search for database dialect {dialect!r}")
    stmt = _expanding_kinds(stmt, kinds is not None)
    return [(int(item_id), sign * float(score)) for item_id, score in session.execute(stmt, params)]


def _expanding_kinds(stmt, has_kinds: bool):
    return stmt.bindparams(bindparam("kinds", expanding=True)) if has_kinds else stmt


# --- PostgreSQL ----------------------------------------------------------------------------

# plainto_tsquery parses the text with the documents' parser and ignores any operator syntax in
# it; it cannot express a prefix, so ':*' is appended to its last lexeme.
PG_TSQUERY_SQL = ("SELECT CASE WHEN :prefix AND numnode(p) > 0 THEN (p::text || ':*')::tsquery ELSE p END AS q "
                  "FROM plainto_tsquery('simple', items_fts_fold(:query)) AS p")

# A short prefix (PREFIX_CANDIDATES) finds its newest matches by one of two plans, chosen per
# query from the planner's estimate of its matches (_pg_walk_is_cheaper); both return the same
# rows. The GIN bitmap finds every match, then keeps the newest by id: its cost grows with the
# matches ("wi", a prefix of "with", matches 85% of the rows: 60-100 ms at 100k items). The walk
# reads the primary key backwards and stops at the PREFIX_CANDIDATES-th match: its cost grows
# with the rows it reads, about PREFIX_CANDIDATES x rows / matches ("wi": 3 ms). Measured at
# 100k items (2 cores, other jobs running), a row walked costs ~0.35 us and a match found
# through the bitmap ~1.7 us (heap visit, sort, ranked row fetched again): they break even near
# 6,000 matches, at ~12 ms each.
PG_WALK_ROW_COST = 0.2  # a row walked, in matches found through the bitmap
# For the walk's statement only (set, then restored): without a bitmap or sequential scan the
# backward walk is the plan, whatever a cached generic plan or the cost model would pick (the
# model undercosts the walk's filter: it walked a prefix of 2,600 matches in 34 ms, not 10 ms
# through the bitmap). JIT: the compile (~150 ms) costs more than any of these queries.
PG_WALK_SETTINGS = {"enable_bitmapscan": "off", "enable_seqscan": "off", "jit": "off"}


def _pg_rank(vector: str, tsquery: str) -> str:
    return f"ts_rank_cd('{PG_RANK_WEIGHTS}', {vector}, {tsquery}, {PG_RANK_NORMALIZATION})"


def _pg_capped_sql(walk: bool, filters: str) -> str:
    """The newest :cap live matches (by id) ranked, best :limit first; walked or via the bitmap."""
    match = f"items.search_vector @@ t.q AND items.deleted_at IS NULL{filters}"
    if walk:
        # ts_rank_cd runs on the :cap rows kept (it is not pushed below the LIMIT) and reads the
        # tsvector the walk already fetched.
        return (f"SELECT c.id, {_pg_rank('c.search_vector', 'c.q')} AS score FROM ("
                f"SELECT items.id, items.search_vector, t.q FROM items CROSS JOIN ({PG_TSQUERY_SQL}) AS t "
                f"WHERE {match} ORDER BY items.id DESC LIMIT :cap) AS c "
                "ORDER BY score DESC, c.id LIMIT :limit")
    # The materialized tsquery is opaque to the planner: every match comes from the GIN index,
    # whatever the statistics say; only their ids are sorted, then the :cap kept are ranked.
    return (f"WITH t AS MATERIALIZED ({PG_TSQUERY_SQL}), "
            f"m AS MATERIALIZED (SELECT items.id FROM items, t WHERE {match}) "
            f"SELECT items.id, {_pg_rank('items.search_vector', 't.q')} AS score "
            "FROM (SELECT id FROM m ORDER BY id DESC LIMIT :cap) AS c JOIN items ON items.id = c.id CROSS JOIN t "
            "ORDER BY score DESC, items.id LIMIT :limit")


# A query of one 2-3 letter prefix and no filters reads its newest matches, pre-ranked, from
# items_fts_prefixes (migration 0006): one backward index-only scan. At 100k items, p50 / p99
# 2.6 / 6.8 ms against 18 / 60 ms by the plans below (docs/benchmarks.md). The key is the prefix
# as the documents' parser sees it (folded, lowercased), so it names exactly the rows of 'key':*.
# One round trip: the key (NULL unless the query is one lexeme of 2-3 characters, the lengths the
# table holds), then its rows; a NULL key gives one row of NULLs, a key without matches one row
# with a NULL item.
PG_PREFIX_TABLE_SQL = (
    "WITH k AS MATERIALIZED (SELECT CASE WHEN count(*) = 1 AND sum(cardinality(positions)) = 1 "
    "AND char_length(min(lexeme)) BETWEEN 2 AND 3 THEN min(lexeme) END AS key "
    "FROM unnest(to_tsvector('simple', items_fts_fold(:query)))) "
    "SELECT k.key, r.item_id, r.score FROM k LEFT JOIN LATERAL ("
    "SELECT item_id, score FROM (SELECT item_id, score FROM items_fts_prefixes WHERE prefix = k.key "
    "ORDER BY item_id DESC LIMIT :cap) AS c ORDER BY score DESC, item_id LIMIT :limit) AS r ON true "
    "ORDER BY r.score DESC, r.item_id"
)


def _pg_prefix_table(session: Session, params: dict) -> list[tuple[int, float]] | None:
    """The newest :cap matches of a one-word prefix query, ranked, from the prefix table; None when
    the parser does not read the query as one lexeme of a length the table holds."""
    rows = session.execute(text(PG_PREFIX_TABLE_SQL),
                           {"query": params["query"], "cap": params["cap"], "limit": params["limit"]}).all()
    if rows[0][0] is None:
        return None
    return [(int(item_id), float(score)) for _key, item_id, score in rows if item_id is not None]


def _pg_newest_matches_ranked(session: Session, filters: str, params: dict, has_kinds: bool) -> list[tuple[int, float]]:
    walk = _pg_walk_is_cheaper(session, filters, params, has_kinds)
    stmt = _expanding_kinds(text(_pg_capped_sql(walk, filters)), has_kinds)
    if not walk:
        return [(int(item_id), float(score)) for item_id, score in session.execute(stmt, params)]
    previous = _pg_set_local(session, PG_WALK_SETTINGS)
    rows = session.execute(stmt, params).all()
    # Not in a finally: after an error the transaction is aborted, and its rollback undoes them.
    _pg_set_local(session, previous)
    return [(int(item_id), float(score)) for item_id, score in rows]


def _pg_walk_is_cheaper(session: Session, filters: str, params: dict, has_kinds: bool) -> bool:
    """Whether walking the primary key reads fewer rows than the bitmap finds, by the planner's
    estimates (0.3 ms: planning only). Without statistics on items (never analyzed) the estimate
    is a default 0.5% of the rows, and the bitmap is kept."""
    stmt = _expanding_kinds(text(
        f"EXPLAIN (FORMAT JSON) SELECT 1 FROM items CROSS JOIN ({PG_TSQUERY_SQL}) AS t "
        f"WHERE items.search_vector @@ t.q AND items.deleted_at IS NULL{filters} "
        "UNION ALL SELECT 1 FROM items"
    ), has_kinds)
    plan = session.execute(stmt, params).scalar_one()
    try:
        plan = json.loads(plan) if isinstance(plan, str) else plan
        matches, rows = (float(branch["Plan Rows"]) for branch in plan[0]["Plan"]["Plans"])
    except (KeyError, IndexError, TypeError, ValueError):  # another plan shape: keep the bitmap
        return False
    walked = rows if matches <= params["cap"] else params["cap"] * rows / matches
    return walked * PG_WALK_ROW_COST < matches


def _pg_set_local(session: Session, settings: dict[str, str]) -> dict[str, str]:
    """SET LOCAL each setting (until the transaction ends); returns the values they had."""
    names = list(settings)
    old = ", ".join(f"current_setting(:n{i}) AS o{i}" for i in range(len(names)))
    new = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)} | {f"v{i}": settings[name] for i, name in enumerate(names)}
    # The CTE is read before the outer row's set_config calls run.
    row = session.execute(text(f"WITH old AS MATERIALIZED (SELECT {old}) SELECT old.*, {new} FROM old"), params).one()
    return dict(zip(names, row[: len(names)]))


# --- typeahead -----------------------------------------------------------------------------


