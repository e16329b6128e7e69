"""person explicit: persons made from attendees are listed only where a link is seen

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing persons stay listed to everyone, as they were.
    with op.batch_alter_table("persons") as batch:
        batch.add_column(
            sa.Column("explicit", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("explicit")
