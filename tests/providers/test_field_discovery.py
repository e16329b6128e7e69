"""What CalDAV discovery costs a connection's syncs, counted at a proxy.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``, which counts every request. Events whose ORGANIZER is set
make a sync ask the principal for its ``calendar-user-address-set`` (whose meeting
is it?). What must hold: discovery is asked once per connection, not once per
sync; a no-change sync is its one ``sync-collection``; and a connection whose
discovery failed discovers again on a later sync.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from crmcal.providers.caldav_discovery import forget_discovered
from tests.caldav_proxy import Behaviour
from tests.providers.harness import raw_event
from tests.providers.synced import SOON, Proxied

LOCAL = "%Y%m%dT%H%M%S"
ADDRESS = "sam@crm.test"


def methods(seen: Behaviour) -> Counter[str]:
    return Counter({method: seen.count(method) for method, _ in seen.requests})


async def put_meeting(proxied: Proxied, name: str, organizer: str, hours: int) -> str:
    start = SOON.astimezone(dt.UTC) + dt.timedelta(hours=hours)
    return await proxied.harness.put_raw(raw_event(
        f"{name}-uid", f"SUMMARY:{name}", f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
        f"ORGANIZER;CN=Organizer:mailto:{organizer}",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{ADDRESS}",
    ), name=f"{name}.ics")  # fmt: skip


async def test_discovery_is_asked_once_per_connection_and_a_quiet_sync_is_one_request(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    await harness.set_addresses([f"mailto:{ADDRESS}"])  # Xandikos keeps it; Radicale not
    try:
        own = await put_meeting(proxied, "Own", ADDRESS, 30)
        await put_meeting(proxied, "Theirs", "boss@elsewhere.example", 32)
        proxied.connect()
        assert proxied.sync_with_problems()["problems"] == []
        assert sorted(a["subject"] for a in proxied.activities()) == ["Own", "Theirs"]
        # Each later sync reads a changed meeting: the addresses are known already.
        for n in range(3):
            await harness.retitle(own, f"Changed {n}")
            behaviour.requests.clear()
            behaviour.reports.clear()
            counts = proxied.sync_with_problems()
            assert (counts["problems"], counts["deleted"]) == ([], 0)
            assert methods(behaviour) == Counter({"REPORT": 2}), behaviour.requests
            assert dict(behaviour.reports) == {"sync-collection": 1, "calendar-multiget": 1}
        # A sync with nothing to do is one request.
        for _ in range(2):
            behaviour.requests.clear()
            counts = proxied.sync_with_problems()
            assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)
            assert methods(behaviour) == Counter({"REPORT": 1}), behaviour.requests
    finally:
        await harness.set_addresses([])  # the server's one user, for the next test


async def test_a_discovery_that_failed_is_asked_again_on_the_next_sync(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    meeting = await put_meeting(proxied, "Meeting", "boss@elsewhere.example", 30)
    proxied.connect()
    assert proxied.sync_with_problems()["problems"] == []
    # A new worker process knows nothing yet, and the server fails its discovery once.
    forget_discovered()
    behaviour.fail_once[("PROPFIND", "/")] = 503
    await harness.retitle(meeting, "Meeting (moved)")
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    assert proxied.only_activity()["subject"] == "Meeting (moved)"
    assert behaviour.count("PROPFIND", "/") >= 1  # it was asked, and failed
    # The failure was not kept: the next sync that needs it discovers again, once.
    for n, discovered in enumerate((True, False, False)):
        await harness.retitle(meeting, f"Meeting {n}")
        behaviour.requests.clear()
        counts = proxied.sync_with_problems()
        assert counts["problems"] == []
        assert proxied.only_activity()["subject"] == f"Meeting {n}"
        assert (behaviour.count("PROPFIND") > 0) == discovered, behaviour.requests
