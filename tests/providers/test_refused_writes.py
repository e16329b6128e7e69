"""Writes the calendar refuses for good (a CalDAV precondition, a 400, a 403 on that
event): sent once, not again at each later look at the activity, said in the
connection's status until a new change of either side is synced."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from crmcal.db import Database
from crmcal.sync.run_end import PROBLEMS_KEPT
from crmcal.sync.tables import Connection
from tests.caldav_proxy import Behaviour
from tests.emulator_calls import emulator_calls
from tests.providers.synced import V1, OnGoogle, OnMicrosoft, Proxied, Synced
from tests.providers.test_series import ProxiedSeries, next_weekday_nine

REFUSAL = "SUMMARY may not say that here"
# What the Google emulator counts of a write of one event.
GOOGLE_WRITES = ("events.patch", "events.update", "events.delete")


def writes(behaviour: Behaviour, method: str) -> int:
    return behaviour.count(method)


def status_problems(on: Synced) -> list[dict[str, str]]:
    response = on.user.get(f"{V1}/connections/{on.connection_id}/status")
    assert response.status_code == 200, response.text
    return response.json()["problems"]


def look_at_everything(on: Synced, policy: str) -> None:
    """New options (a conflict policy, which changes no event): the next sync looks at
    every activity in range again, not only those the CRM changed since the last."""
    on.set_options(conflict_policy=policy)


async def test_a_refused_update_is_not_sent_again_until_a_new_edit(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Fine words")
    behaviour.refuse["Forbidden words"] = REFUSAL
    proxied.edit_activity(made["id"], subject="Forbidden words")
    puts = writes(behaviour, "PUT")
    first = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    (problem,) = first["problems"]
    assert problem["item"] == by_title["Fine words"]
    assert REFUSAL in problem["reason"]

    # Every activity looked at again: the refused version is not sent again, and not
    # reported as new; the connection's status still says it.
    look_at_everything(proxied, "crm")
    again = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(proxied)] == [by_title["Fine words"]]
    assert (await proxied.event(by_title["Fine words"])).summary == "Fine words"

    # A new edit is sent, and the problem goes.
    proxied.edit_activity(made["id"], subject="Kind words")
    done = proxied.sync_with_problems()
    assert (done["updated"], done["problems"]) == (1, [])
    assert writes(behaviour, "PUT") == puts + 2
    assert (await proxied.event(by_title["Fine words"])).summary == "Kind words"
    assert status_problems(proxied) == []


async def test_a_refused_deletion_keeps_the_link_and_is_not_sent_again(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    """The calendar keeps the event whose deletion it refused: the pair stays linked
    (absence is not deletion), the deletion is not sent again, and restoring the
    activity writes it as any change."""
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Kept by the server")
    event_id = by_title["Kept by the server"]
    behaviour.refuse_delete[event_id.rsplit("/", 1)[-1]] = "this event may not be deleted"
    assert proxied.user.delete(f"{V1}/activities/{made['id']}").status_code == 200
    deletes = writes(behaviour, "DELETE")
    first = proxied.sync_with_problems()
    assert writes(behaviour, "DELETE") == deletes + 1
    (problem,) = first["problems"]
    assert (problem["item"], first["deleted"]) == (event_id, 0)
    assert "this event may not be deleted" in problem["reason"]

    look_at_everything(proxied, "calendar")
    again = proxied.sync_with_problems()
    assert writes(behaviour, "DELETE") == deletes + 1
    assert (again["problems"], again["deleted"], again["created"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(proxied)] == [event_id]

    # Restored, and edited: written to the same event, never a second one.
    restored = proxied.user.post(f"{V1}/activities/{made['id']}/restore")
    assert restored.status_code == 200, restored.text
    proxied.edit_activity(made["id"], subject="Back again")
    puts = writes(behaviour, "PUT")
    done = proxied.sync_with_problems()
    assert (done["updated"], done["created"], done["problems"]) == (1, 0, [])
    assert writes(behaviour, "PUT") == puts + 1
    assert list(await proxied.ids_by_title()) == ["Back again"]
    assert status_problems(proxied) == []


async def test_a_refused_new_event_is_not_sent_again_until_the_activity_changes(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.refuse["Forbidden words"] = REFUSAL
    proxied.connect()
    bad = proxied.add_activity("Forbidden words")
    puts = writes(behaviour, "PUT")
    first = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    (problem,) = first["problems"]
    assert problem["item"] == f"activity {bad['id']}"
    assert REFUSAL in problem["reason"]

    look_at_everything(proxied, "crm")
    again = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert (again["problems"], again["created"], again["skipped"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(proxied)] == [f"activity {bad['id']}"]

    proxied.edit_activity(bad["id"], subject="Kind words")
    done = proxied.sync_with_problems()
    assert (done["created"], done["problems"]) == (1, [])
    assert list(await proxied.ids_by_title()) == ["Kind words"]
    assert status_problems(proxied) == []


def synced_answer(on: Synced) -> dict[str, Any]:
    response = on.user.post(f"{V1}/connections/{on.connection_id}/sync")
    assert response.status_code == 200, response.text
    return response.json()


def google_writes(on: OnGoogle) -> int:
    calls = emulator_calls(on.harness)
    return sum(calls[kind] for kind in GOOGLE_WRITES)


async def refuse_google_writes(on: OnGoogle, event_id: str, status: int | None) -> None:
    answer = await on.harness._http.post(
        f"/_emulator/events/{event_id}/refuse-writes", json={"status": status}
    )
    assert answer.status_code == 200, answer.text


async def test_google_refusing_one_events_update_gets_it_once(on_google: OnGoogle) -> None:
    """Google refuses a change of that one event (403 ``forbiddenForNonOrganizer``):
    sent once, not again when every activity is looked at again, and a later edit
    is sent once Google takes it."""
    on = on_google
    on.connect()
    (made,), by_title = await on.synced_activities("Review")
    event_id = by_title["Review"]
    await refuse_google_writes(on, event_id, 403)
    on.edit_activity(made["id"], subject="Review (ours)")
    before = google_writes(on)
    first = synced_answer(on)
    assert google_writes(on) == before + 1
    (problem,) = first["problems"]
    assert problem["item"] == event_id
    assert "forbiddenForNonOrganizer" in problem["reason"] or "403" in problem["reason"]

    look_at_everything(on, "crm")
    again = synced_answer(on)
    assert google_writes(on) == before + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(on)] == [event_id]

    await refuse_google_writes(on, event_id, None)
    on.edit_activity(made["id"], subject="Review (agreed)")
    done = synced_answer(on)
    assert (done["updated"], done["problems"]) == (1, [])
    assert google_writes(on) == before + 2
    assert (await on.event(event_id)).summary == "Review (agreed)"
    assert status_problems(on) == []


async def test_google_refusing_one_events_deletion_keeps_it_linked(on_google: OnGoogle) -> None:
    on = on_google
    on.connect()
    (made,), by_title = await on.synced_activities("Kept")
    event_id = by_title["Kept"]
    await refuse_google_writes(on, event_id, 403)
    assert on.user.delete(f"{V1}/activities/{made['id']}").status_code == 200
    before = google_writes(on)
    first = synced_answer(on)
    assert google_writes(on) == before + 1
    assert [p["item"] for p in first["problems"]] == [event_id]

    look_at_everything(on, "calendar")
    again = synced_answer(on)
    assert google_writes(on) == before + 1
    assert (again["problems"], again["deleted"]) == ([], 0)
    assert [p["item"] for p in status_problems(on)] == [event_id]
    assert list(await on.ids_by_title()) == ["Kept"]


def graph_writes(on: OnMicrosoft) -> int:
    calls = emulator_calls(on.harness)
    return calls["events.update"] + calls["events.delete"]


async def refuse_graph_writes(on: OnMicrosoft, event_id: str, refused: bool) -> None:
    answer = await on.harness._http.post(
        f"/_emulator/events/{event_id}/refuse-writes", json={"refused": refused}
    )
    assert answer.status_code == 200, answer.text


async def test_graph_refusing_one_events_writes_gets_each_once(on_microsoft: OnMicrosoft) -> None:
    """Graph refuses a change of that one event (403 ``ErrorAccessDenied``): an update,
    then a deletion, each sent once and not again when every activity is looked at
    again; the pair stays linked, and a later edit is sent once Graph takes it."""
    on = on_microsoft
    on.connect()
    (made,), by_title = await on.synced_activities("Review")
    event_id = by_title["Review"]
    await refuse_graph_writes(on, event_id, True)
    on.edit_activity(made["id"], subject="Review (ours)")
    before = graph_writes(on)
    first = synced_answer(on)
    assert graph_writes(on) == before + 1
    assert [p["item"] for p in first["problems"]] == [event_id]
    look_at_everything(on, "crm")
    again = synced_answer(on)
    assert graph_writes(on) == before + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(on)] == [event_id]

    assert on.user.delete(f"{V1}/activities/{made['id']}").status_code == 200
    deleted = synced_answer(on)
    assert graph_writes(on) == before + 2
    assert ([p["item"] for p in deleted["problems"]], deleted["deleted"]) == ([event_id], 0)
    look_at_everything(on, "calendar")
    assert synced_answer(on)["problems"] == []
    assert graph_writes(on) == before + 2

    await refuse_graph_writes(on, event_id, False)
    restored = on.user.post(f"{V1}/activities/{made['id']}/restore")
    assert restored.status_code == 200, restored.text
    on.edit_activity(made["id"], subject="Review (agreed)")
    done = synced_answer(on)
    assert (done["updated"], done["created"], done["problems"]) == (1, 0, [])
    assert (await on.event(event_id)).summary == "Review (agreed)"
    assert status_problems(on) == []


# --- a full listing (the calendar's position expired) keeps what was refused ------------

EXPIRED_TOKEN = "http://example.test/ns/sync/expired"


async def expire_position(db_url: str, connection_id: int) -> None:
    """The connection's calendar position, as a server that no longer knows it has it."""
    db = Database(db_url)
    try:
        async with db.write() as session:
            stored = await session.get(Connection, connection_id)
            assert stored is not None
            stored.remote_cursor = EXPIRED_TOKEN
    finally:
        await db.dispose()


