"""The activities endpoints under /api/v1/activities, on SQLite and on PostgreSQL; the
requests refused before anything they send reaches the database (a body or a query the
schema refuses, a cursor of the wrong shape) on SQLite alone (``sqlite_only``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import func, select, update

from crmcal.crm import changefeed, trash
from crmcal.crm.schemas import MAX_PARTICIPANTS
from crmcal.crm.tables import Activity, Participant
from crmcal.db import Database
from tests.conftest import Api, new_user, run, sqlite_only

URL = "/api/v1/activities"
OUT_FIELDS = {
    "id", "type", "subject", "start", "end", "all_day", "timezone", "location", "note", "done",
    "busy", "visibility", "owner_id", "participants", "deal_id", "person_id", "organization_id",
    "reminder_minutes", "notify_participants", "recurrence", "series_id", "original_start",
    "organizer", "sync", "created_at", "updated_at", "deleted_at",
}  # fmt: skip


# --- helpers ---------------------------------------------------------------


def create(api: Api, **fields: Any) -> dict[str, Any]:
    """POST an activity (a one-hour meeting unless told otherwise); returns its JSON."""
    body = {"type": "meeting", "subject": "Demo", "start": "2026-12-01T10:00:00+01:00", **fields}
    response = api.post(URL, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def attempt(api: Api, **fields: Any) -> Any:
    """POST an activity that may be refused; returns the raw response."""
    body = {"type": "call", "subject": "x", "start": "2026-12-01T10:00:00Z", **fields}
    return api.post(URL, json=body)


def refused(response: Any, status: int, *words: str) -> str:
    """Assert the status and that the detail names each of ``words``; returns the detail."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word.lower() in detail.lower(), detail
    return detail


def listed(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = api.get(URL, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def listed_ids(api: Api, **params: Any) -> list[int]:
    return [item["id"] for item in listed(api, **params)]


def record(api: Api, path: str, **fields: Any) -> int:
    """Create a person, organization or deal; returns its id."""
    response = api.post(f"/api/v1/{path}", json=fields)
    assert response.status_code == 201, response.text
    record_id: int = response.json()["id"]
    return record_id


def persons_with_email(api: Api, email: str) -> list[dict[str, Any]]:
    response = api.get("/api/v1/persons", params={"email": email})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


Change = tuple[int, int, int, str, str]


def feed(db_url: str) -> list[Change]:
    """The change feed as (seq, activity_id, owner_id, kind, origin) rows."""

    async def read() -> list[Change]:
        db = Database(db_url)
        try:
            async with db.read() as session:
                rows = await changefeed.read_changes(session)
                return [(r.seq, r.activity_id, r.owner_id, r.kind, r.origin) for r in rows]
        finally:
            await db.dispose()

    result: list[Change] = run(read())
    return result


def cursor_of(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


# --- creating: fields, defaults, times -----------------------------------------


def test_create_with_every_field(alice: Api) -> None:
    org = record(alice, "organizations", name="ACME")
    ann = record(alice, "persons", name="Ann", email="ann@acme.test", organization_id=org)
    deal = record(alice, "deals", title="Big deal", person_id=ann, organization_id=org)
    body = {
        "type": "call",
        "subject": "Demo with ACME",
        "start": "2026-12-01T10:00:00+01:00",
        "end": "2026-12-01T11:30:00+01:00",
        "all_day": False,
        "timezone": "Europe/Berlin",
        "location": "Room 4",
        "note": "Bring the contract",
        "done": True,
        "busy": False,
        "visibility": "owner",
        "owner_id": alice.id,
        "participants": [
            {"email": "ann@acme.test", "name": "Ann", "status": "accepted"},
            {"email": "zed@other.test", "name": "Zed"},
        ],
        "deal_id": deal,
        "person_id": ann,
        "organization_id": org,
        "reminder_minutes": 15,
        "notify_participants": True,
        "recurrence": "FREQ=WEEKLY;COUNT=10",
    }
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    response = alice.post(URL, json=body)
    assert response.status_code == 201, response.text
    out = response.json()

    assert set(out) == OUT_FIELDS
    assert isinstance(out["id"], int)
    (zed,) = persons_with_email(alice, "zed@other.test")
    expected = {
        **body,
        "id": out["id"],
        "participants": [
            {"email": "ann@acme.test", "name": "Ann", "person_id": ann, "status": "accepted"},
            {
                "email": "zed@other.test",
                "name": "Zed",
                "person_id": zed["id"],
                "status": "needs_action",
            },
        ],
        # A rule makes a series, answered by its first occurrence.
        "series_id": out["series_id"],
        "original_start": body["start"],
        "organizer": None,
        "sync": None,
        "deleted_at": None,
        "created_at": out["created_at"],
        "updated_at": out["updated_at"],
    }
    assert out == expected
    created_at = parse_time(out["created_at"])
    assert before <= created_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert parse_time(out["updated_at"]) >= created_at

    fetched = alice.get(f"{URL}/{out['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == out


def test_create_defaults(alice: Api, bob: Api) -> None:
    out = create(alice, start="2026-12-01T10:00:00+01:00")
    assert out["all_day"] is False
    assert out["done"] is False
    assert out["busy"] is True
    assert out["visibility"] == "everyone"
    assert out["timezone"] == "Europe/Berlin"  # alice's own zone
    assert out["owner_id"] == alice.id
    assert out["end"] is None
    for field in (
        "location",
        "note",
        "deal_id",
        "person_id",
        "organization_id",
        "reminder_minutes",
        "recurrence",
        "series_id",
        "deleted_at",
        "sync",
    ):
        assert out[field] is None, field
    assert out["participants"] == []
    assert out["start"] == "2026-12-01T10:00:00+01:00"

    assert create(bob)["timezone"] == "UTC"  # bob was created without a zone


@pytest.mark.parametrize(
    ("given", "zone", "shown"),
    [
        ("2026-12-01T09:00:00Z", "Europe/Berlin", "2026-12-01T10:00:00+01:00"),
        ("2026-12-01T09:00:00+00:00", "America/New_York", "2026-12-01T04:00:00-05:00"),
        ("2026-12-01T18:30:00-08:00", "Asia/Tokyo", "2026-12-02T11:30:00+09:00"),
        ("2026-12-01T10:00:00+01:00", "UTC", "2026-12-01T09:00:00+00:00"),
    ],
)
def test_offset_input_is_shown_in_the_activity_zone(
    alice: Api, given: str, zone: str, shown: str
) -> None:
    out = create(alice, start=given, timezone=zone)
    assert out["start"] == shown
    assert out["timezone"] == zone
    assert alice.get(f"{URL}/{out['id']}").json()["start"] == shown


def test_naive_datetime_is_read_in_the_given_zone(alice: Api) -> None:
    out = create(
        alice, start="2026-12-01T10:00:00", end="2026-12-01T10:45:00", timezone="America/New_York"
    )
    assert out["start"] == "2026-12-01T10:00:00-05:00"
    assert out["end"] == "2026-12-01T10:45:00-05:00"
    # The stored instant is 15:00 UTC: the filters see exactly that.
    assert listed_ids(alice, start_from="2026-12-01T15:00:00Z") == [out["id"]]
    assert listed_ids(alice, start_from="2026-12-01T15:00:01Z") == []


def test_naive_datetime_without_zone_is_read_in_the_owner_zone(alice: Api) -> None:
    out = create(alice, start="2026-12-01T10:00:00")
    assert out["start"] == "2026-12-01T10:00:00+01:00"
    assert listed_ids(alice, start_from="2026-12-01T09:00:00Z") == [out["id"]]
    assert listed_ids(alice, start_from="2026-12-01T09:00:01Z") == []


def test_offsets_follow_daylight_saving_time(alice: Api) -> None:
    winter = create(alice, start="2026-01-15T10:00:00", timezone="Europe/Berlin")
    summer = create(alice, start="2026-07-15T10:00:00", timezone="Europe/Berlin")
    assert winter["start"] == "2026-01-15T10:00:00+01:00"
    assert summer["start"] == "2026-07-15T10:00:00+02:00"
    from_utc = create(alice, start="2026-07-15T08:00:00Z", timezone="Europe/Berlin")
    assert from_utc["start"] == "2026-07-15T10:00:00+02:00"
    # Across the switch on 2026-03-29 (02:00 CET -> 03:00 CEST): one hour of real time.
    across = create(
        alice, start="2026-03-29T00:30:00Z", end="2026-03-29T01:30:00Z", timezone="Europe/Berlin"
    )
    assert across["start"] == "2026-03-29T01:30:00+01:00"
    assert across["end"] == "2026-03-29T03:30:00+02:00"


@sqlite_only
def test_timed_end_before_start_is_refused(alice: Api) -> None:
    response = attempt(alice, start="2026-12-01T10:00:00+01:00", end="2026-12-01T09:59:00+01:00")
    refused(response, 422, "end", "before start")
    assert listed(alice) == []


@sqlite_only
@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"timezone": "Mars/Olympus"}, ("time zone", "Mars/Olympus")),
        ({"start": "tomorrow at ten"}, ("start", "ISO 8601")),
        ({"start": "2026-12-01T10:00:00+01:00", "end": "later"}, ("end",)),
        ({"start": "0001-01-01T00:00:00+14:00"}, ("start", "year")),
        ({"reminder_minutes": -1}, ("reminder_minutes",)),
        ({"visibility": "private"}, ("visibility",)),
        ({"colour": "red"}, ("colour", "unknown field")),
    ],
)
def test_bad_fields_are_refused(alice: Api, fields: dict[str, Any], words: tuple[str, ...]) -> None:
    refused(attempt(alice, **fields), 422, *words)


