"""Long notes both ways, on every provider crmcal connects to (Radicale, Xandikos, the
Google and Graph emulators), through the REST API on the CRM side and as another
calendar client on the other.

A note as long as the CRM keeps (65,536 characters), with every character that needs
care somewhere — non-ASCII of one to four octets, CRLF and LF line breaks, commas,
semicolons, backslashes, lines far longer than 75 octets whose folds fall on
multi-byte characters — goes to the calendar and comes back unchanged, and so does a
description of that size made in the calendar. A longer one (70,000 characters) is
refused where it enters through the REST API, with a clear error; one made in the
calendar comes in with its note cut to what the CRM keeps, and the calendar keeps it
whole. Someone else's meeting keeps its description as its organizer wrote it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator

import pytest

from crmcal.sync import info_block
from crmcal.sync.mapping import NOTE_MAX
from tests.conftest import Api
from tests.providers.conftest import API_HARNESSES, opened_harness
from tests.providers.harness import Foreign, Harness
from tests.providers.synced import SOON, V1, Synced

LEE = ("lee@partner.example", "Lee")
OVER = 70_000
# The services whose descriptions hold a CR: an iCalendar DESCRIPTION has one kind of
# line break (RFC 5545 3.3.11), so a note's CRLF is LF there.
KEEPS_CR = {"google"}


def as_held(harness: Harness, text: str) -> str:
    """``text`` as the harness's service holds it."""
    return text if harness.kind in KEEPS_CR else text.replace("\r\n", "\n")


def long_note(size: int) -> str:
    """``size`` characters of what notes hold: paragraphs joined by CRLF or LF, lines
    of a few hundred octets with characters of one to four octets at every offset
    (so iCalendar's 75-octet folds fall on each kind of them), and the characters
    iCalendar escapes."""
    pieces = [
        "Überprüfung des Angebots; Preis: 1.234,56 €, Rabatt 5 %, Pfad C:\\Kunden\\ACME\\n",
        "見積書の確認、価格；割引 — 中文，标点；",  # noqa: RUF001  # full-width on purpose
        "Emoji 😀🚀🇸🇰 and a tab\tand a backslash at the end \\",
        "a,b;c\\d\\,e\\;f " * 7,
    ]
    text: list[str] = []
    n = 0
    while sum(len(t) for t in text) < size:
        # A line of varying length and content, so the folds move about.
        line = " ".join(pieces[(n + k) % len(pieces)] for k in range(1 + n % 5))
        text.append("x" * (n % 7) + line)
        text.append("\r\n" if n % 3 else "\n")
        n += 1
    note = "".join(text)[:size]
    return note[:-1] + "Ω" if note.endswith("\r") else note


def same(found: str | None, wanted: str | None, where: str) -> None:
    """Assert ``found`` is ``wanted``, saying where and how they first differ."""
    if found == wanted:
        return
    assert found is not None, f"{where}: no text"
    assert wanted is not None, f"{where}: no text to compare with"
    at = next((n for n, (a, b) in enumerate(zip(found, wanted, strict=False)) if a != b),
              min(len(found), len(wanted)))  # fmt: skip
    raise AssertionError(
        f"{where}: {len(found)} characters for {len(wanted)}, first differing at {at}: "
        f"{found[max(0, at - 20) : at + 20]!r} for {wanted[max(0, at - 20) : at + 20]!r}"
    )


@pytest.fixture(params=list(API_HARNESSES))
async def any_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with opened_harness(request, request.param) as made:
        yield made


@pytest.fixture
def synced(any_harness: Harness, sam: Api, admin: Api) -> Synced:
    return Synced(any_harness, sam, admin)


def test_the_sample_note_holds_what_it_says() -> None:
    note = long_note(NOTE_MAX)
    assert len(note) == NOTE_MAX
    assert {"\r\n", "\\", ",", ";", "😀", "見", "Ü"} <= {c for c in note} | {"\r\n"}
    assert "\r\n" in note
    assert "\n" in note.replace("\r\n", "")
    assert max(len(line.encode()) for line in note.splitlines()) > 300


