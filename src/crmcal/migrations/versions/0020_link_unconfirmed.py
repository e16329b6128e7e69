"""link unconfirmed: an event crmcal made that no listing or read has confirmed yet

The cursor a sync keeps is read before its own writes, and a listing from it may
leave out an event made and deleted since (RFC 6578 allows it): the next sync reads
the events crmcal made that its listing does not name. A partial index finds a
connection's few such links without reading the others.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_links") as batch:
        batch.add_column(
            sa.Column("unconfirmed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_index(
        "ix_sync_links_unconfirmed",
        "sync_links",
        ["connection_id"],
        unique=False,
        sqlite_where=sa.text("unconfirmed = 1"),
        postgresql_where=sa.text("unconfirmed"),
    )


def downgrade() -> None:
    op.drop_index("ix_sync_links_unconfirmed", table_name="sync_links")
    with op.batch_alter_table("sync_links") as batch:
        batch.drop_column("unconfirmed")
