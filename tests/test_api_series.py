"""Recurring activities through the REST API: a series row, its occurrences as
activities, edits and deletions by scope, and the daylight-saving switches."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from crmcal.crm import activities
from crmcal.crm import series as series_repo
from crmcal.crm.schemas import ActivityCreate
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.sync.tables import Connection
from tests.conftest import Api, newest_change_in, run

URL = "/api/v1/activities"


def create(api: Api, **fields: Any) -> dict[str, Any]:
    body = {"type": "meeting", "subject": "Weekly", "start": "2027-01-05T09:00:00",
            "end": "2027-01-05T10:00:00", "timezone": "Europe/Berlin", **fields}  # fmt: skip
    response = api.post(URL, json=body)
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


def occurrences(api: Api, series_id: int, **params: Any) -> list[dict[str, Any]]:
    response = api.get(URL, params={"series_id": series_id, "limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def patch(api: Api, activity_id: int, **body: Any) -> dict[str, Any]:
    response = api.patch(f"{URL}/{activity_id}", json=body)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def series(api: Api, series_id: int) -> dict[str, Any]:
    response = api.get(f"/api/v1/series/{series_id}")
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def test_a_rule_makes_a_series_answered_by_its_first_occurrence(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;BYDAY=TU;COUNT=10", location="Room 4")
    assert first["series_id"] is not None
    assert first["start"] == "2027-01-05T09:00:00+01:00"
    assert first["original_start"] == first["start"]
    assert first["recurrence"] == "FREQ=WEEKLY;BYDAY=TU;COUNT=10"
    found = occurrences(alice, first["series_id"])
    assert len(found) == 10
    assert [o["start"][:10] for o in found[:3]] == ["2027-01-05", "2027-01-12", "2027-01-19"]
    assert {o["series_id"] for o in found} == {first["series_id"]}
    assert all(o["location"] == "Room 4" and o["end"][11:19] == "10:00:00" for o in found)
    shown = series(alice, first["series_id"])
    assert shown["recurrence"] == "FREQ=WEEKLY;BYDAY=TU;COUNT=10"
    assert shown["subject"] == "Weekly"
    assert shown["start"] == "2027-01-05T09:00:00+01:00"
    # Occurrences are activities like any other: in range lists too.
    in_range = alice.get(URL, params={"start_from": "2027-01-10", "start_to": "2027-01-20"})
    assert [o["id"] for o in in_range.json()["items"]] == [found[1]["id"], found[2]["id"]]


def test_weekly_at_nine_berlin_stays_at_nine_across_both_switches(alice: Api) -> None:
    first = create(alice, start="2027-03-16T09:00:00", end="2027-03-16T09:30:00",
                   recurrence="FREQ=WEEKLY;UNTIL=20271110T000000Z")  # fmt: skip
    found = occurrences(alice, first["series_id"])
    assert {o["start"][11:19] for o in found} == {"09:00:00"}
    offsets = [o["start"][19:] for o in found]
    # March 28th and October 31st 2027 are the switches.
    assert offsets[:2] == ["+01:00", "+01:00"]
    assert offsets[2] == "+02:00"
    assert offsets[-1] == "+01:00"
    assert {o["end"][11:19] for o in found} == {"09:30:00"}
    # Moving the whole series to 10:00 keeps it on the local clock too.
    moved = patch(alice, found[5]["id"], scope="series", start=found[5]["start"][:10] + "T10:00:00",
                  end=found[5]["start"][:10] + "T10:30:00")  # fmt: skip
    assert moved["start"][11:19] == "10:00:00"
    again = occurrences(alice, first["series_id"])
    assert [o["id"] for o in again] == [o["id"] for o in found]
    assert {o["start"][11:19] for o in again} == {"10:00:00"}


def test_an_all_day_yearly_series_stays_on_its_date(alice: Api) -> None:
    first = create(alice, all_day=True, start="2026-12-24", end=None, timezone="America/New_York",
                   recurrence="FREQ=YEARLY;COUNT=3")  # fmt: skip
    found = occurrences(alice, first["series_id"])
    assert [o["start"] for o in found] == ["2026-12-24"]  # the rest lie beyond the horizon
    assert [o["end"] for o in found] == ["2026-12-25"]
    assert first["original_start"] == "2026-12-24"


def test_an_until_not_in_the_starts_form_is_refused_saying_the_form_wanted(alice: Api) -> None:
    body = {"type": "meeting", "subject": "Daily", "timezone": "Europe/Berlin"}
    timed = alice.post(URL, json={**body, "start": "2027-01-05T09:00:00",
                                  "recurrence": "FREQ=DAILY;UNTIL=20270110T090000"})  # fmt: skip
    assert timed.status_code == 422, timed.text
    assert "UNTIL must be a UTC time such as 20270101T235959Z beside a timed start" in timed.text
    all_day = alice.post(URL, json={**body, "all_day": True, "start": "2027-01-05",
                                    "recurrence": "FREQ=DAILY;UNTIL=20270110T235959Z"})  # fmt: skip
    assert all_day.status_code == 422, all_day.text
    assert "UNTIL must be a date such as 20270101 beside an all-day start" in all_day.text
    made = create(alice, all_day=True, start="2027-01-05", end=None,
                  recurrence="FREQ=DAILY;UNTIL=20270110")  # fmt: skip
    assert len(occurrences(alice, made["series_id"])) == 6


def test_a_calendars_rule_sent_back_as_read_is_kept(alice: Api, db_url: str) -> None:
    """A calendar wrote a date UNTIL beside a timed start: stored as spelt. A client that
    reads the activity and sends its rule back is not refused; a new such rule is."""
    rule = "FREQ=DAILY;UNTIL=20270109"

    first_id = made_by_a_calendar(db_url, alice.id, rule)
    read = alice.get(f"{URL}/{first_id}").json()
    assert read["recurrence"] == rule
    assert len(occurrences(alice, read["series_id"])) == 5
    for scope in ("this", "series"):
        patch(alice, first_id, subject=f"Daily {scope}", recurrence=read["recurrence"], scope=scope)
    changed = {"recurrence": "FREQ=DAILY;UNTIL=20270108", "scope": "series"}
    other = alice.patch(f"{URL}/{first_id}", json=changed)
    assert other.status_code == 422, other.text
    assert "UNTIL must be a UTC time" in other.text
    assert series(alice, read["series_id"])["recurrence"] == rule


def newest_change(db_url: str) -> int:
    """The change feed's newest sequence number (0 when empty)."""
    found: int = run(newest_change_in(db_url))
    return found


