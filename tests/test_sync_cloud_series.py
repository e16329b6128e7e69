"""Series between the CRM and Google Calendar / Microsoft 365 (their emulators), driven
through the REST API on one side and as another calendar client on the other: one
series there for one CRM series, never a pile of single events, both ways."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmcal.config import Settings
from crmcal.emulators.google import GoogleState
from crmcal.emulators.google import create_app as create_google
from crmcal.emulators.microsoft import MicrosoftState
from crmcal.emulators.microsoft import create_app as create_graph
from tests.conftest import Api, client_of, make_user, new_user
from tests.emulator_calls import emulator_calls
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.providers.conftest import HARNESSES, opened
from tests.providers.harness import Foreign, Harness
from tests.providers.synced import (  # noqa: F401  # fixtures used by name
    BASE_URL,
    V1,
    Synced,
    admin,
    client,
    sam,
)
from tests.served import served_app

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(params=["google", "microsoft"])
async def cloud(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with opened(HARNESSES[request.param](request)) as made:
        yield made


@pytest.fixture
def synced(cloud: Harness, sam: Api, admin: Api) -> Synced:  # noqa: F811
    return Synced(cloud, sam, admin)


def tuesday_nine_before_switch() -> dt.datetime:
    """09:00 Berlin on a Tuesday a few weeks before the next daylight-saving switch
    (last Sunday of March or October), so a weekly series spans it."""
    today = dt.datetime.now(BERLIN).date()
    switches = []
    for year in (today.year, today.year + 1):
        for month in (3, 10):
            last = dt.date(year, month, 31)
            switches.append(last - dt.timedelta(days=(last.weekday() + 1) % 7))
    switch = min(s for s in switches if s > today + dt.timedelta(weeks=4))
    day = switch - dt.timedelta(weeks=3)
    day -= dt.timedelta(days=(day.weekday() - 1) % 7)
    return dt.datetime.combine(day, dt.time(9), BERLIN)


def occurrences(synced: Synced, series_id: int, **params: object) -> list[dict[str, Any]]:
    listed = synced.user.get(
        f"{V1}/activities", params={"series_id": series_id, "limit": 100, **params}
    )
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]


def weekly_body(start: dt.datetime, **fields: Any) -> dict[str, Any]:
    return {"type": "meeting", "subject": "Weekly pipeline review", "timezone": "Europe/Berlin",
            "start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;COUNT=8", **fields}  # fmt: skip


def sync(synced: Synced) -> dict[str, Any]:
    response = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")
    assert response.status_code == 200, response.text
    return response.json()


def utc(moment: dt.datetime | dt.date) -> dt.datetime:
    assert isinstance(moment, dt.datetime)
    return moment.astimezone(dt.UTC)


async def test_a_crm_series_is_one_series_there_at_09_local_across_the_switch(
    synced: Synced,
) -> None:
    synced.connect()
    start = tuesday_nine_before_switch()
    made = synced.user.post(f"{V1}/activities", json=weekly_body(start))
    assert made.status_code == 201, made.text
    series_id = made.json()["series_id"]
    listed = occurrences(synced, series_id)
    assert len(listed) == 8
    cancelled = listed[5]  # after the switch
    assert synced.user.delete(f"{V1}/activities/{cancelled['id']}").status_code == 200

    counts = sync(synced)
    assert (counts["created"], counts["skipped"], counts["problems"]) == (1, 0, [])
    ((event_id, event),) = (await synced.events()).items()
    assert event.summary == "Weekly pipeline review"
    assert event.recurrence is not None
    assert event.recurrence.rrule == "FREQ=WEEKLY;COUNT=8"
    assert (event.start, event.timezone) == (start, "Europe/Berlin")
    assert [utc(m) for m in event.recurrence.exdates] == [
        dt.datetime.fromisoformat(str(cancelled["original_start"]))
    ]
    # Every occurrence the service makes is at 09:00 Berlin, before and after the switch.
    starts = await instance_starts(synced.harness, event_id)
    assert len(starts) == 7
    assert {s.astimezone(BERLIN).time() for s in starts} == {dt.time(9)}
    assert len({s.astimezone(BERLIN).utcoffset() for s in starts}) == 2

    again = sync(synced)
    assert (again["created"], again["updated"], again["skipped"]) == (0, 0, 0)

    # Deleting the whole series in the CRM deletes the one series there.
    first = occurrences(synced, series_id)[0]
    gone = synced.user.delete(f"{V1}/activities/{first['id']}", params={"scope": "series"})
    assert gone.status_code == 200, gone.text
    assert sync(synced)["deleted"] == 1
    assert await synced.events() == {}


async def instance_starts(harness: Harness, event_id: str) -> list[dt.datetime]:
    """The starts of a series' occurrences as the service expands them."""
    if harness.kind == "google":
        assert isinstance(harness, GoogleHarness)
        path = f"/calendars/{harness.calendar_id}/events/{event_id}/instances"
        found = await harness.api("GET", path)
        return [dt.datetime.fromisoformat(i["start"]["dateTime"]) for i in found["items"]]
    now = dt.datetime.now(dt.UTC)
    window = {"startDateTime": f"{now - dt.timedelta(days=30):%Y-%m-%dT00:00:00Z}",
              "endDateTime": f"{now + dt.timedelta(days=1500):%Y-%m-%dT00:00:00Z}"}  # fmt: skip
    assert isinstance(harness, MicrosoftHarness)
    found = await harness.api(
        "GET", f"/me/events/{event_id}/instances", params=window,
        headers={"Prefer": 'outlook.timezone="UTC"'},
    )  # fmt: skip
    return [
        dt.datetime.fromisoformat(i["start"]["dateTime"][:19]).replace(tzinfo=dt.UTC)
        for i in found["value"]
    ]


