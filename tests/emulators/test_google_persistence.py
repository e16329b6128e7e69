"""The Google emulator's data file: state, tokens and counters survive a restart."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from crmcal.emulators.google import GoogleState, create_app, persistence
from crmcal.emulators.google.persistence import DataFileError
from tests.emulators.google_client import Clock, Google, event_body, reason

EMAIL = "sam@example.test"
TEAM = "team@group.calendar.google.com"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return tmp_path / "google.json"


def test_the_state_survives_a_restart(data_file: Path, clock: Clock) -> None:
    with TestClient(create_app(GoogleState(clock=clock), data_file=data_file)) as first:
        google = Google(first, EMAIL)
        refresh = first.post("/_emulator/accounts", json={"email": EMAIL}).json()["refresh_token"]
        first.post(
            "/_emulator/calendars", json={"email": EMAIL, "id": TEAM, "access_role": "reader"}
        )
        kept, changed, gone = (google.insert(summary=s) for s in ("kept", "changed", "gone"))
        guests = [{"email": "guest@example.test"}]
        invited = google.ok(
            "POST", "/calendars/primary/events", "Event",
            params={"sendUpdates": "all"}, json=event_body(attendees=guests),
        )  # fmt: skip
        sync_token = google.list()["nextSyncToken"]
        etags_before = {e["etag"] for e in (kept, changed, gone, invited)}
        inserts_before = first.get("/_emulator/requests").json()["events.insert"]

        # The first emulator is still running: the second reads what each write saved,
        # not what a shutdown would.
        with TestClient(create_app(GoogleState(clock=clock), data_file=data_file)) as second:
            google.client = second  # with the access token issued before the restart
            assert google.list(syncToken=sync_token)["items"] == []
            assert google.ok("GET", f"/calendars/primary/events/{kept['id']}", "Event") == kept
            calendars = google.ok("GET", "/users/me/calendarList", "CalendarList")["items"]
            assert [(c["id"], c["accessRole"]) for c in calendars] == [
                (EMAIL, "owner"),
                (TEAM, "reader"),
            ]
            assert second.get("/_emulator/mail").json() == [
                {"event_id": invited["id"], "to": ["guest@example.test"]}
            ]

            patched = google.ok("PATCH", f"/calendars/primary/events/{changed['id']}", "Event",
                                json={"summary": "changed after the restart"})  # fmt: skip
            deleted = google.call("DELETE", f"/calendars/primary/events/{gone['id']}")
            assert deleted.status_code == 204
            added = google.insert(summary="added after the restart")
            changes = google.list(syncToken=sync_token)["items"]
            # Listed in creation order: the new event's serial continues the old ones.
            assert [e["id"] for e in changes] == [changed["id"], gone["id"], added["id"]]
            assert changes[1]["status"] == "cancelled"
            assert not {e["etag"] for e in changes} & etags_before
            assert len({patched["etag"], added["etag"], changes[1]["etag"]}) == 3
            requests = second.get("/_emulator/requests").json()
            assert requests["events.insert"] == inserts_before + 1

            refreshed = second.post("/token", data={"grant_type": "refresh_token",
                                                    "refresh_token": refresh})  # fmt: skip
            assert refreshed.status_code == 200, refreshed.text
            google.token = refreshed.json()["access_token"]
            assert len(google.list()["items"]) == 4  # all but the deleted one

            # A serial taken after the restart still lies above the old token's.
            second.post(f"/_emulator/calendars/{EMAIL}/expire-sync-tokens")
            stale = google.call(
                "GET", "/calendars/primary/events", params={"syncToken": sync_token}
            )
            assert reason(stale) == (410, "fullSyncRequired")
    if os.name == "posix":
        assert data_file.stat().st_mode & 0o777 == 0o600  # it holds tokens


def test_reads_since_the_last_write_are_kept_at_shutdown(data_file: Path) -> None:
    with TestClient(create_app(data_file=data_file)) as client:
        google = Google(client, EMAIL)
        google.list()
    with TestClient(create_app(data_file=data_file)) as client:
        assert client.get("/_emulator/requests").json() == {"events.list": 1}


def test_writes_are_saved_reads_and_server_errors_are_not(
    data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[Path] = []
    real_save = persistence.save

    def counted(state: GoogleState, path: Path) -> None:
        saves.append(path)
        real_save(state, path)

    with TestClient(create_app(data_file=data_file)) as client:
        google = Google(client, EMAIL)
        monkeypatch.setattr(persistence, "save", counted)
        google.list()
        assert saves == []
        google.insert()
        refused = google.call("POST", "/calendars/primary/events", json={})
        assert reason(refused) == (400, "required")
        assert len(saves) == 2  # a refused write may still have changed something (counts)
        client.post("/_emulator/faults", json={"status": 500})
        assert len(saves) == 3
        failed = google.call("POST", "/calendars/primary/events", json=event_body())
        assert (failed.status_code, len(saves)) == (500, 3)

        parts = "".join(
            "--b\r\nContent-Type: application/http\r\n\r\n"
            "POST /calendar/v3/calendars/primary/events HTTP/1.1\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(event_body(summary=s))}\r\n"
            for s in ("one", "two")
        )
        answer = client.post(
            "/batch/calendar/v3",
            content=(parts + "--b--\r\n").encode(),
            headers={"Authorization": f"Bearer {google.token}",
                     "Content-Type": "multipart/mixed; boundary=b"},
        )  # fmt: skip
        assert answer.text.count("HTTP/1.1 200") == 2
        assert len(saves) == 4  # once for the whole batch

        def failing(state: GoogleState, path: Path) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(persistence, "save", failing)
        refused = google.call("POST", "/calendars/primary/events", json=event_body())
        assert reason(refused) == (500, "backendError")
        assert "No space left on device" in refused.json()["error"]["message"]
        monkeypatch.setattr(persistence, "save", real_save)  # for the save at shutdown


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"\xff\xfe", b"[]", b'{"format": 1}', b'{"format": 99}',
     b'{"format": 1, "counters": {}, "accounts": [], "calendars": [], "access_tokens": {},'
     b' "refresh_tokens": {}, "mails": [], "requests": {}}'],
)  # fmt: skip
def test_a_corrupt_data_file_stops_start_up_and_is_left_alone(
    data_file: Path, content: bytes
) -> None:
    data_file.write_bytes(content)
    with pytest.raises(DataFileError, match=re.escape(str(data_file))):
        create_app(data_file=data_file)
    assert data_file.read_bytes() == content


def test_a_data_file_that_cannot_be_written_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory" / "google.json"
    with pytest.raises(DataFileError, match=r"cannot write .*no-such-directory"):
        create_app(data_file=missing)


def test_every_attribute_of_the_state_is_saved_or_left_out_on_purpose() -> None:
    assert not persistence.SAVED & persistence.NOT_SAVED
    assert set(vars(GoogleState())) == persistence.SAVED | persistence.NOT_SAVED


def test_a_saved_state_reads_back_equal(data_file: Path, clock: Clock) -> None:
    """Every saved attribute, field by field: a field added to the state's dataclasses
    that JSON does not carry back (a datetime, a tuple) fails here."""
    state = GoogleState(clock=clock)
    state.create_account(EMAIL, "client-1")
    team = state.add_calendar(EMAIL, TEAM, "Team", role="writer")
    state.insert(team, event_body(attendees=[{"email": "guest@example.test"}]))
    state.expire_sync_tokens(team)
    state.count("events.insert")
    state.mails.append({"event_id": "x", "to": ["guest@example.test"]})
    persistence.save(state, data_file)
    again = GoogleState(clock=clock)
    persistence.restore(again, data_file)
    for attribute in persistence.SAVED:
        if not attribute.startswith("_"):  # the counters are compared below
            assert getattr(again, attribute) == getattr(state, attribute), attribute
    assert persistence.snapshot(again)["counters"] == persistence.snapshot(state)["counters"]