def made_by_a_calendar(db_url: str, owner_id: int, rule: str) -> int:
    """A daily series at 09:00 Berlin as the sync stores a calendar's (its rule as spelt);
    answers its first occurrence's id."""

    async def store() -> int:
        db = Database(db_url)
        try:
            async with db.write() as session:
                user = await session.get(User, owner_id)
                assert user is not None
                data = ActivityCreate(
                    type="meeting", subject="Daily", recurrence=rule,
                    start="2027-01-05T09:00:00", timezone="Europe/Berlin",
                )  # fmt: skip
                (first,) = await activities.create_activities(
                    session, user, [(data, None)], activities.WriteOptions(from_calendar=True)
                )
                return first.id
        finally:
            await db.dispose()

    found: int = run(store())
    return found


@pytest.mark.parametrize(
    ("stored", "resent"),
    [
        (
            "FREQ=WEEKLY;BYDAY=TU;UNTIL=20270223T235959Z",
            "UNTIL=20270223T235959Z;BYDAY=TU;FREQ=WEEKLY",
        ),
        ("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=6", "rrule:count=6;byday=TH,TU;freq=weekly"),
    ],
)
def test_a_rule_sent_back_spelt_another_way_changes_nothing(
    alice: Api, db_url: str, stored: str, resent: str
) -> None:
    """A client that re-serialises the rule it read (its parts in another order or case)
    sends the same rule: an occurrence's edit is accepted, and with nothing else given
    nothing is written, not even a change-feed row for the calendars."""
    first = create(alice, recurrence=stored)
    second = occurrences(alice, first["series_id"])[1]
    seen = newest_change(db_url)
    same = patch(alice, second["id"], recurrence=resent)
    assert (same["recurrence"], same["updated_at"]) == (stored, second["updated_at"])
    assert newest_change(db_url) == seen
    edited = patch(alice, second["id"], recurrence=resent, location="Room 9")
    assert (edited["recurrence"], edited["location"]) == (stored, "Room 9")
    assert edited["series_id"] == first["series_id"]
    assert series(alice, first["series_id"])["recurrence"] == stored