async def test_a_refused_update_is_not_sent_again_after_the_sync_token_expired(
    proxied: Proxied, behaviour: Behaviour, db_url: str
) -> None:
    """The server no longer knows the sync position (403 ``valid-sync-token``): the
    calendar is listed in full, every event with it, and the refused version stays
    unsent, its problem as it was said."""
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Fine words")
    behaviour.refuse["Forbidden words"] = REFUSAL
    proxied.edit_activity(made["id"], subject="Forbidden words")
    puts = writes(behaviour, "PUT")
    assert [p["item"] for p in proxied.sync_with_problems()["problems"]] == [by_title["Fine words"]]
    await expire_position(db_url, proxied.connection_id)
    again = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(proxied)] == [by_title["Fine words"]]


async def keeps_a_refused_update_unsent_after_a_full_listing(
    on: OnGoogle | OnMicrosoft,
    refuse: Callable[[str], Awaitable[None]],
    writes: Callable[[], int],
    expire: Callable[[], Awaitable[None]],
) -> None:
    """A refused update stays unsent, and said, through the full listing that follows
    an expired sync or delta token (which marks every event listed as seen)."""
    on.connect()
    (made,), by_title = await on.synced_activities("Review")
    event_id = by_title["Review"]
    await refuse(event_id)
    on.edit_activity(made["id"], subject="Review (ours)")
    before = writes()
    assert [p["item"] for p in synced_answer(on)["problems"]] == [event_id]
    await expire()
    again = synced_answer(on)
    assert writes() == before + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(on)] == [event_id]