@sqlite_only
def test_missing_required_fields_are_refused(alice: Api) -> None:
    detail = refused(alice.post(URL, json={"type": "call"}), 422, "field required")
    assert "subject" in detail
    assert "start" in detail


@sqlite_only
def test_participants_beyond_the_bound_are_refused_never_cut(alice: Api) -> None:
    """The API takes as many participants as a calendar's event brings in (an
    all-hands), and refuses more than its bound whole rather than keep some."""
    crowd = [{"email": f"p{n}@acme.test"} for n in range(MAX_PARTICIPANTS + 1)]
    refused(attempt(alice, participants=crowd), 422, "participants", f"at most {MAX_PARTICIPANTS}")
    made = create(alice, participants=crowd[:350])
    assert len(made["participants"]) == 350
    response = alice.patch(f"{URL}/{made['id']}", json={"participants": crowd})
    refused(response, 422, "participants", f"at most {MAX_PARTICIPANTS}")
    assert len(alice.get(f"{URL}/{made['id']}").json()["participants"]) == 350
    assert len(listed(alice)) == 1


# --- all-day --------------------------------------------------------------------


def test_all_day_takes_and_gives_dates(alice: Api) -> None:
    out = create(alice, all_day=True, start="2026-12-24", end="2026-12-27")
    assert (out["all_day"], out["start"], out["end"]) == (True, "2026-12-24", "2026-12-27")
    assert out["timezone"] == "Europe/Berlin"
    assert alice.get(f"{URL}/{out['id']}").json()["start"] == "2026-12-24"


def test_all_day_end_defaults_to_the_next_day(alice: Api) -> None:
    out = create(alice, all_day=True, start="2026-12-31")
    assert (out["start"], out["end"]) == ("2026-12-31", "2027-01-01")


