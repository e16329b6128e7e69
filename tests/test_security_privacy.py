"""Owner-only activities stay private from everyone else, admins included."""

from __future__ import annotations

import datetime as dt

from crmcal.db import Database
from crmcal.sync.tables import Connection, Link, SyncConflict
from crmcal.vault import Vault
from tests.conftest import Api, run

V1 = "/api/v1"
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)


async def _synced(db_url: str, owner_id: int, activity_id: int) -> int:
    """A connection of the owner's that holds the activity's event and a conflict about it."""
    db = Database(db_url)
    try:
        async with db.write() as session:
            conn = Connection(
                user_id=owner_id, provider="caldav", account="https://dav.example.test/",
                username="u", credentials=Vault("k" * 43).seal("p"),
                calendar_id="https://dav.example.test/secret-calendar/", calendar_name="C",
                sync_type="two_way", options={}, state="active", counts={},
                problems=[{"item": "/secret-calendar/therapy.ics",
                           "reason": "Therapy session: the server refused it"}],
                failures=0, next_sync_at=None,
            )  # fmt: skip
            session.add(conn)
            await session.flush()
            session.add(Link(connection_id=conn.id, activity_id=activity_id, origin="crm",
                             remote_id="/secret-calendar/therapy.ics"))  # fmt: skip
            version = {"subject": "Therapy session", "start": SOON.isoformat(), "busy": True}
            session.add(SyncConflict(connection_id=conn.id, activity_id=activity_id,
                                 remote_id="/secret-calendar/therapy.ics", policy="crm",
                                 winner="crm", crm_version=version, calendar_version=version,
                                 result=version))  # fmt: skip
            await session.flush()
            return conn.id
    finally:
        await db.dispose()


def test_private_activities_are_busy_blocks_everywhere(admin: Api, alice: Api, db_url: str) -> None:
    body = {"type": "meeting", "subject": "Therapy session", "start": SOON.isoformat(),
            "visibility": "owner"}  # fmt: skip
    made = alice.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    activity_id = made.json()["id"]
    connection_id = run(_synced(db_url, alice.id, activity_id))

    own = alice.get(f"{V1}/activities/{activity_id}").json()
    assert own["sync"]["event_id"] == "/secret-calendar/therapy.ics"
    seen = admin.get(f"{V1}/activities/{activity_id}")
    assert seen.json()["subject"] == "Busy"
    assert seen.json()["sync"] is None
    listed = admin.get(f"{V1}/activities").text
    assert "secret-calendar" not in listed

    conflicts = admin.get(f"{V1}/connections/{connection_id}/conflicts")
    assert conflicts.status_code == 200
    assert "Therapy" not in conflicts.text
    assert "secret-calendar" not in conflicts.text
    assert conflicts.json()["items"][0]["crm_version"]["subject"] == "Busy"
    assert "Therapy" in alice.get(f"{V1}/connections/{connection_id}/conflicts").text

    status = admin.get(f"{V1}/connections/{connection_id}/status")
    assert status.status_code == 200
    assert "Therapy" not in status.text
    assert "secret-calendar/therapy" not in status.text
    assert "Therapy" in alice.get(f"{V1}/connections/{connection_id}/status").text

    for change in ({"visibility": "everyone"}, {"owner_id": admin.id}):
        refused = admin.patch(f"{V1}/activities/{activity_id}", json=change)
        assert refused.status_code == 403, refused.text
    assert admin.get(f"{V1}/activities/{activity_id}").json()["subject"] == "Busy"
    assert alice.patch(f"{V1}/activities/{activity_id}",
                       json={"visibility": "everyone"}).status_code == 200  # fmt: skip


def _listed(user: Api, email: str) -> list[str]:
    everyone = [p["email"] for p in user.get(f"{V1}/persons").json()["items"]]
    found = [p["email"] for p in user.get(f"{V1}/persons", params={"email": email}).json()["items"]]
    assert (email in everyone) == bool(found)
    return found


def test_persons_from_a_private_activitys_attendees_stay_its_owners(
    admin: Api, alice: Api, bob: Api
) -> None:
    explicit = alice.post(f"{V1}/persons", json={"name": "Known", "email": "known@ex.test"})
    assert explicit.status_code == 201, explicit.text
    guests = [{"email": "therapist@ex.test"}, {"email": "known@ex.test"}]
    body = {"type": "meeting", "subject": "Therapy session", "start": SOON.isoformat(),
            "visibility": "owner", "participants": guests}  # fmt: skip
    made = alice.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    guest_id = made.json()["participants"][0]["person_id"]

    assert _listed(alice, "therapist@ex.test") == ["therapist@ex.test"]
    assert alice.get(f"{V1}/persons/{guest_id}").status_code == 200
    for other in (bob, admin):  # admins see a private activity as a busy block only
        assert _listed(other, "therapist@ex.test") == []
        assert other.get(f"{V1}/persons/{guest_id}").status_code == 404
        assert other.patch(f"{V1}/persons/{guest_id}", json={"name": "x"}).status_code == 404
        # A person created explicitly stays everyone's, whatever links it.
        assert _listed(other, "known@ex.test") == ["known@ex.test"]

    # Linked from something others may see, the person is everyone's.
    visible = {"type": "call", "subject": "Intro", "start": SOON.isoformat(),
               "participants": [{"person_id": guest_id}]}  # fmt: skip
    assert alice.post(f"{V1}/activities", json=visible).status_code == 201
    assert _listed(bob, "therapist@ex.test") == ["therapist@ex.test"]
    assert admin.get(f"{V1}/persons/{guest_id}").status_code == 200


