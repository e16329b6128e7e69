"""sync options: participants' answers, and whether to send invitations

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.add_column(
            sa.Column(
                "notify_participants", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    with op.batch_alter_table("activity_participants") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), server_default="needs_action", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("activity_participants") as batch:
        batch.drop_column("status")
    with op.batch_alter_table("activities") as batch:
        batch.drop_column("notify_participants")