def test_a_calendars_rule_resent_in_another_order_is_kept_and_a_changed_one_refused(
    alice: Api, db_url: str
) -> None:
    """A calendar's rule with a date UNTIL beside a timed start (stored as spelt), sent
    back with its parts in another order and the UNTIL spelt as stored: the same rule,
    nothing written. The UNTIL changed in that form is a new rule, refused for its form."""
    rule = "FREQ=DAILY;UNTIL=20270109"
    first_id = made_by_a_calendar(db_url, alice.id, rule)
    seen = newest_change(db_url)
    for scope in ("this", "series"):
        body = {"recurrence": "UNTIL=20270109;FREQ=DAILY", "scope": scope}
        resent = alice.patch(f"{URL}/{first_id}", json=body)
        assert resent.status_code == 200, resent.text
        assert resent.json()["recurrence"] == rule
        if scope == "this":
            assert newest_change(db_url) == seen
    changed = alice.patch(f"{URL}/{first_id}", json={"recurrence": "UNTIL=20270108;FREQ=DAILY"})
    assert changed.status_code == 422, changed.text
    assert "UNTIL must be a UTC time" in changed.text
    sid = alice.get(f"{URL}/{first_id}").json()["series_id"]
    assert series(alice, sid)["recurrence"] == rule


def test_an_unbounded_rule_is_made_up_to_the_horizon_then_extended(
    alice: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "30")
    first = create(alice, start="2027-01-04T08:00:00", end=None, recurrence="FREQ=DAILY")
    made = occurrences(alice, first["series_id"])
    assert 29 <= len(made) <= 31
    assert series(alice, first["series_id"])["occurrences_until"] is not None

    async def extend(days: int) -> tuple[int, int]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                later = dt.datetime(2027, 1, 4, tzinfo=dt.UTC) + dt.timedelta(days=days)
                return await series_repo.extend_all(session, now=later)
        finally:
            await db.dispose()

    assert run(extend(0)) == (0, 0)  # the horizon is not a day short yet
    assert run(extend(10)) == (1, 10)
    assert len(occurrences(alice, first["series_id"])) == len(made) + 10


def test_one_occurrence_edited_alone_keeps_its_fields_when_the_series_changes(
    alice: Api,
) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=4",
                   participants=[{"email": "ann@acme.test", "name": "Ann"}])  # fmt: skip
    deal = alice.post("/api/v1/deals", json={"title": "Renewal"}).json()["id"]
    found = occurrences(alice, first["series_id"])
    second, third = found[1], found[2]
    patch(alice, second["id"], subject="Moved review", note="bring slides", done=True)
    patch(alice, third["id"], deal_id=deal, done=True, participants=[
        {"email": "ann@acme.test", "name": "Ann", "status": "accepted"}])  # fmt: skip
    assert series(alice, first["series_id"])["subject"] == "Weekly"  # "this" is the default

    patch(alice, first["id"], scope="series", subject="Team call", location="Room 9")
    after = {o["id"]: o for o in occurrences(alice, first["series_id"])}
    assert after[second["id"]]["subject"] == "Moved review"
    assert after[second["id"]]["note"] == "bring slides"
    assert after[second["id"]]["done"] is True
    assert after[second["id"]]["location"] == "Room 9"
    assert after[third["id"]]["subject"] == "Team call"
    assert after[third["id"]]["deal_id"] == deal
    assert after[third["id"]]["done"] is True
    assert after[third["id"]]["participants"][0]["status"] == "accepted"
    assert after[first["id"]]["subject"] == "Team call"
    assert series(alice, first["series_id"])["subject"] == "Team call"

    # New participants for the series keep the answers already given.
    patch(alice, first["id"], scope="series", participants=[
        {"email": "ann@acme.test", "name": "Ann"}, {"email": "bo@acme.test"}])  # fmt: skip
    after = {o["id"]: o for o in occurrences(alice, first["series_id"])}
    assert [p["status"] for p in after[third["id"]]["participants"]] == [
        "accepted", "needs_action"]  # fmt: skip
    assert len(after[found[3]["id"]]["participants"]) == 2


