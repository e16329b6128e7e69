"""The ``latest`` conflict policy on a series' occurrence compares the occurrence's own
times: the CRM's edit of it and the calendar's (Google's exception's ``updated``), not
the time of the series' master, which crmcal's own write of the master sets.

Times are set, not waited for: the Google emulator's clock says when each write to it
happened, and the CRM's edit times are read back from the API.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from crmcal.providers import google_events
from crmcal.providers.google_series import Series
from crmcal.tls import tls
from tests.providers.synced import SOON, V1, OnGoogle


def occurrences(synced: OnGoogle, series_id: int) -> list[dict[str, Any]]:
    listed = synced.user.get(f"{V1}/activities", params={"series_id": series_id, "limit": 100})
    assert listed.status_code == 200, listed.text
    return sorted(listed.json()["items"], key=lambda a: a["start"])


def sync_answer(synced: OnGoogle) -> dict[str, Any]:
    response = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_calendar_edit_newer_than_the_crms_wins_after_a_refused_occurrence_write(
    on_google: OnGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRM renames a series and retitles its second occurrence. The sync patches the
    master (in the very second of the CRM's edit), and before the occurrence's write
    another client, a minute later, sets that occurrence's room: the write is refused
    (412) and the next sync finds the occurrence changed on both sides. The calendar's
    edit is the newer, so it wins, whatever time crmcal's own write gave the master."""
    synced = on_google
    synced.connect()
    body = {"type": "meeting", "subject": "Team sync", "start": SOON.isoformat(),
            "end": (SOON + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=DAILY;COUNT=3"}  # fmt: skip
    created = synced.user.post(f"{V1}/activities", json=body)
    assert created.status_code == 201, created.text
    series_id = created.json()["series_id"]
    synced.sync()
    ((master_id, _),) = (await synced.events()).items()
    first, second, _ = occurrences(synced, series_id)
    synced.edit_activity(first["id"], subject="Renamed", scope="series")
    synced.edit_activity(second["id"], subject="Its own", scope="this")
    edited = max(dt.datetime.fromisoformat(a["updated_at"]) for a in occurrences(synced, series_id))
    state = synced.harness.emulator.state
    monkeypatch.setattr(state, "clock", lambda: edited)  # the master's write: that second
    original = dt.datetime.fromisoformat(second["original_start"] or second["start"])
    instance = google_events.instance_id(master_id, original)
    path = f"/calendars/{quote(synced.calendar_id)}/events/{quote(instance)}"
    url = synced.harness.emulator.url + "/calendar/v3" + path
    token = state.issue_access_token(synced.harness.email, None)
    writing = Series.write_occurrences_of
    meddled: list[int] = []

    async def after_the_master(self: Series, *args: Any, **kwargs: Any) -> Any:
        if not meddled:  # the master is written; its occurrences are not yet
            state.clock = lambda: edited + dt.timedelta(minutes=1)
            async with httpx.AsyncClient(verify=tls(), timeout=60) as other_client:
                answer = await other_client.patch(
                    url, json={"location": "Room 7"}, headers={"Authorization": f"Bearer {token}"}
                )
            meddled.append(answer.status_code)
        return await writing(self, *args, **kwargs)

    monkeypatch.setattr(Series, "write_occurrences_of", after_the_master)
    refused = sync_answer(synced)
    monkeypatch.setattr(Series, "write_occurrences_of", writing)
    assert meddled == [200]
    assert [p["reason"] for p in refused["problems"]] == ["changed while syncing; will retry"]
    conflicts = sum(sync_answer(synced)["conflicts"] for _ in range(2))
    assert conflicts == 1
    assert sync_answer(synced)["problems"] == []
    activity = synced.activity(second["id"])
    assert activity["location"] == "Room 7", activity
    there = await synced.harness.api("GET", path)
    assert (there.get("location"), there.get("summary")) == ("Room 7", activity["subject"])
