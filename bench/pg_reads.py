"""What a bench round read and wrote in PostgreSQL, table by table: counted, not timed.

PostgreSQL counts, for each table and index of a database, the buffers its scans
touched (``pg_statio_user_tables``: heap and index blocks, found in its cache or
read) and the rows they went through (``pg_stat_user_tables``: sequential scans
and the rows they read, index scans and the rows they fetched, rows inserted,
updated, deleted). Taken before and after a round and divided by its syncs, they
say what a sync costs the database in work, whatever the machine's load: a count
that grows with the number of connections is work done per sync over something
that grows (a scan, a search past dead rows), which the CPU figures only hint at.

A backend reports its counts at most once a second while busy and within about
ten seconds once idle (PostgreSQL 15), so ``Snapshot.take`` waits for that first
(``settle``). The counts are the whole database's: the bench's own queries (its
look for the round's end, its enqueues) are in them too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

# Seconds an idle backend may keep its counts before reporting them (PostgreSQL 15's
# PGSTAT_IDLE_INTERVAL is 10 s).
REPORTED_WITHIN = 11.0

_COUNTS = """
SELECT s.relname,
       coalesce(io.heap_blks_hit, 0) + coalesce(io.heap_blks_read, 0),
       coalesce(io.idx_blks_hit, 0) + coalesce(io.idx_blks_read, 0),
       coalesce(s.seq_scan, 0), coalesce(s.seq_tup_read, 0),
       coalesce(s.idx_scan, 0), coalesce(s.idx_tup_fetch, 0),
       s.n_tup_ins + s.n_tup_upd + s.n_tup_del, s.n_dead_tup
  FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid)
"""
FIELDS = ("heap", "index", "seq_scans", "seq_rows", "idx_scans", "idx_rows", "written")


@dataclass
class Snapshot:
    """The counts of each table of one database at one moment."""

    counts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, conninfo: str, settle: float = REPORTED_WITHIN) -> Snapshot:
        if settle:
            time.sleep(settle)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            rows: list[Any] = conn.execute(_COUNTS).fetchall()
        found = cls()
        for name, *numbers, dead in rows:
            found.counts[str(name)] = tuple(int(n) for n in numbers)
            found.dead[str(name)] = int(dead or 0)
        return found

    def since(self, before: Snapshot, syncs: int) -> dict[str, dict[str, float]]:
        """Per sync, each table's counts from ``before`` to this one (tables with any)."""
        out: dict[str, dict[str, float]] = {}
        for name, numbers in self.counts.items():
            old = before.counts.get(name, (0,) * len(numbers))
            delta = [(a - b) / max(1, syncs) for a, b in zip(numbers, old, strict=True)]
            if any(delta):
                out[name] = dict(zip(FIELDS, delta, strict=True))
        return out


def describe(per_sync: dict[str, dict[str, float]], top: int = 8) -> str:
    """The tables whose buffers a sync touched most, with what touched them."""
    ordered = sorted(per_sync.items(), key=lambda kv: -(kv[1]["heap"] + kv[1]["index"]))
    total = sum(v["heap"] + v["index"] for v in per_sync.values())
    parts = [
        f"{name} {v['heap'] + v['index']:.1f} (heap {v['heap']:.1f}, index {v['index']:.1f}; "
        f"seq rows {v['seq_rows']:.1f}, index rows {v['idx_rows']:.1f})"
        for name, v in ordered[:top]
    ]
    return f"buffers a sync {total:.1f}: " + "; ".join(parts)
