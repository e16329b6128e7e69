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
