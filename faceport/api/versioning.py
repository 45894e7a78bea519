"""Seed D's header versioning and per-response platform headers under ``/api/v1``.

- ``X-API-Version`` on a request to ``/api/v1``: absent, ``v1`` or ``1`` is accepted; anything else
  is refused with 400 ``UNSUPPORTED_VERSION`` in seed D's envelope (``v0`` is named as deprecated and
  removed). Other paths ignore the header: it belongs to seed D.
- Every ``/api/v1`` response carries ``X-API-Version: v1``, ``X-VRAM-Usage: <used>/<available>``
  (the figures of the envelope's ``meta.vram_usage``) and, when the route set
  ``request.state.model_used``, ``X-Model-Used``.

The middleware must sit inside ``TracingMiddleware`` so a refusal carries the request id.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.api.envelope import memory_usage
from faceport.api.errors import error_body, status_for

API_PREFIX = "/api/v1"
CURRENT_VERSION = "v1"
SUPPORTED_VERSIONS = ("v1",)
REMOVED_VERSIONS = ("v0",)  # deprecated, then removed; named in the refusal so clients know why
_ACCEPTED = {"v1", "1"}


def is_platform_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def version_problem(value: str | None) -> tuple[str, dict[str, Any]] | None:
    """Why an ``X-API-Version`` value is refused, or ``None`` when it is accepted.

    Args:
        value: the header's value, ``None`` when absent.

    Returns:
        ``(message, details)`` for an ``UNSUPPORTED_VERSION`` error, or ``None``.

    Examples:
        >>> version_problem("v1") is None and version_problem(None) is None and version_problem(" 1 ") is None
        True
        >>> version_problem("v0")[0]
        'API version v0 is deprecated and has been removed; supported versions: v1'
    """
    if value is None or value.strip().lower() in _ACCEPTED:
        return None
    shown = value.strip()[:32]
    normalised = shown.lower() if shown.lower().startswith("v") else f"v{shown.lower()}"
    supported = ", ".join(SUPPORTED_VERSIONS)
    details: dict[str, Any] = {"field": "X-API-Version", "requested": shown, "supported": list(SUPPORTED_VERSIONS)}
    if normalised in REMOVED_VERSIONS:
        details["deprecated"] = True
        return f"API version {normalised} is deprecated and has been removed; supported versions: {supported}", details
    return f"unsupported API version {shown!r}; supported versions: {supported}", details


class ApiVersionMiddleware:
    """Refuses unsupported ``X-API-Version`` values and adds the platform headers (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_platform_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-API-Version"] = CURRENT_VERSION
                usage = _vram_usage(scope)
                if usage:
                    headers["X-VRAM-Usage"] = usage
                model_used = _model_used(scope)
                if model_used:
                    headers["X-Model-Used"] = model_used
            await send(message)

        problem = version_problem(Headers(scope=scope).get("x-api-version"))
        if problem is None:
            await self.app(scope, receive, send_with_headers)
            return
        message, details = problem
        request_id = scope.get("state", {}).get("request_id")
        body = error_body("platform", code="UNSUPPORTED_VERSION", message=message, details=details,
                          request_id=request_id)
        response = JSONResponse(body, status_code=status_for("UNSUPPORTED_VERSION"))
        await response(scope, receive, send_with_headers)


def _vram_usage(scope: Scope) -> str | None:
    app = scope.get("app")
    if app is None or getattr(app.state, "context", None) is None:
        return None
    usage = memory_usage(Request(scope))
    return f"{usage.used}/{usage.available}"


def _model_used(scope: Scope) -> str | None:
    value = scope.get("state", {}).get("model_used")
    if value is None:
        return None
    text = value if isinstance(value, str) else ",".join(str(v) for v in value)
    # a header value must be latin-1 without line breaks
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")[:256] or None
