"""Series as clients in the field write them, through a whole sync with Radicale and
Xandikos: the TZIDs servers really send on a series' DTSTART and EXDATE (a Windows
name, a vendor prefix, a quoted name, a VTIMEZONE under a name of its own, a TZID
no VTIMEZONE explains, floating times), an EXDATE in another zone than its start,
an RDATE-only series and rules that count from the month's end. What must hold:
the occurrences are the ones meant (at their wall-clock time across a
daylight-saving switch), the one left out is the one left out, and reading the
calendar again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from zoneinfo import ZoneInfo

from crmcal.sync.series_mapping import RDATES_ONLY
from tests.providers.harness import BERLIN_VTIMEZONE, LOCAL, STAMP, calendar_text
from tests.providers.synced import V1, OnCalDAV, unfolded
from tests.test_sync_cloud_series import tuesday_nine_before_switch

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def weekly(
    summary: str, tzid: str | None, start: dt.datetime, *extra: str, moved: int | None = None
) -> str:
    """A weekly series of six at ``start``'s wall-clock time in ``tzid`` (None:
    floating), with ``extra`` lines (EXDATEs), and the ``moved``-th occurrence (from
    0) two hours later, in an override whose RECURRENCE-ID is spelt like the start."""
    zone = f";TZID={tzid}" if tzid is not None else ""
    uid, end = uuid.uuid4().hex, start + dt.timedelta(hours=1)
    lines = [f"UID:{uid}", f"DTSTAMP:{STAMP}", f"SUMMARY:{summary}",
             f"DTSTART{zone}:{start:{LOCAL}}", f"DTEND{zone}:{end:{LOCAL}}",
             "RRULE:FREQ=WEEKLY;COUNT=6", *extra]  # fmt: skip
    text = "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"
    if moved is not None:
        original = start + dt.timedelta(weeks=moved)
        later = original + dt.timedelta(hours=2)
        text += "\n".join([
            "BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{STAMP}", f"SUMMARY:{summary}",
            f"RECURRENCE-ID{zone}:{original:{LOCAL}}", f"DTSTART{zone}:{later:{LOCAL}}",
            f"DTEND{zone}:{later + dt.timedelta(hours=1):{LOCAL}}", "END:VEVENT\n",
        ])  # fmt: skip
    return text


def lines_of(text: str, *names: str) -> list[str]:
    """The lines of the resource's VEVENTs that start with one of ``names``."""
    events = re.findall(r"^BEGIN:VEVENT$.*?^END:VEVENT$", text, re.M | re.S)
    return [line for e in events for line in e.splitlines() if line.startswith(names)]


def last_day(year: int, month: int) -> dt.date:
    return dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)


def starts_by_subject(on: OnCalDAV) -> dict[str, list[dt.datetime]]:
    found: dict[str, list[dt.datetime]] = {}
    for activity in on.activities():
        found.setdefault(activity["subject"], []).append(
            dt.datetime.fromisoformat(activity["start"])
        )
    return {subject: sorted(starts) for subject, starts in found.items()}


async def test_a_series_in_the_tzids_servers_send_leaves_out_the_occurrence_it_says(
    on_caldav: OnCalDAV,
) -> None:
    """Six Tuesdays at 09:00 Berlin time across a daylight-saving switch, the fifth
    (after the switch) left out by an EXDATE spelt like the start and the sixth moved
    to 11:00 by an override: each TZID is read in the zone it means, or (one nothing
    explains, floating times) in the Berlin user's own, and the EXDATE and the
    override each name that occurrence, not one an hour beside it."""
    harness = on_caldav.harness
    on_caldav.connect()
    start = tuesday_nine_before_switch().replace(tzinfo=None)
    left = start + dt.timedelta(weeks=4)
    custom = f"Customized Time Zone {uuid.uuid4().hex[:8]}"

    def exdate(tzid: str | None) -> str:
        return f"EXDATE{f';TZID={tzid}' if tzid else ''}:{left:{LOCAL}}"

    # Each TZID with its VTIMEZONE or without (as a gateway or a server that keeps
    # only what it understands passes it on).
    zones = {
        "Windows name": ('"W. Europe Standard Time"', False),
        "Mozilla prefix": ("/mozilla.org/20050126_1/Europe/Berlin", True),
        "Quoted Olson name": ('"Europe/Berlin"', True),
        "Own VTIMEZONE name": (custom, True),
        "Unexplained TZID": ("Europe/Somewhere-Else", False),
        "Floating": (None, False),
    }
    texts = {
        title: calendar_text(
            BERLIN_VTIMEZONE.format(tzid=tzid.strip('"')) if tzid and defined else "",
            weekly(title, tzid, start, exdate(tzid), moved=5),
        )
        for title, (tzid, defined) in zones.items()
    }
    ids: dict[str, str] = {}
    for title, text in list(texts.items()):
        try:
            ids[title] = await harness.put_raw(text)
        except AssertionError:
            # Radicale refuses a series whose TZID no VTIMEZONE explains (it cannot
            # expand it); Xandikos stores it.
            if harness.kind != "radicale" or zones[title][1]:
                raise
            del texts[title]
    response = on_caldav.user.post(f"{V1}/connections/{on_caldav.connection_id}/sync")
    counts = response.json()
    assert counts["created"] == len(texts)
    unknown = [p["reason"] for p in counts["problems"]]
    if "Unexplained TZID" in texts:
        assert unknown == ["unknown time zone 'Europe/Somewhere-Else', read as floating time"]
    else:
        assert unknown == []
    expected = [(start + dt.timedelta(weeks=n)).replace(tzinfo=BERLIN) for n in range(5) if n != 4]
    expected.append((start + dt.timedelta(weeks=5, hours=2)).replace(tzinfo=BERLIN))
    found = starts_by_subject(on_caldav)
    for title in texts:
        assert found[title] == expected, (title, found[title])
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    # A CRM edit of the whole series writes its place, the rule and the EXDATE stay
    # as spelt, and the occurrence left out stays out.
    before = {title: unfolded(await harness.read_raw(i)) for title, i in ids.items()}
    first = {a["subject"]: a["id"] for a in on_caldav.activities()}
    for title in texts:
        on_caldav.edit_activity(first[title], location=f"Room {title}", scope="series")
    on_caldav.sync()
    for title, event_id in ids.items():
        text = unfolded(await harness.read_raw(event_id))
        assert f"LOCATION:Room {title}" in text, title
        spelt = ("EXDATE", "DTSTART", "RECURRENCE-ID")
        assert lines_of(text, *spelt) == lines_of(before[title], *spelt), title
    assert all(starts == expected for starts in starts_by_subject(on_caldav).values())
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)


