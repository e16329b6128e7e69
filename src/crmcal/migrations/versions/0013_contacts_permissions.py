"""contacts.view and contacts.edit, granted to every existing user

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

users = sa.table("users", sa.column("id", sa.Integer), sa.column("permissions", sa.JSON))
ADDED = ["contacts.view", "contacts.edit"]


def _granted(value: Any) -> list[str]:  # the stored JSON list, or its text
    if isinstance(value, str):
        value = json.loads(value)
    return [str(p) for p in value or []]


def upgrade() -> None:
    # Everyone worked with contacts before these permissions existed: nobody loses it.
    bind = op.get_bind()
    for user_id, granted in bind.execute(sa.select(users.c.id, users.c.permissions)).all():
        have = _granted(granted)
        bind.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(permissions=have + [p for p in ADDED if p not in have])
        )


def downgrade() -> None:
    bind = op.get_bind()
    for user_id, granted in bind.execute(sa.select(users.c.id, users.c.permissions)).all():
        kept = [p for p in _granted(granted) if p not in ADDED]
        bind.execute(users.update().where(users.c.id == user_id).values(permissions=kept))
