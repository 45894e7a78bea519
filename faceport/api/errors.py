"""The only map from domain errors to HTTP statuses and to each surface's error body.

Surfaces:
- ``/api/v1`` on the main app (seed D): ``{"success": false, "error": {code, message, details}, "meta": {...}}``
- the privacy app (seed E): ``{"error": <summary>, "message": <text>, "code": <CODE>}``
- everything else on the main app (seeds A, B, health): ``{"detail": <text>, "code": <CODE>, "details": {...}}``
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceport.errors import FaceportError

log = logging.getLogger(__name__)

Surface = Literal["platform", "privacy", "plain"]

STATUS_BY_CODE: dict[str, int] = {
    "INVALID_INPUT": 400,
    "MISSING_FIELD": 400,
    "INVALID_FORMAT": 400,
    "INVALID_IMAGE": 400,
    "NO_FACE": 400,
    "UNSUPPORTED_VERSION": 400,
    "UNSUPPORTED_LANGUAGE": 422,
    "AUTH_REQUIRED": 401,
    "AUTH_INVALID": 401,
    "AUTH_EXPIRED": 401,
    "AUTH_FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "OUTPUT_EXISTS": 409,
    "FILE_TOO_LARGE": 413,
    "ROOM_BUSY": 409,
    "NOT_STREAMING": 409,
    "RATE_LIMITED": 429,
    "TOO_MANY_ROOMS": 429,
    "TOO_MANY_VIEWERS": 429,
    "PROCESSING_FAILED": 500,
    "MODEL_LOAD_FAILED": 500,
    "MODEL_FETCH_FAILED": 502,
    "MODEL_UNAVAILABLE": 503,
    "VRAM_EXHAUSTED": 503,
    "QUEUE_FULL": 503,
    "STORAGE_UNAVAILABLE": 503,
    "STATE_UNAVAILABLE": 503,
    "STREAM_CAPACITY": 503,
}

_SUMMARY = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}

_CODE_BY_STATUS = {400: "INVALID_INPUT", 401: "AUTH_REQUIRED", 403: "AUTH_FORBIDDEN", 404: "NOT_FOUND",
                   405: "METHOD_NOT_ALLOWED", 413: "FILE_TOO_LARGE", 429: "RATE_LIMITED"}


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 500)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def surface_for(request: Request) -> Surface:
    surface = getattr(request.app.state, "error_surface", "plain")
    if surface == "privacy":
        return "privacy"
    return "platform" if request.url.path.startswith("/api/v1") else "plain"


# Seed D lists its own codes; engine codes outside that list are reported as the nearest one,
# with the precise engine code kept in details["reason"].
_PLATFORM_CODES = {"INVALID_IMAGE": "INVALID_FORMAT", "NO_FACE": "INVALID_INPUT",
                   "MODEL_LOAD_FAILED": "MODEL_UNAVAILABLE", "MODEL_FETCH_FAILED": "MODEL_UNAVAILABLE"}


def platform_code(code: str, details: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Seed D's code for a domain code, the precise one kept in ``details["reason"]``."""
    if code in _PLATFORM_CODES:
        details = {**details, "reason": code}
        if code == "NO_FACE":
            details.setdefault("validation", "face_required")
        code = _PLATFORM_CODES[code]
    return code, details


def error_body(surface: Surface, *, code: str, message: str, details: dict[str, Any],
               request_id: str | None) -> dict[str, Any]:
    status = status_for(code)
    if surface == "platform":
        code, details = platform_code(code, details)
        return {"success": False, "error": {"code": code, "message": message, "details": details},
                "meta": {"timestamp": now_iso(), "request_id": request_id}}
    if surface == "privacy":
        return {"error": _SUMMARY.get(status, "Error"), "message": message, "code": code}
    return {"detail": message, "code": code, "details": details}


def envelope_response(surface: Surface, *, code: str, message: str, request_id: str | None,
                      details: dict[str, Any] | None = None) -> JSONResponse:
    """The surface's error body for ``code``, where no ``Request`` exists (pure ASGI middleware)."""
    body = error_body(surface, code=code, message=message, details=details or {}, request_id=request_id)
    return JSONResponse(body, status_code=status_for(code))


def error_response(request: Request, *, code: str, message: str, details: dict[str, Any] | None = None,
                   status: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = error_body(surface_for(request), code=code, message=message, details=details or {},
                      request_id=request_id)
    return JSONResponse(body, status_code=status or status_for(code), headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str, dict[str, Any]]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
    field = ".".join(loc) or "request"
    code = "MISSING_FIELD" if first.get("type") == "missing" else "INVALID_INPUT"
    message = f"{field}: {first.get('msg', 'invalid value')}"
    details = {"field": field, "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())),
                                           "message": e.get("msg"), "type": e.get("type")} for e in errors]}
    return code, message, details


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the surface's error body."""

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FaceportError)
        if status_for(exc.code) >= 500:
            log.warning("request failed: %s", exc)
        return error_response(request, code=exc.code, message=exc.message, details=exc.details)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        code, message, details = _validation_message(exc)
        return error_response(request, code=code, message=message, details=details)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODE_BY_STATUS.get(exc.status_code, "PROCESSING_FAILED")
        message = exc.detail if isinstance(exc.detail, str) else _SUMMARY.get(exc.status_code, "Error")
        status = exc.status_code
        if "exceeded maximum size" in message:  # Starlette's multipart part-size limit
            code, status = "FILE_TOO_LARGE", 413
        return error_response(request, code=code, message=message, status=status,
                              headers=getattr(exc, "headers", None))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, code="PROCESSING_FAILED", message="internal error; see the server log",
                              details={"request_id": getattr(request.state, "request_id", None)})

    handlers: dict[Any, Callable[..., Any]] = {
        FaceportError: on_domain,
        RequestValidationError: on_validation,
        StarletteHTTPException: on_http,
        Exception: on_unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
