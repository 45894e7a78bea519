"""Tracing middleware (pure ASGI, so streaming responses are untouched).

Sets ``X-Request-ID`` (accepted from the client when well-formed, else generated),
``X-Correlation-ID`` (echoed, or the request id) and ``X-Processing-Time`` (``"12.3ms"``),
and logs one access line per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            log.info("%s %s %s %.1fms id=%s", scope.get("method"), scope.get("path"), status_holder["status"],
                     (time.perf_counter() - started) * 1000, request_id)
