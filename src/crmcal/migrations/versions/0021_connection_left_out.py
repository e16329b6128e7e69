"""connection left_out: how many problems and refusals the status had no room for

A connection keeps its last 200 problems and 2000 refusals; what a sync finds beyond
those is dropped. The count of what was dropped is kept (null: none), so that the
status says its list is not all there is.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites no row on either backend.
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("left_out", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("left_out")
