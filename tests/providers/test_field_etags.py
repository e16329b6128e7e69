"""ETags as servers in the field give them, through a whole sync.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``, which answers the way other servers do: listings without
ETags (``getetag`` left out, or empty), PUTs answered without an ETag by a server
that stores the body otherwise than it was sent (a property of its own, another
order), and weak ETags everywhere, taken back in ``If-Match`` only as given. What
must hold: every change is seen, nothing is taken for a change (or a deletion) that
is none, and nothing is written again and again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.caldav_proxy import Behaviour
from tests.providers.harness import raw_event
from tests.providers.synced import SOON, Proxied, unfolded

LOCAL = "%Y%m%dT%H%M%S"


def quiet(counts: dict[str, object]) -> bool:
    """Whether a sync's counts say it changed nothing on either side."""
    return (counts["created"], counts["updated"], counts["deleted"], counts["problems"]) == (
        0, 0, 0, []
    )  # fmt: skip


def writes(seen: Behaviour) -> int:
    return seen.count("PUT") + seen.count("DELETE")


async def put_elsewhere(on: Proxied, name: str, hours: int = 30) -> str:
    """An event another client made (not crmcal), named ``name``: its id."""
    start = SOON.astimezone(dt.UTC) + dt.timedelta(hours=hours)
    return await on.harness.put_raw(raw_event(
        f"{name}-uid", f"SUMMARY:{name}", f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
    ), name=f"{name}.ics")  # fmt: skip


def subjects(on: Proxied) -> list[str]:
    return sorted(a["subject"] for a in on.activities())


@pytest.mark.parametrize("etags", ["missing", "empty"])
async def test_listings_without_etags_lose_no_change_and_make_no_write_loop(
    proxied: Proxied,
    behaviour: Behaviour,
    etags: str,
) -> None:
    harness = proxied.harness
    behaviour.listing_etags = etags
    elsewhere = await put_elsewhere(proxied, "Elsewhere")
    proxied.connect()
    (kept, edited), by_title = await proxied.synced_activities("Kept", "Edited")
    assert subjects(proxied) == ["Edited", "Elsewhere", "Kept"]
    # Nothing changed: nothing is written, trashed or imported, however often.
    for _ in range(2):
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert writes(behaviour) == 0
    # Changes made in another client come in, though no ETag says so.
    await harness.retitle(by_title["Edited"], "Edited (calendar)")
    await harness.retitle(elsewhere, "Elsewhere (calendar)")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"], writes(behaviour)) == ([], 0, 0)
    assert proxied.activity(edited["id"])["subject"] == "Edited (calendar)"
    assert subjects(proxied) == ["Edited (calendar)", "Elsewhere (calendar)", "Kept"]
    # A CRM edit is written once, keeping the calendar's own edit of the event.
    proxied.edit_activity(edited["id"], location="Room 7")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert behaviour.count("PUT") == 1
    text = unfolded(await harness.read_raw(by_title["Edited"]))
    assert "SUMMARY:Edited (calendar)" in text
    assert "LOCATION:Room 7" in text
    for _ in range(2):
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert writes(behaviour) == 0
    # A removal elsewhere is a deletion: that one activity is trashed, no other.
    await harness.remove(by_title["Kept"])
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 1)
    assert [a["id"] for a in proxied.activities(deleted=True)] == [kept["id"]]
    assert quiet(proxied.sync_with_problems())


