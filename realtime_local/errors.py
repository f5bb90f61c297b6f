"""The Realtime API's error shape, as typed exceptions turned into JSON responses at the edge.

Every failure the engine reports over HTTP has the body OpenAI uses,
`{"error": {"message", "type", "code", "param"}}`, so that the official SDKs raise the same exception
classes (they pick the class from the status code and read `error.message`/`code`/`param`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """A request the engine refuses; carries the HTTP status and the API's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI sends for this error."""
        return error_body(self.message, type=self.type, code=self.code, param=self.param)

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """400: the request is malformed; `param` names the offending field."""
    return ApiError(400, message, param=param, code=code)


def unauthorized(message: str, *, code: str | None = "invalid_api_key") -> ApiError:
    """401 with the shape OpenAI uses for a missing or wrong key."""
    return ApiError(401, message, code=code)


def call_not_found(call_id: str) -> ApiError:
    """404 for an unknown or finished call (the API's answer when the caller already hung up)."""
    return ApiError(404, f"Call '{call_id}' not found.", code="call_not_found", param="call_id")


def too_many_calls(limit: int) -> ApiError:
    """429 once the engine runs its configured maximum of concurrent calls."""
    return ApiError(
        429,
        f"Too many concurrent calls: this engine allows {limit}. Hang up a call and retry.",
        type="requests",
        code="rate_limit_exceeded",
    )


def not_ready(status: str) -> ApiError:
    """503 while the speech models load (or after they failed to load)."""
    return ApiError(
        503,
        f"The engine is not ready (speech models: {status}).",
        type="server_error",
        code="engine_not_ready",
    )
