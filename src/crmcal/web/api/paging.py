"""The ``limit`` and ``cursor`` query parameters every list endpoint takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from crmcal.crm.pagination import DEFAULT_LIMIT, MAX_LIMIT

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
]
DEFAULT = DEFAULT_LIMIT
