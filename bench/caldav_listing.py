#!/usr/bin/env python3
"""The server's part of a first import: one ``calendar-query``, one ``sync-collection``
with contents, and a listing with ``calendar-multiget``s, on the same Radicale calendar.

    .venv/bin/python -m bench.caldav_listing 2000 5000 [--runs 3] [--chunk 200]
        [--ways query,sync,multiget]

The calendar is what ``../shared/bench/anchor/gen_events.py`` writes (as
``bench/caldav_first_import.py`` seeds it). Each run, on a fresh copy of the
seeded storage, the ways one after the other, their order turned round every other
run (``--generator`` names another copy of the generator):

* ``query``: the ``DAV:sync-token`` PROPFIND and one ``calendar-query`` with every
  event's contents (what ``CalDAVProvider.list_changes(with_contents=True)`` sends);
* ``sync``: one ``sync-collection`` with an empty token asking for the etags and the
  contents (RFC 6578 lets it ask for any property): every event and the token in
  one answer;
* ``multiget``: one ``sync-collection`` (hrefs and etags, with the token) and the
  contents in ``calendar-multiget``s of ``--chunk`` events one after the other (what
  a first import in parts sent before its names came with the token's ``PROPFIND``;
  ``list_changes_in_parts`` now sends that ``PROPFIND`` and the multigets, with its
  overlap).

All go through the CalDAV provider's own requests (the answers' XML parsed, the
events not). Printed: the wall time until the last answer, Radicale's CPU for
it (from ``/proc``), and for ``multiget`` the time until the first chunk's answer
(when a first import in parts can start writing). Medians of the runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.caldav_first_import import GENERATOR, Seed, cpu_seconds
from bench.caldav_import import USER, Radicale
from crmcal.providers.caldav import CalDAVProvider
from crmcal.providers.caldav_wire import collection_url

QUERY = (
    '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
    '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/>'
    "</C:comp-filter></C:filter></C:calendar-query>"
)


def by_query(provider: CalDAVProvider, calendar: str) -> dict[str, float]:
    started = time.perf_counter()
    assert provider._token_and_names(calendar)
    reply = provider._report(calendar, QUERY, 1)
    assert reply.status == 207
    return {"last": time.perf_counter() - started}


SYNC = (
    '<D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:sync-token/><D:sync-level>1</D:sync-level>"
    "<D:prop><D:getetag/><C:calendar-data/></D:prop></D:sync-collection>"
)


def by_sync(provider: CalDAVProvider, calendar: str) -> dict[str, float]:
    started = time.perf_counter()
    reply = provider._report(calendar, SYNC, 0)
    assert reply.status == 207
    return {"last": time.perf_counter() - started}


def by_multiget(provider: CalDAVProvider, calendar: str, chunk: int) -> dict[str, float]:
    started = time.perf_counter()
    listing = provider._sync_collection(calendar, "")
    assert listing is not None
    assert listing.cursor
    listed = time.perf_counter() - started
    hrefs = [ref.id for ref in listing.changed]
    first = 0.0
    for start in range(0, len(hrefs), chunk):
        provider._multiget(calendar, hrefs[start : start + chunk])
        first = first or time.perf_counter() - started
    return {"listed": listed, "first": first, "last": time.perf_counter() - started}


def measure(
    events: int, runs: int, chunk: int, generator: Path, ways: tuple[str, ...]
) -> dict[str, list[dict[str, float]]]:
    seed = Seed(events, generator)
    found: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    try:
        for run in range(runs):
            order = ways if run % 2 == 0 else ways[::-1]
            for way in order:
                root = Path(tempfile.mkdtemp(prefix="crmcal-bench-listing-"))
                radicale = Radicale(root, seed)  # type: ignore[arg-type]
                provider = CalDAVProvider(radicale.url, USER, "x", allow_private=True)
                calendar = collection_url(radicale.url)
                try:
                    before = cpu_seconds(radicale.proc.pid)
                    done: dict[str, Any]
                    if way == "query":
                        done = by_query(provider, calendar)
                    elif way == "sync":
                        done = by_sync(provider, calendar)
                    else:
                        done = by_multiget(provider, calendar, chunk)
                    done["server_cpu"] = cpu_seconds(radicale.proc.pid) - before
                    found[way].append(done)
                finally:
                    provider._client.close()
                    radicale.stop()
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        seed.remove()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2000, 5000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--generator", type=Path, default=GENERATOR)
    parser.add_argument("--ways", default="query,sync,multiget")
    args = parser.parse_args()
    ways = tuple(way.strip() for way in args.ways.split(","))
    if not ways or set(ways) - {"query", "sync", "multiget"}:
        parser.error("--ways: a comma-separated list of query, sync and multiget")
    print("| events | how | first contents s | all contents s | Radicale CPU s | load avg |")
    print("|---:|---|---:|---:|---:|---|")
    for size in args.sizes:
        found = measure(size, args.runs, args.chunk, args.generator, ways)
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        for way, runs in found.items():

            def median(name: str, runs: list[dict[str, float]] = runs) -> float:
                return statistics.median(r[name] for r in runs)

            first = median("first") if way == "multiget" else median("last")
            print(f"| {size} | {way} | {first:.2f} | {median('last'):.2f} "
                  f"| {median('server_cpu'):.2f} | {load} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
