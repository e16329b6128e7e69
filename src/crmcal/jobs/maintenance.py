"""Periodic housekeeping run by the embedded server: emptying the trash, and moving
the horizon of recurring series on (each series about once a day)."""

from __future__ import annotations

import asyncio
import logging

from crmcal.crm.series import extend_all
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


async def extend_series_once(db: Database) -> int:
    """Make the occurrences of every series that the horizon has reached since."""
    total = 0
    while True:  # in batches of series, each in its own transaction
        async with db.write() as session:
            moved, made = await extend_all(session)
        total += made
        if not moved:
            break
    if total:
        log.info("made %d occurrences of recurring series", total)
    return total


async def run_forever(db: Database, every: float = PURGE_EVERY_SECONDS) -> None:
    """Purge now, then every ``every`` seconds, until cancelled; errors are logged, not fatal."""
    while True:
        try:
            await purge_once(db)
        except Exception:
            log.exception("emptying the trash failed; will retry")
        try:
            await extend_series_once(db)
        except Exception:
            log.exception("extending recurring series failed; will retry")
        await asyncio.sleep(every)
