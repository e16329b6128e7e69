"""Errors as Microsoft Graph answers them: a status and ``{"error": {"code", "message",
"innerError"}}``.

Clients act on ``code`` (``ErrorItemNotFound``, ``ErrorIrresolvableConflict``,
``SyncStateNotFound`` ...); ``innerError`` carries the request's ids and date, as
Graph's does. Throttling answers carry a ``Retry-After`` header.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


class GraphError(Exception):
    """An API error; ``body()`` is what Graph sends."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self, request_id: str, client_request_id: str, now: dt.datetime) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": request_id,
                    "client-request-id": client_request_id,
                },
            }
        }


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def body_read(message: str) -> GraphError:
    """A body Graph cannot read into its types: unknown properties, wrong kinds, bad enums."""
    return GraphError(400, "RequestBodyRead", message)


def invalid_property(message: str = "At least one property failed validation.") -> GraphError:
    return GraphError(400, "ErrorPropertyValidationFailure", message)


def not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def access_denied() -> GraphError:
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def unauthorized(message: str = "Access token is empty.") -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={
            "WWW-Authenticate": 'Bearer realm="", authorization_uri='
            '"https://login.microsoftonline.com/common/oauth2/authorize", '
            'client_id="00000003-0000-0000-c000-000000000000"'
        },
    )
