"""due connections: an index on a connection's state and next sync time

A poll tick finds the connections whose time came by it, instead of reading every
connection's row each tick.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.create_index(
            "ix_connections_state_next_sync", ["state", "next_sync_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_index("ix_connections_state_next_sync")