async def test_google_keeps_a_refused_update_unsent_after_its_sync_token_expired(
    on_google: OnGoogle,
) -> None:
    on = on_google

    async def expire() -> None:
        answer = await on.harness._http.post(
            f"/_emulator/calendars/{on.harness.calendar_id}/expire-sync-tokens"
        )
        assert answer.status_code == 204, answer.text

    await keeps_a_refused_update_unsent_after_a_full_listing(
        on, lambda event_id: refuse_google_writes(on, event_id, 403),
        lambda: google_writes(on), expire,
    )  # fmt: skip


async def test_graph_keeps_a_refused_update_unsent_after_its_delta_token_expired(
    on_microsoft: OnMicrosoft,
) -> None:
    on = on_microsoft

    async def expire() -> None:
        answer = await on.harness._http.post("/_emulator/expire-delta-tokens", json={})
        assert answer.status_code == 200, answer.text

    await keeps_a_refused_update_unsent_after_a_full_listing(
        on, lambda event_id: refuse_graph_writes(on, event_id, True),
        lambda: graph_writes(on), expire,
    )  # fmt: skip


async def test_a_refused_new_event_stays_unsent_through_a_full_listing(
    proxied: Proxied, behaviour: Behaviour, db_url: str
) -> None:
    """A new event refused has no link: its problem alone remembers the version
    refused, so a full listing (which settles nothing about it) must keep it, or a
    later look at every activity sends it once more."""
    behaviour.refuse["Forbidden words"] = REFUSAL
    proxied.connect()
    proxied.add_activity("Fine words")
    bad = proxied.add_activity("Forbidden words")
    puts = writes(behaviour, "PUT")
    assert [p["item"] for p in proxied.sync_with_problems()["problems"]] == [
        f"activity {bad['id']}"
    ]
    await expire_position(db_url, proxied.connection_id)
    assert proxied.sync_with_problems()["problems"] == []
    assert [p["item"] for p in status_problems(proxied)] == [f"activity {bad['id']}"]
    look_at_everything(proxied, "crm")
    again = proxied.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 2  # the fine one, and the refused one once
    assert (again["problems"], again["created"]) == ([], 0)
    assert [p["item"] for p in status_problems(proxied)] == [f"activity {bad['id']}"]


