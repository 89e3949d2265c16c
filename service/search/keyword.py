"""Keyword search over items in the database (typeahead lives in :mod:`service.search.suggest`).

:func:`keyword_search` runs in the database: FTS5 with ``bm25()`` on SQLite, the generated
``items.search_vector`` with ``ts_rank_cd`` on PostgreSQL (both made by migration 0002). User
text never reaches either query language as syntax: on SQLite every word is quoted, on
PostgreSQL ``plainto_tsquery`` reads the text as plain words. All words must match (AND), and
the last one also matches as a prefix while the user is still typing it (a prefix of 2-3 letters
ranks only the newest ``PREFIX_CANDIDATES`` matches). Scores are "higher is better" but are not
comparable across backends.

"""

from __future__ import annotations

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
        # plainto_tsquery parses the text with the documents' parser and ignores any operator
        # syntax in it; it cannot express a prefix, so ':*' is appended to its last lexeme.
        query_sql = ("SELECT CASE WHEN :prefix AND numnode(p) > 0 THEN (p::text || ':*')::tsquery ELSE p END AS q "
                     "FROM plainto_tsquery('simple', items_fts_fold(:query)) AS p")
        rank = f"ts_rank_cd('{PG_RANK_WEIGHTS}', items.search_vector, t.q, {PG_RANK_NORMALIZATION})"
        if capped:  # the candidates by id first, then the rank of those only (ts_rank_cd is the cost)
            stmt = text(
                f"WITH t AS ({query_sql}), cand AS (SELECT items.id FROM items, t "
                f"WHERE items.search_vector @@ t.q AND items.deleted_at IS NULL{filters} "
                "ORDER BY items.id DESC LIMIT :cap) "
                f"SELECT items.id, {rank} AS score FROM cand JOIN items ON items.id = cand.id CROSS JOIN t "
                "ORDER BY score DESC, items.id LIMIT :limit"
            )
        else:
            stmt = text(
                f"SELECT items.id, {rank} AS score FROM items CROSS JOIN ({query_sql}) AS t "
                f"WHERE items.search_vector @@ t.q AND items.deleted_at IS NULL{filters} "
                "ORDER BY score DESC, items.id LIMIT :limit"
            )
        params.update(query=text_, prefix=prefix)
        sign = 1.0
    else:
        raise KeywordSearchUnavailable(f"no keyword search for database dialect {dialect!r}")
    if kinds is not None:
        stmt = stmt.bindparams(bindparam("kinds", expanding=True))
    return [(int(item_id), sign * float(score)) for item_id, score in session.execute(stmt, params)]


# --- typeahead -----------------------------------------------------------------------------


