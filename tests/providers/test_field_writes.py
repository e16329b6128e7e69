"""How CalDAV servers in the field answer crmcal's writes, through a whole sync.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``. A calendar shared with the user read-only after it was
connected (its owner took write access back) answers every PUT and DELETE ``403``
and grants ``DAV:read`` alone: that is said once, as the server's setup, not taken
for one refused event at every sync, and nothing is lost on either side. A create
answered ``200`` or ``204`` (without an ETag) instead of ``201`` is one event,
written once; a deletion answered ``404`` is done, and never sent again.
"""

from __future__ import annotations

import pytest

from tests.caldav_proxy import Behaviour
from tests.providers.synced import V1, Proxied


async def test_a_calendar_that_became_read_only_is_said_so_not_retried_item_by_item(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    proxied.connect()
    (edited,), by_title = await proxied.synced_activities("Edited")
    behaviour.read_only = True
    proxied.edit_activity(edited["id"], location="Room 7")
    proxied.add_activity("New", hours=5)
    behaviour.requests.clear()
    failed = proxied.user.post(f"{V1}/connections/{proxied.connection_id}/sync")
    assert failed.status_code != 200, failed.text
    assert "read-only" in failed.text
    assert behaviour.count("PUT") == 1  # one refused write tells
    connection = proxied.user.get(f"{V1}/connections/{proxied.connection_id}").json()
    assert connection["state"] == "error"
    assert "read-only" in connection["last_error"]
    assert "calendar_to_crm" in connection["last_error"]
    # Nothing was lost: the event is as it was, the CRM keeps its edits.
    assert "Room 7" not in await harness.read_raw(by_title["Edited"])
    assert proxied.activity(edited["id"])["location"] == "Room 7"
    assert len(proxied.activities()) == 2
    # Write access given back: the CRM's edits go out.
    behaviour.read_only = False
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert (counts["created"], counts["updated"]) == (1, 1)
    assert "Room 7" in await harness.read_raw(by_title["Edited"])


@pytest.mark.parametrize("status", [200, 204])
async def test_a_create_answered_200_or_204_is_one_event_written_once(
    proxied: Proxied,
    behaviour: Behaviour,
    status: int,
) -> None:
    behaviour.created_status = status
    proxied.connect()
    made = proxied.add_activity("Made")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"]) == ([], 1)
    assert list((await proxied.ids_by_title()).keys()) == ["Made"]
    for _ in range(2):
        behaviour.requests.clear()
        counts = proxied.sync_with_problems()
        assert (counts["problems"], counts["created"], counts["updated"]) == ([], 0, 0)
        assert behaviour.count("PUT") == 0
    proxied.edit_activity(made["id"], location="Room 4")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["updated"]) == ([], 1)


async def test_a_deletion_answered_404_is_done_and_not_sent_again(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    proxied.connect()
    (dropped, kept), by_title = await proxied.synced_activities("Dropped", "Kept")
    answer = proxied.user.delete(f"{V1}/activities/{dropped['id']}")
    assert answer.status_code in (200, 204), answer.text
    # The DELETE is answered 404 (gone already, as far as the server knows).
    path = by_title["Dropped"]
    behaviour.fail_once[("DELETE", path)] = 404
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert ("DELETE", path) not in behaviour.fail_once
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert behaviour.count("DELETE") == 0  # done: never sent again
    assert [a["id"] for a in proxied.activities()] == [kept["id"]]
