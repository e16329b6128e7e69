"""sync engine: connections, links, conflicts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 20:38:23.206811
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("account", sa.String(length=500), nullable=False),
        sa.Column("username", sa.String(length=320), nullable=True),
        sa.Column("credentials", sa.LargeBinary(), nullable=False),
        sa.Column("calendar_id", sa.String(length=1000), nullable=False),
        sa.Column("calendar_name", sa.String(length=500), nullable=False),
        sa.Column("sync_type", sa.String(length=20), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("connected_at", sa.DateTime(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column(
            "crm_cursor", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("remote_cursor", sa.Text(), nullable=True),
        sa.Column("applied_options", sa.String(length=64), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_sync_at", sa.DateTime(), nullable=True),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_connections_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
    )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.create_index("ix_connections_user_state", ["user_id", "state"], unique=False)

    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.Integer(), nullable=True),
        sa.Column("remote_id", sa.String(length=1000), nullable=True),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("winner", sa.String(length=16), nullable=False),
        sa.Column("crm_version", sa.JSON(), nullable=True),
        sa.Column("calendar_version", sa.JSON(), nullable=True),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_sync_conflicts_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_conflicts")),
    )
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_conflicts_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "sync_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("activity_id", sa.Integer(), nullable=False),
        sa.Column("remote_id", sa.String(length=1000), nullable=False),
        sa.Column("remote_uid", sa.String(length=1000), nullable=True),
        sa.Column("remote_etag", sa.String(length=500), nullable=True),
        sa.Column("remote_hash", sa.String(length=64), nullable=True),
        sa.Column("crm_hash", sa.String(length=64), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("last_synced_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["activity_id"],
            ["activities.id"],
            name=op.f("fk_sync_links_activity_id_activities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_sync_links_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_links")),
    )
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sync_links_connection_activity", ["connection_id", "activity_id"], unique=True
        )
        batch_op.create_index(
            "ix_sync_links_connection_remote", ["connection_id", "remote_id"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_links", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_links_connection_remote")
        batch_op.drop_index("ix_sync_links_connection_activity")

    op.drop_table("sync_links")
    with op.batch_alter_table("sync_conflicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_conflicts_connection_id"))

    op.drop_table("sync_conflicts")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index("ix_connections_user_state")

    op.drop_table("connections")