def test_all_day_end_must_not_be_before_start(alice: Api) -> None:
    refused(attempt(alice, all_day=True, start="2026-12-24", end="2026-12-23"), 422, "end")
    # An end on the start's day (valid by the document) is that one day.
    same = create(alice, all_day=True, start="2026-12-24", end="2026-12-24")
    assert (same["start"], same["end"]) == ("2026-12-24", "2026-12-25")


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        ("2026-12-24T00:00:00", None, ("2026-12-24", "2026-12-25")),
        # 23:30 UTC is the next day in Berlin, the activity's zone.
        ("2026-12-24T23:30:00Z", None, ("2026-12-25", "2026-12-26")),
        # An end at midnight ends before that day; a later time ends after it.
        ("2026-12-24", "2026-12-26T00:00:00", ("2026-12-24", "2026-12-26")),
        ("2026-12-24", "2026-12-25T10:00:00", ("2026-12-24", "2026-12-26")),
    ],
)
def test_all_day_takes_the_days_of_datetimes(
    alice: Api, start: str, end: str | None, days: tuple[str, str]
) -> None:
    """A request valid by the document (start: a date or a date-time) is not refused."""
    made = create(alice, all_day=True, start=start, end=end)
    assert (made["all_day"], made["start"], made["end"]) == (True, *days)


@pytest.mark.parametrize(
    ("given", "start", "end", "expected"),
    [
        (None, "2026-12-24", None, (True, "2026-12-24", "2026-12-25")),
        (False, "2026-12-24", None, (False, "2026-12-24T00:00:00+01:00", None)),
        (
            None,
            "2026-12-24T10:00:00",
            "2026-12-25",
            (False, "2026-12-24T10:00:00+01:00", "2026-12-25T00:00:00+01:00"),
        ),
    ],
)
def test_a_date_makes_an_all_day_activity_unless_told_otherwise(
    alice: Api, given: bool | None, start: str, end: str | None, expected: tuple[Any, ...]
) -> None:
    """Left out, all_day follows the start's form; a date on a timed activity is its
    midnight in the activity's zone."""
    made = create(alice, start=start, end=end, **({} if given is None else {"all_day": given}))
    assert (made["all_day"], made["start"], made["end"]) == expected
    refused(attempt(alice, start="2026-12-24T10:00:00", end="2026-12-24"), 422, "end", "before")


def test_switching_all_day_on_keeps_the_local_day(alice: Api) -> None:
    # 00:30 in Berlin is still the previous day in UTC: the local day must win.
    out = create(alice, start="2026-12-02T00:30:00+01:00", end="2026-12-02T01:30:00+01:00")
    response = alice.patch(f"{URL}/{out['id']}", json={"all_day": True})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["all_day"], changed["start"], changed["end"]) == (
        True,
        "2026-12-02",
        "2026-12-03",
    )
    assert changed["subject"] == out["subject"]


def test_switching_all_day_off_keeps_the_day(alice: Api) -> None:
    out = create(alice, all_day=True, start="2026-12-02", end="2026-12-04")
    response = alice.patch(f"{URL}/{out['id']}", json={"all_day": False})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["all_day"], changed["start"], changed["end"]) == (
        False,
        "2026-12-02T00:00:00+01:00",
        None,
    )


def test_switching_all_day_with_new_times(alice: Api) -> None:
    out = create(alice, all_day=True, start="2026-12-02")
    response = alice.patch(
        f"{URL}/{out['id']}",
        json={"all_day": False, "start": "2026-12-05T14:00:00", "end": "2026-12-05T15:00:00"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["start"], changed["end"]) == (
        "2026-12-05T14:00:00+01:00",
        "2026-12-05T15:00:00+01:00",
    )
    back = alice.patch(f"{URL}/{out['id']}", json={"all_day": True, "start": "2026-12-06T10:00:00"})
    assert back.status_code == 200, back.text
    assert (back.json()["start"], back.json()["end"]) == ("2026-12-06", "2026-12-07")


# --- recurrence -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("FREQ=WEEKLY;COUNT=10", "FREQ=WEEKLY;COUNT=10"),
        (
            "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20270101T000000Z",
            "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20270101T000000Z",
        ),
        ("rrule:freq=daily;interval=2;count=3", "FREQ=DAILY;INTERVAL=2;COUNT=3"),
        ("  FREQ=MONTHLY;BYMONTHDAY=-1  ", "FREQ=MONTHLY;BYMONTHDAY=-1"),
        (
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=1,-1;BYYEARDAY=-366,366;BYWEEKNO=53,-1",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=1,-1;BYYEARDAY=-366,366;BYWEEKNO=53,-1",
        ),
    ],
)
def test_valid_recurrence_is_normalised(alice: Api, given: str, stored: str) -> None:
    out = create(alice, recurrence=given)
    assert out["recurrence"] == stored
    assert alice.get(f"{URL}/{out['id']}").json()["recurrence"] == stored


def test_all_day_recurrence(alice: Api) -> None:
    out = create(alice, all_day=True, start="2026-12-24", recurrence="RRULE:FREQ=YEARLY")
    assert out["recurrence"] == "FREQ=YEARLY"


@sqlite_only
@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=WEEKLY;FOO=1",
        "COUNT=10",
        "INTERVAL=2;BYDAY=MO",
        "FREQ=FORTNIGHTLY",
        "FREQ=DAILY;COUNT=3;UNTIL=20270101T000000Z",
        "garbage",
        "RRULE:",
        "FREQ=DAILY;FREQ=WEEKLY",
        "FREQ=DAILY;COUNT=",
        "FREQ=DAILY;COUNT=many",
        "FREQ=WEEKLY;BYDAY=XX",
        "FREQ=DAILY;BYHOUR=25",
        "FREQ=DAILY\nCOUNT=2",
        "FREQ=YEARLY;INTERVAL=0",
        "FREQ=DAILY;INTERVAL=-1",
        "FREQ=DAILY;COUNT=0",
        "FREQ=MONTHLY;BYMONTHDAY=32",
        "FREQ=YEARLY;BYWEEKNO=54",
        "FREQ=YEARLY;BYMONTH=13",
        "FREQ=YEARLY;BYYEARDAY=0",
        "FREQ=DAILY;COUNT=+3",
    ],
)
def test_invalid_recurrence_is_refused(alice: Api, rule: str) -> None:
    refused(attempt(alice, recurrence=rule), 422, "recurrence")
    out = create(alice)
    refused(alice.patch(f"{URL}/{out['id']}", json={"recurrence": rule}), 422, "recurrence")
    assert alice.get(f"{URL}/{out['id']}").json()["recurrence"] is None


