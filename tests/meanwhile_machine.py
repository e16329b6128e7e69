"""The machine that edits a series on either side while a sync holds its writes (the
story is in ``test_series_meanwhile``), its services (the Google and Graph emulators
behind the fault-injecting proxy, Radicale) and the ``service`` fixture that opens
one; ``test_series_meanwhile`` and ``test_series_edges`` drive it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.db import Database
from crmcal.model import RemoteRef
from crmcal.providers.api_client import close_shared
from crmcal.providers.base import Provider, Update
from crmcal.sync.tables import Connection
from tests.engine_machine import SeriesWorldMachine, daily_series, with_own_occurrence
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.google_emulator import GoogleHarness
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.harness import CalDAVHarness, Harness
from tests.series_model import DELETED, Occurrence, _expansion

# Where in a sync an edit lands: at a call to the calendar, or before the sync's n-th
# write to the database (the series' pull from the calendar among them).
POINTS = ("listed", "updates queued", "updates answered", "creates queued", "creates answered",
          "database write 1", "database write 2", "database write 3")  # fmt: skip
# The edits that land there, by side and reach.
EDITS = ("crm series", "crm occurrence", "calendar series", "calendar occurrence")
# How a refused part of a batch is answered, per service: status -> JSON body.
_GOOGLE = {400: "invalid", 412: "conditionNotMet", 500: "backendError"}
_GRAPH = {400: "ErrorInvalidRequest", 412: "ErrorIrresolvableConflict",
          500: "ErrorInternalServerError"}  # fmt: skip
REFUSALS: dict[str, dict[int, str]] = {
    "google": {
        status: json.dumps(
            {"error": {"code": status, "message": reason, "errors": [{"reason": reason}]}}
        )
        for status, reason in _GOOGLE.items()
    },
    "microsoft": {
        status: json.dumps({"error": {"code": code, "message": f"refused ({status})"}})
        for status, code in _GRAPH.items()
    },
}
# A series' master as the proxy sees its PATCH (its occurrences' ids are longer).
MASTER_PATCH = {"google": r"/events/[a-v0-9]+(\?|$)", "microsoft": r"/events/[^/?]+(\?|$)"}


class Meanwhile:
    """The calendar's provider, running ``edit`` once the sync reaches ``point``."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.point: str | None = None
        self.edit: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _at(self, point: str) -> None:
        if self.edit is not None and point == self.point:
            edit, self.edit = self.edit, None
            await edit()

    async def list_changes(self, *args: Any, **kwargs: Any) -> Any:
        listing = await self.inner.list_changes(*args, **kwargs)
        await self._at("listed")
        return listing

    async def update_many(self, calendar_id: str, items: list[Update]) -> Any:
        await self._at("updates queued")
        answers = await self.inner.update_many(calendar_id, items)  # type: ignore[attr-defined]
        await self._at("updates answered")
        return answers

    async def update(self, *args: Any, **kwargs: Any) -> Any:  # CalDAV: one at a time
        await self._at("updates queued")
        answer = await self.inner.update(*args, **kwargs)
        await self._at("updates answered")
        return answer

    async def create_many(self, *args: Any, **kwargs: Any) -> Any:
        await self._at("creates queued")
        answers = await self.inner.create_many(*args, **kwargs)  # type: ignore[attr-defined]
        await self._at("creates answered")
        return answers

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        await self._at("creates queued")
        answer = await self.inner.create(*args, **kwargs)
        await self._at("creates answered")
        return answer


class MeddledDatabase(Database):
    """A database that runs ``edit`` before its ``at``-th write transaction."""

    edit: Callable[[], Awaitable[None]] | None = None
    at = 0
    writes = 0

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        if self.edit is not None:
            self.writes += 1
            if self.writes == self.at:
                edit, self.edit = self.edit, None
                await edit()
        async with super().write() as session:
            yield session


@dataclasses.dataclass
class Service:
    """One provider kind for the machine: how to open a fresh calendar on it, and the
    proxy in front of it (None: reached directly)."""

    kind: str
    open: Callable[[], Awaitable[Harness]]
    proxy: FaultProxy | None = None
    proxy_url: str = ""