def test_a_hidden_person_is_no_oracle_to_create_or_link(alice: Api, bob: Api) -> None:
    body = {"type": "meeting", "subject": "Therapy session", "start": SOON.isoformat(),
            "visibility": "owner", "participants": [{"email": "doctor@ex.test"}]}  # fmt: skip
    made = alice.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    hidden_id = made.json()["participants"][0]["person_id"]
    missing_id = hidden_id + 10_000

    # Linking by id: refused exactly as for a person that does not exist.
    def refusals(person_id: int) -> list[tuple[int, str]]:
        answers = [
            bob.post(f"{V1}/deals", json={"title": "D", "person_id": person_id}),
            bob.post(f"{V1}/activities", json={"type": "call", "subject": "C",
                                               "start": SOON.isoformat(),
                                               "person_id": person_id}),
            bob.post(f"{V1}/activities", json={"type": "call", "subject": "C",
                                               "start": SOON.isoformat(),
                                               "participants": [{"person_id": person_id}]}),
        ]  # fmt: skip
        return [(a.status_code, a.text.replace(str(person_id), "ID")) for a in answers]

    hidden, missing = refusals(hidden_id), refusals(missing_id)
    assert hidden == missing
    assert all(400 <= code < 500 for code, _ in hidden)
    # Its owner may link it (this would make it everyone's: checked on a twin below).
    twin = alice.post(f"{V1}/activities", json={**body, "participants": [{"person_id": hidden_id}]})
    assert twin.status_code == 201, twin.text

    # Creating a person with the hidden e-mail answers as if no one had it.
    fresh = bob.post(f"{V1}/persons", json={"name": "Fresh", "email": "fresh@ex.test"})
    taken = bob.post(f"{V1}/persons", json={"name": "Dr Who", "email": "doctor@ex.test"})
    assert taken.status_code == fresh.status_code == 201, taken.text
    assert taken.json()["name"] == "Dr Who"
    assert taken.json()["phone"] is None
    assert taken.json()["created_at"] >= fresh.json()["created_at"]
    assert bob.get(f"{V1}/persons/{taken.json()['id']}").status_code == 200
    again = bob.post(f"{V1}/persons", json={"name": "Twice", "email": "doctor@ex.test"})
    assert again.status_code == 409  # now bob's to see: the uniqueness rule applies


def test_an_address_a_hidden_person_has_is_refused_on_update_without_naming_it(
    alice: Api, bob: Api
) -> None:
    body = {"type": "meeting", "subject": "Therapy session", "start": SOON.isoformat(),
            "visibility": "owner",
            "participants": [{"email": "doctor@ex.test", "name": "Dr Secret"}]}  # fmt: skip
    made = alice.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    hidden_id = made.json()["participants"][0]["person_id"]
    mine = bob.post(f"{V1}/persons", json={"name": "Mine", "email": "mine@ex.test"}).json()["id"]
    other = bob.post(f"{V1}/persons", json={"name": "Other", "email": "other@ex.test"}).json()

    # Held by a person bob cannot see: refused, without its id or name.
    hidden = bob.patch(f"{V1}/persons/{mine}", json={"email": "doctor@ex.test"})
    assert hidden.status_code == 409, hidden.text
    assert hidden.json()["detail"] == (
        "the e-mail doctor@ex.test is already in use by a person you cannot see"
    )
    assert str(hidden_id) not in hidden.text
    assert "Secret" not in hidden.text
    # Held by one he sees: refused, naming it, as before.
    seen = bob.patch(f"{V1}/persons/{mine}", json={"email": "other@ex.test"})
    assert seen.status_code == 409, seen.text
    assert seen.json()["detail"] == f"person {other['id']} already has the e-mail other@ex.test"
    # To the owner of the private activity the person is no secret: named too.
    hers = alice.post(f"{V1}/persons", json={"name": "Hers"}).json()["id"]
    named = alice.patch(f"{V1}/persons/{hers}", json={"email": "doctor@ex.test"})
    assert named.status_code == 409, named.text
    assert named.json()["detail"] == f"person {hidden_id} already has the e-mail doctor@ex.test"
    assert bob.get(f"{V1}/persons/{mine}").json()["email"] == "mine@ex.test"
