"""The ``limit`` and ``cursor`` query parameters every list endpoint takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from crmcal.crm.pagination import DEFAULT_LIMIT, ID_CURSOR, MAX_LIMIT, START_CURSOR
from crmcal.crm.schemas import Doc

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
_CURSOR_HELP = "`next_cursor` of the previous page (opaque: pass it back as it came)."
Cursor = Annotated[
    Annotated[str, Doc(pattern=ID_CURSOR)] | None,
    Query(max_length=500, description=_CURSOR_HELP),
]
# Activities are paged by start time, then id.
StartCursor = Annotated[
    Annotated[str, Doc(pattern=START_CURSOR)] | None,
    Query(max_length=500, description=_CURSOR_HELP),
]
DEFAULT = DEFAULT_LIMIT
