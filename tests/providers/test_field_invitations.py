"""Other people's meetings in a CalDAV calendar, as scheduling clients store them.

An invitation lands in the calendar the way a scheduling server or client keeps
it: the iTIP request as it came (``METHOD:REQUEST`` in the object, which RFC 4791
forbids in stored resources and servers keep all the same), the organizer and
the user's own attendee line with ``SCHEDULE-AGENT`` and ``SCHEDULE-STATUS``
parameters, an HTML body and X- properties. Radicale and Xandikos store it;
crmcal reaches them through ``tests.caldav_proxy``, which counts its writes. What
must hold: crmcal never writes it, whatever happens to its activity in the CRM
(CRM-only edits, options, the trash), while the organizer's changes come in.
"""

from __future__ import annotations

import datetime as dt
import uuid

from tests.caldav_proxy import Behaviour
from tests.providers.synced import SOON, V1, Proxied, unfolded

LOCAL = "%Y%m%dT%H%M%S"


def itip_request(uid: str, start: dt.datetime) -> str:
    end = start + dt.timedelta(hours=1)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Scheduling Server//EN",
        "METHOD:REQUEST",
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20261101T080000Z",
        "SEQUENCE:2",
        "SUMMARY:Quarterly board meeting",
        f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{end:{LOCAL}}Z",
        "LOCATION:Board room",
        "ORGANIZER;CN=The Boss;SCHEDULE-AGENT=SERVER:mailto:boss@elsewhere.example",
        "ATTENDEE;CN=Sam;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;SCHEDULE-AGENT=SERVER;"
        "SCHEDULE-STATUS=1.2:mailto:sam@crm.test",
        "ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED;SCHEDULE-STATUS=2.0:mailto:ann@acme.test",
        "DESCRIPTION:Agenda: pricing",
        "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Agenda: <b>pricing</b></p></body></html>",
        "X-MICROSOFT-CDO-BUSYSTATUS:TENTATIVE",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
    return "\r\n".join(lines)


def writes(seen: Behaviour) -> int:
    return sum(seen.count(method) for method in ("PUT", "DELETE", "MOVE", "PROPPATCH"))


async def test_a_stored_itip_request_is_never_written_whatever_its_activity_goes_through(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    event_id = await harness.put_raw(itip_request(f"board-{uuid.uuid4().hex}", start))
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    activity = proxied.only_activity()
    assert activity["organizer"] == "boss@elsewhere.example"
    assert writes(behaviour) == 0
    stored = await harness.read_raw(event_id)
    # CRM-only edits, a change of options, the CRM's refusals: nothing is written.
    deal = proxied.record("deals", title="Board deal")
    proxied.edit_activity(activity["id"], note="Bring the numbers", done=True, type="call",
                          deal_id=deal)  # fmt: skip
    changes: list[dict[str, object]] = [
        {"subject": "Ours"},
        {"participants": []},
        {"location": "X"},
    ]
    for change in changes:
        refused = proxied.user.patch(f"{V1}/activities/{activity['id']}", json=change)
        assert refused.status_code == 409, refused.text
    proxied.set_options(include_deal_and_contact_info=True, conflict_policy="crm")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert writes(behaviour) == 0
    assert await harness.read_raw(event_id) == stored
    # Trashed in the CRM: the invitation stays in the calendar, untouched.
    assert proxied.user.delete(f"{V1}/activities/{activity['id']}").status_code == 200
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert writes(behaviour) == 0
    assert await harness.read_raw(event_id) == stored
    # The organizer moves it: nothing written back either.
    await harness.edit(event_id, lambda text: text.replace("LOCATION:Board room",
                                                           "LOCATION:Board room 2"))  # fmt: skip
    moved = await harness.read_raw(event_id)
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert writes(behaviour) == 0
    assert await harness.read_raw(event_id) == moved
    assert "METHOD:REQUEST" in unfolded(moved)


def declined_occurrence(uid: str, start: dt.datetime, moment: dt.datetime) -> str:
    """The user's answer to one occurrence of an invited series, as a client stores it
    in the user's copy: an override of that occurrence with their PARTSTAT."""
    end = moment + dt.timedelta(hours=1)
    return "\r\n".join([
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261102T080000Z", "SEQUENCE:2",
        f"RECURRENCE-ID:{moment:{LOCAL}}Z", "SUMMARY:Weekly partner call",
        f"DTSTART:{moment:{LOCAL}}Z", f"DTEND:{end:{LOCAL}}Z",
        "ORGANIZER;CN=The Boss:mailto:boss@elsewhere.example",
        "ATTENDEE;CN=Sam;PARTSTAT=DECLINED:mailto:sam@crm.test",
        "ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED:mailto:ann@acme.test",
        "END:VEVENT", "",
    ])  # fmt: skip


async def test_an_invited_series_is_never_written_and_an_occurrence_declined_stays_unwritten(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    """A weekly meeting someone else organises, stored as the request came: CRM edits
    of the CRM's own fields and of the whole series write nothing to it, the
    organizer's fields stay refused, and the user declining one occurrence (the answer
    stored as an override in their copy) is read without anything written back."""
    harness = proxied.harness
    proxied.connect()
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    uid = f"partner-{uuid.uuid4().hex}"
    text = itip_request(uid, start).replace(
        "SUMMARY:Quarterly board meeting",
        "SUMMARY:Weekly partner call\r\nRRULE:FREQ=WEEKLY;COUNT=4",
    )
    event_id = await harness.put_raw(text)
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    listed = sorted(proxied.activities(), key=lambda a: a["start"])
    assert len(listed) == 4
    assert {a["organizer"] for a in listed} == {"boss@elsewhere.example"}
    stored = await harness.read_raw(event_id)
    # CRM edits: its own fields, of one occurrence and of the series; the organizer's refused.
    proxied.edit_activity(listed[1]["id"], note="Ask about pricing", done=True)
    proxied.edit_activity(listed[0]["id"], note="Standing agenda", scope="series")
    refused = proxied.user.patch(f"{V1}/activities/{listed[2]['id']}",
                                 json={"subject": "Mine"}, params={"scope": "series"})  # fmt: skip
    assert refused.status_code == 409, refused.text
    behaviour.requests.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert writes(behaviour) == 0
    assert await harness.read_raw(event_id) == stored
    # Sam declines the third occurrence in another client.
    third = start + dt.timedelta(weeks=2)
    declined = stored.replace("END:VCALENDAR", declined_occurrence(uid, start, third)
                              + "END:VCALENDAR")  # fmt: skip
    await harness.put_raw(declined, name=event_id.rsplit("/", 1)[-1])
    answered = await harness.read_raw(event_id)
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert writes(behaviour) == 0
    assert await harness.read_raw(event_id) == answered
    after = {a["id"]: a for a in proxied.activities()}
    assert set(after) == {a["id"] for a in listed}
    assert after[listed[1]["id"]]["note"] == "Ask about pricing"
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
    assert writes(behaviour) == 0
