"""Keyword search over items: FTS5 on SQLite, a weighted tsvector on PostgreSQL.

SQLite: ``items_fts`` is an FTS5 external-content table over ``items`` (title, text, category,
tags), kept in sync by three triggers. Only live rows are indexed: the triggers skip rows with
``deleted_at`` set, so a soft delete removes the row from the index and an undelete puts it
back (queries still filter ``deleted_at IS NULL`` as a second guard). The ``tags`` column of
the index holds the tags as space-separated words, not the JSON stored in ``items.tags``;
because of that difference, and because deleted rows are left out, the FTS5 ``'rebuild'``
command must not be used (it would index the JSON and deleted rows): run ``'delete-all'`` and
the backfill below instead.

Caution: a later batch-mode migration that rebuilds ``items`` on SQLite (move and copy) drops
these triggers with the old table; such a migration must create them again.

PostgreSQL (13 or later, UTF8 database): a stored generated column ``items.search_vector``
(title weight A, category and tags B, text D; the ``simple`` configuration, so prefixes work on
unstemmed words) with a GIN index. ``items_fts_fold(text)`` strips accents; queries go through
the same function, so both sides fold alike. Adding the column rewrites ``items`` under an
exclusive lock: plan that on big tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:30:00
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


# The tags JSON array as space-separated words; a malformed value indexes no tags rather than
# failing the write of the item itself.
def _tags_words(row: str) -> str:
    tags = f"{row}.tags"
    return f"(SELECT group_concat(value, ' ') FROM json_each(CASE WHEN json_valid({tags}) THEN {tags} ELSE '[]' END))"


_FTS_COLUMNS = "rowid, title, text, category, tags"


def _fts_values(row: str) -> str:
    return f"{row}.id, {row}.title, {row}.text, {row}.category, {_tags_words(row)}"


def _upgrade_sqlite() -> None:
    # prefix='2 3': typeahead queries end in a short prefix; without prefix indexes FTS5 scans
    # every term that starts with it.
    op.execute(
        "CREATE VIRTUAL TABLE items_fts USING fts5("
        "title, text, category, tags, "
        "content='items', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2', prefix='2 3')"
    )
    # External content: a 'delete' must pass exactly the values that were indexed, which is
    # why every trigger derives them with the same expressions.
    op.execute(
        f"""CREATE TRIGGER items_fts_ai AFTER INSERT ON items WHEN new.deleted_at IS NULL BEGIN
            INSERT INTO items_fts({_FTS_COLUMNS}) VALUES ({_fts_values('new')});
        END"""
    )
    op.execute(
        f"""CREATE TRIGGER items_fts_ad AFTER DELETE ON items WHEN old.deleted_at IS NULL BEGIN
            INSERT INTO items_fts(items_fts, {_FTS_COLUMNS}) VALUES ('delete', {_fts_values('old')});
        END"""
    )
    # Only the indexed columns (and deleted_at) matter: other updates leave the index alone.
    op.execute(
        f"""CREATE TRIGGER items_fts_au AFTER UPDATE OF title, text, category, tags, deleted_at ON items BEGIN
            INSERT INTO items_fts(items_fts, {_FTS_COLUMNS})
                SELECT 'delete', {_fts_values('old')} WHERE old.deleted_at IS NULL;
            INSERT INTO items_fts({_FTS_COLUMNS})
                SELECT {_fts_values('new')} WHERE new.deleted_at IS NULL;
        END"""
    )
    op.execute(
        f"INSERT INTO items_fts({_FTS_COLUMNS}) SELECT {_fts_values('items')} FROM items WHERE deleted_at IS NULL"
    )


def _upgrade_postgresql() -> None:
    # Accent folding as unaccent would do it, without needing that extension: decompose, then
    # drop the combining diacritical marks. IMMUTABLE is true (normalize and regexp_replace
    # are) and required in a generated column. normalize() needs PostgreSQL 13+ and UTF8.
    op.execute(
        "CREATE FUNCTION items_fts_fold(value text) RETURNS text "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        "AS $fold$ SELECT regexp_replace(normalize(value, NFD), '[\\u0300-\\u036f]', '', 'g') $fold$"
    )
    # tags::jsonb::text decodes the \uXXXX escapes the JSON serializer writes for non-ASCII;
    # the parser then treats the brackets, quotes and commas as separators.
    op.execute(
        """ALTER TABLE items ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple'::regconfig, items_fts_fold(title)), 'A')
            || setweight(to_tsvector('simple'::regconfig, items_fts_fold(
                   coalesce(category, '') || ' ' || coalesce(tags::jsonb::text, ''))), 'B')
            || setweight(to_tsvector('simple'::regconfig, items_fts_fold(text)), 'D')
        ) STORED"""
    )
    op.execute("CREATE INDEX ix_items_search_vector ON items USING gin (search_vector)")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _upgrade_sqlite()
    elif dialect == "postgresql":
        _upgrade_postgresql()
    else:
        raise NotImplementedError(f"keyword search has no migration for dialect {dialect!r}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("items_fts_au", "items_fts_ad", "items_fts_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        # Dropping the virtual table drops its shadow tables too.
        op.execute("DROP TABLE IF EXISTS items_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_search_vector")
        op.execute("ALTER TABLE items DROP COLUMN IF EXISTS search_vector")
        op.execute("DROP FUNCTION IF EXISTS items_fts_fold(text)")
    else:
        raise NotImplementedError(f"keyword search has no migration for dialect {dialect!r}")
