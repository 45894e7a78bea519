"""Seed A's HTTP surface: the page at ``GET /``, ``POST /upload_source``, ``GET /status``; and the wiring of
its Socket.IO server (``/socket.io``, default namespace) and static files (``/web``) into the main app.

``/upload_source`` answers seed A's own shapes, ``{"success": bool, "message": str}``, for every
outcome (not the plain ``{"detail", "code", "details"}`` body of the other routes): a source image
over ``live_source_max_bytes`` (10 MB) is a 400, a request over ``live_request_max_bytes`` (16 MB)
a 413, an image without a face ``{"success": false, "message": "No face detected"}``.

While someone is streaming, only the active user's session may replace the source: the page sends its
Socket.IO sid in ``X-SocketIO-SID``; anyone else gets ``{"success": false, "message": "Another user is
active (single user mode)"}`` (409). With the shared state (Redis) unreachable, ``/upload_source`` and
``/status`` answer 503 ``{"success": false, "message": ..., "code": "STATE_UNAVAILABLE"}``.
"""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from faceport.api.errors import status_for
from faceport.config import Settings
from faceport.errors import FaceportError, StateUnavailable
from faceport.realtime.live_swap import (
    API_KEY_COOKIE,
    KEY_REQUIRED,
    NOT_ACTIVE,
    LiveSwapSocket,
    key_problem,
    presented_key,
)
from faceport.services.live_swap import LiveSwapService

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"
ALLOWED_EXTENSIONS: Final = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SOURCE_READY: Final = "Source face ready!"
NO_FACE: Final = "No face detected"
SESSION_HEADER: Final = "X-SocketIO-SID"  # the uploading page's Socket.IO sid (socket.id)

router = APIRouter(tags=["live swap"])

# With FACEPORT_API_KEY set (required for a non-loopback bind) a browser opens /?api_key=KEY once: the
# page is served with the key in an HttpOnly same-site cookie, which its requests and its Socket.IO
# connection then carry.
_KEY_FORM: Final = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>faceport</title>
<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;background:#111418;color:#e6e9ee;padding:2rem">
<h1 style="font-size:1.2rem">faceport live face swap</h1><p>{message} ({code})</p>
<form method="get" action="/"><label>API key <input name="api_key" type="password" autofocus required></label>
<button type="submit">Open</button></form></body></html>"""


class UploadSourceResult(BaseModel):
    """Seed A's ``/upload_source`` answer, for success and failure alike."""

    success: bool
    message: str


class StateUnavailableResult(BaseModel):
    """Seed A's error form with a stable code: the shared state (Redis) cannot be reached."""

    success: bool = False
    message: str
    code: str = "STATE_UNAVAILABLE"


class LiveStatus(BaseModel):
    """Seed A's ``GET /status``: process-wide live swap statistics.

    ``avg_processing_time`` is in milliseconds over the last 30 processed frames; ``frame_count`` counts
    frames answered (``swap_count`` swapped, ``error_count`` answered with an error); ``models_loaded``
    says whether every model a frame needs is installed (they load on first use).
    """

    frame_count: int
    swap_count: int
    error_count: int
    avg_processing_time: float
    source_face_loaded: bool
    models_loaded: bool


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


def _unavailable(exc: StateUnavailable) -> JSONResponse:
    log.warning("live swap: %s", exc)
    return JSONResponse(StateUnavailableResult(message=exc.message, code=exc.code).model_dump(),
                        status_code=status_for(exc.code))


async def _session_problem(request: Request, service: LiveSwapService) -> JSONResponse | None:
    """While someone streams, only that session (``X-SocketIO-SID``) may replace the source."""
    active = await service.state.active_user()
    if active is None:
        return None
    given = request.headers.get(SESSION_HEADER, "")
    if given and hmac.compare_digest(given.encode(), active.encode()):
        return None
    return _fail(409, NOT_ACTIVE)


def _live(request: Request) -> tuple[LiveSwapService, LiveSwapSocket]:
    return request.app.state.live_swap, request.app.state.live_socket


def _key_error(request: Request) -> FaceportError | None:
    problem = key_problem(request.app.state.settings.api_key,
                          presented_key(request.headers, request.cookies, request.query_params))
    if problem is None:
        return None
    return FaceportError(KEY_REQUIRED if problem == "AUTH_REQUIRED" else "invalid API key", code=problem)


def require_live_key(request: Request) -> None:
    """With ``FACEPORT_API_KEY`` set, seed A's routes need it (header, the page's cookie, or ``?api_key=``).

    Raises:
        FaceportError: AUTH_REQUIRED without a key, AUTH_INVALID with a wrong one.
    """
    if (error := _key_error(request)) is not None:
        raise error