# --- activity types ---------------------------------------------------------------


def test_unknown_type_is_refused(alice: Api) -> None:
    # Of the pattern but not stored: a clash with what is stored, as a missing link.
    refused(attempt(alice, type="webinar"), 409, "type", "webinar", "meeting")
    refused(attempt(alice, type="Meeting!"), 422, "type")


def test_deactivated_type_is_kept_but_not_given_out(admin: Api, alice: Api) -> None:
    lunch = create(alice, type="lunch", subject="Lunch with Ann")
    other = create(alice, type="call")
    response = admin.patch("/api/v1/activity-types/lunch", json={"active": False})
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False

    refused(attempt(alice, type="lunch"), 409, "lunch", "deactivated")
    refused(alice.patch(f"{URL}/{other['id']}", json={"type": "lunch"}), 409, "deactivated")

    kept = alice.patch(f"{URL}/{lunch['id']}", json={"subject": "Lunch with Bo"})
    assert kept.status_code == 200, kept.text
    assert (kept.json()["type"], kept.json()["subject"]) == ("lunch", "Lunch with Bo")
    same = alice.patch(f"{URL}/{lunch['id']}", json={"type": "lunch"})
    assert same.status_code == 200, same.text
    assert alice.get(f"{URL}/{lunch['id']}").json()["type"] == "lunch"


def test_custom_type_is_usable(admin: Api, alice: Api) -> None:
    response = admin.post(
        "/api/v1/activity-types", json={"key": "site-visit", "name": "Site visit"}
    )
    assert response.status_code == 201, response.text
    out = create(alice, type="site-visit")
    assert out["type"] == "site-visit"
    create(alice, type="call")
    assert listed_ids(alice, type="site-visit") == [out["id"]]


# --- participants -----------------------------------------------------------------


def test_participant_email_links_an_existing_person_in_any_case(alice: Api) -> None:
    ann = record(alice, "persons", name="Ann Example", email="ann@acme.test")
    out = create(alice, participants=[{"email": "ANN@Acme.Test"}])
    assert out["participants"] == [
        {
            "email": "ann@acme.test",
            "name": "Ann Example",
            "person_id": ann,
            "status": "needs_action",
        }
    ]
    assert [p["id"] for p in persons_with_email(alice, "ann@acme.test")] == [ann]


def test_participant_new_email_creates_a_person(alice: Api) -> None:
    assert persons_with_email(alice, "new@acme.test") == []
    out = create(
        alice,
        participants=[{"email": "New@Acme.test", "name": "Nina New"}, {"email": "zed@acme.test"}],
    )
    (nina,) = persons_with_email(alice, "new@acme.test")
    (zed,) = persons_with_email(alice, "zed@acme.test")
    assert (nina["name"], zed["name"]) == ("Nina New", "zed")
    assert out["participants"] == [
        {
            "email": "new@acme.test",
            "name": "Nina New",
            "person_id": nina["id"],
            "status": "needs_action",
        },
        {"email": "zed@acme.test", "name": "zed", "person_id": zed["id"], "status": "needs_action"},
    ]
    # A second activity with the same address reuses the person.
    again = create(alice, participants=[{"email": "new@acme.test"}])
    assert again["participants"][0]["person_id"] == nina["id"]
    assert len(persons_with_email(alice, "new@acme.test")) == 1


def test_participant_by_person_id_takes_email_and_name(alice: Api) -> None:
    ann = record(alice, "persons", name="Ann", email="ann@acme.test")
    out = create(alice, participants=[{"person_id": ann}])
    assert out["participants"] == [
        {"email": "ann@acme.test", "name": "Ann", "person_id": ann, "status": "needs_action"}
    ]


def test_participant_needs_email_or_person_id(alice: Api) -> None:
    response = attempt(alice, participants=[{"name": "Nobody"}])
    refused(response, 422, "participants", "email or a person_id")
    refused(attempt(alice, participants=[{"email": "not-an-address"}]), 422, "participants")


def test_participant_with_unknown_person_is_refused(alice: Api) -> None:
    response = attempt(alice, participants=[{"email": "ann@acme.test"}, {"person_id": 999}])
    refused(response, 409, "participants.1.person_id", "999")
    assert persons_with_email(alice, "ann@acme.test") == []  # nothing half-done
    assert listed(alice) == []


def test_patch_participants_replaces_or_keeps_them(alice: Api) -> None:
    out = create(alice, participants=[{"email": "a@acme.test"}, {"email": "b@acme.test"}])
    kept = alice.patch(f"{URL}/{out['id']}", json={"subject": "renamed"}).json()
    assert kept["participants"] == out["participants"]
    replaced = alice.patch(
        f"{URL}/{out['id']}",
        json={"participants": [{"email": "c@acme.test"}, {"email": "a@acme.test"}]},
    ).json()
    assert [p["email"] for p in replaced["participants"]] == ["c@acme.test", "a@acme.test"]
    assert replaced["participants"][1] == out["participants"][0]
    assert alice.get(f"{URL}/{out['id']}").json()["participants"] == replaced["participants"]
    cleared = alice.patch(f"{URL}/{out['id']}", json={"participants": []}).json()
    assert cleared["participants"] == []
    emptied = alice.patch(f"{URL}/{out['id']}", json={"participants": None}).json()
    assert emptied["participants"] == []