def test_this_and_following_ends_the_rule_and_starts_a_new_series(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=10")
    found = occurrences(alice, first["series_id"])
    patch(alice, found[5]["id"], done=True)
    changed = patch(alice, found[3]["id"], scope="following", subject="New format")
    new_series = changed["series_id"]
    assert new_series != first["series_id"]
    old = occurrences(alice, first["series_id"])
    new = occurrences(alice, new_series)
    assert [o["id"] for o in old] == [o["id"] for o in found[:3]]
    assert [o["id"] for o in new] == [o["id"] for o in found[3:]]
    assert {o["subject"] for o in old} == {"Weekly"}
    assert {o["subject"] for o in new} == {"New format"}
    assert next(o for o in new if o["id"] == found[5]["id"])["done"] is True
    assert "UNTIL=20270126T075959Z" in series(alice, first["series_id"])["recurrence"]
    assert series(alice, new_series)["recurrence"] == "FREQ=WEEKLY;COUNT=7"
    assert series(alice, new_series)["start"] == found[3]["start"]


def test_deleting_by_scope_and_restoring(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=6")
    found = occurrences(alice, first["series_id"])
    sid = first["series_id"]

    gone = alice.delete(f"{URL}/{found[1]['id']}")
    assert gone.status_code == 200, gone.text
    assert gone.json()["deleted_at"] is not None
    assert series(alice, sid)["exdates"] == [found[1]["start"]]
    assert len(occurrences(alice, sid)) == 5
    assert alice.post(f"{URL}/{found[1]['id']}/restore").status_code == 200
    assert series(alice, sid)["exdates"] == []
    assert len(occurrences(alice, sid)) == 6

    cut = alice.delete(f"{URL}/{found[4]['id']}", params={"scope": "following"})
    assert cut.status_code == 200, cut.text
    assert [o["id"] for o in occurrences(alice, sid)] == [o["id"] for o in found[:4]]
    assert "UNTIL=" in series(alice, sid)["recurrence"]
    refused = alice.post(f"{URL}/{found[5]['id']}/restore")
    assert refused.status_code == 409, refused.text

    everything = alice.client.request(
        "DELETE", f"{URL}/{found[0]['id']}", json={"scope": "series"},
        headers={"Authorization": f"Bearer {alice.token}"},
    )  # fmt: skip
    assert everything.status_code == 200, everything.text
    assert occurrences(alice, sid) == []
    assert series(alice, sid)["deleted_at"] is not None
    assert alice.post(f"{URL}/{found[2]['id']}/restore").status_code == 200
    assert [o["id"] for o in occurrences(alice, sid)] == [o["id"] for o in found[:4]]
    assert series(alice, sid)["deleted_at"] is None


def test_exdates_and_rdates(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=DAILY;COUNT=5", exdates=["2027-01-06T09:00:00"],
                   rdates=["2027-01-20T09:00:00+01:00"])  # fmt: skip
    starts = [o["start"][:10] for o in occurrences(alice, first["series_id"])]
    assert starts == ["2027-01-05", "2027-01-07", "2027-01-08", "2027-01-09", "2027-01-20"]


def test_a_single_activity_given_a_rule_becomes_the_first_occurrence(alice: Api) -> None:
    single = create(alice)
    assert single["series_id"] is None
    made = patch(alice, single["id"], recurrence="FREQ=WEEKLY;COUNT=3")
    assert made["series_id"] is not None
    assert occurrences(alice, made["series_id"])[0]["id"] == single["id"]
    assert len(occurrences(alice, made["series_id"])) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"recurrence": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"},
        {"recurrence": "FREQ=WEEKLY", "exdates": ["not a time"]},
    ],
)
def test_bad_series_are_refused(alice: Api, body: dict[str, Any]) -> None:
    response = alice.post(URL, json={"type": "call", "subject": "x",
                                     "start": "2027-01-05T09:00:00", **body})  # fmt: skip
    assert response.status_code == 422, response.text
    assert ("recurrence" in response.text) or ("exdates" in response.text)


