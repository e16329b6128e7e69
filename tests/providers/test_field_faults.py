"""Partial answers and odd ETags from a CalDAV server, through a whole sync.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``, which answers the way other servers in the field do: a
``sync-collection`` that names a member still there as removed (``404``), one cut
short with the RFC 6578 truncation marker, a multiget that gives a member's ETag
but answers its calendar data with a 403 or 507 propstat, ETags that change with
every GET and PUTs answered without one. What must hold: absence is not deletion
(nothing is trashed that a read still finds), nothing left unread is lost (it is
read on a later sync), and nothing is written again and again; a first import read in
parts loses nothing a part's answer leaves out or garbles, and skips only that.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import pytest

from crmcal.providers import caldav, parse_pool
from tests.caldav_proxy import Behaviour
from tests.providers.harness import CalDAVHarness, raw_event
from tests.providers.synced import SOON, Proxied

LOCAL = "%Y%m%dT%H%M%S"


def name_of(event_id: str) -> str:
    return event_id.rsplit("/", 1)[1]


async def put_hour(harness: CalDAVHarness, uid: str, summary: str, start: dt.datetime) -> None:
    """An hour-long event made elsewhere, stored as ``<uid>.ics``."""
    await harness.put_raw(raw_event(
        uid, f"SUMMARY:{summary}", f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
    ), name=f"{uid}.ics")  # fmt: skip


async def retitle(
    harness: CalDAVHarness,
    by_title: Mapping[str | None, str],
    titles: Iterable[str | None],
    how: str = "retitled",
) -> None:
    """Each of these events retitled elsewhere: ``<title> (<how>)``."""
    for title in titles:
        await harness.retitle(by_title[title], f"{title} ({how})")


async def test_a_sync_collection_that_says_a_member_is_gone_while_it_is_there_trashes_nothing(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    (kept, other), by_title = await proxied.synced_activities("Kept", "Other")
    await harness.retitle(by_title["Kept"], "Kept (retitled)")
    await harness.retitle(by_title["Other"], "Other (retitled)")
    # The incremental listing names "Kept" as removed (RFC 6578: a 404 member).
    behaviour.partial = {("sync-collection", name_of(by_title["Kept"])): 404}
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert counts["deleted"] == 0
    assert proxied.activities(deleted=True) == []
    # The read that checked it found it, changed: the change comes in.
    assert proxied.activity(kept["id"])["subject"] == "Kept (retitled)"
    assert proxied.activity(other["id"])["subject"] == "Other (retitled)"
    # A member really removed is still trashed, after the same read.
    behaviour.partial.clear()
    await harness.remove(by_title["Other"])
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 1
    assert [a["id"] for a in proxied.activities(deleted=True)] == [other["id"]]


async def test_a_truncated_full_listing_trashes_nothing_still_there(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    proxied.connect()
    made, by_title = await proxied.synced_activities("One", "Two", "Three", "Four")
    # New options: the next sync lists everything, and the server cuts that listing
    # after one member, marking it truncated (RFC 6578 3.6).
    proxied.set_options(include_deal_and_contact_info=True)
    behaviour.truncate_sync = 1
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert counts["deleted"] == 0
    assert proxied.activities(deleted=True) == []
    assert behaviour.reports["sync-collection"] >= 2  # it asked for the rest
    behaviour.truncate_sync = None
    assert proxied.sync_with_problems()["deleted"] == 0
    assert sorted(a["subject"] for a in proxied.activities()) == sorted(
        str(title) for title in by_title
    )
    assert len(made) == 4


async def test_calendar_data_answered_in_an_error_propstat_is_read_on_a_later_sync(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    (refused, full, fine), by_title = await proxied.synced_activities("Refused", "Too big", "Fine")
    await retitle(harness, by_title, by_title)
    # The multiget gives each member's ETag, but the calendar data of two in a
    # propstat of its own with a 403 and a 507.
    behaviour.propstat = {
        ("calendar-multiget", name_of(by_title["Refused"])): 403,
        ("calendar-multiget", name_of(by_title["Too big"])): 507,
    }
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert set(reasons) == {by_title["Refused"], by_title["Too big"]}
    assert "403" in reasons[by_title["Refused"]]
    assert "507" in reasons[by_title["Too big"]]
    assert proxied.activity(fine["id"])["subject"] == "Fine (retitled)"
    # The server answers in full again: the two are read though nothing names them.
    behaviour.propstat.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert proxied.activity(refused["id"])["subject"] == "Refused (retitled)"
    assert proxied.activity(full["id"])["subject"] == "Too big (retitled)"
    assert proxied.activities(deleted=True) == []


async def test_etags_that_change_with_every_get_make_no_write_loop_and_lose_no_edit(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    behaviour.volatile_etags = True
    behaviour.no_put_etag = True
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Demo")
    (event_id,) = by_title.values()
    proxied.edit_activity(made["id"], location="Room 7")
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert counts["updated"] == 1
    # Nothing changed since: syncs write nothing, however the ETags read.
    for _ in range(3):
        behaviour.requests.clear()
        counts = proxied.sync_with_problems()
        assert counts["problems"] == []
        assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
        assert behaviour.count("PUT") == 0
    # Both sides edit different fields: both edits are kept, each written once.
    await harness.retitle(event_id, "Demo (calendar)")
    proxied.edit_activity(made["id"], note="Bring the numbers")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert behaviour.count("PUT") == 1
    event = await proxied.sync_keeping(event_id)
    assert (event.summary, event.location) == ("Demo (calendar)", "Room 7")
    assert event.description == "Bring the numbers"
    after = proxied.activity(made["id"])
    assert (after["subject"], after["note"]) == ("Demo (calendar)", "Bring the numbers")


async def test_events_a_first_imports_part_leaves_out_are_imported_on_the_next_sync(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    for n, name in enumerate(("listed", "left-out", "also-listed")):
        await put_hour(harness, f"part-{name}", name, start + dt.timedelta(hours=n))
    # The first import's query leaves one event out, without a word (a server whose
    # index misses it): it is read by name, and that answer leaves it out too.
    behaviour.partial = {("calendar-query", "part-left-out"): None,
                         ("calendar-multiget", "part-left-out"): None}  # fmt: skip
    proxied.connect()
    counts = proxied.sync_with_problems()
    assert dict(behaviour.reports) == {"calendar-query": 1, "calendar-multiget": 1}
    (problem,) = counts["problems"]
    assert problem["item"].endswith("part-left-out.ics")
    assert sorted(a["subject"] for a in proxied.activities()) == ["also-listed", "listed"]
    # The cursor moved past it, but it is read again, and imported once.
    behaviour.partial.clear()
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["deleted"], counts["problems"]) == (1, 0, [])
    assert sorted(a["subject"] for a in proxied.activities()) == [
        "also-listed", "left-out", "listed"
    ]  # fmt: skip
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    assert len(proxied.activities()) == 3


async def test_an_event_a_part_of_a_first_import_cannot_read_skips_only_it(
    proxied: Proxied,
    behaviour: Behaviour,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Parts of three events, each parsed in the pool's processes.
    monkeypatch.setattr(caldav, "PART_SIZE", 3)
    monkeypatch.setattr(parse_pool, "IN_PROCESS_BELOW", 2)
    harness = proxied.harness
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    names = [f"part-{n}" for n in range(6)]
    for n, name in enumerate(names):
        await put_hour(harness, name, name, start + dt.timedelta(hours=n))
    # The server answers one event's calendar data cut short.
    behaviour.garbled.add("part-4.ics")
    proxied.connect()
    before = parse_pool.parsed_in_workers()
    counts = proxied.sync_with_problems()
    # Two parts of one streamed query; the broken event is not read again by name.
    assert (behaviour.reports["calendar-query"], behaviour.reports["calendar-multiget"]) == (1, 0)
    assert parse_pool.parsed_in_workers() - before == 6
    (problem,) = counts["problems"]
    assert problem["item"].endswith("part-4.ics")
    assert counts["created"] == 5
    assert sorted(a["subject"] for a in proxied.activities()) == [
        name for name in names if name != "part-4"
    ]


async def test_an_event_a_multiget_answers_404_is_neither_lost_nor_taken_for_gone(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    made, by_title = await proxied.synced_activities("Glitch", "Fine", "Deleted", "Other")
    glitch, fine, deleted, other = (a["id"] for a in made)
    await retitle(harness, by_title, by_title)
    # The multiget answers 404 for an event that is still there (a passing error):
    # the rest comes in; it is trashed no more than dropped, and read again next run.
    behaviour.partial = {("calendar-multiget", name_of(by_title["Glitch"])): 404}
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    assert [p["item"] for p in counts["problems"]] == [by_title["Glitch"]]
    assert proxied.activity(fine)["subject"] == "Fine (retitled)"
    assert proxied.activity(glitch)["subject"] == "Glitch"
    behaviour.partial.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    assert proxied.activity(glitch)["subject"] == "Glitch (retitled)"
    assert proxied.activities(deleted=True) == []
    # A task is listed like an event and its read finds no event: no loss, no problem.
    task = raw_event("a-task", "SUMMARY:a task", "DUE:20261210T170000Z").replace("VEVENT", "VTODO")
    await harness.put_raw(task, name="a-task.ics")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"], counts["deleted"]) == ([], 0, 0)
    # Deleted between the listing and the multiget: not taken for gone on the
    # multiget's word alone, and trashed when the next listing says it is.
    await retitle(harness, by_title, ("Deleted", "Other"), how="again")

    def delete(path: str) -> None:
        harness.request("DELETE", harness._url(by_title["Deleted"]))

    behaviour.after["REPORT"] = delete
    counts = proxied.sync_with_problems()
    assert "REPORT" not in behaviour.after  # deleted once the listing was answered
    assert counts["deleted"] == 0
    assert proxied.activity(other)["subject"] == "Other (again)"
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 1)
    assert [a["id"] for a in proxied.activities(deleted=True)] == [deleted]
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"], counts["updated"], counts["deleted"]) == (
        [], 0, 0, 0
    )  # fmt: skip


async def test_an_incremental_listing_answered_in_pages_loses_no_change_and_trashes_nothing(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    made, by_title = await proxied.synced_activities("One", "Two", "Three", "Four", "Five")
    ids = {a["subject"]: a["id"] for a in made}
    proxied.sync_with_problems()  # a cursor after crmcal's own writes
    await retitle(harness, by_title, ("One", "Three", "Five"))
    await harness.remove(by_title["Four"])
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=2)
    await put_hour(harness, "paged-new", "New elsewhere", start)
    # The server answers the incremental listing one member at a time (RFC 6578 3.6:
    # the collection answered 507 with a token that continues after it).
    behaviour.page_sync = 1
    behaviour.reports.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert behaviour.reports["sync-collection"] >= 5  # it asked for every page
    assert (counts["created"], counts["deleted"]) == (1, 1)
    assert [a["id"] for a in proxied.activities(deleted=True)] == [ids["Four"]]
    assert sorted(a["subject"] for a in proxied.activities()) == [
        "Five (retitled)", "New elsewhere", "One (retitled)", "Three (retitled)", "Two"
    ]  # fmt: skip
    # The cursor kept is the server's own token after the last page: nothing more.
    behaviour.reports.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"], counts["updated"], counts["deleted"]) == (
        [], 0, 0, 0
    )  # fmt: skip
    assert behaviour.reports["sync-collection"] == 1


@pytest.mark.parametrize("status", [404, 500])
async def test_members_answered_with_an_error_in_a_listing_or_a_read_are_read_again_later(
    proxied: Proxied,
    behaviour: Behaviour,
    status: int,
) -> None:
    harness = proxied.harness
    proxied.connect()
    made, by_title = await proxied.synced_activities("Data refused", "Listed refused", "Fine")
    proxied.sync_with_problems()  # a cursor after crmcal's own writes
    await retitle(harness, by_title, by_title)
    # The multiget gives one member's ETag but its calendar data in a propstat of an
    # error status; the listing answers another member with a 500 of its own.
    behaviour.propstat = {("calendar-multiget", name_of(by_title["Data refused"])): status}
    behaviour.partial = {("sync-collection", name_of(by_title["Listed refused"])): 500}
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert set(reasons) == {by_title["Data refused"], by_title["Listed refused"]}
    assert str(status) in reasons[by_title["Data refused"]]
    ids = {a["subject"]: a["id"] for a in made}
    assert proxied.activity(ids["Fine"])["subject"] == "Fine (retitled)"
    assert proxied.activity(ids["Data refused"])["subject"] == "Data refused"
    # The server answers in full again: both are read though no listing names them.
    behaviour.propstat.clear()
    behaviour.partial.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    assert sorted(a["subject"] for a in proxied.activities()) == [
        "Data refused (retitled)", "Fine (retitled)", "Listed refused (retitled)"
    ]  # fmt: skip
    assert proxied.activities(deleted=True) == []


async def test_a_deletion_whose_confirming_read_failed_is_trashed_once_a_read_finds_it_gone(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    (gone, kept), by_title = await proxied.synced_activities("Gone", "Kept")
    proxied.sync_with_problems()  # a cursor after crmcal's own writes
    # The listing says "Gone" is removed; the read that confirms it fails (a 500).
    await harness.remove(by_title["Gone"])
    behaviour.partial = {("calendar-multiget", name_of(by_title["Gone"])): 500}
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    assert [p["item"] for p in counts["problems"]] == [by_title["Gone"]]
    assert proxied.activities(deleted=True) == []
    # The next listing no longer names it; the read again finds it gone: trashed as
    # any confirmed deletion is.
    behaviour.partial.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 1)
    assert [a["id"] for a in proxied.activities(deleted=True)] == [gone["id"]]
    # And not read again after that.
    reads = behaviour.reports["calendar-multiget"]
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    assert behaviour.reports["calendar-multiget"] == reads
    assert [a["id"] for a in proxied.activities()] == [kept["id"]]
