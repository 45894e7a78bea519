"""Seed E live on the privacy app: WHIP/WHEP signalling, ``GET /rooms``, the ``/live`` page and ``/socket.io``.

The seed's separate mediasoup process (port 3001) is replaced by these routes: ``mediasoupUrl`` in
``room_created`` is ``/rooms/{roomId}``; ``POST {mediasoupUrl}/whip`` publishes (RFC 9725) and
``POST {mediasoupUrl}/whep`` watches, each an ``application/sdp`` offer answered ``201 Created``
with the SDP answer and a ``Location`` to ``DELETE``. Errors are seed E's ``{error, message, code}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from faceport.config import Settings
from faceport.errors import FaceportError
from faceport.realtime.privastream import Caller, PrivaStreamSocket, RoomHub
from faceport.services.rooms import visible

log = logging.getLogger(__name__)

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"
_SDP: Final = "application/sdp"
_MAX_SDP: Final = 64 * 1024

router = APIRouter(tags=["live"])
# the SDP offer body is described in words, not as an OpenAPI requestBody: schema-driven tools
# (schemathesis, client generators) have no serializer for application/sdp
_SDP_DOC: Final = ("Body: an SDP offer (RFC 8866) with Content-Type application/sdp, as OBS, GStreamer whipsink "
                   "or a browser send it. Answer: 201 Created, the SDP answer, and a Location to DELETE.")


class RoomPublic(BaseModel):
    roomId: str
    owner: str
    createdAt: float
    streaming: bool
    processing: bool
    config: dict[str, bool | str]
    viewers: int


class RoomList(BaseModel):
    rooms: list[RoomPublic]


def _hub(request: Request) -> RoomHub:
    hub: RoomHub = request.app.state.privastream.hub
    return hub


async def _caller(request: Request) -> Caller:
    return await _hub(request).authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))


async def _sdp_body(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != _SDP:
        raise FaceportError(f"Content-Type must be {_SDP}, got {kind or 'none'}", code="INVALID_FORMAT")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_SDP:
            raise FaceportError(f"SDP offer larger than {_MAX_SDP} bytes", code="FILE_TOO_LARGE")
    return body


def _answer(sdp: str, location: str) -> Response:
    return Response(sdp, status_code=201, media_type=_SDP, headers={"Location": location, "ETag": '"1"'})


@router.get("/rooms", response_model=RoomList, summary="List rooms (yours; admins see all)")
async def list_rooms(request: Request) -> RoomList:
    hub = _hub(request)
    caller = await _caller(request)
    rooms = [r for r in await hub.rooms.list() if visible(r, caller.owner, admin=caller.admin)]
    return RoomList(rooms=[RoomPublic(**r.public(), viewers=await hub.viewers(r.room_id)) for r in rooms])


@router.post("/rooms/{room_id}/whip", status_code=201, summary="Publish (WHIP): SDP offer in, SDP answer out",
             response_class=Response, responses={201: {"content": {_SDP: {}}}}, description=_SDP_DOC)
async def whip(room_id: str, request: Request) -> Response:
    caller = await _caller(request)
    sdp = await _sdp_body(request)
    stream, answer = await _hub(request).publish(room_id, caller, sdp)
    return _answer(answer, f"/rooms/{stream.room_id}/whip/{stream.session_id}")


@router.delete("/rooms/{room_id}/whip/{session_id}", status_code=200, summary="Stop publishing",
               response_class=Response)
async def whip_delete(room_id: str, session_id: str, request: Request) -> Response:
    caller = await _caller(request)
    await _hub(request).unpublish(room_id, caller, session_id)
    return Response(status_code=200)


@router.post("/rooms/{room_id}/whep", status_code=201, summary="Watch (WHEP): SDP offer in, SDP answer out",
             response_class=Response, responses={201: {"content": {_SDP: {}}}}, description=_SDP_DOC)
async def whep(room_id: str, request: Request) -> Response:
    await _caller(request)
    sdp = await _sdp_body(request)
    hub = _hub(request)
    session_id, answer = await hub.watch(room_id, sdp)
    return _answer(answer, f"/rooms/{room_id}/whep/{session_id}")


@router.delete("/rooms/{room_id}/whep/{session_id}", status_code=200, summary="Stop watching",
               response_class=Response)
async def whep_delete(room_id: str, session_id: str, request: Request) -> Response:
    await _caller(request)
    await _hub(request).unwatch(room_id, session_id)
    return Response(status_code=200)


@router.get("/live", include_in_schema=False)
async def live_page() -> FileResponse:
    return FileResponse(WEB_DIR / "privastream" / "live.html", media_type="text/html")


def install_privastream(app: FastAPI, settings: Settings) -> None:
    """Add seed E live to the privacy app: routes, ``/socket.io``, the page's static files."""
    socket = PrivaStreamSocket(settings)
    app.state.privastream = socket
    app.include_router(router)
    app.mount("/socket.io", socket.asgi_app(), name="socket.io")
    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            socket.start(app_.state.context)
            try:
                yield state
            finally:
                await socket.aclose()

    app.router.lifespan_context = lifespan