def test_an_occurrence_rule_belongs_to_the_series(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=3")
    response = alice.patch(f"{URL}/{first['id']}", json={"recurrence": "FREQ=DAILY"})
    assert response.status_code == 409  # the stored occurrence clashes
    assert "scope" in response.json()["detail"]


def _connect(db_url: str, user_id: int, provider: str) -> None:
    async def go() -> None:
        db = Database(db_url)
        try:
            async with db.write() as session:
                session.add(Connection(user_id=user_id, provider=provider, account="a@b.test",
                                       credentials=b"x", calendar_id="c", calendar_name="C",
                                       sync_type="two_way", options={}, state="active",
                                       counts={}, problems=[], failures=0))  # fmt: skip
        finally:
            await db.dispose()

    run(go())


@pytest.mark.parametrize(
    ("rule", "part"),
    [("FREQ=HOURLY;COUNT=3", "FREQ=HOURLY"), ("FREQ=MONTHLY;BYMONTHDAY=1,15", "BYMONTHDAY"),
     ("FREQ=DAILY;COUNT=1000", "COUNT")],
)  # fmt: skip
def test_a_rule_outlook_cannot_hold_is_refused_for_a_microsoft_connection(
    alice: Api, db_url: str, rule: str, part: str
) -> None:
    assert alice.post(URL, json={"type": "call", "subject": "x", "start": "2027-01-05T09:00:00",
                                 "recurrence": rule}).status_code == 201  # fmt: skip
    _connect(db_url, alice.id, "microsoft")
    body = {"type": "call", "subject": "x", "start": "2027-01-05T09:00:00", "recurrence": rule}
    response = alice.post(URL, json=body)
    # A clash with what is stored (the owner's connection): a documented 409.
    assert response.status_code == 409, response.text
    assert part in response.json()["detail"]
    assert "Microsoft 365" in response.json()["detail"]
    rdate = alice.post(URL, json={"type": "call", "subject": "x", "start": "2027-01-05T09:00:00",
                                  "recurrence": "FREQ=WEEKLY",
                                  "rdates": ["2027-01-07T09:00:00"]})  # fmt: skip
    assert rdate.status_code == 409
    assert "RDATE" in rdate.json()["detail"]


def test_the_maintenance_job_moves_the_horizon_on(
    alice: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmcal.jobs import maintenance

    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "10")
    first = create(alice, start="2027-01-04T08:00:00", end=None, recurrence="FREQ=WEEKLY")
    before = len(occurrences(alice, first["series_id"]))
    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "400")

    async def once() -> int:
        db = Database(db_url)
        try:
            return await maintenance.extend_series_once(db)
        finally:
            await db.dispose()

    made = run(once())
    assert made > 40
    assert len(occurrences(alice, first["series_id"])) == before + made
    assert run(once()) == 0


