"""SQL schema (SQLAlchemy 2 declarative). Alembic migrations in ``migrations/`` must match it.

Timestamps are stored as naive UTC (``utcnow()``): SQLite has no time zones, and one convention
on both databases keeps comparisons simple.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ITEM_KINDS = ("product", "article", "image")

# Stable constraint names so migrations can address them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """Current time as naive UTC, the storage convention."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    """A catalog entry: product, article or image."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("kind IN ('product', 'article', 'image')", name="kind"),
        Index("ix_items_updated_at", "updated_at"),
        Index("ix_items_category", "category"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text, default="")
    # The image store key (sha256:<hex>, see service/images.py). Anything else is a legacy path or
    # URL from before the store: never read or served (`recsys images migrate` converts it).
    image_location: Mapped[str | None] = mapped_column(String(2048))
    category: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # sha256 of the content fields: unchanged imports are skipped and vectors are cached by it.
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class User(Base):
    """Someone whose behaviour is recorded; created on first event."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# Longest search query an event keeps (the column's size; longer ones are refused at the edge).
MAX_EVENT_QUERY_CHARS = 512


class Event(Base):
    """One interaction of a user with an item."""

    __tablename__ = "events"
    __table_args__ = (
        # "A user's recent history" (every column it reads, so the index alone answers it:
        # migration 0007) and "an item's recent events".
        Index("ix_events_user_history", "user_id", "occurred_at", "id", "item_id", "type", "value"),
        Index("ix_events_item_id_occurred_at", "item_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Idempotency key: given by the client, or derived from the event's content when absent.
    client_event_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    # view/click/cart/purchase/rating or a custom type from settings (validated at the edge).
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # The recommendation that led to this event, for attribution.
    recommendation_id: Mapped[str | None] = mapped_column(String(64))
    # The search query that led to this event (a click on a search result): query -> item pairs.
    query: Mapped[str | None] = mapped_column(String(MAX_EVENT_QUERY_CHARS))


class IndexVersion(Base):
    """One built index version (a folder of artifacts) and whether it is the published one."""

    __tablename__ = "index_versions"
    __table_args__ = (
        CheckConstraint("status IN ('building', 'ready', 'published', 'failed', 'deleted')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(2048))
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    message: Mapped[str | None] = mapped_column(Text)


class FreshVector(Base):
    """A vector embedded on write, newer than the published index (the service's delta).

    ``vector`` is NULL for a tombstone (item deleted, or it lost its image). Rows older than
    the published version's read time are already in the index and are ignored.
    """

    __tablename__ = "fresh_vectors"
    __table_args__ = (Index("ix_fresh_vectors_written_at", "written_at"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    space: Mapped[str] = mapped_column(String(16), primary_key=True)
    encoder_revision: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    written_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SearchQuery(Base):
    """A recent search-bar text (the rebuild's recall probes; service.store.query_log): no user,
    no time of day, only how often and on which date it was last asked."""

    __tablename__ = "search_queries"
    __table_args__ = (Index("ix_search_queries_last_seen", "last_seen"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the text
    text: Mapped[str] = mapped_column(String(512))
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_seen: Mapped[dt.date] = mapped_column(Date)


EPOCH = dt.datetime(1970, 1, 1)


def to_seconds(t: dt.datetime) -> float:
    """Naive-UTC datetime -> Unix seconds (the storage convention)."""
    return (t - EPOCH).total_seconds()
