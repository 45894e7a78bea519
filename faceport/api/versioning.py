"""Seed D's header versioning and per-response platform headers under ``/api/v1``.

- ``X-API-Version`` on a request to ``/api/v1``: absent, ``v1`` or ``1`` is the current version;
  ``v0`` (or ``0``) is seed D's deprecated version: the same routes answer, with ``Deprecation``
  (RFC 9745), ``Sunset`` (RFC 8594) and a ``Link`` to the docs; anything else is refused with 400
  ``UNSUPPORTED_VERSION`` in seed D's envelope. Other paths ignore the header: it belongs to seed D.
- Every ``/api/v1`` response carries ``X-API-Version`` (the version served), ``X-VRAM-Usage: <used>/<available>``
  (the figures of the envelope's ``meta.vram_usage``) and, when the route set
  ``request.state.model_used``, ``X-Model-Used``.

The middleware must sit inside ``TracingMiddleware`` so a refusal carries the request id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.api.envelope import memory_usage
from faceport.api.errors import error_body, status_for

API_PREFIX = "/api/v1"
CURRENT_VERSION = "v1"
SUPPORTED_VERSIONS = ("v1", "v0")
DEPRECATED_VERSION = "v0"
# Seed D: "Deprecation Notice: 6 months before removal".
DEPRECATED_SINCE = datetime(2026, 9, 1, tzinfo=UTC)
SUNSET_AT = datetime(2027, 3, 1, tzinfo=UTC)
DOCS_LINK = "/docs"
_ACCEPTED = {"v1": "v1", "1": "v1", "v0": "v0", "0": "v0"}


def deprecation_headers() -> dict[str, str]:
    """The headers of a response served as the deprecated version.

    Examples:
        >>> deprecation_headers()["Deprecation"], deprecation_headers()["Sunset"]
        ('@1788220800', 'Mon, 01 Mar 2027 00:00:00 GMT')
    """
    return {"Deprecation": f"@{int(DEPRECATED_SINCE.timestamp())}",
            "Sunset": format_datetime(SUNSET_AT, usegmt=True),
            "Link": f'<{DOCS_LINK}>; rel="deprecation"; type="text/html", '
                    f'<{DOCS_LINK}>; rel="sunset"; type="text/html"'}


def served_version(value: str | None) -> str | None:
    """The version a request's ``X-API-Version`` asks for (``v1`` when absent), ``None`` when unsupported.

    Examples:
        >>> served_version(None), served_version(" V1 "), served_version("0"), served_version("v2")
        ('v1', 'v1', 'v0', None)
    """
    if value is None:
        return CURRENT_VERSION
    return _ACCEPTED.get(value.strip().lower())


def is_platform_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def version_problem(value: str | None) -> tuple[str, dict[str, Any]] | None:
    """Why an ``X-API-Version`` value is refused, or ``None`` when it is accepted.

    Args:
        value: the header's value, ``None`` when absent.

    Returns:
        ``(message, details)`` for an ``UNSUPPORTED_VERSION`` error, or ``None``.

    Examples:
        >>> all(version_problem(v) is None for v in (None, "v1", " 1 ", "v0"))
        True
        >>> version_problem("v2")[0]
        "unsupported API version 'v2'; supported versions: v1, v0 (deprecated)"
    """
    if served_version(value) is not None:
        return None
    shown = (value or "").strip()[:32]
    supported = ", ".join(f"{v} (deprecated)" if v == DEPRECATED_VERSION else v for v in SUPPORTED_VERSIONS)
    details: dict[str, Any] = {"field": "X-API-Version", "requested": shown, "supported": list(SUPPORTED_VERSIONS),
                               "deprecated": [DEPRECATED_VERSION]}
    return f"unsupported API version {shown!r}; supported versions: {supported}", details


class ApiVersionMiddleware:
    """Refuses unsupported ``X-API-Version`` values and adds the platform headers (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_platform_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        requested = Headers(scope=scope).get("x-api-version")
        version = served_version(requested) or CURRENT_VERSION

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-API-Version"] = version
                if version == DEPRECATED_VERSION:
                    headers.update(deprecation_headers())
                usage = _vram_usage(scope)
                if usage:
                    headers["X-VRAM-Usage"] = usage
                model_used = _model_used(scope)
                if model_used:
                    headers["X-Model-Used"] = model_used
            await send(message)

        problem = version_problem(requested)
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