def test_an_occurrence_without_a_rule_leaves_its_series(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=3")
    second = occurrences(alice, first["series_id"])[1]
    alone = patch(alice, second["id"], recurrence=None, subject="One-off")
    assert (alone["series_id"], alone["recurrence"], alone["original_start"]) == (None, None, None)
    assert [o["id"] for o in occurrences(alice, first["series_id"])] == [
        first["id"], occurrences(alice, first["series_id"])[1]["id"]]  # fmt: skip
    assert series(alice, first["series_id"])["exdates"] == [second["start"]]


def test_distributed_workers_move_the_horizon_on_too() -> None:
    from crmcal.jobs import queue

    app = queue.queue_app("postgresql://127.0.0.1/unused")
    assert "crmcal.series" in app.tasks
    assert app.tasks["crmcal.series"].func is queue.extend_series


def test_someone_elses_series(alice: Api, bob: Api, admin: Api, db_url: str) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=3", visibility="owner", note="secret")
    sid = first["series_id"]
    shown = series(bob, sid)
    assert (shown["subject"], shown["note"]) == ("Busy", None)
    assert bob.patch(f"{URL}/{first['id']}", json={"scope": "series", "subject": "x"}
                     ).status_code == 403  # fmt: skip
    assert bob.delete(f"{URL}/{first['id']}", params={"scope": "series"}).status_code == 403
    assert bob.get("/api/v1/series/999999").status_code == 404
    assert series(alice, sid)["subject"] == "Weekly"

    # A deleted series leaves with its occurrences when the trash is emptied.
    assert alice.delete(f"{URL}/{first['id']}", params={"scope": "series"}).status_code == 200

    async def purge() -> None:
        from crmcal.crm import trash

        db = Database(db_url)
        try:
            async with db.write() as session:
                later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
                assert await trash.purge_trash(session, now=later) == 3
        finally:
            await db.dispose()

    run(purge())
    assert alice.get(f"/api/v1/series/{sid}").status_code == 404


def test_fields_sent_back_unchanged_do_not_detach_an_occurrence(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=3", location="Room 4")
    second = occurrences(alice, first["series_id"])[1]
    resent = {k: second[k] for k in ("type", "subject", "start", "end", "all_day", "timezone",
                                     "location", "busy", "visibility", "recurrence")}  # fmt: skip
    patch(alice, second["id"], **resent, note="agenda")
    patch(alice, first["id"], scope="series", subject="Team call", location="Room 9")
    after = alice.get(f"{URL}/{second['id']}").json()
    assert (after["subject"], after["location"], after["note"]) == ("Team call", "Room 9", "agenda")


def at_local(api: Api, activity_id: int) -> str:
    found = api.get(f"{URL}/{activity_id}")
    assert found.status_code == 200, found.text
    return str(found.json()["start"])[:16]


def test_a_series_moved_keeps_what_was_left_out_left_out(alice: Api) -> None:
    first = create(alice, recurrence="FREQ=WEEKLY;COUNT=6",
                   exdates=["2027-02-02T09:00:00"])  # fmt: skip
    listed = occurrences(alice, first["series_id"])
    assert len(listed) == 5
    trashed = listed[2]
    assert alice.delete(f"{URL}/{trashed['id']}").status_code == 200
    patch(alice, first["id"], scope="series", start="2027-01-05T10:00:00",
          end="2027-01-05T11:00:00")  # fmt: skip
    live = occurrences(alice, first["series_id"])
    # Nothing comes back: four occurrences, each an hour later.
    assert [o["id"] for o in live] == [o["id"] for o in listed if o["id"] != trashed["id"]]
    assert {o["start"][11:16] for o in live} == {"10:00"}
    gone = occurrences(alice, first["series_id"], deleted="true")
    assert [(o["id"], o["original_start"][11:16]) for o in gone] == [(trashed["id"], "10:00")]
    assert series(alice, first["series_id"])["exdates"] == [
        "2027-01-19T10:00:00+01:00", "2027-02-02T10:00:00+01:00",
    ]  # fmt: skip
    # Taken back, it is the occurrence at its new time.
    assert alice.post(f"{URL}/{trashed['id']}/restore").status_code == 200
    assert at_local(alice, trashed["id"]) == "2027-01-19T10:00"
