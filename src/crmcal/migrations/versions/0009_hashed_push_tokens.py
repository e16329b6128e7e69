"""push channel secrets stored as hashes

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

connections = sa.table(
    "connections", sa.column("id", sa.Integer), sa.column("push_token", sa.String)
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(connections.c.id, connections.c.push_token).where(
            connections.c.push_token.is_not(None)
        )
    ).all()
    for conn_id, token in rows:
        if token.startswith("sha256:"):
            continue
        digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        bind.execute(
            connections.update().where(connections.c.id == conn_id).values(push_token=digest)
        )


def downgrade() -> None:
    # A hash cannot be turned back into the secret: the channels are renewed instead.
    op.execute(connections.update().values(push_token=None))
