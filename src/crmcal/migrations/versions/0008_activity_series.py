"""activity series: a recurring activity's rule and master, occurrences as activities

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MASTER = (
    "type", "subject", "location", "note", "busy", "visibility", "deal_id", "person_id",
    "organization_id", "reminder_minutes", "notify_participants", "timezone", "all_day",
    "start_at", "end_at", "start_date", "end_date", "owner_id",
)  # fmt: skip


def _foreign_keys() -> list[sa.ForeignKeyConstraint]:
    made = []
    for column, target, ondelete in (
        ("owner_id", "users.id", None), ("type", "activity_types.key", None),
        ("deal_id", "deals.id", "SET NULL"), ("person_id", "persons.id", "SET NULL"),
        ("organization_id", "organizations.id", "SET NULL"),
    ):  # fmt: skip
        table = target.split(".")[0]
        name = op.f(f"fk_activity_series_{column}_{table}")
        made.append(sa.ForeignKeyConstraint([column], [target], name=name, ondelete=ondelete))
    return made


def upgrade() -> None:
    op.create_table(
        "activity_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("rrule", sa.String(length=1000), nullable=False),
        sa.Column("rdates", sa.JSON(), nullable=False),
        sa.Column("exdates", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("start_at", sa.DateTime(), nullable=False),
        sa.Column("end_at", sa.DateTime(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("busy", sa.Boolean(), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("deal_id", sa.Integer(), nullable=True),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("reminder_minutes", sa.Integer(), nullable=True),
        sa.Column("notify_participants", sa.Boolean(), nullable=False),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("materialised_until", sa.DateTime(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        *_foreign_keys(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity_series")),
        sa.UniqueConstraint("uid", name=op.f("uq_activity_series_uid")),
    )  # fmt: skip
    op.create_index(op.f("ix_activity_series_owner_id"), "activity_series", ["owner_id"])
    op.create_index(
        op.f("ix_activity_series_materialised_until"), "activity_series", ["materialised_until"]
    )
    with op.batch_alter_table("activities") as batch:
        batch.add_column(sa.Column("original_start_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("overrides", sa.JSON(), nullable=True))
        batch.create_index("ix_activities_series", ["series_id", "original_start_at"])
    _series_of_recurring_activities()


def _series_of_recurring_activities() -> None:
    """An activity that had a rule becomes the first occurrence of a series of its own;
    the maintenance job makes the other occurrences."""
    bind = op.get_bind()
    activities = sa.table(
        "activities", sa.column("id"), sa.column("recurrence"), sa.column("series_id"),
        sa.column("original_start_at"), *(sa.column(name) for name in _MASTER),
    )  # fmt: skip
    participants = sa.table(
        "activity_participants", sa.column("activity_id"), sa.column("position"),
        sa.column("email"), sa.column("name"), sa.column("person_id"),
    )  # fmt: skip
    series = sa.table(
        "activity_series", sa.column("id"), sa.column("uid"), sa.column("rrule"),
        sa.column("rdates", sa.JSON), sa.column("exdates", sa.JSON),
        sa.column("participants", sa.JSON),
        sa.column("materialised_until"), sa.column("created_at"), sa.column("updated_at"),
        sa.column("deleted_at"), *(sa.column(name) for name in _MASTER),
    )  # fmt: skip
    rows = bind.execute(
        sa.select(activities).where(
            activities.c.recurrence.is_not(None), activities.c.series_id.is_(None)
        )
    ).fetchall()
    for row in rows:
        people = bind.execute(
            sa.select(participants.c.email, participants.c.name, participants.c.person_id)
            .where(participants.c.activity_id == row.id)
            .order_by(participants.c.position)
        ).fetchall()
        values = {name: getattr(row, name) for name in _MASTER}
        values.update(
            uid=uuid.uuid4().hex, rrule=row.recurrence, rdates=[], exdates=[],
            participants=[{"email": p.email, "name": p.name, "person_id": p.person_id}
                          for p in people],
            materialised_until=row.start_at, created_at=sa.func.now(),
            updated_at=sa.func.now(), deleted_at=None,
        )  # fmt: skip
        series_id = bind.execute(sa.insert(series).values(**values).returning(series.c.id))
        bind.execute(
            sa.update(activities)
            .where(activities.c.id == row.id)
            .values(series_id=series_id.scalar_one(), original_start_at=row.start_at)
        )


def downgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.drop_index("ix_activities_series")
        batch.drop_column("overrides")
        batch.drop_column("original_start_at")
    op.drop_index(op.f("ix_activity_series_materialised_until"), table_name="activity_series")
    op.drop_index(op.f("ix_activity_series_owner_id"), table_name="activity_series")
    op.drop_table("activity_series")
