"""Periodic housekeeping run by the embedded server: emptying the trash."""

from __future__ import annotations

import asyncio
import logging

from crmcal.crm.trash import purge_trash
from crmcal.db import Database

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 3600


async def purge_once(db: Database) -> int:
    async with db.write() as session:
        purged = await purge_trash(session)
    if purged:
        log.info("purged %d activities from the trash", purged)
    return purged


async def run_forever(db: Database, every: float = PURGE_EVERY_SECONDS) -> None:
    """Purge now, then every ``every`` seconds, until cancelled; errors are logged, not fatal."""
    while True:
        try:
            await purge_once(db)
        except Exception:
            log.exception("emptying the trash failed; will retry")
        await asyncio.sleep(every)
