"""Series rules as clients in the field write them, through a whole sync.

RFC 5545 (3.3.10) wants a rule's UNTIL in the form of its DTSTART: UTC beside a
zoned start, a local time beside a floating one, a date beside a date. Clients write
otherwise (a date beside a timed start, UTC beside an all-day one), and the valid
floating form reaches crmcal, which places a floating start in the user's zone,
beside a zoned start. Radicale and Xandikos store each as it was written. What must
hold: the series comes in with the occurrences its UNTIL means, nothing is taken for
a change afterwards, and a CRM edit writes the rule back as it was spelt.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from zoneinfo import ZoneInfo

import pytest

from crmcal.crm.times import until_like_start
from tests.providers.harness import BERLIN_VTIMEZONE, LOCAL, STAMP, calendar_text
from tests.providers.synced import SOON, OnCalDAV, unfolded

BERLIN = ZoneInfo("Europe/Berlin")
DAY = "%Y%m%d"


def series(uid: str, summary: str, start: str, end: str, until: str) -> str:
    return calendar_text(
        BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"),
        "BEGIN:VEVENT\n"
        f"UID:{uid}\nDTSTAMP:{STAMP}\nSUMMARY:{summary}\n{start}\n{end}\n"
        f"RRULE:FREQ=DAILY;UNTIL={until}\nEND:VEVENT\n",
    )


async def test_an_until_in_another_form_than_the_start_ends_the_series_where_it_says(
    on_caldav: OnCalDAV,
) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    first = (SOON + dt.timedelta(days=2)).replace(tzinfo=None, hour=9)
    last = first + dt.timedelta(days=4)  # five occurrences, the last on this day
    hour = dt.timedelta(hours=1)
    zoned = "DTSTART;TZID=Europe/Berlin:{:" + LOCAL + "}"
    texts = {
        # A date beside a zoned start: every occurrence of that day.
        "Date until": series(
            f"date-{uuid.uuid4().hex}", "Date until", zoned.format(first),
            f"DTEND;TZID=Europe/Berlin:{first + hour:{LOCAL}}", f"{last:{DAY}}",
        ),
        # Floating start and UNTIL (valid): the UNTIL in the zone the start is placed in.
        "Floating until": series(
            f"floating-{uuid.uuid4().hex}", "Floating until", f"DTSTART:{first:{LOCAL}}",
            f"DTEND:{first + hour:{LOCAL}}", f"{last:{LOCAL}}",
        ),
        # A local time beside a UTC start.
        "Local until": series(
            f"local-{uuid.uuid4().hex}", "Local until", f"DTSTART:{first:{LOCAL}}Z",
            f"DTEND:{first + hour:{LOCAL}}Z", f"{last:{LOCAL}}",
        ),
        # UTC beside an all-day start: the day it names.
        "All-day UTC until": series(
            f"all-day-{uuid.uuid4().hex}", "All-day UTC until",
            f"DTSTART;VALUE=DATE:{first:{DAY}}",
            f"DTEND;VALUE=DATE:{first + dt.timedelta(days=1):{DAY}}", f"{last:{DAY}}T235959Z",
        ),
    }  # fmt: skip
    ids = {title: await harness.put_raw(text) for title, text in texts.items()}
    counts = on_caldav.sync()
    assert counts["created"] == len(texts)
    found: dict[str, list[dict[str, object]]] = {}
    for activity in on_caldav.activities():
        found.setdefault(str(activity["subject"]), []).append(activity)
    for title in texts:
        assert len(found[title]) == 5, (title, [a["start"] for a in found[title]])
        assert len({a["series_id"] for a in found[title]}) == 1, title
    # Read again, nothing changed: nothing comes in, nothing is written.
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    # The whole series relocated in the CRM: the rule goes back as it was spelt.
    for title, activities in found.items():
        on_caldav.edit_activity(int(str(activities[0]["id"])), location=f"Room {title}",
                                scope="series")  # fmt: skip
    on_caldav.sync()
    for title, event_id in ids.items():
        text = unfolded(await harness.read_raw(event_id))
        assert f"LOCATION:Room {title}" in text, title
        (rule,) = re.findall(r"^RRULE:FREQ=DAILY.*$", text, re.M)
        assert rule in texts[title].splitlines(), title
    counts = on_caldav.sync()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("rule", "start", "expected"),
    [
        # A date beside a zoned start: the end of that day there, in UTC.
        ("FREQ=DAILY;UNTIL=20261217", dt.datetime(2026, 12, 12, 9, tzinfo=BERLIN),
         "FREQ=DAILY;UNTIL=20261217T225959Z"),
        # A local time beside a zoned start: that time there.
        ("FREQ=DAILY;UNTIL=20260701T090000;BYDAY=MO", dt.datetime(2026, 6, 1, 9, tzinfo=BERLIN),
         "FREQ=DAILY;UNTIL=20260701T070000Z;BYDAY=MO"),
        # UTC beside an all-day start: the local day whose midnight it is ...
        ("FREQ=DAILY;UNTIL=20261216T230000Z", dt.datetime(2026, 12, 12),
         "FREQ=DAILY;UNTIL=20261217T235959"),
        # ... else its UTC day.
        ("FREQ=DAILY;UNTIL=20261217T235959Z", dt.datetime(2026, 12, 12),
         "FREQ=DAILY;UNTIL=20261217T235959"),
        ("FREQ=DAILY;UNTIL=20261217T000000Z", dt.datetime(2026, 12, 12),
         "FREQ=DAILY;UNTIL=20261217T235959"),
        # The forms RFC 5545 wants stay as they are, and so does a rule without one.
        ("FREQ=DAILY;UNTIL=20261217T080000Z", dt.datetime(2026, 12, 12, 9, tzinfo=BERLIN),
         "FREQ=DAILY;UNTIL=20261217T080000Z"),
        ("FREQ=DAILY;UNTIL=20261217", dt.datetime(2026, 12, 12), "FREQ=DAILY;UNTIL=20261217"),
        ("FREQ=DAILY;COUNT=3", dt.datetime(2026, 12, 12, 9, tzinfo=BERLIN), "FREQ=DAILY;COUNT=3"),
        # Not a moment: left for the rule's parser to refuse.
        ("FREQ=DAILY;UNTIL=20261399", dt.datetime(2026, 12, 12, 9, tzinfo=BERLIN),
         "FREQ=DAILY;UNTIL=20261399"),
    ],
)  # fmt: skip
def test_an_until_is_read_in_the_form_its_start_pairs_with(
    rule: str, start: dt.datetime, expected: str
) -> None:
    assert until_like_start(rule, start, BERLIN) == expected
