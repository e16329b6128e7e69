"""What one sync run found: its counts, and the problems and warnings of its items.

The engine fills a ``SyncReport`` as it settles items; the run's end keeps its
problems with the connection (``sync/run_end``), and the next run reads them back
to know which calendar items to read again and which to leave until they change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crmcal.model import RemoteRef


@dataclass
class SyncReport:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    conflicts: int = 0
    skipped: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "conflicts": self.conflicts,
            "skipped": self.skipped,
        }

    def problem(
        self,
        item: str,
        reason: str,
        etag: str | None = None,
        *,
        retry: bool = False,
        refused: str | None = None,
    ) -> None:
        """``etag``: the version of a calendar item that could not be read, which is
        not fetched again until it changes. ``retry``: a calendar item whose read
        failed in a way that may pass, read again next run whatever the listing says.
        ``refused``: the digest of an activity's version the calendar refused for good,
        which is not sent again until it changes (for a new event, the problem is all
        that remembers it); such a problem stays said until a run looks at it again."""
        found = {"item": item, "reason": reason}
        if etag:
            found["etag"] = etag
        if retry:
            found["retry"] = "true"
        if refused:
            found["refused"] = refused
        self.problems.append(found)

    def warning(self, item: str, reason: str) -> None:
        """An item that synced, with something its user should know (a note cut short):
        listed with the problems, marked as a warning."""
        self.problems.append({"item": item, "reason": reason, "kind": "warning"})

    def cannot_read(self, ref: RemoteRef) -> None:
        """Report a calendar item whose content could not be read (``ref.error``)."""
        if ref.retry:
            self.problem(ref.id, f"{ref.error}; will retry", retry=True)
        else:
            self.problem(ref.id, ref.error or "unreadable", ref.etag)

    def retries(self) -> int:
        return sum(1 for p in self.problems if p.get("retry"))