async def test_a_calendar_series_becomes_one_crm_series_of_the_incoming_type(
    synced: Synced,
) -> None:
    synced.connect(incoming_activity_type="call")
    start = tuesday_nine_before_switch()
    cancelled = start + dt.timedelta(weeks=4)  # after the switch
    await synced.harness.put_foreign(
        Foreign(summary="Weekly call", start=start, end=start + dt.timedelta(hours=1),
                rrule="FREQ=WEEKLY;COUNT=8", cancelled=(cancelled,))
    )  # fmt: skip
    counts = sync(synced)
    assert (counts["created"], counts["skipped"], counts["problems"]) == (1, 0, [])
    listed = synced.activities()
    assert {a["subject"] for a in listed} == {"Weekly call"}
    assert {a["type"] for a in listed} == {"call"}
    (series_id,) = {a["series_id"] for a in listed}
    assert series_id is not None
    assert len(listed) == 7
    starts = [dt.datetime.fromisoformat(a["start"]).astimezone(BERLIN) for a in listed]
    assert {s.time() for s in starts} == {dt.time(9)}
    assert cancelled not in starts
    again = sync(synced)
    assert (again["created"], again["updated"]) == (0, 0)
    assert len(await synced.events()) == 1


async def test_whole_series_edits_go_both_ways(synced: Synced) -> None:
    synced.connect()
    start = tuesday_nine_before_switch()
    first = synced.user.post(f"{V1}/activities", json=weekly_body(start)).json()
    series_id = first["series_id"]
    assert sync(synced)["created"] == 1
    ((event_id, _),) = (await synced.events()).items()

    # In the CRM: new subject, an hour later, every second week.
    later = start + dt.timedelta(hours=1)
    edit = {"subject": "Pipeline review (new)", "start": later.isoformat(),
            "end": (later + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;INTERVAL=2;COUNT=4", "scope": "series"}  # fmt: skip
    assert synced.user.patch(f"{V1}/activities/{first['id']}", json=edit).status_code == 200
    counts = sync(synced)
    assert (counts["updated"], counts["created"], counts["skipped"]) == (1, 0, 0)
    ((same_id, event),) = (await synced.events()).items()
    assert same_id == event_id
    assert event.summary == "Pipeline review (new)"
    assert event.recurrence is not None
    assert set(event.recurrence.rrule.split(";")) == {"FREQ=WEEKLY", "INTERVAL=2", "COUNT=4"}
    assert event.start == later

    # In the calendar: retitled; the CRM series follows, keeping its own fields.
    await synced.change_event(event_id, summary="Pipeline review (from the calendar)")
    counts = sync(synced)
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    live = occurrences(synced, series_id)
    assert len(live) == 4
    assert {a["subject"] for a in live} == {"Pipeline review (from the calendar)"}
    assert {a["type"] for a in live} == {"meeting"}


async def test_cancelled_occurrences_go_both_ways(synced: Synced) -> None:
    synced.connect()
    start = tuesday_nine_before_switch()
    first = synced.user.post(f"{V1}/activities", json=weekly_body(start)).json()
    series_id = first["series_id"]
    assert sync(synced)["created"] == 1
    ((event_id, _),) = (await synced.events()).items()

    # Cancelled in the CRM: that occurrence is gone from the series there.
    listed = occurrences(synced, series_id)
    trashed = listed[2]
    assert synced.user.delete(f"{V1}/activities/{trashed['id']}").status_code == 200
    counts = sync(synced)
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    event = await synced.event(event_id)
    assert event.recurrence is not None
    original = dt.datetime.fromisoformat(str(trashed["original_start"]))
    assert [utc(m) for m in event.recurrence.exdates] == [original]
    assert len(await instance_starts(synced.harness, event_id)) == 7

    # Cancelled in the calendar (after the switch): that occurrence goes to the trash.
    elsewhere = start + dt.timedelta(weeks=5)
    left_out = event.leaving_out([elsewhere])
    await synced.provider.update(
        synced.calendar_id, event_id, (await fetch_ref(synced, event_id)).etag, left_out
    )
    counts = sync(synced)
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    live = occurrences(synced, series_id)
    assert len(live) == 6
    assert elsewhere not in {dt.datetime.fromisoformat(str(a["start"])) for a in live}
    trashed_now = occurrences(synced, series_id, deleted="true")
    assert {dt.datetime.fromisoformat(str(a["original_start"])) for a in trashed_now} == {
        original, utc(elsewhere)
    }  # fmt: skip

    # Deleted in the calendar: the whole CRM series goes to the trash.
    await synced.harness.remove(event_id)
    assert sync(synced)["deleted"] == 1
    assert occurrences(synced, series_id) == []


async def test_an_occurrence_taken_back_from_the_trash(synced: Synced) -> None:
    """Google brings a cancelled occurrence back; Outlook cannot (Graph has no way to
    un-cancel an occurrence): there the CRM keeps it and the sync says so."""
    synced.connect()
    start = tuesday_nine_before_switch()
    first = synced.user.post(f"{V1}/activities", json=weekly_body(start)).json()
    series_id = first["series_id"]
    assert sync(synced)["created"] == 1
    ((event_id, _),) = (await synced.events()).items()
    trashed = occurrences(synced, series_id)[2]
    assert synced.user.delete(f"{V1}/activities/{trashed['id']}").status_code == 200
    assert sync(synced)["updated"] == 1
    assert len(await instance_starts(synced.harness, event_id)) == 7

    restored = synced.user.post(f"{V1}/activities/{trashed['id']}/restore")
    assert restored.status_code == 200, restored.text
    counts = sync(synced)
    original = dt.datetime.fromisoformat(str(trashed["original_start"]))
    if synced.harness.kind == "google":
        assert counts["problems"] == []
        assert original in {utc(m) for m in await instance_starts(synced.harness, event_id)}
        assert len(await instance_starts(synced.harness, event_id)) == 8
    else:
        (problem,) = counts["problems"]
        assert original.astimezone(BERLIN).date().isoformat() in str(problem)
        assert "cannot" in str(problem)
        assert len(await instance_starts(synced.harness, event_id)) == 7
    assert len(occurrences(synced, series_id)) == 8  # the CRM keeps it either way
    again = sync(synced)
    assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert len(occurrences(synced, series_id)) == 8


async def fetch_ref(synced: Synced, event_id: str) -> Any:
    (ref,) = await synced.provider.fetch(synced.calendar_id, [event_id])
    return ref


async def test_an_all_day_yearly_series_stays_on_its_date(synced: Synced) -> None:
    synced.connect()
    day = dt.date(dt.date.today().year + 1, 3, 28)
    body = {"type": "meeting", "subject": "Contract anniversary", "all_day": True,
            "start": day.isoformat(), "end": None, "timezone": "Europe/Berlin",
            "recurrence": "FREQ=YEARLY;COUNT=3"}  # fmt: skip
    made = synced.user.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    counts = sync(synced)
    assert (counts["created"], counts["skipped"], counts["problems"]) == (1, 0, [])
    ((_, event),) = (await synced.events()).items()
    assert (event.start, event.all_day) == (day, True)
    assert event.recurrence is not None
    again = sync(synced)
    assert (again["created"], again["updated"], again["skipped"]) == (0, 0, 0)


async def test_a_series_made_elsewhere_reaches_graph_in_its_nearest_form(
    synced: Synced,
) -> None:
    """A CRM series with a rule Microsoft 365 cannot hold (made before the connection,
    as one coming from another client is) is written in the nearest form Outlook can
    hold, the difference reported; other providers hold it whole."""
    start = tuesday_nine_before_switch()
    made = synced.user.post(
        f"{V1}/activities",
        json=weekly_body(start, recurrence="FREQ=MONTHLY;BYMONTHDAY=1,15;COUNT=6"),
    )
    assert made.status_code == 201, made.text
    synced.connect()
    counts = sync(synced)
    assert counts["created"] == 1
    ((_, event),) = (await synced.events()).items()
    assert event.recurrence is not None
    if synced.harness.kind == "microsoft":
        assert set(event.recurrence.rrule.split(";")) == {"FREQ=MONTHLY", "BYMONTHDAY=1",
                                                          "COUNT=6"}  # fmt: skip
        assert [p["reason"] for p in counts["problems"]] == [
            "BYMONTHDAY: Microsoft 365 / Outlook holds one value; kept 1"
        ]
        # Stored faithfully in the CRM, and not sent again.
        shown = synced.user.get(f"{V1}/series/{made.json()['series_id']}").json()
        assert "BYMONTHDAY=1,15" in str(shown)
        again = sync(synced)
        assert (again["created"], again["updated"]) == (0, 0)
    else:
        assert counts["problems"] == []
        assert "BYMONTHDAY=1,15" in event.recurrence.rrule


def test_a_rule_graph_cannot_hold_is_refused_when_made_in_the_crm(synced: Synced) -> None:
    synced.connect()
    start = tuesday_nine_before_switch()
    for rule, part in (("FREQ=HOURLY;COUNT=3", "FREQ=HOURLY"),
                       ("FREQ=MONTHLY;BYMONTHDAY=1,15", "BYMONTHDAY"),
                       ("FREQ=DAILY;COUNT=1500", "COUNT")):  # fmt: skip
        made = synced.user.post(f"{V1}/activities", json=weekly_body(start, recurrence=rule))
        if synced.harness.kind == "microsoft":
            assert 400 <= made.status_code < 500, made.text
            assert part in made.json()["detail"]
        else:
            assert made.status_code == 201, made.text


# --- what one occurrence's edit costs ---------------------------------------------------------

# A five-year daily series lists some 1,800 occurrences a delta round; the emulators
# here run without the model checks of every answer the other tests have (slow on
# pages that size): what is counted is the service's calls, not their shapes.


@pytest.fixture(scope="module")
def plain_emulators() -> Iterator[tuple[GoogleEmulator, MicrosoftEmulator]]:
    google, graph = GoogleState(), MicrosoftState()
    with served_app(create_google(google)) as g_url, served_app(create_graph(graph)) as m_url:
        yield GoogleEmulator(g_url, google), MicrosoftEmulator(m_url.rstrip("/"), graph, [])


@pytest.fixture
def costed_crm(
    plain_emulators: tuple[GoogleEmulator, MicrosoftEmulator], db_url: str
) -> Iterator[tuple[Api, Api]]:
    """(admin, user) of a CRM whose connections reach the plain emulators."""
    google, graph = plain_emulators
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=BASE_URL,
                        google_api_url=google.url, google_oauth_url=google.url,
                        microsoft_api_url=graph.url, microsoft_oauth_url=graph.url)  # fmt: skip
    with client_of(settings) as test_client:
        user_id, token = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
        admin_api = Api(test_client, token, user_id)
        yield admin_api, new_user(admin_api, "sam@crm.test", timezone="Europe/Berlin")


@pytest.fixture(params=["google", "microsoft"])
async def costed(
    request: pytest.FixtureRequest,
    plain_emulators: tuple[GoogleEmulator, MicrosoftEmulator],
    costed_crm: tuple[Api, Api],
) -> AsyncIterator[Synced]:
    google, graph = plain_emulators
    opening: Awaitable[Harness] = (
        GoogleHarness.open(google) if request.param == "google" else MicrosoftHarness.open(graph)
    )
    async with opened(opening) as harness:
        yield Synced(harness, costed_crm[1], costed_crm[0])


async def test_one_occurrence_of_a_five_year_daily_series_costs_a_handful_of_calls(
    costed: Synced,
) -> None:
    """Editing one occurrence, on either side, costs a few calls to the service (batch
    parts counted one by one), never one per occurrence of the series."""
    synced = costed
    synced.connect()
    start = tuesday_nine_before_switch()
    first = synced.user.post(f"{V1}/activities", json={
        "type": "meeting", "subject": "Daily standup", "timezone": "Europe/Berlin",
        "start": start.isoformat(), "end": (start + dt.timedelta(minutes=15)).isoformat(),
        # Five years by its end (Outlook holds no COUNT above 999).
        "recurrence": f"FREQ=DAILY;UNTIL={start.year + 5}{start:%m%d}T235959Z",
    }).json()  # fmt: skip
    series_id = first["series_id"]
    assert sync(synced)["created"] == 1
    listed = occurrences(synced, series_id, limit=500)
    assert len(listed) >= 360  # up to the horizon, a year ahead
    # Graph's delta brings the new series' occurrences once: that round is not counted.
    assert sync(synced)["updated"] == 0

    # In the CRM: one occurrence retitled.
    synced.edit_activity(listed[100]["id"], subject="Standup with the board")
    before = emulator_calls(synced.harness)
    counts = sync(synced)
    spent = emulator_calls(synced.harness) - before
    assert (counts["updated"], counts["created"], counts["deleted"]) == (1, 0, 0)
    # On Google the occurrence's PATCH names its series' etag; the emulator gives an
    # instance an etag of its own (as Google may), so it is refused, the instance read
    # with the series' exceptions, and written again under its own: three calls more.
    assert sum(spent.values()) <= (9 if isinstance(synced.harness, GoogleHarness) else 8), spent
    ((event_id, event),) = (await synced.events()).items()
    assert [o.summary for o in event.overrides] == ["Standup with the board"]

    # In the calendar: another occurrence retitled by another client.
    target = listed[200]
    moment = dt.datetime.fromisoformat(str(target["original_start"]))
    ref = await fetch_ref(synced, event_id)
    override = dataclasses.replace(
        ref.event, summary="Standup (offsite)", start=moment,
        end=moment + dt.timedelta(minutes=15), recurrence=None, overrides=(),
        recurrence_id=moment, uid=None,
    )  # fmt: skip
    changed = dataclasses.replace(ref.event, overrides=(*ref.event.overrides, override))
    await synced.provider.update(synced.calendar_id, event_id, ref.etag, changed)
    before = emulator_calls(synced.harness)
    counts = sync(synced)
    spent = emulator_calls(synced.harness) - before
    assert (counts["updated"], counts["created"], counts["deleted"]) == (1, 0, 0)
    assert sum(spent.values()) <= 8, spent
    assert synced.activity(target["id"])["subject"] == "Standup (offsite)"


@pytest.mark.parametrize("titles_own", [1, 3], ids=["one-title-own", "every-title-own"])
async def test_a_series_renamed_in_the_crm_with_every_occurrence_changed_on_its_own(
    synced: Synced, titles_own: int
) -> None:
    """Every occurrence of a series already has a change of its own (an exception each
    there) when the CRM renames the series: the rename reaches the series' master and
    the occurrences whose title followed the series, and those whose title was edited
    on their own keep it; also when every title is an occurrence's own, and the rename
    changes no occurrence in the CRM, only the series (the later occurrences)."""
    synced.connect()
    start = tuesday_nine_before_switch()
    body = weekly_body(start, subject="Team sync", recurrence="FREQ=WEEKLY;COUNT=3")
    first = synced.user.post(f"{V1}/activities", json=body).json()
    series_id = first["series_id"]
    assert sync(synced)["created"] == 1
    own = [{"location": f"Room {n}"} for n in range(3 - titles_own)]
    own += [{"subject": f"Special {n}"} for n in range(titles_own)]
    for occurrence, change in zip(occurrences(synced, series_id), own, strict=True):
        patched = synced.user.patch(f"{V1}/activities/{occurrence['id']}", json=change)
        assert patched.status_code == 200, patched.text
    counts = sync(synced)
    assert (counts["updated"], counts["problems"]) == (1, []), counts
    ((event_id, event),) = (await synced.events()).items()
    assert len(event.live_overrides()) == 3

    renamed = synced.user.patch(f"{V1}/activities/{first['id']}",
                                json={"subject": "Team sync (new)", "scope": "series"})  # fmt: skip
    assert renamed.status_code == 200, renamed.text
    wanted = [(c.get("subject", "Team sync (new)"), c.get("location")) for c in own]
    assert [(o["subject"], o["location"]) for o in occurrences(synced, series_id)] == wanted
    counts = sync(synced)

    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, []), counts
    ((same_id, event),) = (await synced.events()).items()
    assert same_id == event_id
    assert event.summary == "Team sync (new)"
    by_start = sorted(event.live_overrides().values(), key=lambda o: str(o.recurrence_id))
    assert [(o.summary, o.location) for o in by_start] == wanted
    again = sync(synced)
    assert (again["updated"], again["created"], again["problems"]) == (0, 0, []), again
    assert [(o["subject"], o["location"]) for o in occurrences(synced, series_id)] == wanted