async def test_an_exdate_in_another_zone_than_its_start_leaves_out_its_moment(
    on_caldav: OnCalDAV,
) -> None:
    """EXDATEs are instants: one spelt in UTC, one in New York time, each the moment
    of an occurrence after the switch, leave those out."""
    harness = on_caldav.harness
    on_caldav.connect()
    start = tuesday_nine_before_switch()
    weeks = [start + dt.timedelta(weeks=n) for n in range(6)]
    utc, new_york = weeks[4].astimezone(dt.UTC), weeks[5].astimezone(NEW_YORK)
    text = calendar_text(
        BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"),
        weekly("Other zones", "Europe/Berlin", start.replace(tzinfo=None),
               f"EXDATE:{utc:{LOCAL}}Z", f"EXDATE;TZID=America/New_York:{new_york:{LOCAL}}"),
    )  # fmt: skip
    await harness.put_raw(text)
    on_caldav.sync()
    assert starts_by_subject(on_caldav)["Other zones"] == weeks[:4]
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)


async def test_month_end_rules_come_in_with_their_occurrences_and_rdates_alone_are_named(
    on_caldav: OnCalDAV,
) -> None:
    """A rule on the month's last working day (BYSETPOS=-1) and on its last day
    (BYMONTHDAY=-1) counts from the month's end; an event of RDATEs and no RRULE is
    reported as what the CRM cannot hold, and the rest go on."""
    harness = on_caldav.harness
    on_caldav.connect()
    year = dt.date.today().year + 1
    first = dt.datetime(year, 1, 12, 9)
    extra = [first + dt.timedelta(days=3), first + dt.timedelta(days=10, hours=2)]
    rdates = ",".join(f"{m:{LOCAL}}" for m in extra)
    texts = [
        "BEGIN:VEVENT\n"
        f"UID:{uuid.uuid4().hex}\nDTSTAMP:{STAMP}\nSUMMARY:Added dates\n"
        f"DTSTART;TZID=Europe/Berlin:{first:{LOCAL}}\n"
        f"DTEND;TZID=Europe/Berlin:{first + dt.timedelta(hours=1):{LOCAL}}\n"
        f"RDATE;TZID=Europe/Berlin:{rdates}\nEND:VEVENT\n",
    ]
    last_days = [last_day(year, month) for month in range(1, 5)]
    working = [d - dt.timedelta(days=max(0, d.weekday() - 4)) for d in last_days]
    for summary, rule, begin in (
        ("Last working day", "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=4", working[0]),
        ("Last day", "FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=4", last_days[0]),
    ):
        at = dt.datetime.combine(begin, dt.time(9))
        texts.append(
            "BEGIN:VEVENT\n"
            f"UID:{uuid.uuid4().hex}\nDTSTAMP:{STAMP}\nSUMMARY:{summary}\n"
            f"DTSTART;TZID=Europe/Berlin:{at:{LOCAL}}\n"
            f"DTEND;TZID=Europe/Berlin:{at + dt.timedelta(hours=1):{LOCAL}}\n"
            f"RRULE:{rule}\nEND:VEVENT\n"
        )
    for text in texts:
        await harness.put_raw(calendar_text(BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"), text))
    counts = on_caldav.user.post(f"{V1}/connections/{on_caldav.connection_id}/sync").json()
    # The CRM keeps a series by its rule: one of added dates alone is reported by
    # name, not taken in (and not taken for a single event, which would lose dates).
    assert [p["reason"] for p in counts["problems"]] == [RDATES_ONLY]
    found = starts_by_subject(on_caldav)
    days = {title: [s.astimezone(BERLIN).replace(tzinfo=None) for s in starts]
            for title, starts in found.items()}  # fmt: skip
    assert "Added dates" not in days
    nine = dt.time(9)
    assert days["Last working day"] == [dt.datetime.combine(d, nine) for d in working]
    assert days["Last day"] == [dt.datetime.combine(d, nine) for d in last_days]
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
