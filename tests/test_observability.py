"""Metrics and logs of syncs: counts, durations and requests on /metrics; JSON log lines
that name the connection and never a credential."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmcal import logs
from crmcal.config import Settings
from crmcal.sync import failures, runner
from crmcal.sync.report import SyncReport
from crmcal.web.app import create_app
from tests.caldav_servers import CalDAVServer
from tests.conftest import Api, make_user, run
from tests.providers.harness import CalDAVHarness

V1 = "/api/v1"


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Logs as ``crmcal worker`` writes them with CRMCAL_LOG_FORMAT=json (set up once the
    database is migrated: Alembic configures logging its own way)."""
    root, own = logging.getLogger(), logging.getLogger(logs.OWN_LOGGER)
    handlers, level, own_level = root.handlers, root.level, own.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level
        own.setLevel(own_level)


def test_a_sync_shows_on_metrics_and_in_json_logs_without_secrets(
    tmp_path: object, radicale: CalDAVServer, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path}/crmcal.db"
    from crmcal import migrations

    migrations.upgrade(db_url)
    logs.setup("json")
    settings = Settings(database_url=db_url, secret_key="k", allow_private_networks=True)
    calendar = CalDAVHarness(radicale)
    try:
        with TestClient(create_app(settings, background_jobs=False)) as client:
            user_id, token = make_user(db_url, email="obs@crm.test", name="Obs")
            sam = Api(client, token, user_id)
            body = {"provider": "caldav", "url": radicale.url, "username": radicale.username,
                    "password": radicale.password, "calendar_id": calendar.calendar_id}  # fmt: skip
            conn = sam.post(f"{V1}/connections", json=body).json()
            sam.post(f"{V1}/activities", json={"type": "call", "subject": "Seen",
                                               "start": "2026-12-20T10:00:00Z"})  # fmt: skip
            assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
            wrong = {**body, "password": "not-the-password"}
            sam.post(f"{V1}/connections/{conn['id']}/stop")
            sam.post(
                f"{V1}/connections/{conn['id']}/reconnect", json={"password": wrong["password"]}
            )
            assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 409
            scraped = client.get("/metrics").text
    finally:
        run(calendar.close())
    assert 'crmcal_syncs_total{outcome="ok",provider="caldav"}' in scraped
    assert 'crmcal_sync_errors_total{provider="caldav",reason="credentials"}' in scraped
    assert 'crmcal_sync_duration_seconds_count{provider="caldav"}' in scraped
    assert 'crmcal_provider_requests_total{service="CalDAV",status="2xx"}' in scraped
    assert 'crmcal_provider_requests_total{service="CalDAV",status="4xx"}' in scraped

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    synced = [line for line in lines if line["message"].startswith(("synced in", "sync failed"))]
    assert len(synced) == 2
    assert {line["connection_id"] for line in synced} == {conn["id"]}
    assert all(line["level"] and line["process"] for line in lines)
    text = json.dumps(lines)
    assert radicale.password not in text
    assert "not-the-password" not in text


def test_credentials_are_scrubbed_from_log_messages() -> None:
    said = logs.scrub(
        'Authorization: Bearer ya29.secret refresh_token=1//abc&x=1 {"password": "pw"} code=4/xyz'
    )
    assert "ya29.secret" not in said
    assert "1//abc" not in said
    assert '"pw"' not in said
    assert "4/xyz" not in said
    assert "x=1" in said


def test_the_queue_logs_warnings_only_unless_asked(
    json_logs: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """procrastinate's two lines a job (started, ended) are off by default: a worker's
    no-change syncs spent their CPU formatting them; CRMCAL_QUEUE_LOG_LEVEL brings them back."""
    queue_log = logging.getLogger("procrastinate.worker")
    try:
        monkeypatch.delenv("CRMCAL_QUEUE_LOG_LEVEL", raising=False)
        logs.setup("json")
        queue_log.info("Starting job crmcal.sync[1](connection_id=1)")
        queue_log.warning("Job crmcal.sync[2](connection_id=2) failed")
        logging.getLogger("crmcal.sync.runner").info("synced in 0.01 s: {}")
        quiet = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
        assert quiet == ["Job crmcal.sync[2](connection_id=2) failed", "synced in 0.01 s: {}"]

        monkeypatch.setenv("CRMCAL_QUEUE_LOG_LEVEL", "info")
        logs.setup("json")
        queue_log.info("Starting job crmcal.sync[3](connection_id=3)")
        asked = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
        assert asked == ["Starting job crmcal.sync[3](connection_id=3)"]

        monkeypatch.setenv("CRMCAL_QUEUE_LOG_LEVEL", "chatty")
        with pytest.raises(ValueError, match="CRMCAL_QUEUE_LOG_LEVEL"):
            logs.setup("json")
    finally:
        logging.getLogger(logs.QUEUE_LOGGER).setLevel(logging.NOTSET)


def test_a_sync_that_found_nothing_to_do_logs_its_line_at_debug(
    json_logs: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most of a worker's syncs find nothing to do: their line is written only when asked
    (CRMCAL_LOG_LEVEL=debug); a sync that changed something, met a problem or failed
    writes its line at info."""
    quiet, changed, troubled = SyncReport(), SyncReport(updated=2), SyncReport()
    troubled.problem("event-1", "unreadable")
    failed = failures.Ending(error="the server refused")

    def lines() -> list[tuple[str, str]]:
        for report in (quiet, changed, troubled):
            runner._record("google", 0.01, report, failures.WENT_THROUGH)
        runner._record("google", 0.01, None, failed)
        found = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        return [(line["level"], line["message"]) for line in found]

    monkeypatch.delenv("CRMCAL_LOG_LEVEL", raising=False)
    logs.setup("json")
    assert [level for level, _ in lines()] == ["info", "info", "info"]

    monkeypatch.setenv("CRMCAL_LOG_LEVEL", "debug")
    logs.setup("json")
    said = lines()
    assert said[0][0] == "debug"
    assert said[0][1].startswith("synced in")
    assert [level for level, _ in said[1:]] == ["info", "info", "info"]

    monkeypatch.setenv("CRMCAL_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="CRMCAL_LOG_LEVEL"):
        logs.setup("json")