# --- series writes: remembered as single events' are ------------------------------------


def series_on(proxied: Proxied) -> ProxiedSeries:
    return ProxiedSeries(proxied.harness, proxied.user, proxied.admin, proxied.proxy)


async def test_a_refused_series_update_is_not_sent_again_until_a_new_edit(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    on = series_on(proxied)
    on.connect()
    first = on.add_series("Standup", next_weekday_nine(0), "FREQ=WEEKLY;COUNT=6")
    assert on.sync()["created"] == 1
    ((event_id, _),) = (await on.events()).items()
    occurrences = on.occurrences(first["series_id"])
    behaviour.refuse["Forbidden words"] = REFUSAL
    on.edit_activity(occurrences[2]["id"], subject="Forbidden words")
    puts = writes(behaviour, "PUT")
    refused = on.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert [p["item"] for p in refused["problems"]] == [event_id]
    assert REFUSAL in refused["problems"][0]["reason"]

    look_at_everything(on, "crm")
    again = on.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert (again["problems"], again["skipped"], again["updated"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(on)] == [event_id]

    on.edit_activity(occurrences[2]["id"], subject="Kind words")
    done = on.sync_with_problems()
    assert (done["updated"], done["problems"]) == (1, [])
    assert writes(behaviour, "PUT") == puts + 2
    ((_, event),) = (await on.events()).items()
    assert [o.summary for o in event.overrides] == ["Kind words"]
    assert status_problems(on) == []


async def test_a_refused_new_series_is_not_sent_again_until_it_changes(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.refuse["Forbidden words"] = REFUSAL
    on = series_on(proxied)
    on.connect()
    first = on.add_series("Forbidden words", next_weekday_nine(1), "FREQ=WEEKLY;COUNT=6")
    puts = writes(behaviour, "PUT")
    refused = on.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    (problem,) = refused["problems"]
    assert REFUSAL in problem["reason"]

    look_at_everything(on, "crm")
    again = on.sync_with_problems()
    assert writes(behaviour, "PUT") == puts + 1
    assert (again["problems"], again["created"], again["skipped"]) == ([], 0, 0)
    assert [p["item"] for p in status_problems(on)] == [problem["item"]]

    on.edit_activity(first["id"], subject="Kind words", scope="series")
    done = on.sync_with_problems()
    assert (done["created"], done["problems"]) == (1, [])
    assert list(await on.ids_by_title()) == ["Kind words"]
    assert status_problems(on) == []


# The cap is the engine's (what a run's end keeps): one server shows it, on both backends.
@pytest.mark.parametrize("caldav_harness", ["radicale"], indirect=True)
async def test_more_refused_new_events_than_problems_kept_are_all_remembered(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    """The connection keeps PROBLEMS_KEPT problems, but a refusal of a new event is all
    that remembers it: past that cap, each one is still said in the status, and none
    is sent again."""
    proxied.connect()
    behaviour.refuse["Forbidden words"] = REFUSAL
    count = PROBLEMS_KEPT + 10
    for n in range(count):
        proxied.add_activity(f"Forbidden words {n}", hours=n / 10)
    first = proxied.sync_with_problems()
    assert (len(first["problems"]), first["skipped"]) == (count, count)
    puts = writes(behaviour, "PUT")
    assert len(status_problems(proxied)) == count

    look_at_everything(proxied, "crm")
    again = proxied.sync_with_problems()
    assert (again["problems"], again["skipped"]) == ([], 0)
    assert writes(behaviour, "PUT") == puts
    status = proxied.user.get(f"{V1}/connections/{proxied.connection_id}/status").json()
    assert len(status["problems"]) == count
    # None left out: the refusals have a cap of their own (the count past it:
    # tests/test_problems_left_out.py).
    assert status["left_out"] == {"problems": 0, "refusals": 0}


async def test_a_refusal_for_an_activity_that_no_longer_syncs_is_not_said_for_ever(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    """Options under which the refused activity no longer goes to the calendar (its
    start before the days synced): no run looks at it again, and the run that looks at
    every activity that syncs lets its refusal go (nothing is sent for it that the
    refusal would hold back)."""
    proxied.connect(backfill_days=30)
    behaviour.refuse["Forbidden words"] = REFUSAL
    proxied.add_activity("Forbidden words", hours=-240)
    proxied.add_activity("Planning")
    first = proxied.sync_with_problems()
    assert (first["created"], len(first["problems"])) == (1, 1)
    assert len(status_problems(proxied)) == 1
    proxied.set_options(backfill_days=0)
    assert proxied.sync_with_problems()["problems"] == []
    assert status_problems(proxied) == []
