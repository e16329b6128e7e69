"""push channels: a connection's watch channel for provider notifications

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("push_channel_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("push_resource_id", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("push_token", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("push_expires_at", sa.DateTime(), nullable=True))
        batch.create_index(
            batch.f("ix_connections_push_channel_id"), ["push_channel_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_index(batch.f("ix_connections_push_channel_id"))
        batch.drop_column("push_expires_at")
        batch.drop_column("push_token")
        batch.drop_column("push_resource_id")
        batch.drop_column("push_channel_id")
