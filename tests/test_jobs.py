"""Background jobs of the embedded server: the trash is emptied without anyone asking."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from crmcal.config import Settings
from crmcal.crm.tables import Activity
from crmcal.db import Database
from crmcal.jobs import maintenance
from crmcal.web.app import create_app
from tests.conftest import Api, run


def _age_trash(db_url: str, activity_id: int, days: int) -> None:
    async def age() -> None:
        db = Database(db_url)
        try:
            async with db.write() as session:
                when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
                await session.execute(
                    update(Activity).where(Activity.id == activity_id).values(deleted_at=when)
                )
        finally:
            await db.dispose()

    run(age())


def test_server_purges_trash_older_than_30_days_on_its_own(
    alice: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for subject in ("old", "recent"):
        created = alice.post("/api/v1/activities", json={
            "type": "call", "subject": subject, "start": "2026-12-01T10:00:00Z"})  # fmt: skip
        ids.append(created.json()["id"])
        assert alice.delete(f"/api/v1/activities/{ids[-1]}").status_code == 200
    _age_trash(db_url, ids[0], days=31)
    _age_trash(db_url, ids[1], days=29)

    # The server's first purge, run as it starts, is waited for itself, however long a
    # busy machine takes to get to it.
    purged = threading.Event()
    purge_once = maintenance.purge_once

    async def noted(db: Database) -> int:
        try:
            return await purge_once(db)
        finally:
            purged.set()

    monkeypatch.setattr(maintenance, "purge_once", noted)
    with TestClient(create_app(Settings(database_url=db_url))) as client:
        headers = {"Authorization": f"Bearer {alice.token}"}
        assert purged.wait(600), "the server never purged"  # a hang guard, not a bound
        trash = client.get("/api/v1/activities?deleted=true", headers=headers).json()
        assert [a["subject"] for a in trash["items"]] == ["recent"]
        assert client.get(f"/api/v1/activities/{ids[0]}", headers=headers).status_code == 404
