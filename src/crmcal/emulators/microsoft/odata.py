"""The OData the emulator understands: query options and ``Prefer`` preferences.

Not a general OData parser: ``$select``, ``$top``, ``$skip``, ``$orderby`` on a
few properties, ``$expand=singleValueExtendedProperties($filter=id eq '…')`` and
``$expand=exceptionOccurrences`` (a series master's exceptions, with ``$select``), and
``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')``
(the forms a client uses to find and read its own extended properties). Anything
else, or any of these malformed, is refused with 400 rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.properties import canonical_id

MAX_TOP = 1000
_STRING = r"'((?:[^']|'')*)'"
_ANY = re.compile(
    r"\s*singleValueExtendedProperties\s*/\s*any\s*\(\s*(\w+)\s*:\s*\1\s*/\s*id\s+eq\s+"
    + _STRING
    + r"(?:\s+and\s+\1\s*/\s*value\s+eq\s+"
    + _STRING
    + r")?\s*\)\s*",
    re.IGNORECASE,
)
_EXPAND = re.compile(r"\s*singleValueExtendedProperties\s*\(\s*\$filter\s*=(.*)\)\s*", re.I)
_ID_EQ = re.compile(r"\s*id\s+eq\s+" + _STRING + r"\s*", re.IGNORECASE)
ORDER_KEYS = (
    "start/dateTime",
    "end/dateTime",
    "createdDateTime",
    "lastModifiedDateTime",
    "subject",
)


def _unquote(text: str) -> str:
    return text.replace("''", "'")


@dataclass
class Query:
    select: list[str] | None = None
    top: int | None = None
    skip: int = 0
    order: tuple[str, bool] | None = None  # (key, descending)
    expand: list[str] | None = None  # canonical extended-property ids to show
    # $expand=exceptionOccurrences: a series master's exceptions, in full.
    expand_exceptions: bool = False
    property_filter: tuple[str, str | None] | None = None  # (canonical id, value)


def parse_filter(text: str) -> tuple[str, str | None]:
    found = _ANY.fullmatch(text)
    if found is None:
        raise bad_request(
            f"Invalid filter clause: the emulator supports only "
            f"singleValueExtendedProperties/Any(...): {text}"
        )
    value = found.group(3)
    return canonical_id(_unquote(found.group(2))), None if value is None else _unquote(value)


def parse_expand(text: str) -> list[str]:
    found = _EXPAND.fullmatch(text)
    if found is None:
        raise bad_request(
            f"Parsing OData Select and Expand failed: the emulator expands only "
            f"singleValueExtendedProperties($filter=id eq '...'): {text}"
        )
    ids = []
    for clause in re.split(r"\s+or\s+", found.group(1).strip(), flags=re.IGNORECASE):
        single = _ID_EQ.fullmatch(clause)
        if single is None:
            raise bad_request(f"Invalid filter clause: {found.group(1)}")
        ids.append(canonical_id(_unquote(single.group(1))))
    return ids


def _clauses(text: str) -> list[str]:
    """The comma-separated items of an ``$expand``, commas inside parentheses kept."""
    found, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            found.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    return [c for c in [*found, current] if c.strip()]


def _integer(value: str, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"Invalid value '{value}' for query option '{name}'.") from None
    if number < minimum:
        raise bad_request(f"Invalid value '{value}' for query option '{name}'.")
    return number


def parse_query(
    params: Mapping[str, str], *, allowed: frozenset[str], properties: frozenset[str]
) -> Query:
    """The ``$`` options of a request; those not in ``allowed`` are refused."""
    query = Query()
    for name, value in params.items():
        if not name.startswith("$"):
            continue
        option = name.lower()
        if option not in allowed:
            raise bad_request(f"Query option '{name}' is not allowed here.")
        read = _OPTIONS.get(option)
        if read is not None:
            read(query, name, value, properties)
    return query


def _select(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    fields = [f.strip() for f in value.split(",") if f.strip()]
    for field in fields:
        if field not in properties:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{field}' on type 'microsoft.graph.event'.",
            )
    query.select = fields


def _top(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    query.top = min(_integer(value, name, 1), MAX_TOP)


def _skip(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    query.skip = _integer(value, name, 0)


def _orderby(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    key, _, direction = value.strip().partition(" ")
    direction = direction.strip().lower()
    if key not in ORDER_KEYS or direction not in ("", "asc", "desc"):
        raise bad_request(f"The emulator orders only by {', '.join(ORDER_KEYS)}: {value}")
    query.order = (key, direction == "desc")


def _expand(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    for clause in _clauses(value):
        if clause.strip().lower() == "exceptionoccurrences":
            query.expand_exceptions = True
        else:
            query.expand = parse_expand(clause)


def _filter(query: Query, name: str, value: str, properties: frozenset[str]) -> None:
    query.property_filter = parse_filter(value)


# Each option read into the query: (query, option as written, value, the type's properties).
_OPTIONS: dict[str, Callable[[Query, str, str, frozenset[str]], None]] = {
    "$select": _select,
    "$top": _top,
    "$skip": _skip,
    "$orderby": _orderby,
    "$expand": _expand,
    "$filter": _filter,
}


@dataclass
class Preferences:
    """What the ``Prefer`` headers ask for."""

    time_zone: str | None = None
    immutable_ids: bool = False
    max_page_size: int | None = None
    body_type: str | None = None  # outlook.body-content-type: "text" or "html"

    def applied(self) -> str | None:
        """The ``Preference-Applied`` header Graph answers with."""
        done = []
        if self.time_zone is not None:
            done.append(f'outlook.timezone="{self.time_zone}"')
        if self.immutable_ids:
            done.append('IdType="ImmutableId"')
        if self.max_page_size is not None:
            done.append(f"odata.maxpagesize={self.max_page_size}")
        if self.body_type is not None:
            done.append(f'outlook.body-content-type="{self.body_type}"')
        return ", ".join(done) or None


_PREFERENCE = re.compile(r'\s*([\w.\-]+)\s*=\s*("(?:[^"]*)"|[^,;]*)\s*')


def preferences(headers: list[str]) -> Preferences:
    found = Preferences()
    for header in headers:
        for piece in header.split(","):
            match = _PREFERENCE.fullmatch(piece)
            if match is None:
                continue
            name, value = match.group(1).lower(), match.group(2).strip().strip('"')
            if name == "outlook.timezone":
                found.time_zone = value
            elif name == "outlook.body-content-type" and value.lower() in ("text", "html"):
                found.body_type = value.lower()
            elif name == "idtype":
                found.immutable_ids = value.lower() == "immutableid"
            elif name == "odata.maxpagesize":
                try:
                    found.max_page_size = max(1, int(value))
                except ValueError:
                    continue
    return found
