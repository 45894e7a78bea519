"""Seed E's Socket.IO surface on the privacy app (``/socket.io/``) and the room hub behind WHIP/WHEP.

Client events (seed E, "WebSocket API"):

- ``create_room`` → ``room_created {roomId, mediasoupUrl, whipUrl, whepUrl}``; the caller joins the room;
- ``join_room {roomId}`` → ``room_joined {roomId, streaming}`` (and ``streaming_started`` if it streams);
- ``sfu_streaming_started {roomId}`` (owner) → ``streaming_started {roomId}`` to everyone in the room;
- ``start_processing {roomId, config: {face_blur, plate_blur, text_blur, audio_processing}}`` (owner)
  → ``processing_started {roomId, config}``; the filter of the live stream switches at once.

Server events: ``processing_update {roomId, fps, detections, dropped, ...}`` about once a second
while a publisher streams; ``stream_ended {roomId}`` when it leaves; ``error {message, code}`` for
anything refused (unknown room, bad config, not the owner, limits, bad credentials).

Owners: with ``FACEPORT_API_KEY`` set, a connection must authenticate (``auth: {api_key}`` or
``{token}``, ``X-API-Key``, ``Authorization: Bearer``, the cookie or ``?api_key=``); a room belongs
to that principal and only it (or an admin) may publish and steer it. Knowing a room id is enough to
join and watch (it is the share link). Without a key everyone is ``anonymous``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import asdict
from typing import Any

import socketio

from faceport.config import Settings
from faceport.engine.live_speech import warm_up
from faceport.errors import FaceportError, NotFound
from faceport.principal import Principal
from faceport.realtime.live_swap import environ_api_key, socketio_origins
from faceport.realtime.media import RoomStream, parse_offer, too_many_viewers
from faceport.services.rooms import Room, RoomStore, parse_live_config, parse_room_id, room_store, visible

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
NAMESPACE = "/"


class Caller:
    """Who calls: the owner string rooms are stamped with, and whether it sees every room."""

    def __init__(self, owner: str, admin: bool = False) -> None:
        self.owner = owner
        self.admin = admin


def caller_of(principal: Principal | None) -> Caller:
    if principal is None:
        return Caller(ANONYMOUS)
    return Caller(principal.owner, principal.is_admin)


class RoomHub:
    """Rooms (shared state) and the streams this node carries."""

    def __init__(self, settings: Settings, ctx: Any, emit: Any) -> None:
        self.settings = settings
        self.ctx = ctx
        self.emit = emit  # async (event, body, room) -> None
        self.node = uuid.uuid4().hex[:12]
        self.rooms: RoomStore = room_store(settings.redis_url, max_rooms=settings.stream_max_rooms,
                                           ttl=settings.stream_room_ttl)
        self.streams: dict[str, RoomStream] = {}
        self._updates: dict[str, asyncio.Task[None]] = {}
        self._speech_loading: asyncio.Task[None] | None = None

    async def authenticate(self, authorization: str | None, api_key: str | None) -> Caller:
        """Raises: FaceportError AUTH_REQUIRED / AUTH_INVALID / AUTH_EXPIRED."""
        present = bool((authorization or "").strip() or (api_key or "").strip())
        if not present:
            if self.settings.api_key:
                raise FaceportError("credentials required: X-API-Key or Authorization: Bearer", code="AUTH_REQUIRED")
            return Caller(ANONYMOUS)
        principal = await asyncio.get_running_loop().run_in_executor(
            None, self.ctx.auth.authenticate_headers, authorization, api_key)
        return caller_of(principal)

    def speech_models(self) -> Any:
        """Loads the live speech models (Whisper tiny.en, spaCy + Presidio) or None without a privacy service."""
        privacy = getattr(self.ctx, "privacy", None)
        return None if privacy is None else privacy.speech().analyzer.english_models

    def preload_speech(self) -> None:
        """Load the speech models in the background (a room switched bleeping on), so the stream's
        first seconds of audio are heard rather than muted while they load."""
        models = self.speech_models()
        if models is not None and self._speech_loading is None:
            async def load() -> None:
                try:
                    await self.ctx.run(warm_up, models)
                except Exception:
                    log.exception("live privacy: cannot load the speech models; bleeping streams stay muted")
                    self._speech_loading = None

            self._speech_loading = asyncio.ensure_future(load())

    async def owned(self, room_id: Any, caller: Caller) -> Room:
        """The room, if ``caller`` owns it (someone else's room is NOT_FOUND)."""
        room = await self.rooms.get(parse_room_id(room_id))
        if not visible(room, caller.owner, admin=caller.admin):
            raise NotFound(f"room {room.room_id} not found", details={"field": "roomId"})
        return room

    async def publish(self, room_id: str, caller: Caller, sdp: bytes) -> tuple[RoomStream, str]:
        """WHIP: start filtering the caller's stream into ``room_id``.

        Raises:
            FaceportError: NOT_FOUND, ROOM_BUSY (it has a publisher), STREAM_CAPACITY, INVALID_INPUT.
        """
        offer = parse_offer(sdp)
        room = await self.owned(room_id, caller)
        if room.room_id in self.streams or (room.streaming and room.publisher_node not in (None, self.node)):
            raise FaceportError("this room already has a publisher; DELETE its session first", code="ROOM_BUSY")
        if len(self.streams) >= self.settings.stream_max_publishers:
            raise FaceportError(f"this node already filters {len(self.streams)} streams "
                                "(FACEPORT_STREAM_MAX_PUBLISHERS); try later or another node",
                                code="STREAM_CAPACITY", details={"limit": self.settings.stream_max_publishers})
        stream = RoomStream(room.room_id, room.config, cache=self.ctx.cache, run=self.ctx.run,
                            max_viewers=self.settings.stream_max_viewers, speech=self.speech_models(),
                            audio_delay_s=self.settings.stream_audio_delay_s)
        if room.config.audio_processing and room.config.audio_mode == "bleep":
            self.preload_speech()
        self.streams[room.room_id] = stream
        try:
            answer = await stream.accept_publisher(offer)
        except BaseException:
            self.streams.pop(room.room_id, None)
            await stream.close()
            raise
        await self.rooms.update(room.room_id, streaming=True, publisher_node=self.node)
        self._updates[room.room_id] = asyncio.ensure_future(self._report(stream))
        await self.emit("streaming_started", {"roomId": room.room_id}, room.room_id)
        return stream, answer

    async def unpublish(self, room_id: str, caller: Caller | None, session_id: str | None = None) -> None:
        """End a room's stream (WHIP DELETE, or the publisher's connection failing)."""
        room_id = parse_room_id(room_id)
        if caller is not None:
            await self.owned(room_id, caller)
        stream = self.streams.get(room_id)
        if stream is None or (session_id is not None and stream.session_id != session_id):
            raise NotFound("no such publishing session", details={"field": "session"})
        await self._end(stream)

    async def _end(self, stream: RoomStream) -> None:
        if self.streams.get(stream.room_id) is stream:
            del self.streams[stream.room_id]
        task = self._updates.pop(stream.room_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await stream.close()
        with contextlib.suppress(FaceportError):
            await self.rooms.update(stream.room_id, streaming=False, publisher_node=None)
        await self.emit("stream_ended", {"roomId": stream.room_id}, stream.room_id)

    async def watch(self, room_id: str, sdp: bytes) -> tuple[str, str]:
        """WHEP: a viewer session on the room's filtered stream; returns (session id, answer SDP).

        Raises:
            FaceportError: NOT_FOUND, NOT_STREAMING, TOO_MANY_VIEWERS, INVALID_INPUT.
        """
        offer = parse_offer(sdp)
        room = await self.rooms.get(parse_room_id(room_id))
        stream = self.streams.get(room.room_id)
        if stream is None:
            where = "on another node" if room.streaming else "yet"
            raise FaceportError(f"room {room.room_id} has no publisher {where}; watch once it streams",
                                code="NOT_STREAMING", details={"streaming": room.streaming})
        return await stream.add_viewer(offer)

    async def unwatch(self, room_id: str, session_id: str) -> None:
        stream = self.streams.get(parse_room_id(room_id))
        if stream is None or not await stream.remove_viewer(session_id):
            raise NotFound("no such viewing session", details={"field": "session"})

    async def viewers(self, room_id: str) -> int:
        stream = self.streams.get(room_id)
        return 0 if stream is None else len(stream.viewers)

    async def _report(self, stream: RoomStream) -> None:
        """``processing_update`` once per interval while the stream lives; follows config changes made on any node."""
        try:
            while not stream.closed.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stream.closed.wait(), self.settings.stream_update_interval)
                if stream.closed.is_set():
                    break
                if stream.pc.connectionState in ("failed", "closed"):
                    break
                try:
                    room = await self.rooms.get(stream.room_id)
                    await stream.set_config(room.config)
                except FaceportError as exc:
                    log.warning("live privacy: room %s: %s", stream.room_id, exc)
                body = {"roomId": stream.room_id, **stream.stats.snapshot(), "viewers": len(stream.viewers),
                        "config": asdict(stream.config),
                        "audio": stream.audio_stats()}
                await self.emit("processing_update", body, stream.room_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live privacy: room %s: updates stopped", stream.room_id)
        if not stream.closed.is_set() or self.streams.get(stream.room_id) is stream:
            await self._end(stream)

    async def aclose(self) -> None:
        for stream in list(self.streams.values()):
            with contextlib.suppress(Exception):
                await self._end(stream)
        await self.rooms.aclose()


def error_event(exc: FaceportError) -> dict[str, Any]:
    return {"message": exc.message, "code": exc.code}


class PrivaStreamSocket:
    """The Socket.IO server of seed E; mount :meth:`asgi_app` at ``/socket.io`` on the privacy app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        manager: socketio.AsyncManager | None = None
        if settings.redis_url:
            manager = socketio.AsyncRedisManager(settings.redis_url, channel="faceport:privastream:socketio")
        self.sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, always_connect=True,
                                        cors_allowed_origins=socketio_origins(settings.cors_origins),
                                        max_http_buffer_size=64 * 1024, logger=False, engineio_logger=False)
        self.callers: dict[str, Caller] = {}
        self.bases: dict[str, str] = {}
        self._hub: RoomHub | None = None
        for event in ("connect", "disconnect", "create_room", "join_room", "sfu_streaming_started",
                      "start_processing"):
            self.sio.on(event, getattr(self, f"on_{event}"))

    def asgi_app(self) -> socketio.ASGIApp:
        return socketio.ASGIApp(self.sio, socketio_path=None)

    @property
    def hub(self) -> RoomHub:
        if self._hub is None:
            raise RuntimeError("PrivaStreamSocket.start() was not called (the app lifespan calls it)")
        return self._hub

    def start(self, ctx: Any) -> RoomHub:
        self._hub = RoomHub(self.settings, ctx, self.emit)
        return self._hub

    async def emit(self, event: str, body: dict[str, Any], room: str) -> None:
        try:
            await self.sio.emit(event, body, room=room)
        except Exception as exc:  # Redis manager down: the event is lost, the stream goes on
            log.warning("live privacy: cannot emit %s to %s: %s", event, room, exc)

    async def aclose(self) -> None:
        if self._hub is not None:
            await self._hub.aclose()
        with contextlib.suppress(Exception):
            await self.sio.shutdown()

    async def error(self, sid: str, exc: FaceportError) -> None:
        await self.sio.emit("error", error_event(exc), to=sid)

    # ---- handlers ------------------------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        scope = environ.get("asgi.scope") or {}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = auth.get("token") if isinstance(auth, dict) and isinstance(auth.get("token"), str) else None
        authorization = f"Bearer {token}" if token else headers.get("authorization")
        try:
            caller = await self.hub.authenticate(authorization, environ_api_key(environ, auth))
        except FaceportError as exc:
            await self.error(sid, exc)
            await self.sio.disconnect(sid)
            return
        self.callers[sid] = caller
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        self.bases[sid] = f"{scheme}://{headers.get('host', 'localhost')}"

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.callers.pop(sid, None)
        self.bases.pop(sid, None)

    async def _guard(self, sid: str, handler: Any) -> None:
        caller = self.callers.get(sid)
        if caller is None:
            await self.error(sid, FaceportError("not authenticated", code="AUTH_REQUIRED"))
            return
        try:
            await handler(caller)
        except FaceportError as exc:
            await self.error(sid, exc)
        except Exception:
            log.exception("live privacy: event failed")
            await self.error(sid, FaceportError("internal error; see the server log"))

    async def on_create_room(self, sid: str, data: Any = None) -> None:
        async def run(caller: Caller) -> None:
            room = await self.hub.rooms.create(caller.owner)
            await self.sio.enter_room(sid, room.room_id)
            url = f"{self.bases.get(sid, '')}/rooms/{room.room_id}"
            await self.sio.emit("room_created", {"roomId": room.room_id, "mediasoupUrl": url,
                                                 "whipUrl": f"{url}/whip", "whepUrl": f"{url}/whep"}, to=sid)

        await self._guard(sid, run)

    async def on_join_room(self, sid: str, data: Any = None) -> None:
        async def run(caller: Caller) -> None:
            room = await self.hub.rooms.get(parse_room_id(data))
            if await self.hub.viewers(room.room_id) >= self.settings.stream_max_viewers:
                raise too_many_viewers(self.settings.stream_max_viewers)
            await self.sio.enter_room(sid, room.room_id)
            await self.sio.emit("room_joined", {"roomId": room.room_id, "streaming": room.streaming}, to=sid)
            if room.streaming:
                await self.sio.emit("streaming_started", {"roomId": room.room_id}, to=sid)

        await self._guard(sid, run)

    async def on_sfu_streaming_started(self, sid: str, data: Any = None) -> None:
        async def run(caller: Caller) -> None:
            room = await self.hub.owned(data, caller)
            await self.sio.enter_room(sid, room.room_id)
            await self.emit("streaming_started", {"roomId": room.room_id}, room.room_id)

        await self._guard(sid, run)

    async def on_start_processing(self, sid: str, data: Any = None) -> None:
        async def run(caller: Caller) -> None:
            room = await self.hub.owned(data, caller)
            config = parse_live_config(data.get("config") if isinstance(data, dict) else None)
            room = await self.hub.rooms.update(room.room_id, config=config, processing=True)
            if config.audio_processing and config.audio_mode == "bleep":
                self.hub.preload_speech()
            stream = self.hub.streams.get(room.room_id)
            if stream is not None:
                await stream.set_config(config)
            await self.sio.emit("processing_started", {"roomId": room.room_id, "config": asdict(config)}, to=sid)

        await self._guard(sid, run)
