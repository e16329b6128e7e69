"""A field audit: a realistic calendar, as real clients write it, synced both ways.

The calendar holds what a CRM user's calendar holds after a few years of Outlook,
Thunderbird, Evolution and phones: events in time zones with their VTIMEZONE, an
organizer and guests, alarms, weekly series, all-day days; and what those clients
spell their own way: Windows and vendor-prefixed TZIDs, a TZID no VTIMEZONE
defines, floating times, days spanning a week-end, a series whose moved occurrence
is in another zone than its master, EXDATE lists, invitations from other people,
HTML bodies, X- properties and components crmcal never reads, tasks and journal
entries beside the events. Radicale and Xandikos serve it; crmcal reaches them
through ``tests.caldav_proxy``, which counts its requests (and answers weak ETags),
while "another client" writes with plain HTTP.

What must hold (the field's lessons): a sync with nothing changed writes nothing;
other people's meetings are never written; a CRM edit rewrites only what it changed,
keeping every other property, parameter and component, and the zone its times were
in; nothing is lost or doubled, and an item crmcal cannot read is reported and
skipped while the rest sync.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import icalendar
import pytest

from crmcal.providers.caldav import IF_MATCH_CHECK
from tests.caldav_proxy import Behaviour
from tests.providers.harness import (
    BERLIN_VTIMEZONE,
    LOCAL,
    STAMP,
    CalDAVHarness,
    calendar_text,
    timed,
)
from tests.providers.synced import SOON, V1, Proxied

SAM = "sam@crm.test"
DAY = "%Y%m%d"

WORDS = ["quarterly", "review", "pipeline", "renewal", "onboarding", "demo", "kickoff",
         "pricing", "workshop", "escalation", "roadmap", "forecast"]  # fmt: skip
COMPANIES = ["Acme GmbH", "Globex AG", "Initech SE", "Umbrella KG", "Hooli Ltd"]
PEOPLE = ["Anna Müller", "Ben Schmidt", "Clara Fischer", "David Weber", "Eva Becker",
          "Felix Koch", "Greta Richter"]  # fmt: skip

NEW_YORK_VTIMEZONE = """BEGIN:VTIMEZONE
TZID:America/New_York
BEGIN:DAYLIGHT
TZNAME:EDT
DTSTART:19700308T020000
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
END:DAYLIGHT
BEGIN:STANDARD
TZNAME:EST
DTSTART:19701101T020000
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
END:STANDARD
END:VTIMEZONE
"""

OUTLOOK = "-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN"
OUTLOOK_DISPLAY_NAME = "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"
OUTLOOK_VTIMEZONE = f"""BEGIN:VTIMEZONE
TZID:{OUTLOOK_DISPLAY_NAME}
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
"""


def address(name: str) -> str:
    first, last = name.lower().split()
    return f"{first}.{last.replace('ü', 'ue')}@example.com"


class Item:
    """One resource of the calendar: its text, and what the audit expects of it."""

    def __init__(self, name: str, text: str, summary: str | None, *, own: bool = True,
                 series: bool = False) -> None:  # fmt: skip
        self.name = name
        self.text = text
        self.summary = summary  # None: not an event crmcal imports
        self.own = own
        self.series = series
        self.event_id = ""


def generated(rng: random.Random, n: int, first_day: dt.date) -> Iterator[Item]:
    """Events as gen_events.py (the anchor bench's generator) writes them, with the
    user as organizer of some and a guest of the others."""
    for i in range(n):
        company = rng.choice(COMPANIES)
        topic = " ".join(rng.sample(WORDS, 2))
        summary = f"{company}: {topic} #{i}"
        desc = " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 60)))
        own = rng.random() < 0.6
        organizer = ("Sam", SAM) if own else (p := rng.choice(PEOPLE), address(p))
        guests = rng.sample(PEOPLE, rng.randint(1, 3))
        lines = [
            f"UID:field-{i:04d}@audit.example", f"DTSTAMP:{STAMP}", f"CREATED:{STAMP}",
            f"LAST-MODIFIED:{STAMP}", "SEQUENCE:0", f"SUMMARY:{summary}",
            f"DESCRIPTION:Deal #{rng.randint(10000, 99999)} with {company}.\\n{desc}"
            f"\\nAgenda:\\n- intro\\n- {topic}",
            f"LOCATION:Friedrichstraße {rng.randint(1, 200)}\\, 10117 Berlin",
            "STATUS:CONFIRMED", f"CATEGORIES:{rng.choice(['Sales', 'Customer', 'Internal'])}",
            f"ORGANIZER;CN={organizer[0]}:mailto:{organizer[1]}",
        ]  # fmt: skip
        for guest in guests:
            partstat = rng.choice(["NEEDS-ACTION", "ACCEPTED", "TENTATIVE"])
            lines.append(f"ATTENDEE;CN={guest};ROLE=REQ-PARTICIPANT;PARTSTAT={partstat};"
                         f"RSVP=TRUE:mailto:{address(guest)}")  # fmt: skip
        if not own:
            lines.append(f"ATTENDEE;CN=Sam;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:{SAM}")
        day = first_day + dt.timedelta(days=rng.randint(0, 60))
        r = rng.random()
        zone = ""
        series = False
        if r < 0.05:
            lines += [f"DTSTART;VALUE=DATE:{day:{DAY}}",
                      f"DTEND;VALUE=DATE:{day + dt.timedelta(days=rng.choice([1, 2])):{DAY}}",
                      "TRANSP:TRANSPARENT"]  # fmt: skip
        else:
            start = dt.datetime.combine(day, dt.time(rng.randint(7, 18), rng.choice([0, 30])))
            end = start + dt.timedelta(minutes=rng.choice([30, 60, 90]))
            lines += [f"DTSTART;TZID=Europe/Berlin:{start:{LOCAL}}",
                      f"DTEND;TZID=Europe/Berlin:{end:{LOCAL}}"]  # fmt: skip
            if r < 0.15:
                lines.append("RRULE:FREQ=WEEKLY;COUNT=10")
                series = True
            zone = BERLIN_VTIMEZONE.format(tzid="Europe/Berlin")
        if rng.random() < 0.5:
            lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Reminder",
                      "TRIGGER:-PT15M", "END:VALARM"]  # fmt: skip
        event = "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"
        yield Item(f"field-{i:04d}.ics", calendar_text(zone, event), summary, own=own,
                   series=series)  # fmt: skip


HTML = ('X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Agenda: <b>pricing</b></p>'
        '<a href="https://teams.example/join/123">Join</a></body></html>')  # fmt: skip
OUTLOOK_EXTRAS = (
    HTML,
    "X-MICROSOFT-CDO-BUSYSTATUS:BUSY",
    "X-MICROSOFT-CDO-IMPORTANCE:1",
    "X-MS-OLK-CONFTYPE:0",
    "X-FIELD-AUDIT;X-KEEP=yes;LANGUAGE=de:unverändert\\, bitte",
    "CATEGORIES:Customer,VIP",
    "ATTENDEE;CN=Kim Lee;ROLE=OPT-PARTICIPANT;PARTSTAT=TENTATIVE;RSVP=TRUE;"
    "X-NUM-GUESTS=0:mailto:kim@acme.test",
    "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:REMINDER\nTRIGGER;RELATED=START:-PT15M\n"
    "END:VALARM",
    "BEGIN:VALARM\nACTION:EMAIL\nSUMMARY:Mail me\nDESCRIPTION:keep\nATTENDEE:mailto:sam@crm.test\n"
    "TRIGGER:-P1D\nEND:VALARM",
)  # fmt: skip


def variations(first_day: dt.date) -> Iterator[Item]:
    """What real clients write that the generator does not."""
    at = dt.datetime.combine(first_day + dt.timedelta(days=2), dt.time(10))
    organizer = f"ORGANIZER;CN=Sam:mailto:{SAM}"
    yield Item("outlook-windows.ics", calendar_text(
        BERLIN_VTIMEZONE.format(tzid="W. Europe Standard Time"),
        timed("040000008200E00074C5B7101A82E008000000001@outlook", "Outlook windows zone",
              "W. Europe Standard Time", at, organizer, *OUTLOOK_EXTRAS),
        prodid=OUTLOOK), "Outlook windows zone")  # fmt: skip
    yield Item("outlook-display.ics", calendar_text(
        OUTLOOK_VTIMEZONE,
        timed("040000008200E00074C5B7101A82E008000000002@outlook", "Outlook display zone",
              f'"{OUTLOOK_DISPLAY_NAME}"', at + dt.timedelta(hours=2), organizer,
              *OUTLOOK_EXTRAS),
        prodid=OUTLOOK), "Outlook display zone")  # fmt: skip
    evolution = "/freeassociation.sourceforge.net/Tzfile/Europe/Berlin"
    yield Item("evolution.ics", calendar_text(
        BERLIN_VTIMEZONE.format(tzid=evolution),
        timed("evolution-1@audit.example", "Evolution zone", evolution,
              at + dt.timedelta(days=1), "X-EVOLUTION-CALDAV-ETAG:abc",
              "BEGIN:VALARM\nX-EVOLUTION-ALARM-UID:20261101T080000Z-1\nACTION:DISPLAY\n"
              "TRIGGER;VALUE=DURATION;RELATED=START:-PT30M\nDESCRIPTION:Evolution zone\n"
              "END:VALARM"),
        prodid="-//Ximian//NONSGML Evolution Calendar//EN"), "Evolution zone")  # fmt: skip
    mozilla = "/mozilla.org/20050126_1/Europe/Berlin"
    yield Item("mozilla.ics", calendar_text(
        BERLIN_VTIMEZONE.format(tzid=mozilla),
        timed("mozilla-1@audit.example", "Mozilla zone", mozilla,
              at + dt.timedelta(days=1, hours=2), "X-MOZ-GENERATION:3",
              "X-MOZ-LASTACK:20261101T080000Z", "CLASS:PUBLIC"),
        prodid="-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN"), "Mozilla zone")  # fmt: skip
    yield Item("no-vtimezone.ics", calendar_text(
        timed("no-vtimezone-1@audit.example", "Zone without definition", "Europe/Paris",
              at + dt.timedelta(days=1, hours=4), "X-WR-ITEM:kept")),
        "Zone without definition")  # fmt: skip
    yield Item("floating.ics", calendar_text(
        timed("floating-1@audit.example", "Floating time", None,
              at + dt.timedelta(days=3), "TRANSP:OPAQUE")), "Floating time")  # fmt: skip
    days = first_day + dt.timedelta(days=4)
    yield Item("all-day.ics", calendar_text(
        "BEGIN:VEVENT\n"
        f"UID:all-day-1@audit.example\nDTSTAMP:{STAMP}\nSUMMARY:Trade fair\n"
        f"DTSTART;VALUE=DATE:{days:{DAY}}\n"
        f"DTEND;VALUE=DATE:{days + dt.timedelta(days=3):{DAY}}\n"
        "TRANSP:TRANSPARENT\nX-MICROSOFT-CDO-ALLDAYEVENT:TRUE\nEND:VEVENT\n"),
        "Trade fair")  # fmt: skip
    weekly = dt.datetime.combine(first_day + dt.timedelta(days=5), dt.time(9))
    exdates = ",".join(f"{weekly + dt.timedelta(weeks=w):{LOCAL}}" for w in (1, 2))
    moved = weekly + dt.timedelta(weeks=3)
    master = timed("series-1@audit.example", "Weekly stand-up", "Europe/Berlin", weekly,
                   organizer, "RRULE:FREQ=WEEKLY;COUNT=8",
                   f"EXDATE;TZID=Europe/Berlin:{exdates}",
                   f"EXDATE;TZID=Europe/Berlin:{weekly + dt.timedelta(weeks=5):{LOCAL}}",
                   "X-FIELD-AUDIT:series")  # fmt: skip
    override = timed("series-1@audit.example", "Weekly stand-up (New York)", "America/New_York",
                     moved - dt.timedelta(hours=6), organizer,
                     f"RECURRENCE-ID;TZID=Europe/Berlin:{moved:{LOCAL}}")  # fmt: skip
    yield Item("series.ics", calendar_text(
        BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"), NEW_YORK_VTIMEZONE, master, override),
        "Weekly stand-up", series=True)  # fmt: skip
    yield Item("invitation.ics", calendar_text(
        BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"),
        timed("invitation-1@elsewhere.example", "Board meeting", "Europe/Berlin",
              at + dt.timedelta(days=6), "ORGANIZER;CN=The Boss:mailto:boss@elsewhere.example",
              f"ATTENDEE;CN=Sam;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{SAM}",
              "ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED:mailto:ann@acme.test", HTML)),
        "Board meeting", own=False)  # fmt: skip
    yield Item("shared.ics", calendar_text(
        timed("shared-1@elsewhere.example", "Colleague's meeting", None,
              at + dt.timedelta(days=7), "ORGANIZER:mailto:colleague@elsewhere.example",
              "ATTENDEE;PARTSTAT=ACCEPTED:mailto:ann@acme.test")),
        "Colleague's meeting", own=False)  # fmt: skip
    long_text = "Long minutes. " * 300
    yield Item("long.ics", calendar_text(
        timed("long-1@audit.example", "Long minutes", "Europe/Berlin",
              at + dt.timedelta(days=8), organizer, f"DESCRIPTION:{long_text}",
              "X-UNKNOWN-JSON:{\"a\":1}"),
        BERLIN_VTIMEZONE.format(tzid="Europe/Berlin")), "Long minutes")  # fmt: skip
    yield Item("todo.ics", calendar_text(
        "BEGIN:VTODO\nUID:todo-1@audit.example\nDTSTAMP:20261101T080000Z\n"
        "SUMMARY:Send the offer\nDUE:20261210T170000Z\nEND:VTODO\n"), None)  # fmt: skip
    yield Item("journal.ics", calendar_text(
        "BEGIN:VJOURNAL\nUID:journal-1@audit.example\nDTSTAMP:20261101T080000Z\n"
        "SUMMARY:Call notes\nDTSTART;VALUE=DATE:20261101\nEND:VJOURNAL\n"), None)  # fmt: skip


def props(text: str, owned: frozenset[str]) -> list[tuple[str, ...]]:
    """Every property of every component but ``owned`` ones, as (component path, name,
    parameters, value), in order: what must survive a write byte-equivalent."""
    found: list[tuple[str, ...]] = []

    def walk(component: icalendar.cal.Component, path: str) -> None:
        here = f"{path}/{component.name}"
        for name, value in component.property_items(recursive=False, sorted=False):
            if name.upper() in owned and here.count("/") <= 2:
                continue
            raw = value.to_ical() if hasattr(value, "to_ical") else value
            found.append((here, name.upper(), raw.decode() if isinstance(raw, bytes) else str(raw)))
            params = getattr(component.get(name), "params", None)
            if params:
                found.append((here, name.upper(), repr(sorted(params.items()))))
        for sub in component.subcomponents:
            walk(sub, here)

    walk(icalendar.Calendar.from_ical(text), "")
    return sorted(set(found))


ZONE_BLOCK = re.compile(r"^BEGIN:VTIMEZONE$.*?^END:VTIMEZONE$", re.M | re.S)


def unfolded(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n ", "").replace("\n\t", "")


# Written by every update: the bookkeeping of the change itself.
BOOKKEEPING = frozenset({"DTSTAMP", "LAST-MODIFIED", "SEQUENCE", "X-CRMCAL-ACTIVITY-ID",
                         "X-CRMCAL-TYPE", "PRODID"})  # fmt: skip


def lost(name: str, before: str, after: str, *, moved: bool) -> list[str]:
    """What an update of ``before`` (a new place, and an hour later if ``moved``) to
    ``after`` changed beyond that: each as a line naming the resource ``name``."""
    found = []
    owned = BOOKKEEPING | {"LOCATION"} | ({"DTSTART", "DTEND"} if moved else set())
    was_props, now_props = props(before, owned), props(after, owned)
    if "BEGIN:VTIMEZONE" not in before:  # see below: where there was none
        now_props = [p for p in now_props if not p[0].startswith("/VCALENDAR/VTIMEZONE")]
    found += [f"{name}: lost {p}" for p in was_props if p not in now_props]
    found += [f"{name}: added {p}" for p in now_props if p not in was_props]
    # Another client's VTIMEZONE is its own, to the byte (TZID "\," included).
    zones_before, zones_after = (sorted(ZONE_BLOCK.findall(unfolded(text)))
                                 for text in (before, after))  # fmt: skip
    found += [f"{name}: VTIMEZONE changed:\n{z}" for z in zones_before if z not in zones_after]
    if zones_before:  # where there was none, writing a time may add the one it names
        found += [f"{name}: VTIMEZONE added:\n{z}" for z in zones_after if z not in zones_before]
    old, new = (icalendar.Calendar.from_ical(text) for text in (before, after))
    old_event, new_event = (next(c for c in cal.subcomponents if c.name == "VEVENT")
                            for cal in (old, new))  # fmt: skip
    if str(new_event.get("LOCATION")) != f"Room {name}":
        found.append(f"{name}: location {new_event.get('LOCATION')!r}")
    for prop in ("DTSTART", "DTEND"):
        # The zone stays the one the event was in, spelt as it was spelt.
        was: Any = old_event[prop]
        now: Any = new_event[prop]
        if now.params.get("TZID") != was.params.get("TZID"):
            found.append(f"{name}: {prop} TZID {was.params.get('TZID')!r} -> "
                         f"{now.params.get('TZID')!r}")  # fmt: skip
        if isinstance(was.dt, dt.datetime) and (was.dt.tzinfo is None) != (now.dt.tzinfo is None):
            found.append(f"{name}: {prop} {was.to_ical()!r} -> {now.to_ical()!r}")
        if now.to_ical() != was.to_ical() and not moved:
            found.append(f"{name}: {prop} {was.to_ical()!r} -> {now.to_ical()!r}")
        if moved and now.dt - was.dt != dt.timedelta(hours=1):
            found.append(f"{name}: {prop} {was.to_ical()!r} moved to {now.to_ical()!r}")
    return found


def all_activities(connected: Proxied) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 200}
    while True:
        response = connected.user.get(f"{V1}/activities", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["items"]
        if not page.get("next_cursor"):
            return found
        params["cursor"] = page["next_cursor"]


def writes(seen: Behaviour) -> Counter[str]:
    """The PUTs and DELETEs of events the proxy saw, by resource name (not crmcal's
    If-Match check, which writes no event)."""
    return Counter(
        path.rsplit("/", 1)[-1]
        for (method, path), n in seen.requests.items()
        for _ in range(n)
        if method in ("PUT", "DELETE") and IF_MATCH_CHECK not in path
    )


@pytest.mark.parametrize("weak", [False, True], ids=["strong-etags", "weak-etags"])
async def test_a_realistic_calendar_syncs_both_ways_and_keeps_what_crmcal_does_not_own(
    proxied: Proxied,
    behaviour: Behaviour,
    weak: bool,
) -> None:
    behaviour.weak_etags = weak
    harness: CalDAVHarness = proxied.harness
    first_day = SOON.date() + dt.timedelta(days=1)
    items = [*generated(random.Random(7), 60, first_day), *variations(first_day)]
    for item in items:
        item.event_id = await harness.put_raw(item.text, name=item.name)
    unreadable = await harness.put_unreadable()
    # What the server answers for this one is cut short (both servers store it well).
    start = dt.datetime.combine(first_day, dt.time(8))
    garbled = await harness.put_raw(calendar_text(timed(
        "garbled-1@audit.example", "Garbled", None, start)), name="garbled.ics")  # fmt: skip
    behaviour.garbled.add("garbled.ics")

    # --- connect + first sync: everything readable comes in once ---------------------
    proxied.connect()
    counts = proxied.sync_with_problems()
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert set(reasons) == {garbled} | ({unreadable} if unreadable else set()), reasons
    assert "Garbled" not in {a["subject"] for a in all_activities(proxied)}
    found = all_activities(proxied)
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for activity in found:
        by_subject.setdefault(activity["subject"], []).append(activity)
    events = [item for item in items if item.summary is not None]
    for item in events:
        assert item.summary in by_subject, item.summary
        got = by_subject[item.summary]
        if item.series:
            assert len({a["series_id"] for a in got}) == 1, item.summary
        else:
            assert len(got) == 1, (item.summary, got)
    expected = {item.summary for item in events} | {"Weekly stand-up (New York)"}
    assert set(by_subject) <= expected, set(by_subject) - expected
    assert writes(behaviour) == Counter()

    # --- a second sync with nothing changed writes nothing ---------------------------
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    assert writes(behaviour) == Counter()

    # --- CRM edits of imported activities ---------------------------------------------
    named = {item.name: item for item in items}
    before = {item.name: await harness.read_raw(item.event_id) for item in items
              if item.summary is not None}  # fmt: skip
    one = by_subject
    relocated = ["outlook-windows.ics", "outlook-display.ics", "evolution.ics", "mozilla.ics",
                 "no-vtimezone.ics", "floating.ics", "all-day.ics", "long.ics"]  # fmt: skip
    own_generated = [i for i in items if i.name.startswith("field-") and i.own and not i.series]
    relocated += [i.name for i in own_generated[:3]]
    for name in relocated:
        (activity,) = one[named[name].summary or ""]
        proxied.edit_activity(activity["id"], location=f"Room {name}")
    moved = ["outlook-windows.ics", "outlook-display.ics", "evolution.ics", "mozilla.ics",
             "no-vtimezone.ics", "floating.ics"]  # fmt: skip
    for name in moved:
        (activity,) = one[named[name].summary or ""]
        start = dt.datetime.fromisoformat(activity["start"]) + dt.timedelta(hours=1)
        end = dt.datetime.fromisoformat(activity["end"]) + dt.timedelta(hours=1)
        proxied.edit_activity(activity["id"], start=start.isoformat(), end=end.isoformat())
    # A whole series: its moved occurrence keeps its own zone, its EXDATE lists stay.
    occurrence = one["Weekly stand-up"][0]
    proxied.edit_activity(occurrence["id"], location="Room series.ics", scope="series")
    relocated.append("series.ics")
    (moved_occurrence,) = one["Weekly stand-up (New York)"]
    proxied.edit_activity(moved_occurrence["id"], location="Room 9", scope="this")
    # CRM-only changes of other people's meetings: never written.
    for name in ("invitation.ics", "shared.ics"):
        (activity,) = one[named[name].summary or ""]
        proxied.edit_activity(activity["id"], note="Prepare the numbers", done=True)
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert writes(behaviour) == Counter({name: 1 for name in relocated})
    kept = {name: await harness.read_raw(named[name].event_id) for name in relocated}
    changes = [m for name, text in kept.items()
               for m in lost(name, before[name], text, moved=name in moved)]  # fmt: skip
    assert not changes, "\n".join(changes)
    series = icalendar.Calendar.from_ical(kept["series.ics"])
    override: Any = next(c for c in series.walk("VEVENT") if "RECURRENCE-ID" in c)
    assert str(override["LOCATION"]) == "Room 9"
    assert override["DTSTART"].params["TZID"] == "America/New_York"
    for item in events:
        if item.name not in relocated:
            assert await harness.read_raw(item.event_id) == before[item.name], item.name

    # --- another client edits the calendar -----------------------------------------------
    retitled = [i for i in events if i.own and not i.series and i.name not in relocated][:3]
    retitled.append(named["outlook-display.ics"])  # as crmcal wrote it last
    for item in retitled:
        await harness.retitle(item.event_id, f"{item.summary} (edited)")
    await harness.retitle(named["invitation.ics"].event_id, "Board meeting (moved)")
    removed = [*[i for i in events if not i.series and i.name not in relocated
                 and i not in retitled][:2], named["shared.ics"]]  # fmt: skip
    for item in removed:
        await harness.remove(item.event_id)
    start = dt.datetime.combine(first_day + dt.timedelta(days=9), dt.time(15))
    await harness.put_raw(calendar_text(
        BERLIN_VTIMEZONE.format(tzid="W. Europe Standard Time"),
        timed(f"new-{uuid.uuid4().hex}@audit.example", "Added elsewhere",
              "W. Europe Standard Time", start, "X-ADDED:1"),
    ), name="added.ics")  # fmt: skip
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert (counts["created"], counts["deleted"]) == (1, len(removed))
    assert writes(behaviour) == Counter()
    after = {a["subject"]: a for a in all_activities(proxied)}
    for item in retitled:
        assert f"{item.summary} (edited)" in after
        assert item.summary not in after
    for item in removed:
        assert item.summary not in after
    assert "Added elsewhere" in after
    invitation = after["Board meeting (moved)"]
    assert (invitation["note"], invitation["done"]) == ("Prepare the numbers", True)
    # Nothing lost, nothing doubled.
    subjects = Counter(a["subject"] for a in all_activities(proxied) if a["series_id"] is None)
    assert all(n == 1 for n in subjects.values()), subjects

    # --- and once more: nothing changed, nothing written ---------------------------------
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    assert writes(behaviour) == Counter()
