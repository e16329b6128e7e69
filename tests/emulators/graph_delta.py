"""Reading a calendar view's delta from the Graph emulator as a client does: a whole
round from its first request, or the rounds after it from a link, every page checked
with msgraph-sdk's model."""

from __future__ import annotations

from typing import Any

from msgraph.generated.users.item.calendar_view.delta.delta_get_response import DeltaGetResponse

from tests.emulators.conftest import Graph
from tests.emulators.graph_models import check

WINDOW = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2026-12-08T00:00:00Z"}
DELTA = "/me/calendarView/delta"


def full_round(
    graph: Graph,
    path: str = DELTA,
    page_size: int | None = None,
    window: dict[str, str] = WINDOW,
    **kw: Any,
) -> tuple[list[dict[str, Any]], str, int]:
    """Every item of a delta round from its first request; (items, deltaLink, pages)."""
    headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
    headers |= kw.pop("headers", {})
    page = graph.ok("GET", path, params=window, headers=headers, **kw)
    items, pages = [], 1
    while True:
        check(DeltaGetResponse, page)
        items += page["value"]
        if "@odata.deltaLink" in page:
            assert "@odata.nextLink" not in page
            return items, page["@odata.deltaLink"], pages
        page = graph.ok("GET", page["@odata.nextLink"], headers=headers)
        pages += 1


def follow(graph: Graph, link: str, **kw: Any) -> tuple[list[dict[str, Any]], str]:
    items = []
    while True:
        page = graph.ok("GET", link, **kw)
        check(DeltaGetResponse, page)
        items += page["value"]
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        link = page["@odata.nextLink"]
