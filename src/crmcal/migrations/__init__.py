"""Alembic migrations of the crmcal database, run by ``crmcal db upgrade`` or at start-up.

Alembic is imported only to migrate: importing it (with Mako and Pygments) costs
more than a whole no-change sync, and every command checks the schema's revision.
That check reads the ``alembic_version`` table and the revision files directly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect, text

from crmcal.db import sync_url

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
_REVISION = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*"([^"]*)"', re.MULTILINE)


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    # "%" would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The revision no other revision builds on (the migrations form one line)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (HERE / "versions").glob("*.py"):
        found = {m[1]: m[2] for m in _REVISION.finditer(path.read_text())}
        if "revision" in found:
            revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None
