"""Limits a calendar service sets per account or server, held across every crmcal process.

With one process (SQLite), each provider's own semaphore is enough. With workers
on several machines, two of them can call the same mailbox at once (two
connections of one mailbox, a sync next to an API call), so on PostgreSQL the
limits live in the database, shared by all:

* slots (``provider_slots``): at most N requests in flight per key — Graph's four
  per mailbox, a cap per Google user, and for CalDAV a cap of syncs per server
  (its provider sends one request at a time, so syncs are requests). Taking a
  slot is one UPDATE of a free row (``FOR UPDATE SKIP LOCKED``); a slot whose
  holder died frees itself when its expiry passes.
* holds (``provider_holds``): a throttling answer (429 and its ``Retry-After``)
  for an account makes every process wait before that account's next request —
  that account only; other accounts' requests go on.
* rates (``provider_slots`` too): at most N requests in any window of W seconds
  for a key — Google's per-project quota (10,000 a minute by default, every call
  inside a batch counted). Each of the key's N rows is one request's turn: taken
  before the request and, once it is answered, kept W longer (never given back),
  so no W seconds see more than N requests reach the service, whichever
  processes send them; a turn whose request is not answered yet is kept as long
  as the request's slot lives, and W more. A request waiting for turns (the
  quota spent by others) keeps renewing what it holds meanwhile — its slot, the
  turns it has — so none of it expires and goes to another process while it
  still counts on it.
* renewal: a slot (and its unanswered turns) is taken to expire ``REQUEST_TTL`` after
  its taking, so a worker that dies frees it soon; a request still running a third of
  that later (a slow answer) renews it, and again every third, until it ends. One
  timer per request does it, cancelled when the request ends: a fast request costs
  no statement and no task for it.

``install`` makes a process use them (the worker and the queue-mode server do);
``provider_for`` then hands each provider the limit of its account.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import logging
import os
import random
import socket
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    Select,
    and_,
    any_,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.types import Integer

from crmcal import tasks
from crmcal.config import Settings
from crmcal.crm.tables import UTCDateTime, utcnow
from crmcal.db import Database
from crmcal.sync.tables import ProviderHold, ProviderSlot

log = logging.getLogger(__name__)

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# Requests in flight per account that the services allow (Graph documents four per
# mailbox; Google documents rates, not concurrency: eight keeps well under them).
ACCOUNT_CONCURRENCY = {"microsoft": 4, "google": 8}
DEFAULT_CALDAV_SERVER_CONCURRENCY = 8
# A slot held for one request expires after this unless renewed: what frees the slots
# of a process that died (so it bounds how long its accounts wait). A request may run
# longer (up to 30 s waiting for a connection of the pool, 30 s connecting, 120 s for
# the exchange): one still running a third of this after it started renews its slot
# (see ``_Renewal``), so no request's slot expires while it is on the wire.
REQUEST_TTL = dt.timedelta(seconds=120)
RENEW_AFTER = REQUEST_TTL.total_seconds() / 3
LONGEST_HOLD = 300.0  # a Retry-After beyond this is not believed
# Google's documented default per-project quota: requests per minute, all users.
DEFAULT_GOOGLE_PROJECT_QUOTA = 10_000
QUOTA_WINDOW = dt.timedelta(minutes=1)
# Limits a process keeps for keys not in use at the moment (a few hundred bytes each):
# one forgotten and met again costs at most one INSERT of its slots' rows, which exist.
LIMITS_KEPT = 4096

# A request's slot and its turns of the quota its key counts against, in one statement:
# the turns are taken only when the slot is (a held or busy account spends none). Its
# turns are searched for from a random one (``turn_start``), then from the lowest.
_TAKE_WITH_TURNS = text("""
WITH slot AS (
    UPDATE provider_slots SET holder = :holder, expires_at = :slot_expires
    WHERE key = :key AND slot = (
        SELECT slot FROM provider_slots
        WHERE key = :key AND slot < :concurrency
          AND (holder IS NULL OR expires_at < :now)
          AND NOT EXISTS (SELECT 1 FROM provider_holds WHERE key = :key AND until > :now)
        ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING slot),
above AS (
    SELECT slot FROM provider_slots
    WHERE key = :rate_key AND slot >= :rate_start AND slot < :rate_count
      AND (holder IS NULL OR expires_at < :now)
      AND EXISTS (SELECT 1 FROM slot)
    ORDER BY slot LIMIT :cost FOR UPDATE SKIP LOCKED),
below AS (
    SELECT slot FROM provider_slots
    WHERE key = :rate_key AND slot < :rate_start
      AND (holder IS NULL OR expires_at < :now)
      AND EXISTS (SELECT 1 FROM slot)
    ORDER BY slot LIMIT :cost FOR UPDATE SKIP LOCKED),
free AS (
    SELECT slot FROM above UNION ALL SELECT slot FROM below LIMIT :cost),
turns AS (
    UPDATE provider_slots SET holder = :holder, expires_at = :turn_expires
    FROM free WHERE provider_slots.key = :rate_key AND provider_slots.slot = free.slot
    RETURNING provider_slots.slot)
SELECT 0 AS turn, slot FROM slot UNION ALL SELECT 1, slot FROM turns
""").bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("slot_expires", type_=UTCDateTime()),
    bindparam("turn_expires", type_=UTCDateTime()),
)
# A key's rows, numbered from 0, made in the database itself: the Google project's
# quota has one row a turn (10,000 by default), and the same rows sent as an INSERT of
# as many VALUES took two bound parameters a row, SQLAlchemy's objects for each, their
# compiled text and its driver's parts in the process: a worker's first request grew
# it by 30-45 MB at 10,000 turns and far more at 30,000, each of its concurrent first
# requests making its own statement (bench/RESULTS.md).
_MAKE_SLOTS = text("""
INSERT INTO provider_slots (key, slot)
SELECT :key, generate_series(0, :count - 1)
ON CONFLICT DO NOTHING
""")
# The slot given back and the turns' window started, in one statement.
_GIVE_BACK_WITH_TURNS = text("""
WITH given AS (
    UPDATE provider_slots SET holder = NULL, expires_at = NULL
    WHERE key = :key AND slot = :slot AND holder = :holder)
UPDATE provider_slots SET expires_at = :turn_expires
WHERE key = :rate_key AND slot = ANY(:turns)
""").bindparams(
    bindparam("turn_expires", type_=UTCDateTime()),
    bindparam("turns", type_=ARRAY(Integer())),
)


# A slot kept for a sync's release (or taken ahead with its lease) goes back by itself
# after this many seconds at the latest.
GIVE_BACK_WITHIN = 2.0


@dataclass
class Kept:
    """A request's slot (and its turns of a quota) kept after its answer, to be given
    back with a later statement; ``fresh``: taken ahead for a request not sent yet (with
    the sync's lease), which the account's next request uses instead of taking one."""

    limit: Limit
    slot: int
    turns: list[int]
    fresh: bool = False


class GiveBackLater:
    """The slots of a sync's requests given back with its closing statement instead of
    one statement each (``run_sync`` sets one for its sync, see ``later``).

    A slot kept here is still held in ``provider_slots``, so its account counts one
    request more in flight than it has: the limits hold all the same. It is given back
    by ``flush`` (by the sync's next request of any account, which flushes first, or the
    sync's end) or with the sync's release (``take_all``), and at the latest after
    ``within`` seconds whatever the sync does meanwhile: well before the slot expires
    by itself and before a quota turn's window, counted from its taking, could end."""

    def __init__(self, within: float = GIVE_BACK_WITHIN) -> None:
        self.kept: list[Kept] = []
        self.within = within
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def keep(self, limit: Limit, slot: int, turns: list[int], *, fresh: bool = False) -> None:
        self.kept.append(Kept(limit, slot, turns, fresh))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.within, self._due)

    def fresh_of(self, limit: Limit) -> Kept | None:
        """A slot of ``limit``'s key taken ahead and not used yet, now the caller's."""
        for n, kept in enumerate(self.kept):
            if kept.fresh and kept.limit.key == limit.key:
                return self.kept.pop(n)
        return None

    def _due(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    def take_all(self) -> list[Kept]:
        """What is kept, now the caller's to give back (each slot is given back once)."""
        kept, self.kept = self.kept, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return kept

    async def flush(self) -> None:
        """Give back what is kept, one statement a slot."""
        await give_back_all(self.take_all())


# The sync that runs in this task (and the tasks it starts) gives its requests' slots
# back later; None: each at once.
later: contextvars.ContextVar[GiveBackLater | None] = contextvars.ContextVar(
    "crmcal_give_back_later", default=None
)


@functools.cache
def give_back_parts() -> tuple[CTE, ...]:
    """A slot given back and its turns' window started, as parts of another statement
    (a sync's release); built once, their parameters from ``give_back_values``."""
    given = (
        update(ProviderSlot)
        .where(
            ProviderSlot.key == bindparam("given_key"),
            ProviderSlot.slot == bindparam("given_slot"),
            ProviderSlot.holder == bindparam("given_holder"),
        )
        .values(holder=None, expires_at=None)
        .cte("given")
    )
    turned = (
        update(ProviderSlot)
        .where(
            ProviderSlot.key == bindparam("turned_key"),
            ProviderSlot.slot == any_(bindparam("turned_slots", type_=ARRAY(Integer()))),
            ProviderSlot.slot >= bindparam("turned_low", type_=Integer()),
            ProviderSlot.slot <= bindparam("turned_high", type_=Integer()),
        )
        .values(expires_at=bindparam("turned_expires", type_=UTCDateTime()))
        .cte("turned")
    )
    return given, turned


def give_back_values(kept: Kept) -> dict[str, Any]:
    """The parameters of ``give_back_parts`` for the slot ``kept``."""
    rate = kept.limit.rate
    turns = kept.turns if rate is not None else []
    low, high = turn_bounds(turns)
    return {
        "given_key": kept.limit.key, "given_slot": kept.slot, "given_holder": PROCESS,
        "turned_key": rate.turns.key if rate is not None else "",
        "turned_slots": turns, "turned_low": low, "turned_high": high,
        "turned_expires": utcnow() + (rate.window if rate is not None else dt.timedelta()),
    }  # fmt: skip


def turn_bounds(turns: Sequence[int]) -> tuple[int, int]:
    """The lowest and highest of ``turns`` (an empty range for none), said beside their
    array in a statement that updates them. psycopg prepares a statement it has sent
    five times, and PostgreSQL then plans it once for any parameters (a generic plan):
    for ``key = $1 AND slot = ANY($2)`` that plan finds the rows by the key alone and
    filters every turn of the quota, 10,000 to 30,000 rows (350 blocks, 14 ms at
    30,000) at each sync's release instead of one. With the bounds the index finds the
    key's rows between them, the turns themselves."""
    return (min(turns), max(turns)) if turns else (0, -1)


def lease_slot_columns(taken: Any) -> tuple[Any, Any]:
    """For the statement that takes a sync's lease (PostgreSQL), given the taken
    connection's columns: a request slot of its account taken ahead for the sync's first
    request (the listing), and with it one turn of the project's quota for a Google
    account; the slot number (null when none was free, or the lease not taken) and the
    turns (an array, null when none). The lease is not taken while the account is held,
    so no slot is either. Parameters: ``lease_slot_values``."""
    now = bindparam("ahead_now", type_=UTCDateTime())
    key = taken.provider + ":" + func.lower(func.trim(taken.account))
    concurrency = case(
        *((taken.provider == kind, n) for kind, n in ACCOUNT_CONCURRENCY.items()), else_=0
    )
    slot = _take_free(
        "slot", key, concurrency, now, bindparam("ahead_slot_expires", type_=UTCDateTime())
    )
    turns = _take_free(
        "turn",
        bindparam("ahead_turn_key"),
        bindparam("ahead_turn_count", type_=Integer()),
        now,
        bindparam("ahead_turn_expires", type_=UTCDateTime()),
        select(slot.c.slot).exists(),
        select(taken.provider).scalar_subquery() == "google",
        start=bindparam("ahead_turn_start", type_=Integer()),
    )
    return (
        select(slot.c.slot).scalar_subquery(),
        select(func.array_agg(turns.c.slot)).scalar_subquery(),
    )


def _take_free(
    name: str, key: Any, below: Any, now: Any, expires: Any, *also: Any, start: Any = None
) -> Any:
    """A CTE taking the lowest free slot under ``below`` of ``key`` for this process (when
    ``also`` holds), answering its number: one statement's part of ``lease_slot_columns``.
    ``start``: the first free one from that slot on, else the lowest (see ``turn_start``)."""

    def first_free(alias: str, *bounds: Any) -> Any:
        free = ProviderSlot.__table__.alias(alias)
        return (
            select(free.c.slot)
            .where(
                free.c.key == key,
                free.c.slot < below,
                or_(free.c.holder.is_(None), free.c.expires_at < now),
                *also,
                *(bound(free.c.slot) for bound in bounds),
            )
            .order_by(free.c.slot)
            .limit(1)
            .with_for_update(of=free, skip_locked=True)
            .scalar_subquery()
        )

    if start is None:
        first = first_free(f"free_{name}")
    else:
        # The second is run only when the first finds none (COALESCE stops at a value).
        first = func.coalesce(
            first_free(f"free_{name}", lambda slot: slot >= start),
            first_free(f"free_{name}_below", lambda slot: slot < start),
        )
    # Names no column has: an UPDATE takes a parameter named as a column for its SET.
    return (
        update(ProviderSlot)
        .where(ProviderSlot.key == select(key).scalar_subquery(), ProviderSlot.slot == first)
        .values(holder=bindparam("ahead_holder"), expires_at=expires)
        .returning(ProviderSlot.slot)
        .cte(f"ahead_{name}")
    )


def lease_slot_values(now: dt.datetime) -> dict[str, Any]:
    """The parameters of ``lease_slot_columns``, with this process's limits."""
    shared = installed()
    rate = shared.google_project if shared is not None else None
    return {
        "ahead_now": now, "ahead_holder": PROCESS, "ahead_slot_expires": now + REQUEST_TTL,
        "ahead_turn_key": rate.turns.key if rate is not None else "",
        "ahead_turn_count": rate.turns.concurrency if rate is not None else 0,
        "ahead_turn_start": turn_start(rate.turns.concurrency if rate is not None else 0),
        # Should the process die before giving it back, the turn still covers a request
        # in flight as long as its slot lives (see Rate.unanswered).
        "ahead_turn_expires": rate.unanswered(now) if rate is not None else now,
    }  # fmt: skip


def turn_start(count: int) -> int:
    """Where a search for a free turn of a quota of ``count`` starts: anywhere. Turns
    taken lowest first left every turn of the last window below the first free one, so
    each search read them all before it: about 60 rows a request per request a second
    (6.6 ms of the database's CPU at 9,000 turns in use, PostgreSQL 15). From a random
    place, the turns in use are scattered, and a search reads about one row more per
    turn free for each in use (``1 / (1 - used)``) until the quota is nearly spent."""
    return random.randrange(count) if count > 0 else 0


async def give_back_all(kept: list[Kept]) -> None:
    """Give back slots taken from a ``GiveBackLater``, one statement each."""
    for one in kept:
        try:
            await asyncio.shield(one.limit._give_back_with(one.slot, one.turns))
        except Exception as exc:  # it expires by itself (REQUEST_TTL)
            log.warning("giving back a slot of %s failed: %s", one.limit.key, exc)


def call_later(seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    """``callback`` called ``seconds`` from now on the running loop (tests hold it on
    the limits' own clock)."""
    return asyncio.get_running_loop().call_later(seconds, callback)


# The renewals under way (a task must be referenced until it ends).
_renewing: set[asyncio.Task[None]] = set()


class _Renewal:
    """Keeps a running request's slots (and its turns not yet answered) taken while it
    runs past ``RENEW_AFTER``: a timer armed when the request has its slots and
    cancelled when it ends. A request that ends before it fires (nearly all of them)
    costs the timer alone; one that outlives it renews what it holds in one statement
    and arms the timer again, so nothing it holds expires while it may still be on the
    wire (where another process would take it: one request more in flight for the
    account than its limit)."""

    __slots__ = ("ended", "limit", "slots", "timer", "turns")

    def __init__(self, limit: Limit, slots: list[int], turns: list[int]) -> None:
        # The lists are the request's own: turns it takes later are renewed too.
        self.limit, self.slots, self.turns, self.ended = limit, slots, turns, False
        self.timer = call_later(RENEW_AFTER, self._due)

    def _due(self) -> None:
        if self.ended:
            return
        task = asyncio.ensure_future(self._renew())
        _renewing.add(task)
        task.add_done_callback(_renewing.discard)

    async def _renew(self) -> None:
        try:
            await self.limit._renew_request(self.slots, self.turns)
        except Exception as exc:  # the next one tries again; at worst it expires
            log.warning("renewing a slot of %s failed: %s", self.limit.key, exc)
        if not self.ended:
            self.timer = call_later(RENEW_AFTER, self._due)

    def end(self) -> None:
        """The request ended: nothing more is renewed (its slots are given back or
        kept for a release, which gives them back within seconds)."""
        self.ended = True
        self.timer.cancel()


class Limit:
    """The shared limit of one key (an account, a server); ``rate``: a quota its
    requests count against too (the Google project's)."""

    def __init__(self, db: Database, key: str, concurrency: int, rate: Rate | None = None) -> None:
        self.db, self.key, self.concurrency, self.rate = db, key, concurrency, rate
        self._slots_made = False
        self._making: asyncio.Lock | None = None

    # --- holds ---------------------------------------------------------------------

    async def throttled(self, seconds: float) -> None:
        """The service asked this account to wait ``seconds``: every process waits."""
        until = utcnow() + dt.timedelta(seconds=min(max(seconds, 0.0), LONGEST_HOLD))
        statement = insert(ProviderHold).values(key=self.key, until=until)
        statement = statement.on_conflict_do_update(
            index_elements=[ProviderHold.key],
            set_={"until": until},
            where=ProviderHold.until < until,
        )
        async with self.db.write() as session:
            await session.execute(statement)

    async def held_for(self) -> float:
        """Seconds until this key may send again after a throttling answer (0: now)."""
        until = await self._held_until()
        return max((until - utcnow()).total_seconds(), 0.0) if until is not None else 0.0

    async def _held_until(self) -> dt.datetime | None:
        async with self.db.read() as session:
            until = await session.scalar(
                select(ProviderHold.until).where(ProviderHold.key == self.key)
            )
        return until if until is not None and until > utcnow() else None

    # --- slots ---------------------------------------------------------------------

    async def _make_slots(self) -> None:
        """The key's rows, made (where missing) once in this process, in one statement
        of two parameters whatever their number; first requests meeting here at once
        wait for that one statement instead of each sending its own."""
        if self._making is None:
            self._making = asyncio.Lock()
        making = self._making
        async with making:
            if not self._slots_made:
                await self.db.execute_one(_MAKE_SLOTS, {"key": self.key, "count": self.concurrency})
                self._slots_made = True
        self._making = None  # the lock served its one purpose

    async def try_take(self, ttl: dt.timedelta = REQUEST_TTL) -> int | None:
        """A free slot, taken until ``ttl`` from now, or None when all are in use or the
        key is held (throttled): one statement either way."""
        taken = await self.try_take_many(1, ttl)
        return taken[0] if taken else None

    async def try_take_many(
        self, count: int, ttl: dt.timedelta, *, anywhere: bool = False
    ) -> list[int]:
        """Up to ``count`` free slots, taken until ``ttl`` from now (fewer when fewer are
        free, none while the key is held), in one statement. ``anywhere``: searched for
        from a random slot, then from the lowest (a quota's turns, see ``turn_start``),
        instead of from the lowest."""
        taken = list(
            (await self.db.execute_one(self._take_statement(count, ttl, anywhere))).scalars()
        )
        if not taken and not self._slots_made:
            await self._make_slots()
            return await self.try_take_many(count, ttl, anywhere=anywhere)
        return taken

    def _take_statement(self, count: int, ttl: dt.timedelta, anywhere: bool) -> Any:
        """``try_take_many``'s statement, answering the slots taken."""
        now = utcnow()
        held = select(ProviderHold.key).where(
            ProviderHold.key == self.key, ProviderHold.until > now
        )

        def free(*bounds: Any) -> Select[Any]:
            return (
                select(ProviderSlot.slot)
                .where(
                    ProviderSlot.key == self.key,
                    ProviderSlot.slot < self.concurrency,
                    or_(ProviderSlot.holder.is_(None), ProviderSlot.expires_at < now),
                    ~held.exists(),
                    *bounds,
                )
                .order_by(ProviderSlot.slot)
                .limit(count)
                .with_for_update(skip_locked=True)
            )

        found: Any
        if not anywhere:
            # One: the slot found by a scalar subquery; several: an UPDATE ... FROM them.
            lowest = free()
            found = lowest.scalar_subquery() if count == 1 else lowest.cte("free").c.slot
        else:
            start = turn_start(self.concurrency)
            above = free(ProviderSlot.slot >= start)
            below = free(ProviderSlot.slot < start)
            if count == 1:
                # The second is run only when the first finds none.
                found = func.coalesce(above.scalar_subquery(), below.scalar_subquery())
            else:
                # Locked rows can not be a UNION's: each part its own CTE, the second read
                # only for what the first lacks.
                both = union_all(
                    select(above.cte("free_above").c.slot),
                    select(below.cte("free_below").c.slot),
                )
                found = select(both.subquery().c.slot).limit(count).cte("free").c.slot
        return (
            update(ProviderSlot)
            .where(ProviderSlot.key == self.key, ProviderSlot.slot == found)
            .values(holder=PROCESS, expires_at=now + ttl)
            .returning(ProviderSlot.slot)
        )

    async def give_back(self, slot: int) -> None:
        await self.give_back_many([slot])

    def _held(self, slots: Sequence[int]) -> Any:
        """An UPDATE of these of the key's ``slots`` that this process holds."""
        return update(ProviderSlot).where(
            ProviderSlot.key == self.key,
            ProviderSlot.slot.in_(slots),
            ProviderSlot.holder == PROCESS,
        )

    async def give_back_many(self, slots: list[int]) -> None:
        await self.db.execute_one(self._held(slots).values(holder=None, expires_at=None))

    async def _renew(self, slot: int, ttl: dt.timedelta) -> None:
        while True:
            await asyncio.sleep(ttl.total_seconds() / 3)
            async with self.db.write() as session:
                await session.execute(self._held([slot]).values(expires_at=utcnow() + ttl))

    @contextlib.asynccontextmanager
    async def slot(self, cost: int = 1, width: int = 1) -> AsyncIterator[None]:
        """One request's slot: waits for a hold to pass and a slot to come free, and
        for ``cost`` turns of the quota the key counts against (the calls a batch
        request holds; taken once the slot is, so a throttled account spends none).
        ``width``: the calls the service runs at once for the request (a Graph batch's
        parts, four at a time per mailbox), each of which takes a slot."""
        width = max(1, min(width, self.concurrency))
        deferred = later.get()
        ahead = deferred.fresh_of(self) if deferred is not None and width == 1 else None
        if deferred is not None and deferred.kept:
            await deferred.flush()  # one slot kept at a time: the sync's last request's
        if width > 1:
            async with self._slots(width, cost):
                yield
            return
        pause = 0.01
        turns: list[int] = []
        taken: int | None = None
        while ahead is None:
            if self.rate is None:
                taken = await self.try_take()
            else:
                taken, turns = await self._try_take_with_turns(cost)
            if taken is not None:
                break
            until = await self._held_until()  # only asked when no slot was had
            if until is not None:
                await asyncio.sleep((until - utcnow()).total_seconds())
                continue
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.25)
        if ahead is not None:  # taken with the sync's lease, with its turns
            taken, turns = ahead.slot, list(ahead.turns) if self.rate is not None else []
        assert taken is not None
        answered = False
        renewal = _Renewal(self, [taken], turns)
        try:
            if self.rate is not None:
                # The quota spent for now (or its rows not made yet): wait for the rest.
                left = max(1, min(cost, self.rate.turns.concurrency)) - len(turns)
                if left > 0:
                    await self.rate.take(left, turns)
            yield
            answered = True
        finally:
            renewal.end()
            if answered and deferred is not None:
                deferred.keep(self, taken, turns)  # given back with the sync's release
            else:
                await asyncio.shield(self._give_back_with(taken, turns))

    @contextlib.asynccontextmanager
    async def _slots(self, width: int, cost: int) -> AsyncIterator[None]:
        """``width`` slots taken together or not at all (holding some while waiting for
        the rest would let two wide requests starve each other), then the turns."""
        pause = 0.01
        while True:
            taken = await self.try_take_many(width, REQUEST_TTL)
            if len(taken) == width:
                break
            if taken:
                await self.give_back_many(taken)
            until = await self._held_until()
            if until is not None:
                await asyncio.sleep((until - utcnow()).total_seconds())
                continue
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.25)
        turns: list[int] = []
        renewal = _Renewal(self, taken, turns)
        try:
            if self.rate is not None:
                await self.rate.take(cost, turns)
            yield
        finally:
            renewal.end()
            await asyncio.shield(self._give_back_all(taken, turns))

    async def _give_back_all(self, slots: list[int], turns: list[int]) -> None:
        await self.give_back_many(slots)
        if turns and self.rate is not None:
            await self.rate.done(turns)

    async def _try_take_with_turns(self, cost: int) -> tuple[int | None, list[int]]:
        """A free slot and up to ``cost`` turns of the key's quota, in one statement (no
        turns without the slot)."""
        found = await self.db.execute_one(_TAKE_WITH_TURNS, self._take_with_turns_values(cost))
        slot: int | None = None
        turns: list[int] = []
        rows: list[Any] = list(found)
        for turn, number in rows:
            if turn:
                turns.append(number)
            else:
                slot = number
        if slot is None and not self._slots_made:
            await self._make_slots()
            return await self._try_take_with_turns(cost)
        return slot, turns

    def _take_with_turns_values(self, cost: int) -> dict[str, Any]:
        """The parameters of ``_TAKE_WITH_TURNS`` for a request of ``cost`` turns."""
        assert self.rate is not None
        now = utcnow()
        values = dict(holder=PROCESS, key=self.key, concurrency=self.concurrency, now=now,
                      slot_expires=now + REQUEST_TTL, rate_key=self.rate.turns.key,
                      rate_count=self.rate.turns.concurrency,
                      turn_expires=self.rate.unanswered(now),
                      rate_start=turn_start(self.rate.turns.concurrency),
                      cost=max(1, min(cost, self.rate.turns.concurrency)))  # fmt: skip
        return values

    async def _renew_request(self, slots: list[int], turns: list[int]) -> None:
        """Push back the expiry of a running request's ``slots`` (REQUEST_TTL from now)
        and of its ``turns`` of the key's quota (``Rate.unanswered``), in one statement."""
        if self.rate is not None and turns:
            await self.rate._renew(self, slots, list(turns))
            return
        await self.db.execute_one(self._held(slots).values(expires_at=utcnow() + REQUEST_TTL))

    async def _give_back_with(self, slot: int, turns: list[int]) -> None:
        """Give the slot back; the turns' window starts now (see Rate.done)."""
        if not turns or self.rate is None:
            await self.give_back(slot)
            return
        values = dict(key=self.key, slot=slot, holder=PROCESS, rate_key=self.rate.turns.key,
                      turns=turns, turn_expires=utcnow() + self.rate.window)  # fmt: skip
        await self.db.execute_one(_GIVE_BACK_WITH_TURNS, values)

    @contextlib.asynccontextmanager
    async def held(self, slot: int, ttl: dt.timedelta) -> AsyncIterator[None]:
        """Keep a slot taken with ``try_take`` (renewed) for the block, then give it back."""
        renewal = asyncio.create_task(self._renew(slot, ttl))
        try:
            yield
        finally:
            try:
                await tasks.cancel_and_wait(renewal)
            finally:  # also when this task is cancelled meanwhile
                await asyncio.shield(self.give_back(slot))


class Rate:
    """At most ``count`` requests in any ``window`` for one key, across processes: each
    of the key's ``count`` rows in ``provider_slots`` is one request's turn, taken
    before the request and kept for the window after its answer (its expiry frees it)."""

    def __init__(self, db: Database, key: str, count: int, window: dt.timedelta) -> None:
        self.turns = Limit(db, key, count)
        self.window = window

    async def take(self, cost: int, into: list[int]) -> None:
        """Wait for ``cost`` turns (at most the whole quota), each appended to ``into`` as
        it is had: the request's own list, which its renewal keeps taken while it waits
        for the rest (a wait for the quota can outlast a turn unrenewed, and one that
        expired another process would take, or this one count twice). Give them to
        ``done`` once the request is answered."""
        cost = max(1, min(cost, self.turns.concurrency))
        pause = 0.01
        while cost > 0:
            got = await self.turns.try_take_many(cost, REQUEST_TTL + self.window, anywhere=True)
            into += got
            cost -= len(got)
            if cost > 0:
                # The quota is spent for now: a turn comes free as its window ends.
                await asyncio.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 0.5)

    async def _renew(self, slots_of: Limit, slots: Sequence[int], turns: list[int]) -> None:
        """Push back the expiry of ``slots`` of ``slots_of`` (REQUEST_TTL from now) and of
        this quota's ``turns`` (``unanswered``), all held by this process, in one
        statement."""
        now = utcnow()
        await self.turns.db.execute_one(
            update(ProviderSlot)
            .where(
                ProviderSlot.holder == PROCESS,
                or_(
                    and_(ProviderSlot.key == self.turns.key, ProviderSlot.slot.in_(turns)),
                    and_(ProviderSlot.key == slots_of.key, ProviderSlot.slot.in_(slots)),
                ),
            )
            .values(
                expires_at=case(
                    (ProviderSlot.key == self.turns.key, self.unanswered(now)),
                    else_=now + REQUEST_TTL,
                )
            )
        )

    def unanswered(self, now: dt.datetime) -> dt.datetime:
        """Until when a turn taken (or renewed) ``now`` for a request not yet answered is
        kept: as long as the request's slot lives (REQUEST_TTL), since it may be on the
        wire until then (an exchange may last two minutes), and a window more, so that
        a request of a process that died reaching the service at its slot's last moment
        is counted too. An answered request's turn is kept a window from its answer
        (``done``)."""
        return now + REQUEST_TTL + self.window

    async def done(self, taken: list[int]) -> None:
        """The request of these turns was answered: their window runs from now, so it
        covers the request's whole time on the wire (it reached the service at some
        moment before now) and the service sees at most ``count`` in any window."""
        await self.turns.db.execute_one(
            update(ProviderSlot)
            .where(ProviderSlot.key == self.turns.key, ProviderSlot.slot.in_(taken))
            .values(expires_at=utcnow() + self.window)
        )


def for_settings(db: Database, settings: Settings) -> SharedLimits:
    """The limits a process keeps with ``settings`` (CalDAV cap, Google project quota)."""
    return SharedLimits(
        db,
        caldav_servers=settings.caldav_server_concurrency,
        google_project=(settings.google_client_id, settings.google_project_quota),
    )


class SharedLimits:
    """Every key's limit, on one database. ``google_project``: the Google project's
    OAuth client id and its quota of requests a minute (``quota_window``), shared by
    all its users' accounts (None: not kept)."""

    def __init__(
        self,
        db: Database,
        *,
        caldav_servers: int = DEFAULT_CALDAV_SERVER_CONCURRENCY,
        google_project: tuple[str, int] | None = None,
        quota_window: dt.timedelta = QUOTA_WINDOW,
    ):
        self.db = db
        self.caldav_servers = caldav_servers
        # The limits of the keys used last, kept between syncs (a kept one knows its
        # slots' rows are made). Every other limit is held only by whoever uses it (a
        # sync's provider, a slot taken or kept for a release): ``_alive`` finds it
        # while it is, and forgets it once nothing does. So a worker that meets
        # thousands of mailboxes and servers over months keeps at most ``kept`` idle
        # ones, and a limit in use, holding slots or waiting for one, is never replaced
        # by a second one of its key.
        self.kept = LIMITS_KEPT
        self._limits: OrderedDict[str, Limit] = OrderedDict()
        self._alive: weakref.WeakValueDictionary[str, Limit] = weakref.WeakValueDictionary()
        self.google_project: Rate | None = None
        if google_project is not None and google_project[1] > 0:
            client_id, quota = google_project
            key = f"google-project:{client_id}"
            self.google_project = Rate(db, key, quota, quota_window)

    def get(self, key: str, concurrency: int, rate: Rate | None = None) -> Limit:
        found = self._limits.get(key) or self._alive.get(key)
        if found is None or found.concurrency != concurrency or found.rate is not rate:
            found = Limit(self.db, key, concurrency, rate)
            self._alive[key] = found
        self._limits[key] = found
        self._limits.move_to_end(key)
        while len(self._limits) > self.kept:
            # The least recently used: still found through ``_alive`` while in use.
            self._limits.popitem(last=False)
        return found

    def for_account(self, kind: str, account: str) -> Limit | None:
        """The per-request limit of a Google or Microsoft account (a Google account's
        requests count against its project's quota too); None for others."""
        concurrency = ACCOUNT_CONCURRENCY.get(kind)
        if concurrency is None or not account:
            return None
        rate = self.google_project if kind == "google" else None
        return self.get(f"{kind}:{account.strip().lower()}", concurrency, rate)

    def for_server(self, url: str) -> Limit:
        """The per-server limit of CalDAV syncs (by host and port)."""
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"https://{url}")
        return self.get(f"caldav:{(parts.netloc or url).lower()}", self.caldav_servers)


_installed: SharedLimits | None = None


def install(limits: SharedLimits | None) -> None:
    """Make this process's providers keep to ``limits`` (None: local limits only)."""
    global _installed
    _installed = limits


def installed() -> SharedLimits | None:
    return _installed
