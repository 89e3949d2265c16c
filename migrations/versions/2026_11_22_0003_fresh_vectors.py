"""Fresh vectors: items embedded on write, searchable before the next rebuild.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 23:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fresh_vectors",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("space", sa.String(length=16), nullable=False),
        sa.Column("encoder_revision", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("written_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_fresh_vectors_item_id_items"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "space", name=op.f("pk_fresh_vectors")),
    )
    with op.batch_alter_table("fresh_vectors", schema=None) as batch_op:
        batch_op.create_index("ix_fresh_vectors_written_at", ["written_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("fresh_vectors", schema=None) as batch_op:
        batch_op.drop_index("ix_fresh_vectors_written_at")
    op.drop_table("fresh_vectors")
