"""PostgreSQL: the newest matches of every 2-3 letter prefix, pre-ranked, for typeahead queries.

A search-bar query whose only word is a 2-3 letter prefix ("wa" while typing) ranks the newest
``PREFIX_CANDIDATES`` items with a lexeme starting with it (``service.search.keyword``). Found
through the GIN index, a prefix of a few thousand matches cost 10-60 ms at 100k items (every
match's heap row is read to keep the newest); the primary-key walk is cheap only when most rows
match. ``items_fts_prefixes`` holds, per live item and per distinct 2-3 letter prefix of its
``search_vector`` lexemes, the item's ``ts_rank_cd`` for that prefix query, so such a query is
one backward index-only scan of ``(prefix, item_id)`` and a sort of the kept scores, with the
same results and scores as ranking at query time.

A trigger on ``items`` keeps it in step (insert, update of an indexed column or of
``deleted_at``, delete); the rank weights and normalization must equal
``service.search.keyword.PG_RANK_WEIGHTS`` / ``PG_RANK_NORMALIZATION``. Cost: one row per
(item, prefix), about 58 per item of the benchmark catalog (about 4.8 KB per item with the index)
and ~0.5 ms per item written. SQLite needs none of it: FTS5's own prefix index (``prefix='2 3'``,
migration 0002) keeps these queries under the target.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:00:00
"""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Must match service.search.keyword (PG_RANK_WEIGHTS, PG_RANK_NORMALIZATION): the stored score is
# what the query would compute.
_RANK_WEIGHTS = "{0.1, 0.2, 0.4, 1.0}"
_RANK_NORMALIZATION = 1


# 'prefix':* in tsquery syntax, whatever the prefix holds: inside the quotes a backslash and a
# quote are escaped (a lexeme such as a file path can hold either; the write must never fail).
_PREFIX_TSQUERY = r"'''' || replace(replace(k.prefix, '\', '\\'), '''', '''''') || ''':*'"


def _rows_sql(item: str) -> str:
    """(prefix, item id, score) of one item's row variable or table alias ``item``."""
    return (
        f"SELECT k.prefix, {item}.id, "
        f"ts_rank_cd('{_RANK_WEIGHTS}', {item}.search_vector, ({_PREFIX_TSQUERY})::tsquery, {_RANK_NORMALIZATION}) "
        f"FROM (SELECT DISTINCT left(u.lexeme, n) AS prefix FROM unnest({item}.search_vector) AS u, "
        "generate_series(2, 3) AS n WHERE char_length(u.lexeme) >= n) AS k"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # INCLUDE (score): the typeahead query reads the index only. No foreign key: the trigger
    # removes an item's rows, and a key check per row would double the write cost.
    op.execute(
        "CREATE TABLE items_fts_prefixes (prefix text NOT NULL, item_id integer NOT NULL, score real NOT NULL, "
        "CONSTRAINT pk_items_fts_prefixes PRIMARY KEY (prefix, item_id) INCLUDE (score))"
    )
    op.execute(
        f"""CREATE FUNCTION items_fts_prefixes_sync() RETURNS trigger LANGUAGE plpgsql AS $sync$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                DELETE FROM items_fts_prefixes WHERE item_id = OLD.id;
            END IF;
            IF TG_OP <> 'DELETE' AND NEW.deleted_at IS NULL THEN
                INSERT INTO items_fts_prefixes (prefix, item_id, score) {_rows_sql('NEW')};
            END IF;
            RETURN NULL;
        END $sync$"""
    )
    # AFTER: NEW.search_vector (a stored generated column) is computed by then.
    op.execute(
        "CREATE TRIGGER items_fts_prefixes_sync AFTER INSERT OR DELETE OR UPDATE OF title, text, category, tags, "
        "deleted_at ON items FOR EACH ROW EXECUTE FUNCTION items_fts_prefixes_sync()"
    )
    op.execute(f"INSERT INTO items_fts_prefixes (prefix, item_id, score) "
               f"SELECT r.* FROM items CROSS JOIN LATERAL ({_rows_sql('items')}) AS r WHERE items.deleted_at IS NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS items_fts_prefixes_sync ON items")
    op.execute("DROP FUNCTION IF EXISTS items_fts_prefixes_sync()")
    op.execute("DROP TABLE IF EXISTS items_fts_prefixes")
