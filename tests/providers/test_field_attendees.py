"""An all-hands meeting: an event with hundreds of attendees, more than a person types
into a CRM form, is imported with every one of them and keeps them all.

A calendar invites a whole company to one event; crmcal takes the event in whole (the
CRM holds up to ``MAX_PARTICIPANTS`` participants, a bound against hostile input that
real meetings never reach) and never cuts its list: a CRM edit of the activity (its
subject, one more participant) writes the event back with every attendee it had.
"""

from __future__ import annotations

from crmcal.model import Attendee
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.synced import Synced

# Far more than a form's worth, as an all-hands invitation has.
CROWD = 350


def colleagues(count: int) -> tuple[Attendee, ...]:
    return tuple(
        Attendee(email=f"colleague.{n}@acme.test", name=f"Colleague {n}", status="accepted")
        for n in range(count)
    )


async def attendees_of(synced: Synced, event_id: str) -> set[str]:
    return {a.email.lower() for a in (await synced.event(event_id)).attendees if a.email}


async def test_an_all_hands_is_imported_whole_and_crm_edits_keep_every_attendee(
    synced: Synced,
) -> None:
    synced.connect()
    guests = colleagues(CROWD)
    everyone = {g.email for g in guests}
    event_id = await synced.add_event("All hands", attendees=guests)
    synced.sync()
    activity = synced.only_activity()
    assert {p["email"] for p in activity["participants"]} == everyone

    # An edit of another field in the CRM: the event is written, its list whole.
    synced.edit_activity(activity["id"], subject="All hands, first quarter")
    synced.sync()
    event = await synced.event(event_id)
    assert event.summary == "All hands, first quarter"
    assert everyone <= await attendees_of(synced, event_id)

    # One participant more, sent with the whole list as a form sends it.
    people = [{"email": p["email"], "name": p["name"], "status": p["status"]}
              for p in synced.activity(activity["id"])["participants"]]  # fmt: skip
    people.append({"email": "newcomer@acme.test"})
    edited = synced.edit_activity(activity["id"], participants=people)
    assert len(edited["participants"]) == CROWD + 1
    warned = synced.sync_warned()
    there = await attendees_of(synced, event_id)
    assert everyone <= there
    if isinstance(synced.harness, MicrosoftHarness):
        # Graph is told participants only when invitations are wanted (it mails them):
        # the newcomer stays in the CRM, and the run says so.
        assert len(warned) == 1
        assert "notify_participants" in warned[0]
    else:
        assert warned == []
        assert "newcomer@acme.test" in there
    assert len(synced.activity(activity["id"])["participants"]) == CROWD + 1
