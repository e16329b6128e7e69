"""The cyclic garbage collector's settings for long-running processes (``crmcal serve``,
``crmcal worker``), set once when they start.

With CPython's default thresholds a young collection runs every 700 allocations and
an older one every ten of those, each walking every object it follows: a first import
(tens of thousands of events, rows and ORM states alive until their batch is written)
spent about a quarter of its CPU time there, and a worker running hundreds of small
syncs a second spends a share of each job walking the same long-lived objects (modules,
mappers, compiled statements, pooled connections) again and again.

So a process that serves collects young cycles every 10,000 allocations (garbage
without cycles is freed at once as ever), so older collections come 14 times less
often, and moves what exists once it has started (imports, the app, its caches) out
of the collector's sight (``gc.freeze``): later full collections walk only what came
since. (100,000, as import batches used, made a worker's no-change sync no cheaper
and its memory 13 MB larger: cyclic garbage waited longer.)
The setting is process-wide and made once, not changed back and forth around each
import batch, where concurrent batches and syncs would each see another's setting.
"""

from __future__ import annotations

import gc

# Allocations between young collections.
YOUNG_THRESHOLD = 10_000


def tune() -> tuple[int, ...]:
    """Set the thresholds and freeze what exists now; answers the thresholds set.
    Idempotent: calling it again only freezes what was made since."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], YOUNG_THRESHOLD), *thresholds[1:])
    gc.collect()  # what start-up left behind is freed, not frozen
    gc.freeze()
    return gc.get_threshold()
