"""The provider contract: the same tests for every provider, through ``harness``.

What the sync engine relies on: listings (full and incremental) that name every
change, fetches that return what was written (by content hash), idempotent
creates, version preconditions on updates and deletes, one unreadable event never
spoiling a batch, and errors of the right kind for bad credentials, dead servers
and servers of the wrong kind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crmcal.model import Attendee, CalendarEvent, Recurrence, RemoteRef
from crmcal.providers.base import (
    AuthenticationFailed,
    EventNotFound,
    NotACalendarServer,
    PreconditionFailed,
    SeriesInCalendar,
    Unreachable,
    create_many,
)
from tests.providers.harness import Foreign, Harness, fetch_one, key, listed, meeting

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def same_content(ref: RemoteRef, event: CalendarEvent) -> bool:
    assert ref.event is not None, ref.error
    return ref.event.content_hash() == event.content_hash()


# --- calendars ------------------------------------------------------------------------


async def test_lists_its_calendars(harness: Harness) -> None:
    await harness.provider.discover()
    second = await harness.make_second_calendar()
    calendars = await harness.provider.list_calendars()
    by_id = {c.id: c for c in calendars}
    assert harness.calendar_id in by_id
    assert second in by_id
    assert by_id[harness.calendar_id].name == "crmcal tests"
    assert by_id[second].name == "second calendar"
    assert all(c.writable for c in (by_id[harness.calendar_id], by_id[second]))
    assert sum(c.primary for c in calendars) == 1


async def test_calendars_are_separate(harness: Harness) -> None:
    second = await harness.make_second_calendar()
    ref = await harness.provider.create(second, key(), meeting())
    assert ref.id not in {r.id for r in (await listed(harness)).changed}
    other = await harness.provider.list_changes(second, None)
    assert [r.id for r in other.changed] == [ref.id]


# --- create, list, fetch ----------------------------------------------------------------


async def test_created_event_is_listed_and_fetched_unchanged(harness: Harness) -> None:
    event = meeting()
    ref = await harness.provider.create(harness.calendar_id, key(), event)
    assert ref.etag
    listing = await listed(harness)
    assert listing.full
    assert [(r.id, r.etag) for r in listing.changed] == [(ref.id, ref.etag)]
    # Listings name versions; where the service sends contents with them, they are right.
    assert listing.changed[0].event is None or same_content(listing.changed[0], event)
    fetched = await fetch_one(harness, ref.id)
    assert (fetched.id, fetched.etag, fetched.error) == (ref.id, ref.etag, None)
    assert same_content(fetched, event)
    assert fetched.event is not None
    assert (fetched.event.crm_id, fetched.event.crm_type) == ("activity-1", "meeting")
    assert fetched.event.timezone == "Europe/Berlin"
    assert fetched.event.uid
    assert fetched.event.last_modified is not None


async def test_create_is_idempotent_per_key(harness: Harness) -> None:
    the_key = key()
    ref = await harness.provider.create(harness.calendar_id, the_key, meeting())
    with pytest.raises(PreconditionFailed):
        await harness.provider.create(harness.calendar_id, the_key, meeting(summary="again"))
    found = await harness.provider.get_by_key(harness.calendar_id, the_key)
    assert found is not None
    assert (found.id, found.etag) == (ref.id, ref.etag)
    assert same_content(found, meeting())
    assert await harness.provider.get_by_key(harness.calendar_id, key()) is None
    assert len((await listed(harness)).changed) == 1


async def test_a_key_can_be_created_again_after_its_event_was_deleted(harness: Harness) -> None:
    # Sync recreates an event deleted in the calendar while its activity was edited;
    # Google, for one, never frees a deleted event's id.
    the_key = key()
    ref = await harness.provider.create(harness.calendar_id, the_key, meeting())
    await harness.remove(ref.id)
    again = await harness.provider.create(harness.calendar_id, the_key, meeting(summary="back"))
    fetched = await fetch_one(harness, again.id)
    assert same_content(fetched, meeting(summary="back"))
    assert [r.id for r in (await listed(harness)).changed] == [again.id]


async def test_many_creates_answer_each_item(harness: Harness) -> None:
    taken = key()
    first = await harness.provider.create(harness.calendar_id, taken, meeting())
    # A key taken by another event (a replay with the same content may answer that event).
    items = [(key(), meeting(summary="one")), (taken, meeting(summary="other")),
             (key(), meeting(summary="two"))]  # fmt: skip
    results = await create_many(harness.provider, harness.calendar_id, items)
    assert isinstance(results[1], PreconditionFailed)
    made = [r for r in results if isinstance(r, RemoteRef)]
    assert [same_content(r, e) for r, (_, e) in zip(made, items[::2], strict=True)] == [True] * 2
    listing = await listed(harness)
    assert sorted(r.id for r in listing.changed) == sorted([first.id, *(r.id for r in made)])


async def test_fetch_leaves_out_what_does_not_exist(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    missing = ref.id.rsplit("/", 1)[0] + "/no-such-event.ics"
    refs = await harness.provider.fetch(harness.calendar_id, [missing, ref.id])
    assert [r.id for r in refs] == [ref.id]
    assert await harness.provider.fetch(harness.calendar_id, []) == []


# --- update and delete ------------------------------------------------------------------


async def test_update_needs_the_current_version(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    later = dt.timedelta(hours=2)
    end = meeting().end
    assert end is not None
    changed = meeting(summary="Demo moved", start=meeting().start + later, end=end + later)
    updated = await harness.provider.update(harness.calendar_id, ref.id, ref.etag, changed)
    assert updated.id == ref.id
    assert updated.etag not in ("", ref.etag)
    assert same_content(await fetch_one(harness, ref.id), changed)
    with pytest.raises(PreconditionFailed):
        await harness.provider.update(harness.calendar_id, ref.id, ref.etag, meeting())
    assert same_content(await fetch_one(harness, ref.id), changed)


async def test_update_after_an_edit_elsewhere_fails(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    await harness.retitle(ref.id, "Edited elsewhere")
    with pytest.raises(PreconditionFailed):
        await harness.provider.update(harness.calendar_id, ref.id, ref.etag, meeting())
    current = await fetch_one(harness, ref.id)
    assert current.event is not None
    assert current.event.summary == "Edited elsewhere"
    # With the current version it goes through.
    await harness.provider.update(harness.calendar_id, ref.id, current.etag, meeting())


async def test_update_of_a_deleted_event(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    await harness.remove(ref.id)
    with pytest.raises(EventNotFound):
        await harness.provider.update(harness.calendar_id, ref.id, ref.etag, meeting())


async def test_delete_needs_the_current_version_and_is_idempotent(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    updated = await harness.provider.update(
        harness.calendar_id, ref.id, ref.etag, meeting(summary="v2")
    )
    with pytest.raises(PreconditionFailed):
        await harness.provider.delete(harness.calendar_id, ref.id, ref.etag)
    await harness.provider.delete(harness.calendar_id, ref.id, updated.etag)
    assert (await listed(harness)).changed == []
    assert await harness.provider.fetch(harness.calendar_id, [ref.id]) == []
    await harness.provider.delete(harness.calendar_id, ref.id, updated.etag)
    await harness.provider.delete(harness.calendar_id, ref.id, None)


async def test_delete_without_a_version(harness: Harness) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    await harness.retitle(ref.id, "Edited")
    await harness.provider.delete(harness.calendar_id, ref.id, None)
    assert (await listed(harness)).changed == []


# --- listings ---------------------------------------------------------------------------


async def test_incremental_listing_names_exactly_what_changed(harness: Harness) -> None:
    provider, calendar = harness.provider, harness.calendar_id
    ours = await provider.create(calendar, key(), meeting(summary="ours"))
    kept = await provider.create(calendar, key(), meeting(summary="untouched"))
    edited = await provider.create(calendar, key(), meeting(summary="edited elsewhere"))
    removed = await provider.create(calendar, key(), meeting(summary="removed elsewhere"))
    deleted = await provider.create(calendar, key(), meeting(summary="deleted by us"))
    first = await listed(harness)
    assert first.full
    assert first.cursor is not None
    assert {r.id for r in first.changed} == {
        ours.id, kept.id, edited.id, removed.id, deleted.id
    }  # fmt: skip

    updated = await provider.update(calendar, ours.id, ours.etag, meeting(summary="ours v2"))
    await harness.retitle(edited.id, "edited!")
    await harness.remove(removed.id)
    await provider.delete(calendar, deleted.id, deleted.etag)
    new_id = await harness.put_foreign(Foreign())

    changes = await listed(harness, first.cursor)
    assert not changes.full
    by_id = {r.id: r for r in changes.changed}
    assert set(by_id) == {ours.id, edited.id, new_id}
    assert by_id[ours.id].etag == updated.etag
    assert set(changes.deleted) == {removed.id, deleted.id}
    assert changes.cursor not in (None, first.cursor)

    quiet = await listed(harness, changes.cursor)
    assert (quiet.full, quiet.changed, quiet.deleted) == (False, [], [])


@pytest.mark.parametrize("cursor", ["http://example.test/ns/sync/expired", "not-a-token-$%"])
async def test_an_unusable_cursor_gives_a_full_listing(harness: Harness, cursor: str) -> None:
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    listing = await listed(harness, cursor)
    assert listing.full
    assert [r.id for r in listing.changed] == [ref.id]
    assert listing.cursor != cursor


async def test_one_unreadable_event_does_not_spoil_the_batch(harness: Harness) -> None:
    good = await harness.provider.create(harness.calendar_id, key(), meeting())
    bad_id = await harness.put_unreadable()
    if bad_id is None:
        pytest.skip(f"{harness.kind} stores nothing the provider cannot read")
    other_id = await harness.put_foreign(Foreign())
    ids = [r.id for r in (await listed(harness)).changed]
    assert sorted(ids) == sorted([good.id, bad_id, other_id])
    refs = {r.id: r for r in await harness.provider.fetch(harness.calendar_id, ids)}
    assert set(refs) == set(ids)
    assert refs[bad_id].event is None
    assert refs[bad_id].error
    assert refs[bad_id].etag
    assert same_content(refs[good.id], meeting())
    other = refs[other_id].event
    assert other is not None
    assert other.summary == "Made elsewhere"


async def test_a_listing_with_contents_is_a_full_listing_and_a_fetch(harness: Harness) -> None:
    provider, calendar = harness.provider, harness.calendar_id
    ours = await provider.create(calendar, key(), meeting())
    theirs = await harness.put_foreign(Foreign())
    bad_id = await harness.put_unreadable()
    await harness.put_non_event()

    listing = await provider.list_changes(calendar, None, with_contents=True)
    assert listing.full
    assert listing.cursor
    refs = {r.id: r for r in listing.changed}
    assert set(refs) == {ours.id, theirs} | ({bad_id} if bad_id else set())
    fetched = {r.id: r for r in await provider.fetch(calendar, list(refs))}
    for ref_id, ref in refs.items():
        assert ref.etag == fetched[ref_id].etag
        if ref_id == bad_id:
            assert ref.event is None
            assert ref.error
        else:
            again = fetched[ref_id].event
            assert ref.event is not None
            assert again is not None
            assert ref.event.content_hash() == again.content_hash()

    # Its cursor picks up from there.
    await provider.update(calendar, ours.id, ours.etag, meeting(summary="ours v2"))
    changes = await provider.list_changes(calendar, listing.cursor, with_contents=True)
    assert not changes.full
    assert [r.id for r in changes.changed] == [ours.id]


async def test_non_events_are_left_out(harness: Harness) -> None:
    other_id = await harness.put_non_event()
    if other_id is None:
        pytest.skip(f"{harness.kind} keeps nothing but events in a calendar")
    event_id = await harness.put_foreign(Foreign())
    refs = await harness.provider.fetch(harness.calendar_id, [other_id, event_id])
    assert [r.id for r in refs] == [event_id]
    listing = await harness.provider.list_changes(harness.calendar_id, None, with_contents=True)
    assert [r.id for r in listing.changed] == [event_id]


async def test_ids_survive_unusual_resource_names(harness: Harness) -> None:
    event_id = await harness.put_foreign(Foreign(name="a b@c+d (1).ics"))
    listing = await listed(harness)
    assert [r.id for r in listing.changed] == [event_id]
    ref = await fetch_one(harness, event_id)
    assert ref.id == event_id
    updated = await harness.provider.update(
        harness.calendar_id, event_id, ref.etag, meeting(summary="renamed")
    )
    changes = await listed(harness, listing.cursor)
    assert [r.id for r in changes.changed] == [event_id]
    await harness.provider.delete(harness.calendar_id, event_id, updated.etag)
    assert (await listed(harness, changes.cursor)).deleted == [event_id]


# --- field mapping ----------------------------------------------------------------------

EVENTS = {
    "all-day": meeting(
        start=dt.date(2026, 12, 24), end=dt.date(2026, 12, 27), all_day=True, timezone=None
    ),
    "berlin-across-dst": meeting(
        start=dt.datetime(2026, 3, 28, 22, tzinfo=BERLIN),
        end=dt.datetime(2026, 3, 29, 9, tzinfo=BERLIN),
    ),
    "new-york-across-dst": meeting(
        start=dt.datetime(2026, 10, 31, 23, 30, tzinfo=NEW_YORK),
        end=dt.datetime(2026, 11, 1, 3, 15, tzinfo=NEW_YORK),
        timezone="America/New_York",
    ),
    "new-york-summer": meeting(
        start=dt.datetime(2026, 7, 4, 9, tzinfo=NEW_YORK),
        end=dt.datetime(2026, 7, 4, 9, 30, tzinfo=NEW_YORK),
        timezone="America/New_York",
    ),
    "utc": meeting(
        start=dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC),
        end=dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC),
        timezone="UTC",
    ),
    "no-end": meeting(end=None, summary="Deadline: contract"),
    "reminder": meeting(reminder_minutes=15),
    "reminder-at-start": meeting(reminder_minutes=0),
    "private": meeting(private=True),
    "free": meeting(busy=False),
    "attendees": meeting(
        attendees=(
            Attendee("ann@acme.test", "Ann Lee", "accepted"),
            Attendee("bob@acme.test", 'Bob "the builder", Jr.', "declined"),
            Attendee("carl@acme.test", None, "tentative"),
            Attendee("dora@acme.test", "Dora", "needs_action"),
            Attendee("room4@acme.test", "Room 4", resource=True),
        ),
        organizer="owner@crm.test",
    ),
    "untitled": meeting(summary=None, location=None, description=None),
    "unicode-text": meeting(
        summary="Café ☕ mit Jürgen — 会议",
        location="Straße 1; 2. OG, links",
        description="Zeile 1\nZeile 2\\ mit Backslash\n\n\tund Tab",
    ),
    "long-text": meeting(description="lorem ipsum " * 400),
    "cancelled": meeting(cancelled=True),
    "weekly-series": meeting(
        recurrence=Recurrence(
            rrule="FREQ=WEEKLY;BYDAY=TU;COUNT=10",
            exdates=(dt.datetime(2026, 12, 8, 10, tzinfo=BERLIN),),
        )
    ),
}


@pytest.mark.parametrize("name", list(EVENTS))
async def test_fields_survive_the_server(harness: Harness, name: str) -> None:
    if name in harness.unsupported:
        pytest.skip(f"{harness.kind}: {harness.unsupported[name]}")
    event = EVENTS[name]
    if event.attendees and harness.provider.capabilities.mails_attendees:
        # Such a service gets attendees only when invitations are wanted (F10) ...
        event = dataclasses.replace(event, notify_attendees=True)
    if event.attendees and not harness.attendee_answers_written:
        # ... and where only attendees answer for themselves, they have not yet.
        unanswered = tuple(dataclasses.replace(a, status="needs_action") for a in event.attendees)
        event = dataclasses.replace(event, attendees=unanswered)
    ref = await harness.provider.create(harness.calendar_id, key(), event)
    fetched = await fetch_one(harness, ref.id)
    assert same_content(fetched, event)
    assert fetched.event is not None
    if not event.all_day:
        assert fetched.event.timezone == event.timezone
    # And again after an update to something else and back (a series stays one: a
    # single event is never written over a series).
    interim = meeting(summary="interim", recurrence=event.recurrence)
    other = await harness.provider.update(harness.calendar_id, ref.id, ref.etag, interim)
    await harness.provider.update(harness.calendar_id, ref.id, other.etag, event)
    assert same_content(await fetch_one(harness, ref.id), event)


async def test_events_made_elsewhere_are_read(harness: Harness) -> None:
    event_id = await harness.put_foreign(
        Foreign(
            uid="made-elsewhere@example.test",
            summary="Lunch",
            start=dt.date(2026, 12, 24),
            end=None,
            confidential=True,
            free=True,
            organizer=("ann@acme.test", "Ann"),
            attendees=(("bob@acme.test", "Bob", "accepted"),),
            reminders=(60,),
        )
    )
    event = (await fetch_one(harness, event_id)).event
    assert event is not None
    assert (event.summary, event.all_day, event.start, event.end) == (
        "Lunch", True, dt.date(2026, 12, 24), dt.date(2026, 12, 25)
    )  # fmt: skip
    assert (event.private, event.busy, event.reminder_minutes) == (True, False, 60)
    assert event.organizer == "ann@acme.test"
    assert event.attendees == (Attendee("bob@acme.test", "Bob", "accepted"),)
    assert event.uid == "made-elsewhere@example.test"
    assert event.crm_id is None


async def test_update_keeps_what_other_clients_stored(harness: Harness) -> None:
    event_id = await harness.put_foreign(
        Foreign(
            uid="foreign@example.test",
            summary="Review",
            start=dt.datetime(2026, 12, 3, 14, tzinfo=BERLIN),
            end=dt.datetime(2026, 12, 3, 15, tzinfo=BERLIN),
            reminders=(10,),
            extras=True,
        )
    )
    fetched = await fetch_one(harness, event_id)
    assert fetched.event is not None
    assert fetched.event.reminder_minutes == 10
    changed = dataclasses.replace(fetched.event, summary="Review (moved)", reminder_minutes=20)
    updated = await harness.provider.update(harness.calendar_id, event_id, fetched.etag, changed)
    raw = await harness.read_raw(event_id)
    for kept in (*harness.extra_markers, "foreign@example.test"):
        assert kept in raw
    assert "Review (moved)" in raw
    again = await fetch_one(harness, event_id)
    assert again.etag == updated.etag
    assert same_content(again, changed)


async def test_an_update_writes_only_the_fields_that_changed(harness: Harness) -> None:
    """Issue 11 item 7: an unrelated change never cuts a long text to the CRM's limits or
    drops what other clients stored; only the fields named as changed are written."""
    long_note = "Agenda\n" + "word " * 2000 + "\nJoin: https://meet.example.test/abc-defg-hij"
    event_id = await harness.put_foreign(
        Foreign(uid="long@example.test", summary="Review", extras=True, reminders=(10,))
    )
    fetched = await fetch_one(harness, event_id)
    assert fetched.event is not None
    full = dataclasses.replace(fetched.event, description=long_note)
    written = await harness.provider.update(harness.calendar_id, event_id, fetched.etag, full)
    # What the CRM holds: the note cut short, and a new title.
    crm_side = dataclasses.replace(full, summary="Review (renamed)", description=long_note[:100])
    await harness.provider.update(
        harness.calendar_id, event_id, written.etag, crm_side, changed=frozenset({"summary"})
    )
    again = await fetch_one(harness, event_id)
    assert again.event is not None
    assert again.event.summary == "Review (renamed)"
    assert again.event.description == long_note
    assert again.event.reminder_minutes == 10
    raw = await harness.read_raw(event_id)
    for kept in harness.extra_markers:
        assert kept in raw


async def test_a_single_event_is_never_written_over_a_series(harness: Harness) -> None:
    """Issue 11 item 15: an event that turned into a series in the calendar is never
    flattened by a write of the single event the CRM knows."""
    start = dt.datetime(2026, 12, 7, 9, tzinfo=BERLIN)
    event_id = await harness.put_foreign(
        Foreign(uid="became-series@example.test", summary="Standup", start=start,
                end=start + dt.timedelta(minutes=15), rrule="FREQ=WEEKLY;COUNT=5")
    )  # fmt: skip
    fetched = await fetch_one(harness, event_id)
    assert fetched.event is not None
    assert fetched.event.recurrence is not None
    single = dataclasses.replace(
        fetched.event, recurrence=None, start=start + dt.timedelta(hours=1),
        end=start + dt.timedelta(hours=1, minutes=15),
    )  # fmt: skip
    for changed in (None, frozenset({"when", "summary"})):
        with pytest.raises(SeriesInCalendar):
            await harness.provider.update(
                harness.calendar_id, event_id, fetched.etag, single, changed=changed
            )
    again = await fetch_one(harness, event_id)
    assert again.event is not None
    assert again.event.recurrence == fetched.event.recurrence
    assert again.event.start == start


# --- errors -----------------------------------------------------------------------------


async def test_wrong_password_is_an_authentication_failure(harness: Harness) -> None:
    provider = harness.with_wrong_password()
    if provider is None:
        pytest.skip(f"{harness.kind} checks no credentials here")
    with pytest.raises(AuthenticationFailed):
        await provider.list_calendars()
    with pytest.raises(AuthenticationFailed):
        await provider.list_changes(harness.calendar_id, None)


async def test_a_dead_server_is_unreachable(harness: Harness, closed_port_url: str) -> None:
    if harness.kind == "memory":
        pytest.skip("the in-memory calendar is reached over no network")
    provider = harness.provider_for(closed_port_url)
    with pytest.raises(Unreachable):
        await provider.list_calendars()
    calendar = closed_port_url + "calendar/"
    with pytest.raises(Unreachable):
        await provider.list_changes(calendar, None)
    with pytest.raises(Unreachable):
        await provider.create(calendar, key(), meeting())


async def test_a_plain_web_server_is_not_a_calendar_server(
    harness: Harness, plain_http: str
) -> None:
    if harness.kind == "memory":
        pytest.skip("the in-memory calendar is reached over no network")
    provider = harness.provider_for(plain_http)
    with pytest.raises(NotACalendarServer):
        await provider.list_calendars()


async def test_a_series_with_changed_occurrences_stays_whole(harness: Harness) -> None:
    def at(day: int, hour: int) -> dt.datetime:
        return dt.datetime(2026, 12, day, hour, tzinfo=BERLIN)

    event_id = await harness.put_foreign(
        Foreign(
            uid="series@example.test",
            summary="Weekly",
            start=at(1, 9),
            end=at(1, 9) + dt.timedelta(minutes=30),
            rrule="FREQ=WEEKLY;COUNT=6",
            moved=((at(8, 9), at(8, 11), "Weekly (moved)"),),
            cancelled=(at(15, 9),),
        )
    )
    fetched = await fetch_one(harness, event_id)
    event = fetched.event
    assert event is not None
    assert event.summary == "Weekly"
    assert event.recurrence == Recurrence(rrule="FREQ=WEEKLY;COUNT=6", exdates=(at(15, 9),))
    changed = dataclasses.replace(event, summary="Weekly sync")
    await harness.provider.update(harness.calendar_id, event_id, fetched.etag, changed)
    raw = await harness.read_raw(event_id)
    assert "Weekly (moved)" in raw
    assert same_content(await fetch_one(harness, event_id), changed)


async def test_fetched_events_tell_when_they_were_last_modified(harness: Harness) -> None:
    """The ``latest`` conflict policy compares this time with the activity's."""
    before = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    ref = await harness.provider.create(harness.calendar_id, key(), meeting())
    fetched = await fetch_one(harness, ref.id)
    assert fetched.event is not None
    assert fetched.event.last_modified is not None
    assert fetched.event.last_modified >= before
