"""link refused: the CRM version of an item the calendar refused for good

A write the calendar refuses for good (a 400, a 403 on that event, a CalDAV
precondition) is remembered on the link by the digest of the version refused, so
that the same version is not sent again at each full look at the CRM.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_links") as batch:
        batch.add_column(sa.Column("refused_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_links") as batch:
        batch.drop_column("refused_hash")