def test_resending_the_same_participants_leaves_their_rows_alone(alice: Api, db_url: str) -> None:
    given = [{"email": "a@acme.test", "status": "accepted"}, {"email": "b@acme.test"}]
    out = create(alice, participants=given)

    async def rows() -> list[tuple[int, str | None, str]]:
        db = Database(db_url)
        try:
            async with db.read() as session:
                query = select(Participant.id, Participant.email, Participant.status).where(
                    Participant.activity_id == out["id"]
                )
                return [(id_, email, status) for id_, email, status in await session.execute(query)]
        finally:
            await db.dispose()

    before = run(rows())
    alice.patch(f"{URL}/{out['id']}", json={"participants": given, "subject": "again"})
    assert run(rows()) == before  # same rows, same ids
    answered = [given[0], {"email": "b@acme.test", "status": "declined"}]
    changed = alice.patch(f"{URL}/{out['id']}", json={"participants": answered}).json()
    assert [p["status"] for p in changed["participants"]] == ["accepted", "declined"]
    assert run(rows()) != before


# --- links ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["deal_id", "person_id", "organization_id"])
def test_links_must_exist(alice: Api, field: str) -> None:
    # Valid by the document, refused by what is stored: 409, as the document says.
    refused(attempt(alice, **{field: 4242}), 409, field, "4242")
    out = create(alice)
    refused(alice.patch(f"{URL}/{out['id']}", json={field: 4242}), 409, field, "4242")
    assert alice.get(f"{URL}/{out['id']}").json()[field] is None


def test_links_are_returned_and_changed(alice: Api) -> None:
    org = record(alice, "organizations", name="ACME")
    person = record(alice, "persons", name="Ann")
    deal = record(alice, "deals", title="Deal")
    out = create(alice, deal_id=deal, person_id=person, organization_id=org)
    assert (out["deal_id"], out["person_id"], out["organization_id"]) == (deal, person, org)
    other_deal = record(alice, "deals", title="Other deal")
    changed = alice.patch(f"{URL}/{out['id']}", json={"deal_id": other_deal}).json()
    assert (changed["deal_id"], changed["person_id"], changed["organization_id"]) == (
        other_deal,
        person,
        org,
    )


# --- PATCH ------------------------------------------------------------------------


def full_activity(api: Api) -> dict[str, Any]:
    deal = record(api, "deals", title="Deal")
    return create(
        api,
        type="meeting",
        subject="Review",
        start="2026-12-01T10:00:00+01:00",
        end="2026-12-01T11:00:00+01:00",
        location="Room 4",
        note="Agenda",
        done=False,
        busy=True,
        participants=[{"email": "ann@acme.test"}],
        deal_id=deal,
        reminder_minutes=10,
        recurrence="FREQ=DAILY;COUNT=5",
    )


def test_patch_changes_only_the_fields_given(alice: Api) -> None:
    out = full_activity(alice)
    response = alice.patch(f"{URL}/{out['id']}", json={"subject": "Review, again", "done": True})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert parse_time(changed["updated_at"]) >= parse_time(out["updated_at"])
    assert changed["created_at"] == out["created_at"]
    expected = {
        **out,
        "subject": "Review, again",
        "done": True,
        "updated_at": changed["updated_at"],
    }
    assert changed == expected
    assert alice.get(f"{URL}/{out['id']}").json() == expected


def test_patch_start_keeps_end(alice: Api) -> None:
    out = full_activity(alice)
    changed = alice.patch(f"{URL}/{out['id']}", json={"start": "2026-12-01T09:30:00Z"}).json()
    assert (changed["start"], changed["end"]) == (
        "2026-12-01T10:30:00+01:00",
        "2026-12-01T11:00:00+01:00",
    )
    refused(
        alice.patch(f"{URL}/{out['id']}", json={"start": "2026-12-01T12:00:00+01:00"}), 422, "end"
    )


def test_patch_timezone_keeps_the_instant(alice: Api) -> None:
    out = full_activity(alice)
    changed = alice.patch(f"{URL}/{out['id']}", json={"timezone": "Europe/London"}).json()
    assert (changed["start"], changed["end"], changed["timezone"]) == (
        "2026-12-01T09:00:00+00:00",
        "2026-12-01T10:00:00+00:00",
        "Europe/London",
    )


def test_patch_null_clears_optional_fields(alice: Api) -> None:
    out = full_activity(alice)
    nulls = {
        "location": None,
        "note": None,
        "end": None,
        "recurrence": None,
        "reminder_minutes": None,
        "deal_id": None,
    }
    response = alice.patch(f"{URL}/{out['id']}", json=nulls)
    assert response.status_code == 200, response.text
    changed = response.json()
    for field in nulls:
        assert changed[field] is None, field
    assert (changed["subject"], changed["start"]) == (out["subject"], out["start"])
    assert changed["participants"] == out["participants"]
    fetched = alice.get(f"{URL}/{out['id']}").json()
    assert {f: fetched[f] for f in nulls} == nulls


@sqlite_only
@pytest.mark.parametrize(
    "field", ["subject", "type", "start", "all_day", "timezone", "done", "busy", "visibility"]
)
def test_patch_null_for_a_required_field_is_refused(alice: Api, field: str) -> None:
    out = full_activity(alice)
    refused(alice.patch(f"{URL}/{out['id']}", json={field: None}), 422, field, "null")
    assert alice.get(f"{URL}/{out['id']}").json() == out


def test_patch_refuses_bad_input(alice: Api) -> None:
    out = full_activity(alice)
    refused(alice.patch(f"{URL}/{out['id']}", json={"subject": ""}), 422, "subject")
    refused(alice.patch(f"{URL}/{out['id']}", json={"colour": "red"}), 422, "unknown field")
    refused(alice.patch(f"{URL}/{out['id']}", json={"end": "2026-11-30T10:00:00Z"}), 422, "end")
    assert alice.get(f"{URL}/{out['id']}").json() == out
    refused(alice.patch(f"{URL}/99999", json={"subject": "x"}), 404, "99999")
    assert alice.patch(f"{URL}/0", json={"subject": "x"}).status_code == 422


def test_patch_on_a_trashed_activity_conflicts(alice: Api) -> None:
    out = create(alice)
    assert alice.delete(f"{URL}/{out['id']}").status_code == 200
    refused(alice.patch(f"{URL}/{out['id']}", json={"subject": "x"}), 409, "trash")
    assert alice.get(f"{URL}/{out['id']}").json()["subject"] == out["subject"]


