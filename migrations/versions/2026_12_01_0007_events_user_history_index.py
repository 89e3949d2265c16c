"""A user's history read from the index alone: (user_id, occurred_at, id, item_id, type, value).

Every recommendation for a user reads their newest ``history_limit`` events, and the items of
all their events of the excluded types. Through ``ix_events_user_id_occurred_at`` each of those
rows was a lookup into ``events``, whose rows for one user lie scattered over the whole table:
3.3 ms for 500 events and 1.7 ms for the consumed items at 10M events (``bench_recommend``'s
profile). This index holds every column those two queries read, in the history's order
(``id`` breaks ties in time), so both are one range of the index; it replaces the old one,
which is its prefix. Building it on a big ``events`` table takes a while and, on PostgreSQL,
blocks writes to the table meanwhile (plan that on a large deployment, or create it first with
``CREATE INDEX CONCURRENTLY`` under the same name).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:30:00
"""
from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HISTORY_COLUMNS = ["user_id", "occurred_at", "id", "item_id", "type", "value"]


def upgrade() -> None:
    op.create_index("ix_events_user_history", "events", HISTORY_COLUMNS, unique=False)
    op.drop_index("ix_events_user_id_occurred_at", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_user_id_occurred_at", "events", ["user_id", "occurred_at"], unique=False)
    op.drop_index("ix_events_user_history", table_name="events")
