"""A write the SQLite database cannot take because another connection holds its write
lock past the busy timeout is a documented 503 with ``Retry-After``, not a 500: the
request was fine and can be sent again as it was."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmcal import db as crmcal_db
from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.conftest import make_user


def test_a_write_the_locked_database_cannot_take_is_a_503_with_retry_after(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crmcal.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    _, token = make_user(url, email="admin@crm.test", name="Admin", is_admin=True)
    # The server waits this long for the lock (30 s in production) before giving up.
    monkeypatch.setattr(crmcal_db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(Settings(database_url=url), background_jobs=False)
    with TestClient(app) as client:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock
            r = client.post("/api/v1/persons", json={"name": "Ann"}, headers=auth)
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            assert "busy" in r.json()["detail"]
            assert r.json().get("errors", []) == []
        finally:
            holder.rollback()
            holder.close()
        # Nothing was stored, and the same request, sent again, is taken.
        assert client.get("/api/v1/persons", headers=auth).json()["items"] == []
        r = client.post("/api/v1/persons", json={"name": "Ann"}, headers=auth)
        assert r.status_code == 201, r.text

        doc = client.get("/openapi.json").json()
    for path_, item in doc["paths"].items():
        if not path_.startswith("/api/v1"):
            continue
        for method, operation in item.items():
            busy = operation["responses"].get("503")
            assert busy is not None, (method, path_)
            assert busy["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            assert "Retry-After" in busy["headers"], (method, path_)
