"""A bounded log of recent search-bar texts, the rebuild's recall probes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_queries",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("text", sa.String(length=512), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_search_queries")),
    )
    op.create_index("ix_search_queries_last_seen", "search_queries", ["last_seen"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_search_queries_last_seen", table_name="search_queries")
    op.drop_table("search_queries")