async def test_the_longest_note_goes_there_and_back_unchanged(synced: Synced) -> None:
    synced.connect()
    note = long_note(NOTE_MAX)
    made = synced.add_activity("Contract review", note=note)
    synced.sync()
    ((event_id, event),) = (await synced.events()).items()
    same(event.description, as_held(synced.harness, note), "the event's description")
    # Another client changes the title: the activity takes it, its note stays as it was.
    await synced.change_event(event_id, summary="Contract review (moved)")
    synced.sync()
    activity = synced.activity(made["id"])
    assert activity["subject"] == "Contract review (moved)"
    same(activity["note"], note, "the note after the calendar's edit")
    there = (await synced.event(event_id)).description
    same(there, as_held(synced.harness, note), "the description after it")
    again = synced.sync()
    assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)


async def test_the_longest_description_made_in_the_calendar_comes_in_unchanged(
    synced: Synced,
) -> None:
    synced.connect()
    description = long_note(NOTE_MAX)
    start = SOON + dt.timedelta(hours=3)
    event_id = await synced.harness.put_foreign(Foreign(
        summary="Board meeting", start=start, end=start + dt.timedelta(hours=1),
        description=description,
    ))  # fmt: skip
    there = (await synced.event(event_id)).description
    same(there, as_held(synced.harness, description), "the calendar's own description")
    assert synced.sync()["created"] == 1
    (activity,) = synced.activities()
    same(activity["note"], there, "the imported note")
    # The CRM changes the title: the description there stays as it was.
    synced.edit_activity(activity["id"], subject="Board meeting (agenda)")
    synced.sync()
    event = await synced.event(event_id)
    assert event.summary == "Board meeting (agenda)"
    same(event.description, there, "the description after the CRM's edit")
    same(synced.activity(activity["id"])["note"], there, "the note after it")


def test_a_note_longer_than_the_crm_keeps_is_refused_with_a_clear_error(sam: Api) -> None:
    body = {"type": "meeting", "subject": "Too long", "start": SOON.isoformat(),
            "note": "n" * OVER}  # fmt: skip
    refused = sam.post(f"{V1}/activities", json=body)
    assert refused.status_code == 422, refused.text
    assert "65536" in refused.text
    assert "note" in refused.text
    assert sam.get(f"{V1}/activities").json()["items"] == []


async def test_a_description_longer_than_the_crm_keeps_comes_in_cut_with_a_warning(
    synced: Synced, caplog: pytest.LogCaptureFixture
) -> None:
    """The CRM keeps notes of up to 65,536 characters. A new event with a longer
    description, and an event in sync whose description another client makes longer,
    still come in (a meeting with a long agenda is a meeting), their notes cut to what
    the CRM keeps, each with a warning in the run's problems (and in the connection's
    status) and a log line; the calendar keeps the whole description through the
    CRM's other edits, and the rest of the run syncs."""
    synced.connect()
    made = synced.add_activity("Weekly notes", note="Short note")
    other = synced.add_activity("Other", hours=4)
    synced.sync()
    ids = await synced.ids_by_title()
    longer = long_note(OVER)
    start = SOON + dt.timedelta(hours=6)
    new_id = await synced.harness.put_foreign(Foreign(
        summary="Long minutes", start=start, end=start + dt.timedelta(hours=1),
        description=longer,
    ))  # fmt: skip
    await synced.change_event(ids["Weekly notes"], description=longer)
    await synced.change_event(ids["Other"], summary="Other (moved)")

    held = as_held(synced.harness, longer)

    with caplog.at_level(logging.WARNING, logger="crmcal"):
        response = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")

    assert response.status_code == 200, response.text
    warned = {p["item"]: p for p in response.json()["problems"]}
    assert warned.keys() == {new_id, ids["Weekly notes"]}, warned
    for why in warned.values():
        assert why.get("kind") == "warning", why
        assert f"note cut to {NOTE_MAX} of {len(held)} characters" in why["reason"], why
        assert "the calendar keeps the whole description" in why["reason"], why
    status = synced.user.get(f"{V1}/connections/{synced.connection_id}/status").json()
    assert {p["item"] for p in status["problems"]} == warned.keys()
    by_subject = {a["subject"]: a for a in synced.activities()}
    assert sorted(by_subject) == ["Long minutes", "Other (moved)", "Weekly notes"]
    # One line per cut note for whoever runs crmcal: which item, never its text.
    lines = [r.getMessage() for r in caplog.records if "note cut" in r.getMessage()]
    assert len(lines) == 2, lines
    for item in warned:
        assert sum(item in line for line in lines) == 1, (item, lines)
    assert not any(held[:40] in line or longer[:40] in line for line in lines), lines
    for subject in ("Long minutes", "Weekly notes"):
        note = synced.activity(by_subject[subject]["id"])["note"]
        assert len(note) == NOTE_MAX, subject
        same(note, held[:NOTE_MAX], subject)
    assert synced.activity(other["id"])["subject"] == "Other (moved)"
    synced.edit_activity(made["id"], subject="Weekly notes (kept)")
    synced.edit_activity(by_subject["Long minutes"]["id"], location="Room 5")
    synced.sync()
    for event_id in (new_id, ids["Weekly notes"]):
        same((await synced.event(event_id)).description, held, "the whole description")


