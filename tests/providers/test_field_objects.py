"""Calendar objects that are not one whole event, as clients and servers in the field
store them, through a whole sync.

An invitation to one occurrence of someone else's series arrives as that occurrence
alone (a RECURRENCE-ID, no master); a client that writes several events into one
resource makes an object of several UIDs, which RFC 4791 (4.1) forbids and Xandikos
stores all the same (Radicale refuses it). What must hold: such an object is
reported and skipped, never read as something it is not (another event's changed
occurrence is no change of this one), nothing is written to it, and the rest of the
calendar syncs; once it is whole again, it comes in.
"""

from __future__ import annotations

import datetime as dt
import uuid

from tests.caldav_proxy import Behaviour
from tests.providers.harness import calendar_text
from tests.providers.synced import SOON, Proxied

LOCAL = "%Y%m%dT%H%M%S"


def vevent(uid: str, summary: str, start: dt.datetime, *extra: str) -> str:
    lines = [f"UID:{uid}", "DTSTAMP:20261101T080000Z", f"SUMMARY:{summary}",
             f"DTSTART:{start:{LOCAL}}Z", f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
             *extra]  # fmt: skip
    return "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"


async def test_objects_that_are_not_one_whole_event_are_reported_and_skipped(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    first = SOON.astimezone(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
    day = dt.timedelta(days=1)
    theirs = "ORGANIZER:mailto:boss@elsewhere.example"
    series, occurrence = f"series-{uuid.uuid4().hex}", f"one-{uuid.uuid4().hex}"
    alone = vevent(occurrence, "Alone", first, theirs, f"RECURRENCE-ID:{first:{LOCAL}}Z")
    not_mine = vevent(f"other-{uuid.uuid4().hex}", "Not mine", first + day + dt.timedelta(hours=3),
                      f"RECURRENCE-ID:{first + day:{LOCAL}}Z")  # fmt: skip
    texts = {
        # Invited to one occurrence of another person's series: it comes alone.
        "Alone": calendar_text(alone),
        # A series, and another event's changed occurrence at one of its starts.
        "Mixed": calendar_text(
            vevent(series, "Mixed", first, "RRULE:FREQ=DAILY;COUNT=3"), not_mine
        ),
        # Two events in one resource.
        "Two": calendar_text(
            vevent(f"two-{uuid.uuid4().hex}", "Two", first),
            vevent(f"two-{uuid.uuid4().hex}", "Two more", first + day),
        ),
        "Fine": calendar_text(vevent(f"fine-{uuid.uuid4().hex}", "Fine", first)),
    }
    ids: dict[str, str] = {}
    for title, text in texts.items():
        try:
            ids[title] = await harness.put_raw(text)
        except AssertionError:  # Radicale refuses several UIDs in one resource
            assert harness.kind == "radicale", title
            assert title in ("Mixed", "Two"), title
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["created"] == 1
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert set(reasons) == {ids[title] for title in ids if title != "Fine"}, reasons
    assert reasons[ids["Alone"]] == "an occurrence without its series"
    if "Mixed" in ids:
        assert "more than one UID" in reasons[ids["Mixed"]]
        assert "more than one UID" in reasons[ids["Two"]]
    assert [a["subject"] for a in proxied.activities()] == ["Fine"]
    assert behaviour.count("PUT") + behaviour.count("DELETE") == 0
    # Nothing changed: nothing is read again, written or imported.
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    assert behaviour.count("PUT") + behaviour.count("DELETE") == 0
    # Made whole by another client: the series comes in, its own three occurrences.
    if "Mixed" in ids:
        await harness.remove(ids["Mixed"])
        await harness.put_raw(calendar_text(
            vevent(series, "Mixed", first, "RRULE:FREQ=DAILY;COUNT=3")))  # fmt: skip
        counts = proxied.sync_with_problems()
        mixed = [a for a in proxied.activities() if a["subject"] == "Mixed"]
        assert sorted(a["start"] for a in mixed) == sorted(
            (first + n * day).replace(tzinfo=dt.UTC).isoformat() for n in range(3)
        )
        assert not any(a["subject"] == "Not mine" for a in proxied.activities())
