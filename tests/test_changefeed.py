"""The change feed under concurrent writers: a reader following a cursor misses nothing."""

from __future__ import annotations

import asyncio
import random

from crmcal.crm import activities, changefeed
from crmcal.crm.schemas import ActivityCreate, ActivityUpdate
from crmcal.crm.tables import User
from crmcal.db import Database
from tests.conftest import create_user_in

WRITERS = 6
OPERATIONS = 12  # per writer: a create, then updates, a delete and a restore


async def _writer(db: Database, user_id: int, rng: random.Random) -> int:
    done = 0
    activity_id = None
    for step in range(OPERATIONS):
        async with db.write() as session:
            user = await session.get(User, user_id)
            assert user is not None
            if activity_id is None:
                created = await activities.create_activity(
                    session,
                    user,
                    ActivityCreate(type="call", subject="call", start="2026-12-01T10:00:00Z"),
                )
                activity_id = created.id
            elif step == OPERATIONS - 2:
                await activities.delete_activity(session, user, activity_id)
            elif step == OPERATIONS - 1:
                await activities.restore_activity(session, user, activity_id)
            else:
                await activities.update_activity(
                    session, user, activity_id, ActivityUpdate(subject=f"call {step}")
                )
            # Hold the transaction open after the feed row was written, so
            # commits land in a different order than sequence numbers were drawn.
            await asyncio.sleep(rng.uniform(0, 0.01))
        done += 1
    return done


async def _follow(db: Database, stop: asyncio.Event) -> list[int]:
    """Read the feed like the sync engine will: from the last seq seen, again and again."""
    seen: list[int] = []
    cursor = 0
    while True:
        finished = stop.is_set()
        async with db.read() as session:
            rows = await changefeed.read_changes(session, after_seq=cursor)
        seen.extend(row.seq for row in rows)
        if rows:
            cursor = rows[-1].seq
        if finished:
            return seen
        await asyncio.sleep(0)


async def test_reader_misses_no_change_under_concurrent_writers(db_url: str) -> None:
    user_ids = [
        (await create_user_in(db_url, email=f"w{i}@crm.test", name=f"w{i}"))[0]
        for i in range(WRITERS)
    ]
    db = Database(db_url)
    try:
        stop = asyncio.Event()
        reader = asyncio.create_task(_follow(db, stop))
        counts = await asyncio.gather(*(_writer(db, uid, random.Random(uid)) for uid in user_ids))
        stop.set()
        seen = await reader
        async with db.read() as session:
            final = await changefeed.read_changes(session, after_seq=0, limit=10_000)
    finally:
        await db.dispose()

    final_seqs = [row.seq for row in final]
    assert len(final_seqs) == sum(counts) == WRITERS * OPERATIONS
    assert final_seqs == sorted(set(final_seqs))
    # The follower saw exactly what is in the feed: nothing skipped, nothing twice.
    assert seen == final_seqs
    per_owner: dict[int, list[str]] = {}
    for row in final:
        per_owner.setdefault(row.owner_id, []).append(row.kind)
    expected = ["created"] + ["updated"] * (OPERATIONS - 3) + ["deleted", "restored"]
    assert all(kinds == expected for kinds in per_owner.values())


async def test_feed_filters_by_owner_and_reports_latest(db_url: str) -> None:
    ann, _ = await create_user_in(db_url, email="ann@crm.test", name="Ann")
    ben, _ = await create_user_in(db_url, email="ben@crm.test", name="Ben")
    db = Database(db_url)
    try:
        for owner in (ann, ben, ann):
            async with db.write() as session:
                user = await session.get(User, owner)
                assert user is not None
                await activities.create_activity(
                    session,
                    user,
                    ActivityCreate(type="task", subject="t", start="2026-12-02T08:00:00Z"),
                    origin="sync:7",
                )
        async with db.read() as session:
            anns = await changefeed.read_changes(session, owner_id=ann)
            latest = await changefeed.latest_seq(session)
            after_first = await changefeed.read_changes(session, after_seq=anns[0].seq)
    finally:
        await db.dispose()
    assert [row.owner_id for row in anns] == [ann, ann]
    assert all(row.origin == "sync:7" for row in anns)
    assert latest == anns[-1].seq
    assert [row.seq for row in after_first] == [anns[0].seq + 1, anns[0].seq + 2]
