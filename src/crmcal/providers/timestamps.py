"""The timestamps cloud calendar APIs send (RFC 3339, ``Z`` for UTC, Graph's seven
digits of fractions), read one way for every provider."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(value: Any) -> dt.datetime | None:
    """The moment ``value`` names; None when it names none."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
