"""Single-value extended properties: their ids, values and canonical form.

An id names a MAPI property by type and either a tag (``String 0x0037``) or a
property set and a name or number (``String {66f5a359-…} Name crmId``,
``Integer PSETID_Common Id 0x8503``). Ids are checked when written and compared
in a canonical form: the type spelled as Graph spells it, property sets as
lower-case GUIDs in braces, ``Id`` numbers in hex.
"""

from __future__ import annotations

import re
from typing import Any

from crmcal.emulators.microsoft.errors import GraphError

TYPES = {
    name.lower(): name
    for name in (
        "ApplicationTime",
        "Binary",
        "Boolean",
        "CLSID",
        "Currency",
        "Double",
        "Float",
        "Integer",
        "Long",
        "Object",
        "Short",
        "String",
        "SystemTime",
    )
}
PROPERTY_SETS = {
    "ps_public_strings": "00020329-0000-0000-c000-000000000046",
    "ps_mapi": "00020328-0000-0000-c000-000000000046",
    "ps_internet_headers": "00020386-0000-0000-c000-000000000046",
    "psetid_common": "00062008-0000-0000-c000-000000000046",
    "psetid_appointment": "00062002-0000-0000-c000-000000000046",
    "psetid_address": "00062004-0000-0000-c000-000000000046",
    "psetid_meeting": "6ed8da90-450b-101b-98da-00aa003f1305",
    "psetid_task": "00062003-0000-0000-c000-000000000046",
    "psetid_log": "0006200a-0000-0000-c000-000000000046",
    "psetid_note": "0006200e-0000-0000-c000-000000000046",
    "psetid_sharing": "00062040-0000-0000-c000-000000000046",
    "psetid_postrss": "00062041-0000-0000-c000-000000000046",
    "psetid_calendarassistant": "11000e07-b51b-40d6-af21-caa85edab1d0",
    "psetid_unifiedmessaging": "4442858e-a9e3-4e80-b900-317a210cc15b",
    "psetid_airsync": "71035549-0739-4dcb-9163-00f0580dbbdf",
    "psetid_attachment": "96357f7f-59e1-47d0-99a7-46515c183b54",
    "psetid_messaging": "41f28f13-83f4-4114-a584-eedb5a6b0bff",
}
_GUID = re.compile(
    r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?"
)
_HEX = re.compile(r"0x[0-9a-fA-F]{1,8}")
MAX_VALUE = 32_000  # characters; Exchange refuses far larger string properties


def invalid_id(text: object) -> GraphError:
    return GraphError(
        400, "ErrorInvalidProperty", f"The extended property id '{text}' is not valid."
    )


def canonical_id(text: object) -> str:
    """The canonical form of an extended-property id (400 if it is not one)."""
    if not isinstance(text, str):
        raise invalid_id(text)
    parts = text.strip().split(" ", 3)
    kind = TYPES.get(parts[0].lower()) if parts else None
    if kind is None:
        raise invalid_id(text)
    if len(parts) == 2 and _HEX.fullmatch(parts[1]):
        return f"{kind} 0x{int(parts[1], 16):04x}"
    if len(parts) != 4:
        raise invalid_id(text)
    _, property_set, how, name = parts
    guid = _GUID.fullmatch(property_set)
    found = guid.group(1).lower() if guid else PROPERTY_SETS.get(property_set.lower())
    if found is None:
        raise invalid_id(text)
    if how.lower() == "name" and name.strip():
        return f"{kind} {{{found}}} Name {name}"
    if how.lower() == "id" and _HEX.fullmatch(name.strip()):
        return f"{kind} {{{found}}} Id 0x{int(name.strip(), 16):x}"
    raise invalid_id(text)


def _check_value(kind: str, value: str, text: str) -> None:
    if kind in ("Integer", "Long", "Short"):
        try:
            int(value)
        except ValueError:
            raise invalid_id(text) from None
    elif kind == "Boolean" and value.lower() not in ("true", "false"):
        raise invalid_id(text)


def written(values: Any) -> dict[str, str]:
    """The properties a POST or PATCH writes: canonical id -> value."""
    if not isinstance(values, list):
        raise GraphError(400, "RequestBodyRead", "singleValueExtendedProperties must be an array.")
    found: dict[str, str] = {}
    for entry in values:
        if not isinstance(entry, dict) or set(entry) - {"id", "value", "@odata.type"}:
            raise GraphError(
                400,
                "RequestBodyRead",
                "A singleValueLegacyExtendedProperty has only 'id' and 'value'.",
            )
        key = canonical_id(entry.get("id"))
        value = entry.get("value")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise GraphError(
                400, "RequestBodyRead", f"The value of extended property '{key}' must be a string."
            )
        _check_value(key.split(" ", 1)[0], value, str(entry.get("id")))
        found[key] = value
    return found
