"""What a first import's parse pool computes of each event, computed once where the old
code computed it twice or copied an event for it, with the very same values: the merge
digests of a flag or a note, a plain series' units, a new event's link digests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from crmcal.model import Attendee, CalendarEvent, Recurrence, field_digests, moment_key
from crmcal.providers.ical.read import parse_event
from crmcal.sync import import_fields, info_block, links, merge, series_units
from crmcal.sync.import_fields import Importer
from crmcal.sync.links import field_hashes
from crmcal.sync.options import SyncOptions
from tests.bulk_import import realistic

START = dt.datetime(2027, 3, 1, 9, tzinfo=dt.UTC)
BLOCK = f"{info_block.BEGIN}\nDeal: Renewal\n{info_block.END}"


def _event(**values: Any) -> CalendarEvent:
    base: dict[str, Any] = {"summary": "Review", "start": START}
    base["end"] = START + dt.timedelta(hours=1)
    return CalendarEvent(**{**base, **values})


def _events() -> Iterator[CalendarEvent]:
    """Events of a generated calendar and odd ones: flags, reminders, notes with and
    without the CRM's block, all-day, floating, no description."""
    for n in range(40):
        event = parse_event(realistic("digests", n))
        assert event is not None
        yield event
    yield _event(private=True, busy=False, reminder_minutes=0)
    yield _event(reminder_minutes=15, description="")
    yield _event(reminder_minutes=10**6, description=None, location=None)
    yield _event(description=f"Agenda\n\n{info_block.BEGIN}\nDeal: X\n", attendees=())
    yield _event(description=f"Agenda\n\n{BLOCK}\nmore", private=True)
    yield _event(description=BLOCK)
    yield _event(start=dt.date(2027, 3, 1), end=dt.date(2027, 3, 2), all_day=True)
    yield _event(start=dt.datetime(2027, 3, 1, 9), end=None, floating=True)
    yield _event(
        attendees=(Attendee("B@x.example", "B", "accepted"), Attendee("a@x.example")),
        cancelled=True,
    )


def _digests_before(event: CalendarEvent) -> merge.Digests:
    """``merge._digests`` as it was: every field hashed."""
    out = {}
    for name, attributes in merge.FIELDS.items():
        out[name] = merge._digest([merge._canonical(getattr(event, a)) for a in attributes])
    out[merge.NOTE] = merge._digest([info_block.without_block(event.description)])
    return out


def test_the_merge_digests_are_those_of_every_field_hashed() -> None:
    for event in _events():
        assert merge._digests(event) == _digests_before(event), event


def test_a_flag_s_digest_is_looked_up_and_a_plain_note_s_is_the_description_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merge._digests(_event(private=True, busy=False, reminder_minutes=30))  # flags seen once
    hashed: list[object] = []
    digest = merge._digest

    def counted(values: list[object]) -> str:
        hashed.append(values)
        return digest(values)

    monkeypatch.setattr(merge, "_digest", counted)
    merge._digests(
        _event(private=True, busy=False, reminder_minutes=30, description="Plain", location="R")
    )
    # summary, when, location, description, attendees: not the flags, not the note again.
    assert len(hashed) == 5


def test_a_one_value_digest_tells_a_flag_from_a_number() -> None:
    assert merge._one_value(True) == merge._digest([True])
    assert merge._one_value(1) == merge._digest([1])
    assert merge._one_value(True) != merge._one_value(1)
    assert merge._one_value(0) != merge._one_value(False)
    assert merge._one_value(None) == merge._digest([None])


def _series(**values: Any) -> CalendarEvent:
    return _event(recurrence=Recurrence("FREQ=WEEKLY;COUNT=10"), **values)


def _units_before(event: CalendarEvent) -> series_units.Digests:
    """``series_units._digests_of`` as it was: the master copied bare every time."""
    rule = event.recurrence
    bare = dataclasses.replace(
        event,
        overrides=(),
        recurrence=dataclasses.replace(rule, exdates=()) if rule is not None else None,
    )
    master = field_digests(bare)
    master.pop("overrides", None)
    occurrences = {moment_key(m): series_units.LEFT_OUT for m in event.cancelled_moments()}
    for key, override in event.live_overrides().items():
        if key not in occurrences and override.recurrence_id is not None:
            occurrences[key] = override.content_hash()
    return series_units.Digests(master, occurrences)


def test_a_series_units_are_those_of_the_bare_master() -> None:
    later = START + dt.timedelta(weeks=2)
    changed = _event(summary="Moved", recurrence_id=later, start=later + dt.timedelta(hours=1))
    cancelled = _event(recurrence_id=START + dt.timedelta(weeks=3), cancelled=True)
    ruled = Recurrence("FREQ=WEEKLY;COUNT=10", exdates=(START + dt.timedelta(weeks=1),))
    for event in (
        _series(),
        _series(private=True, attendees=(Attendee("a@x.example", "A"),)),
        _event(recurrence=ruled),
        _series(overrides=(changed,)),
        _series(overrides=(cancelled,)),
        _event(recurrence=ruled, overrides=(changed, cancelled)),
        _event(recurrence_id=later),
    ):
        assert series_units._digests_of(event, series_units._anywhere) == _units_before(event)


def test_a_plain_series_units_are_computed_without_copying_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("copied")

    monkeypatch.setattr(series_units, "replace", refused)
    event = _series()
    assert series_units._digests_of(event, series_units._anywhere) == _units_before(event)


IMPORTER = Importer(7, "owner@crm.test", "Europe/Berlin", SyncOptions(), frozenset())


def _link_before(event: CalendarEvent) -> str:
    return json.dumps(field_hashes(event, event, alike=True))


def test_a_new_event_s_link_digests_are_the_text_of_both_sides_digests() -> None:
    for event in _events():
        assert links.alike_hashes_text(event) == _link_before(event), event
    for n in range(40):
        read = parse_event(realistic("link", n))
        assert read is not None
        fields = import_fields.import_fields(read, IMPORTER)
        if not read.recurring:  # the calendar's events are the CRM's as it writes them
            assert fields.link is not None
            assert fields.link.field_hashes == _link_before(read)


def test_a_new_event_alike_on_both_sides_has_its_digests_encoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = parse_event(realistic("once", 1))
    assert event is not None
    expected = _link_before(event)

    def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("both sides' digests gathered again")

    monkeypatch.setattr(import_fields, "field_hashes", refused)
    fields = import_fields.import_fields(event, IMPORTER)
    assert fields.link is not None
    assert fields.link.field_hashes == expected