async def test_a_put_stored_otherwise_and_answered_without_an_etag_is_read_back_once(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    # The server adds a property of its own, a new DTSTAMP and moves SUMMARY on every
    # PUT, and answers 201/204 without an ETag; like Cyrus, it answers a GET with a
    # weak ETag for the version its listings name strong.
    behaviour.rewrite_stored = True
    behaviour.weak_etags = True
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Demo")
    (event_id,) = by_title.values()
    assert "X-SERVER-STORED:1" in unfolded(await harness.read_raw(event_id))
    proxied.edit_activity(made["id"], location="Room 7")
    behaviour.requests.clear()
    behaviour.reports.clear()
    assert proxied.sync_with_problems()["problems"] == []
    # One write; one read of the text to change and one of what was stored: the
    # version the server keeps.
    reads = behaviour.count("GET", event_id) + behaviour.reports["calendar-multiget"]
    assert (behaviour.count("PUT", event_id), reads) == (1, 2)
    assert "X-SERVER-STORED:2" in unfolded(await harness.read_raw(event_id))
    # The next syncs neither read nor write it again.
    for _ in range(3):
        behaviour.requests.clear()
        behaviour.reports.clear()
        assert quiet(proxied.sync_with_problems())
        assert writes(behaviour) == 0
        assert behaviour.count("GET") + behaviour.reports["calendar-multiget"] == 0
    # An edit in another client comes in and is not written back.
    await harness.retitle(event_id, "Demo (calendar)")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], writes(behaviour)) == ([], 0)
    assert proxied.activity(made["id"])["subject"] == "Demo (calendar)"
    assert quiet(proxied.sync_with_problems())
    # Both sides edit different fields: both kept, one write.
    await harness.retitle(event_id, "Demo (calendar again)")
    proxied.edit_activity(made["id"], note="Bring the numbers")
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert behaviour.count("PUT") == 1
    event = await proxied.sync_keeping(event_id)
    assert (event.summary, event.location) == ("Demo (calendar again)", "Room 7")
    assert event.description == "Bring the numbers"
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert writes(behaviour) == 0


async def test_weak_etags_are_compared_alike_and_sent_back_as_given(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    # Every ETag weak, in listings and headers; If-Match matches only as given.
    behaviour.all_weak = True
    proxied.connect()
    (edited, dropped), by_title = await proxied.synced_activities("Edited", "Dropped")
    for _ in range(2):
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert writes(behaviour) == 0
    proxied.edit_activity(edited["id"], location="Room 7")
    behaviour.if_matches.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["updated"]) == ([], 1)
    assert behaviour.if_matches
    assert all(tag.startswith('W/"') for tag in behaviour.if_matches)
    assert "LOCATION:Room 7" in unfolded(await harness.read_raw(by_title["Edited"]))
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert writes(behaviour) == 0
    # A calendar edit comes in; a CRM deletion removes the event, If-Match as given.
    await harness.retitle(by_title["Edited"], "Edited (calendar)")
    response = proxied.user.delete(f"/api/v1/activities/{dropped['id']}")
    assert response.status_code in (200, 204), response.text
    behaviour.if_matches.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert proxied.activity(edited["id"])["subject"] == "Edited (calendar)"
    assert list(await proxied.events()) == [by_title["Edited"]]
    assert behaviour.if_matches
    assert all(tag.startswith('W/"') for tag in behaviour.if_matches)
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert writes(behaviour) == 0


async def edited_where_weak_etags_are_refused(
    proxied: Proxied, behaviour: Behaviour, *others: str
) -> list[dict[str, Any]]:
    """Every ETag weak and refused in If-Match: "Edited" (and ``others``) synced, then
    "Edited" moved to Room 7 in the CRM. Their activities, "Edited" first."""
    behaviour.all_weak = True
    behaviour.weak_if_match_refused = True
    proxied.connect()
    # Creating needs no ETag (If-None-Match: *): the events are made.
    made, _ = await proxied.synced_activities("Edited", *others)
    proxied.edit_activity(made[0]["id"], location="Room 7")
    return made