class SeriesMeanwhileMachine(SeriesWorldMachine):
    service: Service
    template: Path
    db: MeddledDatabase
    prefix = "m"

    def __init__(self) -> None:
        super().__init__(self.template, MeddledDatabase)
        self.harness: Harness = self.run(self.service.open())
        self.run(self._calendar(self.harness.calendar_id))
        engine_side = (
            self.harness.provider_for(self.service.proxy_url)
            if self.service.proxy is not None
            else self.harness.provider
        )
        self.provider = Meanwhile(engine_side)
        self.world.provider = self.provider
        self.first: dict[dt.datetime, dt.datetime] = {}  # the first key of each one's series

    def teardown(self) -> None:
        if self.service.proxy is not None:
            self.service.proxy.clear()
        self.run(self.harness.close())
        self.run(close_shared())
        super().teardown()

    async def _calendar(self, calendar_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(update(Connection).values(calendar_id=calendar_id))

    def _new_keys(self, count: int) -> list[dt.datetime]:
        keys = super()._new_keys(count)
        self.first.update(dict.fromkeys(keys, keys[0]))
        return keys

    def on(self, side: str) -> list[Occurrence]:
        """Occurrences that ``side`` has and can edit (none cancelled anywhere)."""
        have = "crm_pending" if side == "crm" else "cal_pending"
        return [o for o in self.occurrences.values()
                if not o.gone and DELETED not in (o.crm_pending, o.cal_pending)
                and (isinstance(o.value, str) or isinstance(getattr(o, have), str))]  # fmt: skip

    def synced(self) -> list[Occurrence]:
        """Occurrences both sides have as the last sync left them."""
        return [o for o in self.on("crm") if isinstance(o.value, str)]

    # --- the CRM side --------------------------------------------------------------

    @rule(count=st.integers(2, 3))
    def crm_create_series(self, count: int) -> None:
        self._crm_create_series(count)

    async def _crm_edit(self, occurrence: Occurrence, whole: bool) -> None:
        """Rename the occurrence's CRM series (``whole``) or the occurrence alone."""
        value = self.fresh()
        live = await self.world.live_activities()
        (activity,) = [a for a in live if a.original_start_at == occurrence.key]
        scope = "series" if whole else "this"
        await self.world.edit_activity(activity.id, subject=value, scope=scope)
        if not whole:
            occurrence.crm_pending, occurrence.own_crm = value, True
            return
        members = {a.original_start_at for a in live if a.series_id == activity.series_id}
        self._renamed(members, "crm", value)

    @precondition(lambda self: self.on("crm"))
    @rule(data=st.data(), whole=st.booleans())
    def crm_edit(self, data: st.DataObject, whole: bool) -> None:
        self.run(self._crm_edit(data.draw(st.sampled_from(self.on("crm"))), whole))

    # --- the calendar side, as another client -----------------------------------------

    @rule(count=st.integers(2, 3))
    def cal_create_series(self, count: int) -> None:
        keys, value = self._new_keys(count), self.fresh()
        event = daily_series(keys[0], count, value)
        self.run(self.harness.provider.create(self.harness.calendar_id, uuid.uuid4().hex, event))
        for key in keys:
            self.occurrences[key] = Occurrence(key, cal_pending=value)

    async def _events(self) -> dict[str, RemoteRef]:
        provider, calendar = self.harness.provider, self.harness.calendar_id
        listing = await provider.list_changes(calendar, None)
        fetched = await provider.fetch(calendar, [r.id for r in listing.changed])
        return {ref.id: ref for ref in fetched if ref.event is not None}

    async def _cal_edit(self, occurrence: Occurrence, whole: bool) -> None:
        """Rename the calendar series holding the occurrence, or the occurrence alone."""
        value = self.fresh()
        (ref,) = [r for r in (await self._events()).values()
                  if r.event is not None and occurrence.key in _expansion(r.event)]  # fmt: skip
        master = ref.event
        assert master is not None
        if whole:
            changed = dataclasses.replace(master, summary=value)
            self._renamed(_expansion(master), "calendar", value)
        else:
            changed = with_own_occurrence(master, occurrence.key, value)
            occurrence.cal_pending, occurrence.own_cal = value, True
        await self.harness.provider.update(self.harness.calendar_id, ref.id, ref.etag, changed)

    @precondition(lambda self: self.on("calendar"))
    @rule(data=st.data(), whole=st.booleans())
    def cal_edit(self, data: st.DataObject, whole: bool) -> None:
        self.run(self._cal_edit(data.draw(st.sampled_from(self.on("calendar"))), whole))

    # --- syncing -----------------------------------------------------------------------

    @rule()
    def sync(self) -> None:
        self.run(self.world.sync())
        self._settle()

    @precondition(lambda self: self.on("crm") or self.on("calendar"))
    @rule(data=st.data(), point=st.sampled_from(POINTS), edit=st.sampled_from(EDITS))
    def sync_with_an_edit_meanwhile(self, data: st.DataObject, point: str, edit: str) -> None:
        side, reach = edit.split()
        pool = self.on("crm" if side == "crm" else "calendar")
        if not pool:
            return
        target = data.draw(st.sampled_from(pool))
        whole = reach == "series"
        edit_it = self._crm_edit if side == "crm" else self._cal_edit

        async def meanwhile() -> None:
            await edit_it(target, whole)

        if point.startswith("database write"):
            self.db.writes, self.db.at = 0, int(point.split()[-1])
            self.db.edit = meanwhile
        else:
            self.provider.point, self.provider.edit = point, meanwhile
        try:
            self.run(self.world.sync())
        finally:
            left = self.provider.edit or self.db.edit
            self.provider.edit = self.db.edit = None
            if left is not None:  # the sync never got there: edited after it
                self.run(left())
        self._settle()

    @precondition(lambda self: self.service.proxy is not None and self.synced())
    @rule(status=st.sampled_from([400, 412, 500]))
    def sync_with_a_part_refused(self, status: int) -> None:
        """Up to three series edited in the CRM go out in one batch whose first master
        write is answered ``status``, the others go through in that sync:

        * 400: the refused one is reported, its link left as it was, and written with
          its next change (as a refused single event is): the CRM edits it again;
        * 412: someone changed that series meanwhile (here its location, in every one
          of them, before the answers are taken): the next sync decides it again;
        * 500: that part is sent again and written in the same sync."""
        # Series with an occurrence that follows the series: a rename writes it (one
        # whose every occurrence is changed on its own writes no occurrence, and is
        # not looked at until one changes).
        firsts = sorted({self.first[o.key] for o in self.synced() if not o.own_crm})[:3]
        if not firsts:
            return
        for key in firsts:
            self.run(self._crm_edit(self.occurrences[key], True))
        proxy = self.service.proxy
        assert proxy is not None
        kind = self.service.kind
        proxy.add("answer", method="PATCH", path=MASTER_PATCH[kind], status=status,
                  body=REFUSALS[kind][status], times=1)  # fmt: skip
        if status == 412:
            self.provider.point = "updates answered"
            self.provider.edit = partial(self._relocate, firsts)
        try:
            report = self.run(self.world.sync())
        finally:
            proxy.clear()
            self.provider.edit = None
        refused = 0 if status == 500 else 1
        assert len(report.problems) == refused, report.problems
        assert report.updated >= len(firsts) - refused, report.counts()
        if status == 400:
            for key in firsts:
                self.run(self._crm_edit(self.occurrences[key], True))
        self._settle()

    async def _relocate(self, firsts: list[dt.datetime]) -> None:
        """Another client moves each series holding one of ``firsts`` to another room."""
        for ref in (await self._events()).values():
            assert ref.event is not None
            if _expansion(ref.event).keys() & set(firsts):
                moved = dataclasses.replace(ref.event, location=f"Room {self.fresh()}")
                await self.harness.provider.update(self.harness.calendar_id, ref.id, ref.etag,
                                                   moved)  # fmt: skip

    def _settle(self) -> None:
        report = self.run(self.world.sync())
        if report.problems and all(p.get("retry") for p in report.problems):
            # A write refused for a version older than the listing: read again (and
            # written) by the next sync.
            report = self.run(self.world.sync())
        assert report.problems == [], report.problems
        quiet = self._quiet_sync()
        assert quiet.problems == [], quiet.problems
        self._check()

    def _check(self) -> None:
        masters = []
        for ref in self.run(self._events()).values():
            assert ref.event is not None
            masters.append(ref.event)
        self._check_series(masters, skip_gone=False)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    kind = request.param
    with ExitStack() as stack:
        if kind == "radicale":
            server = request.getfixturevalue("radicale")
            yield Service(kind, lambda: asyncio.to_thread(CalDAVHarness, server))
            return
        emulator = request.getfixturevalue(f"{kind}_emulator")
        proxy, url = stack.enter_context(fault_proxy(emulator.url))
        harness_class = GoogleHarness if kind == "google" else MicrosoftHarness
        yield Service(kind, lambda: harness_class.open(emulator), proxy, url)


def _machine(service: Service, template: Path) -> type[SeriesMeanwhileMachine]:
    return type("Machine", (SeriesMeanwhileMachine,), {"service": service, "template": template})
