"""A sync run's closing write: the connection's positions, counts and problems.

Written only once everything the positions cover is applied, in the transaction
of whoever ends the run (the engine itself, or the runner with its release of the
connection's lease). ``RunEnd`` holds what that write needs of the finished run.

The problems a connection keeps are capped, and what a run finds beyond a cap is
dropped; how many were is counted (``Connection.left_out``), so that the status
says the list is not all there is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import utcnow
from crmcal.model import ChangeListing
from crmcal.sync.context import RunContext
from crmcal.sync.report import SyncReport
from crmcal.sync.tables import Connection, Link
from crmcal.sync.written import Written

# The problems a connection keeps, and the items to read again next run it keeps
# (see SyncReport.problem); a run with more of those keeps the calendar's position,
# so that the next one lists them all again instead.
PROBLEMS_KEPT = 200
RETRIES_KEPT = 1000
# The writes refused for good it keeps, apart from the other problems: for a new event,
# the problem is all that remembers the refusal (without it, the write is sent again).
REFUSALS_KEPT = 2000


@dataclass(frozen=True)
class RunEnd:
    """A finished run, as its closing write sees it."""

    ctx: RunContext
    listing: ChangeListing | None  # None: the run did not go through
    deferred: bool  # a pull was left for the next run: the calendar's position stays
    report: SyncReport
    seen: set[str]  # the items the run looked at
    written: Written
    # Items whose refused version the run left as it was: their problem is kept as said.
    still_refused: frozenset[str] = frozenset()
    # The unconfirmed links (``Link.unconfirmed``) the run confirmed: marked so, unless
    # the calendar's position stays (then the next run lists from it and reads them).
    confirmed: list[int] = field(default_factory=list)
    # Items whose CRM side the run looked at (``Engine.looked_at``).
    looked_at: frozenset[str] = frozenset()
    # What the provider found out of the server (``base.findings``): warnings under the
    # calendar's id, in place of those earlier runs said; None keeps those.
    findings: tuple[str, ...] | None = None

    async def write(self, session: AsyncSession, conn: Connection) -> None:
        """The closing write, in the caller's transaction: both positions (only now,
        after everything they cover is applied), the counts, the problems and the links
        the run confirmed."""
        listing = self.listing
        assert listing is not None, "finish_in comes after a run that went through"
        await self.written.forget_all(session)
        if self.confirmed and not self.deferred:
            await session.execute(
                update(Link)
                .where(Link.connection_id == conn.id, Link.id.in_(self.confirmed))
                .values(unconfirmed=False)
            )
        for name, value in self.positions().items():
            setattr(conn, name, value)
        conn.problems, conn.left_out = self.problems(
            conn.problems or [], conn.left_out, listing.full
        )
        conn.counts = self.totals(conn.counts or {})

    def quiet(self, conn: Connection) -> dict[str, Any] | None:
        """The closing write as column values, when it is only the positions: no notes
        of writes to forget nor links confirmed, and the problems and counts as
        ``conn`` (read under the lease when the run began; only a sync writes them)
        already has them. None: the closing write needs the connection read again
        (``write``)."""
        listing = self.listing
        if listing is None or self.written.notes or (self.confirmed and not self.deferred):
            return None
        before_problems, before_counts = conn.problems or [], conn.counts or {}
        said = (before_problems, conn.left_out or None)
        if self.problems(before_problems, conn.left_out, listing.full) != said:
            return None
        if self.totals(before_counts) != before_counts:
            return None
        return self.positions()

    def problems(
        self, before: list[dict[str, str]], left_out: dict[str, int] | None, full: bool
    ) -> tuple[list[dict[str, str]], dict[str, int] | None]:
        """This run's problems, plus earlier ones about items this run did not look at
        and about items still refused as they were (``still_refused``). A write refused
        for good (a problem with ``refused``) stays said until a run looks at its CRM
        side again, or looks at every activity without it, and no longer: a full
        listing names every event, the refused one among them unchanged, and that
        alone settles nothing (for a new event refused, the problem is all that
        remembers it), and a series is looked at on its own, its event unlisted.

        And how many problems and refusals the list has had no room for (``left_out``
        as earlier runs counted it; None: none): each run adds those it drops, and a
        run after which the dropped ones would have gone from the list anyway counts
        anew (a full listing, for problems; a run that looks at every activity, for
        refusals), so the count is of those left out since."""
        kept = [p for p in before if self._kept(p, full)]
        found = kept + self.report.problems + self._findings()
        # Items to read again, and writes refused for good, are kept apart from the
        # rest (each under a cap of its own): none is lost to the other problems' cap.
        retries = [p for p in found if p.get("retry")][-RETRIES_KEPT:]
        said = [p for p in found if not p.get("retry")]
        refusals = [p for p in said if p.get("refused")]
        others = [p for p in said if not p.get("refused")]
        chosen = {id(p) for p in refusals[-REFUSALS_KEPT:]}
        chosen |= {id(p) for p in others[-PROBLEMS_KEPT:]}
        earlier = left_out or {}
        counted = {
            "problems": (0 if full else earlier.get("problems", 0))
            + max(0, len(others) - PROBLEMS_KEPT),
            "refusals": (0 if self._whole() else earlier.get("refusals", 0))
            + max(0, len(refusals) - REFUSALS_KEPT),
        }
        listed = [p for p in said if id(p) in chosen] + retries
        return listed, (counted if any(counted.values()) else None)

    def _findings(self) -> list[dict[str, str]]:
        calendar = self.ctx.calendar_id
        return [{"item": calendar, "reason": r, "kind": "warning"} for r in self.findings or ()]

    def _kept(self, problem: dict[str, str], full: bool) -> bool:
        """Whether an earlier problem stays (see ``problems``)."""
        item = problem.get("item")
        if item == self.ctx.calendar_id and problem.get("kind") == "warning":
            return self.findings is None  # what the server was found to do: said anew
        if item in self.still_refused:
            return True
        if problem.get("refused"):
            # A run that looked at every activity that syncs (the first, or one with new
            # options) and not at this one: it no longer syncs (it starts before the days
            # synced) or is gone, and nothing is sent for it that the refusal holds back.
            return item not in self.looked_at and not self._whole()
        return not full and item not in self.seen

    def _whole(self) -> bool:
        """Whether the run looked at every activity that syncs: the first, or one with
        new options."""
        return self.ctx.crm_cursor is None or self.ctx.options_changed

    def positions(self) -> dict[str, Any]:
        listing = self.listing
        assert listing is not None, "the positions come after a run that went through"
        return {
            # A pull left for the next run keeps the position: that run lists it again.
            "remote_cursor": self.ctx.remote_cursor if self.deferred else listing.cursor,
            "crm_cursor": self.ctx.feed_head,
            "applied_options": self.ctx.options_digest,
            "last_sync_at": utcnow(),
        }

    def totals(self, before: dict[str, int]) -> dict[str, int]:
        totals = dict(before)
        for name, value in self.report.counts().items():
            totals[name] = totals.get(name, 0) + value
        return totals