async def test_a_server_refusing_its_own_weak_etags_is_reported_not_retried(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    """Every ETag weak, and a weak tag never matches If-Match (strong comparison): every
    update and deletion is refused 412 though nobody changed the event. The sync says
    so in the connection's status after one attempt, instead of taking each refusal for
    another client's edit and trying again at every sync."""
    edited, dropped = await edited_where_weak_etags_are_refused(proxied, behaviour, "Dropped")
    response = proxied.user.delete(f"/api/v1/activities/{dropped['id']}")
    assert response.status_code in (200, 204), response.text
    for _ in range(2):
        behaviour.requests.clear()
        refused = proxied.user.post(f"/api/v1/connections/{proxied.connection_id}/sync")
        assert refused.status_code == 409, refused.text
        assert "weak" in refused.json()["detail"], refused.text
        # One write tried, one read after its refusal: no write loop.
        assert writes(behaviour) == 1
        status = proxied.user.get(f"/api/v1/connections/{proxied.connection_id}/status")
        assert status.status_code == 200, status.text
        assert status.json()["state"] == "error"
        assert "If-Match" in status.json()["last_error"], status.json()
    # Nothing was lost meanwhile: both events are as they were, the CRM's changes kept
    # (the refused deletion is not taken for a calendar edit that brings it back).
    assert sorted(str(title) for title in await proxied.ids_by_title()) == ["Dropped", "Edited"]
    assert proxied.activity(edited["id"])["location"] == "Room 7"
    assert subjects(proxied) == ["Edited"]


async def test_a_server_refusing_its_own_weak_etags_waits_for_its_fix_not_the_back_off(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    """Weak ETags refused in If-Match are the server's setup, which only whoever runs it
    can change: the status says someone must act, and the connection is tried again a
    day later (each try costs the server a refused write), not with a failing server's
    back-off of seconds to an hour. Synced by hand once the server is mended, the CRM's
    change lands: nothing was lost while it waited."""
    await edited_where_weak_etags_are_refused(proxied, behaviour)
    refused = proxied.user.post(f"/api/v1/connections/{proxied.connection_id}/sync")
    assert refused.status_code == 409, refused.text
    status = proxied.user.get(f"/api/v1/connections/{proxied.connection_id}/status").json()
    assert status["state"] == "error"
    assert "administrator must change this" in status["last_error"], status
    next_sync = dt.datetime.fromisoformat(status["next_sync_at"])
    if next_sync.tzinfo is None:
        next_sync = next_sync.replace(tzinfo=dt.UTC)
    assert next_sync > dt.datetime.now(dt.UTC) + dt.timedelta(hours=12), status
    # The server's administrator mends it; the user asks for a sync.
    behaviour.weak_if_match_refused = False
    mended = proxied.user.post(f"/api/v1/connections/{proxied.connection_id}/sync")
    assert mended.status_code == 200, mended.text
    assert mended.json()["updated"] == 1, mended.json()
    status = proxied.user.get(f"/api/v1/connections/{proxied.connection_id}/status").json()
    assert status["state"] == "active", status
    assert status["last_error"] is None, status
    assert subjects(proxied) == ["Edited"]


@pytest.mark.parametrize("tokens", [False, True], ids=["ctag", "sync-token"])
async def test_a_change_elsewhere_right_after_crmcals_own_write_comes_in_next_sync(
    proxied: Proxied,
    behaviour: Behaviour,
    tokens: bool,
) -> None:
    """The position a sync keeps (a CTag, or a sync token) is the one read with its
    listing, before its own writes. One read after them would also cover a change
    another client made between crmcal's write and that read, which no listing named:
    the next sync would find the CTag unchanged (or list nothing from the token) and
    never bring that change in. The price is that crmcal's own writes move the CTag,
    so the sync after one lists and compares once more."""
    harness = proxied.harness
    behaviour.no_sync_tokens = not tokens
    elsewhere = await put_elsewhere(proxied, "Elsewhere")
    proxied.connect()
    (made,), _ = await proxied.synced_activities("From the CRM")
    assert quiet(proxied.sync_with_problems())
    proxied.edit_activity(made["id"], location="Room 7")

    def edit_elsewhere(path: str) -> None:
        url = harness._url(elsewhere)
        text = harness.request("GET", url).raw
        harness.request("PUT", url, text.replace("SUMMARY:Elsewhere", "SUMMARY:Moved"))

    # The other client's edit lands as crmcal's PUT is answered, before crmcal sees it.
    behaviour.after["PUT"] = edit_elsewhere
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert behaviour.count("PUT") == 1
    assert "PUT" not in behaviour.after  # the edit was made
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"], counts["created"]) == ([], 0, 0)
    assert subjects(proxied) == ["From the CRM", "Moved"]
    assert quiet(proxied.sync_with_problems())


async def test_without_sync_tokens_or_etags_a_quiet_sync_reads_the_ctag_alone(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    # No RFC 6578 and no ETags: only the collection's CTag says whether anything moved.
    behaviour.no_sync_tokens = True
    behaviour.listing_etags = "missing"
    elsewhere = await put_elsewhere(proxied, "Elsewhere")
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("From the CRM")
    assert subjects(proxied) == ["Elsewhere", "From the CRM"]
    # crmcal's own write moved the CTag: the next sync lists and compares once.
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert writes(behaviour) == 0
    for _ in range(2):
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert sum(behaviour.requests.values()) == 1  # the CTag's PROPFIND
        assert behaviour.count("PROPFIND") == 1
    # A change elsewhere moves the CTag: everything is listed and compared, the
    # change comes in, nothing is written.
    await harness.retitle(elsewhere, "Elsewhere (calendar)")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"], writes(behaviour)) == ([], 0, 0)
    assert subjects(proxied) == ["Elsewhere (calendar)", "From the CRM"]
    # A CRM edit is written once; the CTag it moves lists everything once more,
    # which writes nothing.
    proxied.edit_activity(made["id"], location="Room 7")
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert behaviour.count("PUT") == 1
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert writes(behaviour) == 0
    behaviour.requests.clear()
    assert quiet(proxied.sync_with_problems())
    assert sum(behaviour.requests.values()) == 1
    # Without a CTag either, every sync lists and compares: still nothing written.
    behaviour.no_ctag = True
    for _ in range(2):
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert writes(behaviour) == 0
    await harness.remove(by_title["From the CRM"])
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 1)
    assert [a["id"] for a in proxied.activities(deleted=True)] == [made["id"]]


@pytest.mark.parametrize("unquoted", ["calendar-multiget", "sync-collection"])
async def test_one_version_spelt_with_and_without_quotes_is_one_version(
    proxied: Proxied,
    behaviour: Behaviour,
    unquoted: str,
) -> None:
    harness = proxied.harness
    # One kind of answer gives each ETag without its quotes, the others quoted.
    behaviour.unquoted_etags = {unquoted}
    proxied.connect()
    (edited,), by_title = await proxied.synced_activities("Edited")
    await put_elsewhere(proxied, "Elsewhere")
    assert subjects(proxied) == ["Edited"]
    proxied.sync_with_problems()
    assert subjects(proxied) == ["Edited", "Elsewhere"]
    # Nothing changed since: nothing is read again, nothing written.
    for _ in range(2):
        behaviour.requests.clear()
        behaviour.reports.clear()
        assert quiet(proxied.sync_with_problems())
        assert behaviour.reports["calendar-multiget"] == 0
        assert writes(behaviour) == 0
    # A CRM edit goes out under the tag as servers spell it, quoted.
    proxied.edit_activity(edited["id"], location="Room 7")
    behaviour.if_matches.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["updated"]) == ([], 1)
    assert behaviour.if_matches
    assert all(tag.startswith('"') for tag in behaviour.if_matches)
    assert "LOCATION:Room 7" in unfolded(await harness.read_raw(by_title["Edited"]))
    behaviour.reports.clear()
    assert quiet(proxied.sync_with_problems())
    assert behaviour.reports["calendar-multiget"] == 0


async def test_an_edit_elsewhere_while_a_server_ignores_if_match_is_merged_not_overwritten(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    """A server that ignores ``If-Match`` takes a write over any version: an edit made
    in the calendar after crmcal read the event and before it writes the merge back
    would be overwritten without a word. crmcal finds that the server ignores it (a
    conditional write that cannot match is taken), reads such an event again right
    before writing it, and merges the edit it finds instead of writing over it."""
    harness = proxied.harness
    behaviour.ignore_if_match = True
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Planning")
    event_id = by_title["Planning"]
    assert quiet(proxied.sync_with_problems())
    url = harness._url(event_id)

    def edit_elsewhere(old: str, new: str) -> None:
        text = harness.request("GET", url).raw
        assert old in text
        harness.request("PUT", url, text.replace(old, new))

    # Both sides edit: the sync lists the event, reads it, and merges the two edits.
    edit_elsewhere("SUMMARY:Planning", "SUMMARY:Planning\r\nLOCATION:Room 7")
    proxied.edit_activity(made["id"], subject="Planning (agreed)")

    def after_the_listing(path: str) -> None:
        behaviour.after["REPORT"] = after_the_read

    def after_the_read(path: str) -> None:
        # Another client's edit lands once crmcal read the event, before it writes.
        edit_elsewhere("LOCATION:Room 7", "LOCATION:Room 7\r\nDESCRIPTION:Bring the figures")

    behaviour.after["REPORT"] = after_the_listing
    counts = proxied.sync_with_problems()
    assert "REPORT" not in behaviour.after  # the edit was made
    assert (counts["problems"], counts["created"], counts["deleted"]) == ([], 0, 0)
    event = await proxied.event(event_id)
    assert (event.summary, event.location) == ("Planning (agreed)", "Room 7")
    assert event.description == "Bring the figures"
    assert proxied.activity(made["id"])["note"] == "Bring the figures"
    assert quiet(proxied.sync_with_problems())


async def test_a_server_honouring_if_match_is_checked_once_and_keeps_its_cheap_writes(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    """The check answered 412 leaves nothing behind, and is made once for the account:
    an event read in the run is written under its version, without a read more."""
    harness = proxied.harness
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Planning")
    event_id = by_title["Planning"]
    url = harness._url(event_id)
    for round_, (old, new) in enumerate(
        [("END:VEVENT", "LOCATION:Room 0\r\nEND:VEVENT"), ("LOCATION:Room 0", "LOCATION:Room 1")]
    ):
        text = harness.request("GET", url).raw
        assert old in text
        harness.request("PUT", url, text.replace(old, new))
        proxied.edit_activity(made["id"], subject=f"Planning {round_}")
        behaviour.requests.clear()
        counts = proxied.sync_with_problems()
        assert counts["problems"] == []
        checks = sum(n for (m, p), n in behaviour.requests.items() if "if-match-check" in p)
        assert checks == (1 if round_ == 0 else 0)
        assert (behaviour.count("GET"), behaviour.count("DELETE")) == (0, 0)
        assert behaviour.count("PUT", event_id.rsplit("/", 1)[1]) == 1
    event = await proxied.event(event_id)
    assert (event.summary, event.location) == ("Planning 1", "Room 1")
    assert list(await proxied.ids_by_title()) == ["Planning 1"]


def status_warnings(on: Proxied) -> list[str]:
    """The warnings of the connection's status about its calendar itself."""
    connection = on.user.get(f"/api/v1/connections/{on.connection_id}").json()
    answer = on.user.get(f"/api/v1/connections/{on.connection_id}/status")
    assert answer.status_code == 200, answer.text
    return [p["reason"] for p in answer.json()["problems"]
            if p["item"] == connection["calendar_id"] and p.get("kind") == "warning"]  # fmt: skip


async def edited_on_both_sides(on: Proxied, made: dict[str, Any], event_id: str, n: int) -> None:
    """The event edited in the calendar (so that the sync's listing reads it) and its
    activity in the CRM (so that the sync writes the event)."""
    url = on.harness._url(event_id)
    text = on.harness.request("GET", url).raw
    before = f"LOCATION:Room {n - 1}"
    if before in text:
        text = text.replace(before, f"LOCATION:Room {n}")
    else:
        text = text.replace("END:VEVENT", f"LOCATION:Room {n}\r\nEND:VEVENT")
    on.harness.request("PUT", url, text)
    on.edit_activity(made["id"], subject=f"Planning {n}")


@pytest.mark.parametrize("status", [403, 405, 507])
async def test_an_if_match_check_answered_otherwise_is_no_answer_and_is_made_again(
    proxied: Proxied, behaviour: Behaviour, status: int
) -> None:
    """A check refused for another reason (the calendar read-only, the server full or
    down) says nothing of If-Match: the run reads the event again before writing it,
    as for a server that ignores it, the status says why, and the next run checks
    again, whose answer replaces that warning."""
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Planning")
    event_id = by_title["Planning"]

    def checks() -> int:
        return sum(n for (m, p), n in behaviour.requests.items() if "if-match-check" in p)

    behaviour.if_match_check = status
    await edited_on_both_sides(proxied, made, event_id, 1)
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert (checks(), behaviour.count("GET")) == (1, 1)  # the cautious read
    (warning,) = status_warnings(proxied)
    assert f"answered crmcal's If-Match check {status}" in warning

    behaviour.if_match_check = None  # the server answers it now: it honours If-Match
    await edited_on_both_sides(proxied, made, event_id, 2)
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert (checks(), behaviour.count("GET")) == (1, 0)
    assert status_warnings(proxied) == []
    event = await proxied.event(event_id)
    assert (event.summary, event.location) == ("Planning 2", "Room 2")


async def test_a_server_ignoring_if_match_is_a_warning_of_the_status(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.ignore_if_match = True
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Planning")
    await edited_on_both_sides(proxied, made, by_title["Planning"], 1)
    assert proxied.sync_with_problems()["problems"] == []
    (warning,) = status_warnings(proxied)
    assert "ignores If-Match" in warning
    # A run that writes nothing finds out nothing: what was said stands.
    assert quiet(proxied.sync_with_problems())
    assert len(status_warnings(proxied)) == 1
