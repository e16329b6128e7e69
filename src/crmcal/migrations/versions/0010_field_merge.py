"""field-level merge: each link keeps per-field digests; conflicts keep the result

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_links") as batch:
        batch.add_column(sa.Column("field_hashes", sa.JSON(), nullable=True))
    with op.batch_alter_table("sync_conflicts") as batch:
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_conflicts") as batch:
        batch.drop_column("result")
    with op.batch_alter_table("sync_links") as batch:
        batch.drop_column("field_hashes")
