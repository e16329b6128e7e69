"""Errors as the Google Calendar API answers them: a status and a JSON body with a reason."""

from __future__ import annotations

from typing import Any


class GoogleError(Exception):
    """An API error; ``body()`` is what Google sends (``error.errors[].reason`` is what
    clients act on: ``fullSyncRequired``, ``conditionNotMet``, ``duplicate`` ...)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location is not None:
            detail["locationType"] = self.location_type or "parameter"
            detail["location"] = self.location
        return {"error": {"errors": [detail], "code": self.status, "message": self.message}}


def invalid(message: str, *, location: str | None = None) -> GoogleError:
    return GoogleError(400, "invalid", message, location=location)


def required(field: str) -> GoogleError:
    return GoogleError(400, "required", "Required", location=field)


def not_found() -> GoogleError:
    return GoogleError(404, "notFound", "Not Found")


def unauthorized() -> GoogleError:
    return GoogleError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
    )