LiveKeyDep = Depends(require_live_key)


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    """The live swap page (webcam, source upload, swapped stream, stats)."""
    error = _key_error(request)
    if error is not None:
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_KEY_FORM.format(message=html.escape(error.message), code=error.code),
                                status_code=401)
        raise error
    response = FileResponse(WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
    given = request.query_params.get("api_key")
    if request.app.state.settings.api_key and given:
        response.set_cookie(API_KEY_COOKIE, given, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


@router.post("/upload_source", response_model=UploadSourceResult, summary="Upload the source face",
             dependencies=[LiveKeyDep],
             responses={400: {"model": UploadSourceResult, "description": "Not an image, over 10 MB, no face"},
                        409: {"model": UploadSourceResult,
                              "description": "Someone else is streaming (send your Socket.IO sid in X-SocketIO-SID)"},
                        413: {"model": UploadSourceResult, "description": "Request over 16 MB"},
                        503: {"model": StateUnavailableResult, "description": "Shared state (Redis) unreachable"}},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["image"],
                 "properties": {"image": {"type": "string", "format": "binary"}}}}}}})
async def upload_source(request: Request) -> JSONResponse:
    """Multipart field ``image`` (.jpg .jpeg .png .bmp .webp, content checked): the face put on every frame."""
    service, socket = _live(request)
    settings = service.settings
    try:
        if (refused := await _session_problem(request, service)) is not None:
            return refused
    except StateUnavailable as exc:
        return _unavailable(exc)
    body = await _read_body(request, settings.live_request_max_bytes)
    if body is None:
        return _fail(413, f"Request too large (max {_mb(settings.live_request_max_bytes)})")

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                return _fail(400, "No image provided: send the file as multipart field 'image'")
            name = upload.filename or ""
            if Path(name).suffix.lower() not in ALLOWED_EXTENSIONS:
                return _fail(400, f"Invalid file type {Path(name).suffix or '(none)'}: allowed "
                                  f"{', '.join(ALLOWED_EXTENSIONS)}")
            data = await upload.read(settings.live_source_max_bytes + 1)
    except StarletteHTTPException as exc:  # malformed multipart
        return _fail(400, f"Invalid request: {exc.detail}")
    if len(data) > settings.live_source_max_bytes:
        return _fail(400, f"File too large (max {_mb(settings.live_source_max_bytes)})")
    if not data:
        return _fail(400, "The image file is empty")
    try:
        await service.upload_source(data)
    except StateUnavailable as exc:
        return _unavailable(exc)
    except FaceportError as exc:
        if exc.code == "NO_FACE":
            return _fail(400, NO_FACE)
        if exc.code in ("INVALID_IMAGE", "FILE_TOO_LARGE"):
            return _fail(400, f"Invalid image: {exc.message}")
        log.warning("upload_source failed: %s", exc)
        return _fail(status_for(exc.code), exc.message)
    try:
        await socket.notify_active(SOURCE_READY)
    except StateUnavailable as exc:  # stored, but the active user cannot be looked up: it sees it on /status
        log.warning("live swap: cannot tell the active user about the new source: %s", exc)
    return JSONResponse({"success": True, "message": SOURCE_READY})


@router.get("/status", response_model=LiveStatus, summary="Live swap statistics", dependencies=[LiveKeyDep],
            responses={503: {"model": StateUnavailableResult, "description": "Shared state (Redis) unreachable"}})
async def status(request: Request) -> LiveStatus | JSONResponse:
    service, _ = _live(request)
    try:
        return LiveStatus(**await service.status())
    except StateUnavailable as exc:
        return _unavailable(exc)


def install_live_swap(app: FastAPI, settings: Settings) -> None:
    """Add seed A to the main app: routes, ``/socket.io`` (default namespace), ``/web`` static files.

    The live swap service is built in the app lifespan, after the ``AppContext`` it runs on.
    """
    socket = LiveSwapSocket(settings)
    app.state.live_socket = socket
    app.include_router(router)
    app.mount("/socket.io", socket.asgi_app(), name="socket.io")
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            ctx = app_.state.context
            service = LiveSwapService(settings, ctx.engine, ctx.models, ctx.run)
            app_.state.live_swap = service
            await socket.start(service)
            try:
                yield state
            finally:
                await socket.aclose()
                await service.aclose()

    app.router.lifespan_context = lifespan


def websocket_max_size(settings: Settings) -> int:
    """uvicorn's ``ws_max_size`` for the main app: room for the largest live message.

    uvicorn's default (16 MiB) would close the connection on a larger frame before the server could
    answer it with seed A's error form.
    """
    return max(16 * 1024 * 1024, settings.live_message_max_bytes + 64 * 1024)
