"""Tracing and CORS middleware (pure ASGI, so streaming responses are untouched).

Tracing sets ``X-Request-ID`` (accepted from the client when well-formed, else generated),
``X-Correlation-ID`` (echoed, or the request id) and ``X-Processing-Time`` (``"12.3ms"``),
and logs one access line per request (e-mail addresses in the path masked).

CORS (``FACEPORT_CORS_ORIGINS``) answers a preflight from an allowed origin with 200 and the allow
headers, and adds ``Access-Control-Allow-Origin`` to that origin's other responses; requests from
any other origin, or any origin when the setting is empty, get no CORS headers at all.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.api.audit import mask_email

log = logging.getLogger("faceport.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:16]}"


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _SAFE_ID.match(given) else new_request_id()
        correlation = headers.get("x-correlation-id", "")
        correlation_id = correlation if _SAFE_ID.match(correlation) else request_id
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["correlation_id"] = correlation_id
        started = time.perf_counter()
        state["started"] = started
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = request_id
                out["X-Correlation-ID"] = correlation_id
                out["X-Processing-Time"] = f"{(time.perf_counter() - started) * 1000:.1f}ms"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log.info("%s %s %s %.1fms id=%s", scope.get("method"), mask_email(scope.get("path", "")),
                     status_holder["status"],
                     (time.perf_counter() - started) * 1000, request_id)


CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_DEFAULT_HEADERS = "Authorization, Content-Type, X-API-Key, X-API-Version, X-Request-ID, X-Correlation-ID"
CORS_EXPOSED_HEADERS = ("X-Request-ID, X-Correlation-ID, X-Processing-Time, X-API-Version, X-VRAM-Usage, "
                        "X-Model-Used, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, "
                        "Deprecation, Sunset, Link, Content-Disposition")
CORS_MAX_AGE = "600"
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


class CorsMiddleware:
    """CORS for the origins in ``FACEPORT_CORS_ORIGINS`` (``*`` allows any origin); nothing when it is empty.

    Credentials (cookies) are never allowed cross-origin: browsers send ``Authorization`` and
    ``X-API-Key`` headers, which need no credentials mode.
    """

    def __init__(self, app: ASGIApp, origins: Sequence[str] = ()) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.any_origin or self.origins):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or not self.allows(origin):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS" and "access-control-request-method" in headers:
            requested = headers.get("access-control-request-headers", "").strip()
            allow_headers = requested if requested and _HEADER_LIST.match(requested) else CORS_DEFAULT_HEADERS
            preflight = Response(status_code=200, headers={
                "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": allow_headers, "Access-Control-Max-Age": CORS_MAX_AGE,
                "Vary": "Origin"})
            await preflight(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            # Socket.IO answers CORS itself (same setting): no second Access-Control-Allow-Origin
            if message["type"] == "http.response.start" and not any(
                    k.lower() == b"access-control-allow-origin" for k, _ in message.get("headers", [])):
                out = MutableHeaders(scope=message)
                out["Access-Control-Allow-Origin"] = origin
                out["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


class BodyTooLargeMiddleware:
    """Turn Starlette's plain-text body-limit 413 into the surface's error body (``FILE_TOO_LARGE``).

    Starlette's ``max_body_size`` refuses an oversized body before any route runs, with a bare
    ``Content Too Large``; clients of seeds B and D parse every error as their JSON envelope.
    Only that one response is replaced; every other response streams through untouched.
    """

    def __init__(self, app: ASGIApp, surface: str) -> None:
        self.app = app
        self.surface = surface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replacing = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replacing
            if message["type"] == "http.response.start" and message["status"] == 413:
                content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
                replacing = content_type.startswith("text/plain")
            if not replacing:
                await send(message)
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._envelope(scope)(scope, receive, send)

        await self.app(scope, receive, send_wrapper)

    def _envelope(self, scope: Scope) -> Response:
        from faceport.api.errors import envelope_response

        path = scope.get("path", "")
        surface = self.surface if self.surface == "privacy" else ("platform" if path.startswith("/api/v1") else "plain")
        return envelope_response(surface, code="FILE_TOO_LARGE",
                                 message="request body too large for this endpoint (see FACEPORT_MAX_UPLOAD_BYTES)",
                                 request_id=scope.get("state", {}).get("request_id"))