async def test_the_cut_note_never_goes_back_with_the_crms_own_edits(synced: Synced) -> None:
    """The calendar makes a description longer than a note while the CRM edits the
    title: the run takes both, and the calendar keeps its whole description (the CRM's
    cut note never goes back), also when the deal-and-contact block is switched on
    later and every description is written again."""
    synced.connect()
    made = synced.add_activity("Planning", note="Short note")
    synced.sync()
    ((event_id, _),) = (await synced.events()).items()
    longer = long_note(OVER)
    held = as_held(synced.harness, longer)
    await synced.change_event(event_id, description=longer)
    synced.edit_activity(made["id"], subject="Planning (CRM)")

    response = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")

    assert response.status_code == 200, response.text
    assert [p["item"] for p in response.json()["problems"]] == [event_id]
    event = await synced.event(event_id)
    assert event.summary == "Planning (CRM)"
    same(event.description, held, "the description after both edits")
    same(synced.activity(made["id"])["note"], held[:NOTE_MAX], "the note")

    synced.set_options(include_deal_and_contact_info=True)
    synced.sync()
    description = (await synced.event(event_id)).description
    assert description is not None
    assert info_block.BEGIN in description
    same(info_block.without_block(description), held, "the description with the block")
    synced.edit_activity(made["id"], location="Room 7")
    synced.sync()
    description = (await synced.event(event_id)).description
    same(info_block.without_block(description), held, "the description after another edit")
    same(synced.activity(made["id"])["note"], held[:NOTE_MAX], "the note at the end")


async def test_someone_elses_meeting_keeps_its_description(synced: Synced) -> None:
    """An invitation's description is its organizer's: crmcal never rewrites it, not
    when the CRM note changes, nor with the deal-and-contact block on."""
    synced.connect(include_deal_and_contact_info=True)
    description = long_note(20_000)
    start = SOON + dt.timedelta(hours=6)
    event_id = await synced.harness.put_foreign(Foreign(
        summary="Partner sync", start=start, end=start + dt.timedelta(hours=1),
        organizer=LEE, attendees=((*LEE, "accepted"), ("sam@crm.test", "Sam", "accepted")),
        description=description,
    ))  # fmt: skip
    synced.sync()
    before = await synced.harness.read_raw(event_id)
    (activity,) = synced.activities()
    deal = synced.record("deals", title="ACME renewal")
    synced.edit_activity(activity["id"], note="My own notes, for the CRM only", deal_id=deal)
    synced.sync()
    synced.sync()
    assert await synced.harness.read_raw(event_id) == before
    assert synced.activity(activity["id"])["note"] == "My own notes, for the CRM only"
