"""series organizer: the organizer of someone else's series, on the series itself

Occurrences the horizon makes later take it, so they follow the invitation rules as
the first ones do. Existing series take it from their occurrences.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("activity_series") as batch:
        batch.add_column(sa.Column("organizer", sa.String(length=320), nullable=True))
    op.execute(
        "UPDATE activity_series SET organizer = ("
        " SELECT MIN(activities.organizer) FROM activities"
        " WHERE activities.series_id = activity_series.id"
        " AND activities.organizer IS NOT NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("activity_series") as batch:
        batch.drop_column("organizer")