# --- trash ------------------------------------------------------------------------


def test_delete_moves_to_the_trash(alice: Api) -> None:
    out = create(alice)
    kept = create(alice, start="2026-12-02T10:00:00+01:00")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    response = alice.delete(f"{URL}/{out['id']}")
    assert response.status_code == 200, response.text
    trashed = response.json()
    deleted_at = parse_time(trashed["deleted_at"])
    assert before <= deleted_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert {**trashed, "deleted_at": None, "updated_at": out["updated_at"]} == out

    assert listed_ids(alice) == [kept["id"]]
    assert listed_ids(alice, deleted="true") == [out["id"]]
    fetched = alice.get(f"{URL}/{out['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["deleted_at"] == trashed["deleted_at"]


def test_second_delete_changes_nothing(alice: Api) -> None:
    out = create(alice)
    first = alice.delete(f"{URL}/{out['id']}").json()
    second = alice.delete(f"{URL}/{out['id']}")
    assert second.status_code == 200
    assert second.json()["deleted_at"] == first["deleted_at"]
    refused(alice.delete(f"{URL}/99999"), 404, "99999")


def test_restore(alice: Api) -> None:
    out = create(alice)
    alice.delete(f"{URL}/{out['id']}")
    response = alice.post(f"{URL}/{out['id']}/restore")
    assert response.status_code == 200, response.text
    restored = response.json()
    assert restored["deleted_at"] is None
    assert {**restored, "updated_at": out["updated_at"]} == out
    assert listed_ids(alice) == [out["id"]]
    assert listed_ids(alice, deleted="true") == []
    refused(alice.post(f"{URL}/{out['id']}/restore"), 409, "not in the trash")
    refused(alice.post(f"{URL}/99999/restore"), 404, "99999")


def test_users_see_only_their_own_trash(admin: Api, alice: Api, bob: Api) -> None:
    mine = create(alice)
    theirs = create(bob)
    alice.delete(f"{URL}/{mine['id']}")
    bob.delete(f"{URL}/{theirs['id']}")
    assert listed_ids(alice, deleted="true") == [mine["id"]]
    assert listed_ids(bob, deleted="true") == [theirs["id"]]
    assert listed_ids(alice, deleted="true", owner_id=bob.id) == []
    assert sorted(listed_ids(admin, deleted="true")) == sorted([mine["id"], theirs["id"]])
    refused(bob.get(f"{URL}/{mine['id']}"), 404)
    assert admin.get(f"{URL}/{mine['id']}").status_code == 200
    refused(bob.post(f"{URL}/{mine['id']}/restore"), 403, "owner")
    assert admin.post(f"{URL}/{mine['id']}/restore").status_code == 200
    assert listed_ids(bob) == [mine["id"]]


def test_purge_removes_what_was_trashed_over_30_days_ago(db_url: str, alice: Api) -> None:
    old = create(alice, participants=[{"email": "ann@acme.test"}])
    recent = create(alice, start="2026-12-02T10:00:00+01:00")
    live = create(alice, start="2026-12-03T10:00:00+01:00")
    trashed_at = parse_time(alice.delete(f"{URL}/{old['id']}").json()["deleted_at"])
    alice.delete(f"{URL}/{recent['id']}")
    now = trashed_at + dt.timedelta(days=31)

    async def purge() -> tuple[int, int]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                await session.execute(
                    update(Activity)
                    .where(Activity.id == recent["id"])
                    .values(deleted_at=now - dt.timedelta(days=29))
                )
                purged = await trash.purge_trash(session, now=now)
            async with db.read() as session:
                orphans = await session.scalar(
                    select(func.count(Participant.id)).where(Participant.activity_id == old["id"])
                )
            return purged, int(orphans or 0)
        finally:
            await db.dispose()

    assert run(purge()) == (1, 0)
    refused(alice.get(f"{URL}/{old['id']}"), 404)
    assert listed_ids(alice, deleted="true") == [recent["id"]]
    assert listed_ids(alice) == [live["id"]]
    assert alice.post(f"{URL}/{recent['id']}/restore").status_code == 200


# --- visibility -------------------------------------------------------------------


def test_private_activity_is_a_busy_block_for_others(admin: Api, alice: Api, bob: Api) -> None:
    org = record(alice, "organizations", name="ACME")
    ann = record(alice, "persons", name="Ann", email="ann@acme.test")
    deal = record(alice, "deals", title="Deal")
    private = create(
        alice,
        visibility="owner",
        subject="Job interview",
        location="Elsewhere",
        note="secret",
        end="2026-12-01T11:00:00+01:00",
        participants=[{"person_id": ann}],
        deal_id=deal,
        person_id=ann,
        organization_id=org,
    )
    public = create(
        alice, subject="Team meeting", start="2026-12-02T10:00:00+01:00", location="Room 1"
    )
    busy = {
        **private,
        "subject": "Busy",
        "location": None,
        "note": None,
        "participants": [],
        "deal_id": None,
        "person_id": None,
        "organization_id": None,
    }
    for viewer in (bob, admin):
        assert viewer.get(f"{URL}/{private['id']}").json() == busy
        assert listed(viewer) == [busy, public]
    assert alice.get(f"{URL}/{private['id']}").json() == private
    assert listed(alice) == [private, public]
    # An admin's change to it answers the busy block too, and does not reveal the subject.
    changed = admin.patch(f"{URL}/{private['id']}", json={"done": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subject"] == "Busy"
    assert alice.get(f"{URL}/{private['id']}").json()["subject"] == "Job interview"


# --- permissions ------------------------------------------------------------------


def test_only_owner_or_admin_may_change_or_delete(admin: Api, alice: Api, bob: Api) -> None:
    out = create(alice)
    refused(bob.patch(f"{URL}/{out['id']}", json={"subject": "mine now"}), 403, "owner")
    refused(bob.delete(f"{URL}/{out['id']}"), 403, "owner")
    assert alice.get(f"{URL}/{out['id']}").json() == out

    changed = admin.patch(f"{URL}/{out['id']}", json={"subject": "by admin"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["subject"] == "by admin"
    assert changed.json()["owner_id"] == alice.id
    deleted = admin.delete(f"{URL}/{out['id']}")
    assert deleted.status_code == 200, deleted.text
    assert listed_ids(alice, deleted="true") == [out["id"]]


def test_owner_id_of_another_user(admin: Api, alice: Api, bob: Api) -> None:
    body = {"type": "call", "subject": "x", "start": "2026-12-01T10:00:00"}
    refused(bob.post(URL, json={**body, "owner_id": alice.id}), 403, "admin")
    assert listed(alice) == []
    own = bob.post(URL, json={**body, "owner_id": bob.id})
    assert own.status_code == 201, own.text

    response = admin.post(URL, json={**body, "owner_id": alice.id})
    assert response.status_code == 201, response.text
    given = response.json()
    # Times are read in the owner's zone, not the admin's.
    assert (given["owner_id"], given["timezone"]) == (alice.id, "Europe/Berlin")
    assert given["start"] == "2026-12-01T10:00:00+01:00"
    assert listed_ids(alice, owner_id=alice.id) == [given["id"]]
    refused(admin.post(URL, json={**body, "owner_id": 4242}), 409, "owner_id")

    refused(bob.patch(f"{URL}/{own.json()['id']}", json={"owner_id": alice.id}), 403, "admin")
    moved = admin.patch(f"{URL}/{own.json()['id']}", json={"owner_id": alice.id})
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner_id"] == alice.id


@pytest.mark.parametrize(
    ("permission", "method", "path"),
    [
        ("activities.view", "get", ""),
        ("activities.view", "get", "/{id}"),
        ("activities.create", "post", ""),
        ("activities.edit", "patch", "/{id}"),
        ("activities.delete", "delete", "/{id}"),
        ("activities.delete", "post", "/{id}/restore"),
    ],
)
def test_a_missing_permission_is_refused(
    admin: Api, permission: str, method: str, path: str
) -> None:
    carol = new_user(admin, "carol@crm.test")
    out = create(carol)
    if path.endswith("/restore"):
        assert carol.delete(f"{URL}/{out['id']}").status_code == 200
    bodies = {
        "post": {"type": "call", "subject": "x", "start": "2026-12-01T10:00:00Z"},
        "patch": {"subject": "changed"},
    }
    everything = [
        "calendar_sync",
        "activities.view",
        "activities.create",
        "activities.edit",
        "activities.delete",
    ]
    response = admin.patch(
        f"/api/v1/users/{carol.id}",
        json={"permissions": [p for p in everything if p != permission]},
    )
    assert response.status_code == 200, response.text
    assert permission not in response.json()["permissions"]

    url = URL + path.format(id=out["id"])
    kwargs = {"json": bodies[method]} if method in bodies else {}
    refused(getattr(carol, method)(url, **kwargs), 403, permission)
    fetched = admin.get(f"{URL}/{out['id']}").json()
    assert fetched["subject"] == "Demo"
    assert (fetched["deleted_at"] is None) == (not path.endswith("/restore"))

    admin.patch(f"/api/v1/users/{carol.id}", json={"permissions": everything})
    response = getattr(carol, method)(url, **kwargs)
    assert response.status_code in (200, 201), response.text


def test_requests_without_a_valid_token_are_refused(client: Any, alice: Api) -> None:
    out = create(alice)
    body = {"type": "call", "subject": "x", "start": "2026-12-01T10:00:00Z"}
    for headers in ({}, {"Authorization": "Bearer crmcal_nope"}):
        assert client.get(URL, headers=headers).status_code == 401
        assert client.get(f"{URL}/{out['id']}", headers=headers).status_code == 401
        assert client.post(URL, json=body, headers=headers).status_code == 401
        assert client.delete(f"{URL}/{out['id']}", headers=headers).status_code == 401
    assert listed_ids(alice) == [out["id"]]


# --- filters and pages --------------------------------------------------------------


def test_start_from_and_start_to(alice: Api, bob: Api) -> None:
    # Alice reads times in Europe/Berlin, bob in UTC.
    a = create(alice, start="2026-11-30T23:59:00+01:00")["id"]
    b = create(alice, start="2026-12-01T00:00:00+01:00")["id"]  # 2026-11-30T23:00Z
    c = create(alice, start="2026-12-01T12:00:00+01:00")["id"]
    d = create(alice, start="2026-12-02T00:30:00+01:00")["id"]  # 2026-12-01T23:30Z
    e = create(alice, all_day=True, start="2026-12-03")["id"]  # midnight in Berlin
    f = create(alice, start="2026-12-03T08:00:00+01:00")["id"]

    assert listed_ids(alice, start_from="2026-12-01") == [b, c, d, e, f]
    assert listed_ids(bob, start_from="2026-12-01") == [c, d, e, f]
    assert listed_ids(alice, start_to="2026-12-01") == [a, b, c]
    assert listed_ids(bob, start_to="2026-12-01") == [a, b, c, d]
    assert listed_ids(alice, start_from="2026-12-01", start_to="2026-12-02") == [b, c, d]
    assert listed_ids(alice, start_from="2026-12-03", start_to="2026-12-03") == [e, f]
    # Date-times: both ends inclusive; without an offset in the caller's zone.
    assert listed_ids(
        alice, start_from="2026-12-01T12:00:00+01:00", start_to="2026-12-01T23:30:00Z"
    ) == [c, d]
    assert (
        listed_ids(alice, start_from="2026-12-01T12:00:01+01:00", start_to="2026-12-01T23:29:59Z")
        == []
    )
    assert listed_ids(alice, start_to="2026-12-01T00:00:00") == [a, b]
    assert listed_ids(bob, start_to="2026-12-01T00:00:00") == [a, b]
    assert listed_ids(bob, start_to="2026-11-30T22:59:00") == [a]

    for bad in ("yesterday", "2026-13-01", "2026-12-01T25:00:00"):
        refused(alice.get(URL, params={"start_from": bad}), 422, "start_from")
        refused(alice.get(URL, params={"start_to": bad}), 422, "start_to")


def test_type_and_owner_filters(alice: Api, bob: Api) -> None:
    a_call = create(alice, type="call")["id"]
    a_meeting = create(alice, type="meeting", start="2026-12-02T10:00:00Z")["id"]
    b_call = create(bob, type="call", start="2026-12-03T10:00:00Z")["id"]
    assert listed_ids(bob, type="call") == [a_call, b_call]
    assert listed_ids(bob, type="meeting") == [a_meeting]
    assert listed_ids(bob, type="lunch") == []
    assert listed_ids(bob, owner_id=alice.id) == [a_call, a_meeting]
    assert listed_ids(alice, owner_id=bob.id, type="call") == [b_call]
    assert listed_ids(alice, owner_id=4242) == []
    assert alice.get(URL, params={"owner_id": 0}).status_code == 422


def test_pages_return_every_activity_once_in_start_order(alice: Api) -> None:
    starts = [
        "2026-12-03T10:00:00Z",
        "2026-12-01T10:00:00Z",
        "2026-12-02T10:00:00Z",
        "2026-12-01T10:00:00Z",
        "2026-12-01T11:00:00+01:00",
        "2026-12-05T00:00:00Z",
        "2026-12-02T10:00:00Z",
        "2026-12-01T10:00:00Z",
    ]
    created = [create(alice, start=start) for start in starts]
    trashed = create(alice, start="2026-12-01T10:00:00Z")
    alice.delete(f"{URL}/{trashed['id']}")
    expected = [a["id"] for a in sorted(created, key=lambda a: (parse_time(a["start"]), a["id"]))]

    seen: list[int] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = alice.get(URL, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert seen == expected
    assert pages == 3
    assert listed_ids(alice, limit=8) == expected
    assert listed_ids(alice, limit=1000) == expected

    filtered = alice.get(URL, params={"limit": 2, "start_from": "2026-12-02"}).json()
    rest = alice.get(
        URL, params={"limit": 2, "start_from": "2026-12-02", "cursor": filtered["next_cursor"]}
    ).json()
    assert [i["id"] for i in filtered["items"] + rest["items"]] == expected[-4:]
    assert rest["next_cursor"] is None


# Cursors of the wrong shape: refused before anything reaches the database.
@sqlite_only
@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        cursor_of([]),
        cursor_of(["2026-12-01T10:00:00+00:00"]),
        cursor_of(["2026-12-01T10:00:00+00:00", 1, 2]),
        cursor_of({"start": "2026-12-01T10:00:00+00:00", "id": 1}),
        cursor_of(["yesterday", 1]),
        cursor_of([1, 1]),
        cursor_of([None, None]),
        cursor_of(["2026-12-01T10:00:00+00:00", "one"]),
        cursor_of(["2026-12-01T10:00:00+00:00", [1]]),
        cursor_of(["2026-12-01T10:00:00+00:00", True]),
        "x" * 501,
    ],
)
def test_a_malformed_cursor_is_refused(alice: Api, cursor: str) -> None:
    cursor_refused(alice, cursor)


# Cursors of the right shape whose values a database would compare (or choke on): a
# naive time, a year no offset can hold, numbers past an id's range, not whole or not
# numbers at all. Refused on both backends.
@pytest.mark.parametrize(
    "cursor",
    [
        cursor_of(["2026-12-01T10:00:00", 1]),
        cursor_of(["0001-01-01T00:00:00+05:00", 1]),
        cursor_of(["2026-12-01T10:00:00+00:00", 10**30]),
        cursor_of(["2026-12-01T10:00:00+00:00", 1.5]),
        cursor_of(["2026-12-01T10:00:00+00:00", float("inf")]),
        cursor_of(["2026-12-01T10:00:00+00:00", float("nan")]),
    ],
)
def test_an_invalid_cursor_is_refused(alice: Api, cursor: str) -> None:
    cursor_refused(alice, cursor)


def cursor_refused(alice: Api, cursor: str) -> None:
    create(alice)
    response = alice.get(URL, params={"cursor": cursor})
    assert 400 <= response.status_code < 500, response.text
    assert "cursor" in response.json()["detail"]


@sqlite_only
@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten"])
def test_limit_out_of_range_is_refused(alice: Api, limit: str) -> None:
    refused(alice.get(URL, params={"limit": limit}), 422, "limit")


# --- change feed ------------------------------------------------------------------


def test_every_change_appends_to_the_feed(db_url: str, alice: Api, bob: Api) -> None:
    out = create(alice)
    other = create(bob)
    alice.patch(f"{URL}/{out['id']}", json={"subject": "changed"})
    alice.delete(f"{URL}/{out['id']}")
    alice.delete(f"{URL}/{out['id']}")  # already in the trash: nothing new
    alice.post(f"{URL}/{out['id']}/restore")
    # Refused changes leave no trace.
    assert alice.patch(f"{URL}/{out['id']}", json={"subject": None}).status_code == 422
    assert bob.patch(f"{URL}/{out['id']}", json={"subject": "x"}).status_code == 403
    assert alice.post(f"{URL}/{out['id']}/restore").status_code == 409

    rows = feed(db_url)
    assert [row[1:] for row in rows] == [
        (out["id"], alice.id, "created", "api"),
        (other["id"], bob.id, "created", "api"),
        (out["id"], alice.id, "updated", "api"),
        (out["id"], alice.id, "deleted", "api"),
        (out["id"], alice.id, "restored", "api"),
    ]
    seqs = [seq for seq, *_ in rows]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)

    alice.patch(f"{URL}/{out['id']}", json={"done": True})
    newer = feed(db_url)
    assert newer[:-1] == rows
    assert newer[-1][0] > seqs[-1]
    assert newer[-1][1:4] == (out["id"], alice.id, "updated")
