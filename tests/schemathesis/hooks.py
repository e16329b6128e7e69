"""The one rule of crmcal's bodies JSON Schema cannot state: an activity's end is not
before its start (two fields it cannot compare; the document says so, and the server
answers 422). The fuzzer sends an activity body with an ``end`` only when it is
clearly after the ``start`` of the same body, so that a request valid by the document
is one the server can accept. Loaded by ``SCHEMATHESIS_HOOKS`` (tests/test_schemathesis.py,
docs/api.md); it runs in schemathesis's own environment.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import schemathesis

# Wider than any UTC offset and an all-day end's rounding to the next day.
_MARGIN = dt.timedelta(days=2)


def _moment(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


_ACTIVITY_WRITES = {"/api/v1/activities", "/api/v1/activities/{activity_id}"}


@schemathesis.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    """Drop activity bodies whose ``end`` is not clearly after their ``start``."""
    operation = context.operation
    if operation is None or operation.path not in _ACTIVITY_WRITES:
        return True
    if operation.method.upper() not in ("POST", "PATCH") or not isinstance(body, dict):
        return True
    end = _moment(body.get("end"))
    if end is None:  # none, or not a time at all: nothing to compare
        return True
    start = _moment(body.get("start"))
    return start is not None and end >= start + _MARGIN
