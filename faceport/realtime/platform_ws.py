"""Seed D's realtime channels: ``/ws/face-analysis``, ``/ws/system-status``, ``/ws/notifications``.

Authentication at connect, in this order: ``Authorization: Bearer <access token>`` or
``X-API-Key`` headers; ``?token=<access token>`` or ``?api_key=<key>`` in the URL (browsers
cannot set WebSocket headers); otherwise the first message must be
``{"type": "auth", "token": "..."}`` or ``{"type": "auth", "api_key": "..."}`` within
``FACEPORT_WS_AUTH_TIMEOUT`` seconds. Failure: an error envelope (``AUTH_REQUIRED``,
``AUTH_INVALID``, ``AUTH_EXPIRED``) and close code 4001; a non-admin on ``/ws/system-status``:
``AUTH_FORBIDDEN`` and 4003; more than ``FACEPORT_WS_MAX_CONNECTIONS_PER_USER`` sockets (seed D:
50 per user, all three channels together, across nodes with Redis): ``RATE_LIMITED`` and 4029. Open
sockets re-check their credentials every ``FACEPORT_WS_REAUTH_INTERVAL`` seconds (logout, expiry, a
revoked key or a withdrawn admin role end them); ``{"type": "auth", "token": ...}`` on an open socket
renews its token.

Every server message is a seed D envelope with its ``type``::

    {"success": true, "type": "result", "data": {...}, "meta": {"timestamp", "request_id", "processing_time"}}
    {"success": false, "type": "error", "error": {"code", "message", "details"}, "meta": {"timestamp", "request_id"}}

``/ws/face-analysis``: frames are ``{"type": "frame", "image": "<base64 or data URL>", "frame_id": ...,
"options": {...}}`` or binary messages (the image bytes); ``{"type": "config", ...}`` sets the
connection's defaults (``operations``: any of ``detect``, ``recognize``, ``attributes``,
``demographics``; ``detector``, ``score_threshold``, ``max_faces``, ``top_k``, ``threshold``,
``landmarks``). Replies: ``result`` with ``frame_id``, ``faces`` (box, keypoints, ``recognition``
against the caller's gallery, ``attributes`` pose + quality, ``demographics``). Work is bounded:
each connection has at most one frame being analysed and one waiting; a newer frame replaces the
waiting one, which is answered ``superseded`` at once. A bad frame is answered with an error
envelope naming its ``frame_id`` and the connection stays open. Other message types are a
registry (:func:`register_message_type`), e.g. liveness-session frames.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from faceport.api.context import AppContext
from faceport.api.errors import now_iso, platform_code
from faceport.engine.imageio import decode_image
from faceport.errors import FaceportError, FileTooLarge, InvalidFormat, InvalidInput
from faceport.principal import Principal

log = logging.getLogger(__name__)

CLOSE_AUTH = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_TOO_MANY = 4029
MAX_WAITING = 32  # messages of non-superseding types waiting per connection

Operation = Literal["detect", "recognize", "attributes", "demographics"]


# ---- envelopes -------------------------------------------------------------------------------
def envelope(kind: str, data: Any, *, request_id: str | None, started: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"timestamp": now_iso(), "request_id": request_id}
    if started is not None:
        meta["processing_time"] = round((time.perf_counter() - started) * 1000, 2)
    return {"success": True, "type": kind, "data": data, "meta": meta}


def error_envelope(code: str, message: str, *, request_id: str | None,
                   details: dict[str, Any] | None = None) -> dict[str, Any]:
    code, details = platform_code(code, dict(details or {}))
    return {"success": False, "type": "error", "error": {"code": code, "message": message, "details": details},
            "meta": {"timestamp": now_iso(), "request_id": request_id}}


# ---- message-type hooks ----------------------------------------------------------------------
MessageHandler = Callable[[AppContext, Principal, dict[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class MessageType:
    """A ``/ws/face-analysis`` message type: ``handler(ctx, principal, message, conn_state) -> data`` (blocking,
    run on the thread pool; ``conn_state`` is a dict kept for the connection's life). ``supersede``: a newer
    message of this type replaces a waiting one (frames); otherwise every message is handled in order."""

    name: str
    handler: MessageHandler
    supersede: bool = False
    reply_type: str = ""


MESSAGE_TYPES: dict[str, MessageType] = {}


def register_message_type(name: str, handler: MessageHandler, *, supersede: bool = False,
                          reply_type: str | None = None) -> None:
    """Handle ``{"type": name, ...}`` on ``/ws/face-analysis``; replies are ``reply_type`` (default ``<name>.result``).

    Example (a liveness helper)::

        register_message_type("liveness", lambda ctx, p, msg, state: ctx.liveness.session_frame(p, msg, state))
    """
    if name in ("auth", "config", "ping", "frame") or not name:
        raise InvalidInput(f"message type {name!r} is reserved")
    MESSAGE_TYPES[name] = MessageType(name, handler, supersede, reply_type or f"{name}.result")


# ---- connection bookkeeping ------------------------------------------------------------------
# Atomic "count live entries, add one if below the limit" over a sorted set of connection ids scored by
# their expiry; entries of a node that died expire after CONNECTION_TTL_S without heartbeats.
_ENTER_LUA = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 2))
return 1
"""
CONNECTION_TTL_S = 60.0
HEARTBEAT_S = 20.0


class WsHub:
    """Open ``/ws/*`` sockets per identity, for the per-user cap.

    In this process's memory, or with ``FACEPORT_REDIS_URL`` in Redis (one sorted set per identity,
    refreshed every 20 s), so the cap holds across API nodes. Redis unreachable: the local count decides
    (logged), never a refusal of every connection.
    """

    def __init__(self, redis_url: str | None = None, prefix: str = "faceport") -> None:
        self.per_identity: dict[str, int] = {}
        self.frames_analysed = 0
        self.frames_superseded = 0
        self.redis_url = redis_url
        self.prefix = f"{prefix}:ws:conn:"
        self._redis: Any = None
        self._enter_script: Any = None
        self._live: dict[str, str] = {}  # connection id -> identity, for heartbeats
        self._heartbeat: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._enter_script = self._redis.register_script(_ENTER_LUA)
        return self._redis

    async def enter(self, identity: str, connection_id: str, limit: int) -> bool:
        if self.redis_url:
            try:
                self._client()
                admitted = await self._enter_script(keys=[self.prefix + identity],
                                                    args=[time.time(), limit, CONNECTION_TTL_S, connection_id])
            except Exception as exc:  # Redis down: fall back to this node's count
                log.warning("ws connection cap: Redis unreachable (%s); counting on this node only", exc)
            else:
                if not admitted:
                    return False
                self._live[connection_id] = identity
                self._count(identity, +1)
                if self._heartbeat is None or self._heartbeat.done():
                    self._heartbeat = asyncio.ensure_future(self._beat())
                return True
        if self.per_identity.get(identity, 0) >= limit:
            return False
        self._count(identity, +1)
        return True

    def _count(self, identity: str, delta: int) -> None:
        left = self.per_identity.get(identity, 0) + delta
        if left > 0:
            self.per_identity[identity] = left
        else:
            self.per_identity.pop(identity, None)

    async def leave(self, identity: str, connection_id: str) -> None:
        self._count(identity, -1)
        if self._live.pop(connection_id, None) is not None:
            try:
                await self._client().zrem(self.prefix + identity, connection_id)
            except Exception as exc:  # the entry expires by itself
                log.warning("ws connection cap: could not release a connection in Redis: %s", exc)

    async def _beat(self) -> None:
        while self._live:
            await asyncio.sleep(HEARTBEAT_S)
            expiry = time.time() + CONNECTION_TTL_S
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for connection_id, identity in list(self._live.items()):
                        pipe.zadd(self.prefix + identity, {connection_id: expiry}, xx=True)
                        pipe.expire(self.prefix + identity, int(CONNECTION_TTL_S * 2))
                    await pipe.execute()
            except Exception as exc:  # entries may expire meanwhile; the next beat retries
                log.warning("ws connection cap: heartbeat failed: %s", exc)

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def _receive(websocket: WebSocket) -> tuple[str | None, bytes | None]:
    """The next message as (text, bytes). Raises: WebSocketDisconnect."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message.get("text"), message.get("bytes")


def _parse(text: str) -> dict[str, Any]:
    """Raises: InvalidFormat (not a JSON object)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise InvalidFormat("message is not JSON") from None
    if not isinstance(message, dict):
        raise InvalidFormat("message must be a JSON object")
    return message


_Credentials = tuple[str | None, str | None]  # (Authorization header value, API key)


async def _authenticate(websocket: WebSocket, ctx: AppContext, request_id: str
                        ) -> tuple[Principal, _Credentials] | None:
    """The caller and the credentials it used, or ``None`` after answering the error and closing the socket."""
    headers = websocket.headers
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key")
    token = websocket.query_params.get("token") or websocket.query_params.get("access_token")
    if not authorization and token:
        authorization = f"Bearer {token}"
    api_key = api_key or websocket.query_params.get("api_key")
    try:
        if not authorization and not api_key:
            try:
                text, data = await asyncio.wait_for(_receive(websocket), timeout=ctx.settings.ws_auth_timeout)
            except TimeoutError:
                raise FaceportError(f"no credentials: send {{\"type\": \"auth\", \"token\": ...}} within "
                                    f"{ctx.settings.ws_auth_timeout:g} s, ?token= or an Authorization header",
                                    code="AUTH_REQUIRED") from None
            message = _parse(text if text is not None else (data or b"").decode("utf-8", "replace"))
            if message.get("type") != "auth":
                raise FaceportError("the first message must be {\"type\": \"auth\", \"token\": ...} "
                                    "(or {\"type\": \"auth\", \"api_key\": ...})", code="AUTH_REQUIRED")
            token, key = message.get("token"), message.get("api_key")
            authorization = f"Bearer {token}" if isinstance(token, str) and token else None
            api_key = key if isinstance(key, str) and key else None
        principal = await run_in_threadpool(ctx.auth.authenticate_headers, authorization, api_key)
        return principal, (authorization, api_key)
    except FaceportError as exc:
        code = exc.code if exc.code.startswith("AUTH_") else "AUTH_REQUIRED"
        await _close_with(websocket, error_envelope(code, exc.message, request_id=request_id), CLOSE_AUTH)
        return None


async def _close_with(websocket: WebSocket, message: dict[str, Any], code: int) -> None:
    try:
        await websocket.send_json(message)
        await websocket.close(code=code)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


@dataclass
class _Session:
    """One authenticated socket: its principal, id, and a lock so replies never interleave."""

    websocket: WebSocket
    ctx: AppContext
    principal: Principal
    request_id: str
    credentials: _Credentials = (None, None)
    admin_only: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watchdog: asyncio.Future[None] | None = None

    async def renew(self, message: dict[str, Any]) -> None:
        """``{"type": "auth", "token" | "api_key"}`` on an open socket: replace its credentials (a fresh access
        token before the old one expires); another user's credentials are refused.

        Raises:
            FaceportError: AUTH_* for bad credentials or another user's.
        """
        token, key = message.get("token"), message.get("api_key")
        credentials = (f"Bearer {token}" if isinstance(token, str) and token else None,
                       key if isinstance(key, str) and key else None)
        if credentials == (None, None):
            raise FaceportError("auth needs a token or an api_key", code="AUTH_REQUIRED")
        principal = await run_in_threadpool(self.ctx.auth.authenticate_headers, *credentials)
        if principal.rate_key != self.principal.rate_key:
            raise FaceportError("a socket cannot change its user; open a new one", code="AUTH_INVALID")
        self.credentials = credentials
        await self.ok("authenticated", {"user": principal.username, "role": principal.role})

    async def recheck_forever(self, interval: float) -> None:
        """Re-authenticate every ``interval`` s: a logout, an expired token, a revoked key, a deactivated
        user or a lost admin role ends the socket (error envelope, then 4001 / 4003)."""
        while True:
            await asyncio.sleep(interval)
            try:
                principal = await run_in_threadpool(self.ctx.auth.authenticate_headers, *self.credentials)
            except FaceportError as exc:
                code = exc.code if exc.code.startswith("AUTH_") else "AUTH_INVALID"
                async with self.lock:
                    await _close_with(self.websocket, error_envelope(code, exc.message, request_id=self.request_id),
                                      CLOSE_AUTH)
                return
            if self.admin_only and not principal.is_admin:
                async with self.lock:
                    await _close_with(self.websocket, error_envelope(
                        "AUTH_FORBIDDEN", "the admin role was withdrawn", request_id=self.request_id),
                        CLOSE_FORBIDDEN)
                return

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.websocket.send_json(message)

    async def ok(self, kind: str, data: Any, started: float | None = None) -> None:
        await self.send(envelope(kind, data, request_id=self.request_id, started=started))

    async def error(self, exc: FaceportError, **extra: Any) -> None:
        await self.send(error_envelope(exc.code, exc.message, request_id=self.request_id,
                                       details={**exc.details, **extra}))


async def _open(websocket: WebSocket, channel: str, *, admin_only: bool = False) -> _Session | None:
    """Accept, authenticate, check the role and the per-user cap, say ``connected``."""
    ctx: AppContext = websocket.app.state.context
    hub: WsHub = websocket.app.state.ws_hub
    request_id = f"ws_{uuid.uuid4().hex[:16]}"
    await websocket.accept()
    authenticated = await _authenticate(websocket, ctx, request_id)
    if authenticated is None:
        return None
    principal, credentials = authenticated
    if admin_only and not principal.is_admin:
        await _close_with(websocket, error_envelope("AUTH_FORBIDDEN", f"{channel} needs the admin role",
                                                    request_id=request_id), CLOSE_FORBIDDEN)
        return None
    limit = ctx.settings.ws_max_connections_per_user
    if not await hub.enter(principal.rate_key, request_id, limit):
        await _close_with(websocket, error_envelope(
            "RATE_LIMITED", f"at most {limit} WebSocket connections per user (FACEPORT_WS_MAX_CONNECTIONS_PER_USER)",
            request_id=request_id, details={"limit": limit, "category": "websocket"}), CLOSE_TOO_MANY)
        return None
    session = _Session(websocket, ctx, principal, request_id, credentials, admin_only)
    try:
        await session.ok("connected", {"channel": channel, "user": principal.username, "role": principal.role,
                                       "connection_id": request_id, "max_connections": limit})
    except (WebSocketDisconnect, RuntimeError, OSError):
        await hub.leave(principal.rate_key, request_id)
        return None
    session.watchdog = asyncio.ensure_future(session.recheck_forever(ctx.settings.ws_reauth_interval))
    return session


async def _leave(websocket: WebSocket, session: _Session) -> None:
    if session.watchdog is not None:
        session.watchdog.cancel()
    await websocket.app.state.ws_hub.leave(session.principal.rate_key, session.request_id)


# ---- /ws/face-analysis -----------------------------------------------------------------------
class FrameConfig(BaseModel):
    """Per-connection analysis settings (``{"type": "config", ...}``), overridable per frame with ``options``."""

    model_config = ConfigDict(extra="forbid")

    operations: list[Operation] = Field(default_factory=lambda: ["detect", "recognize"])
    detector: Literal["blazeface_short", "blazeface_full", "centerface", "yunet"] | None = None
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_faces: int | None = Field(None, ge=1, le=100)
    top_k: int = Field(1, ge=1, le=20)
    threshold: float | None = Field(None, gt=0.0, le=2.0)
    landmarks: bool = False


def _config(base: FrameConfig, overrides: Any) -> FrameConfig:
    """Raises: InvalidInput naming the bad field."""
    if overrides is None:
        return base
    if not isinstance(overrides, dict):
        raise InvalidInput("options must be an object", details={"field": "options"})
    try:
        return FrameConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "options"
        raise InvalidInput(f"{name}: {first['msg']}", details={"field": name}) from None


def analyze_frame(ctx: AppContext, image: Any, config: FrameConfig, gallery_owner: str | None) -> dict[str, Any]:
    """Faces of one frame with what ``config.operations`` asks for (blocking)."""
    from faceport.api.v1 import face
    from faceport.engine.attributes import face_quality, head_pose

    ops = set(config.operations)
    recognize, attributes = "recognize" in ops, "attributes" in ops
    faces = ctx.engine.detect(image, detector=config.detector, score_threshold=config.score_threshold,
                              max_faces=config.max_faces, landmarks=attributes or config.landmarks, embed=recognize)
    demographics = None
    if "demographics" in ops and len(faces):
        demographics = ctx.engine.demographics().analyze(image, faces)
    threshold = face._threshold(ctx, config.threshold)
    out = []
    for i in range(len(faces)):
        fields = face._face_fields(faces, i)
        entry: dict[str, Any] = {"bbox": fields["bbox"].model_dump(), "score": fields["score"],
                                 "keypoints": fields["keypoints"]}
        if config.landmarks:
            entry["landmarks"] = fields["landmarks"]
        if recognize and faces.embedding is not None:
            candidates = face._candidates(ctx, faces.embedding[i], config.top_k, threshold, gallery_owner)
            best = candidates[0] if candidates and candidates[0].match else None
            entry["recognition"] = {"subject": best.model_dump() if best else None,
                                    "candidates": [c.model_dump() for c in candidates]}
        if attributes:
            quality = face_quality(image, faces.xyxy[i])
            pose = head_pose(faces.landmarks[i]) if faces.landmarks is not None else None
            entry["attributes"] = {
                "pose": {"yaw": pose.yaw, "pitch": pose.pitch, "roll": pose.roll, "method": "facemesh_axes"}
                if pose is not None else None,
                "quality": {"sharpness": quality.sharpness, "brightness": quality.brightness, "size": quality.size,
                            "method": "laplacian_variance"}}
        if demographics is not None:
            entry["demographics"] = face._demographics_out(demographics, i).model_dump()
        out.append(entry)
    return {"faces": out, "count": len(out), "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "detector": config.detector or ctx.engine.options.detector, "operations": sorted(ops),
            "threshold": threshold if recognize else None}


@dataclass(slots=True)
class _Work:
    kind: str  # "frame" or a registered message type
    message: dict[str, Any]
    image: Any  # str (base64) or bytes for frames
    frame_id: Any
    config: FrameConfig | None
    supersede: bool


def _frame_id(message: dict[str, Any]) -> Any:
    value = message.get("frame_id", message.get("id"))
    if isinstance(value, bool) or not (isinstance(value, int | float) or (isinstance(value, str) and len(value) <= 64)):
        return None
    return value


class _Worker:
    """A connection's waiting messages and the task that handles them one at a time (newest frame wins)."""

    def __init__(self, session: _Session, hub: WsHub) -> None:
        self.session = session
        self.hub = hub
        self.waiting: deque[_Work] = deque()
        self.ready = asyncio.Event()
        self.state: dict[str, Any] = {}

    async def put(self, work: _Work) -> None:
        if work.supersede:
            for old in [w for w in self.waiting if w.supersede and w.kind == work.kind]:
                self.waiting.remove(old)
                self.hub.frames_superseded += 1
                await self.session.ok("superseded", {"frame_id": old.frame_id, "type": old.kind,
                                                     "message": "not analysed: a newer frame replaced it"})
        elif len(self.waiting) >= MAX_WAITING:
            from faceport.errors import QueueFull

            await self.session.error(QueueFull(f"more than {MAX_WAITING} {work.kind} messages waiting"),
                                     frame_id=work.frame_id)
            return
        self.waiting.append(work)
        self.ready.set()

    async def run_forever(self) -> None:
        ctx = self.session.ctx
        settings = ctx.settings
        gallery_owner = None if self.session.principal.is_admin else self.session.principal.owner
        while True:
            await self.ready.wait()
            if not self.waiting:
                self.ready.clear()
                continue
            work = self.waiting.popleft()
            if not self.waiting:
                self.ready.clear()
            started = time.perf_counter()
            try:
                if work.kind == "frame":
                    assert work.config is not None
                    image = await ctx.run(decode_image, work.image, max_pixels=settings.max_image_pixels,
                                          max_bytes=settings.max_image_bytes)
                    data = await ctx.run(analyze_frame, ctx, image, work.config, gallery_owner)
                    self.hub.frames_analysed += 1
                    await self.session.ok("result", {"frame_id": work.frame_id, **data}, started)
                else:
                    kind = MESSAGE_TYPES[work.kind]
                    data = await ctx.run(kind.handler, ctx, self.session.principal, work.message, self.state)
                    await self.session.ok(kind.reply_type, {"frame_id": work.frame_id, **(data or {})}
                                          if isinstance(data, dict) or data is None else data, started)
            except FaceportError as exc:
                await self.session.error(exc, frame_id=work.frame_id)
            except (WebSocketDisconnect, RuntimeError, OSError):
                raise
            except Exception as exc:  # a bug in one frame's analysis must not end the connection
                log.exception("face-analysis: frame failed")
                await self.session.error(FaceportError(f"internal error: {type(exc).__name__}"),
                                         frame_id=work.frame_id)


async def face_analysis_socket(websocket: WebSocket) -> None:
    session = await _open(websocket, "face-analysis")
    if session is None:
        return
    ctx = session.ctx
    hub: WsHub = websocket.app.state.ws_hub
    config = FrameConfig()
    worker = _Worker(session, hub)
    runner = asyncio.ensure_future(worker.run_forever())
    limit = ctx.settings.max_image_bytes
    try:
        while True:
            receive = asyncio.ensure_future(_receive(websocket))
            done, _ = await asyncio.wait({receive, runner}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                receive.cancel()
                return
            text, data = receive.result()
            if text is None:  # binary: the image itself
                if data is None or not data:
                    await session.error(InvalidFormat("empty binary message"))
                    continue
                if len(data) > limit:
                    await session.error(FileTooLarge(f"frame exceeds the {limit // (1024 * 1024)} MB limit"))
                    continue
                await worker.put(_Work("frame", {}, bytes(data), None, config, True))
                continue
            message: dict[str, Any] | None = None
            try:
                message = _parse(text)
                kind = message.get("type", "frame" if "image" in message else None)
                frame_id = _frame_id(message)
                if kind == "ping":
                    await session.ok("pong", {"frame_id": frame_id})
                elif kind == "auth":
                    await session.renew(message)
                elif kind == "config":
                    config = _config(config, {k: v for k, v in message.items() if k not in ("type", "frame_id")})
                    await session.ok("config", config.model_dump())
                elif kind == "frame":
                    image = message.get("image")
                    if not isinstance(image, str) or not image:
                        raise InvalidInput("image is required: a base64 string or data URL", details={"field": "image"})
                    if len(image) > limit * 4 // 3 + 1024:
                        raise FileTooLarge(f"frame exceeds the {limit // (1024 * 1024)} MB limit",
                                           details={"field": "image"})
                    if not image.startswith("data:"):
                        try:
                            base64.b64decode(image[:4096 - 4096 % 4], validate=True)
                        except (binascii.Error, ValueError):
                            raise InvalidFormat("image is not valid base64", details={"field": "image"}) from None
                    frame_config = _config(config, message.get("options"))
                    await worker.put(_Work("frame", message, image, frame_id, frame_config, True))
                elif isinstance(kind, str) and kind in MESSAGE_TYPES:
                    registered = MESSAGE_TYPES[kind]
                    await worker.put(_Work(kind, message, None, frame_id, None, registered.supersede))
                else:
                    raise InvalidInput(f"unknown message type {kind!r}; expected frame, config, ping"
                                       + "".join(f", {name}" for name in MESSAGE_TYPES), details={"field": "type"})
            except FaceportError as exc:
                await session.error(exc, frame_id=_frame_id(message) if message is not None else None)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        runner.cancel()
        await _leave(websocket, session)


# ---- /ws/system-status -----------------------------------------------------------------------
async def system_status_socket(websocket: WebSocket) -> None:
    session = await _open(websocket, "system-status", admin_only=True)
    if session is None:
        return
    ctx = session.ctx
    interval = ctx.settings.ws_status_interval
    receive: asyncio.Future[Any] = asyncio.ensure_future(_receive(websocket))
    try:
        while True:
            started = time.perf_counter()
            status = await ctx.run(ctx.system.status)
            await session.ok("system.status", status, started)
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                done, _ = await asyncio.wait({receive}, timeout=left)
                if not done:
                    break
                text, _data = receive.result()
                receive = asyncio.ensure_future(_receive(websocket))
                if await _control(session, text, own=("refresh",), expected="expected ping, auth or refresh"):
                    break
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        receive.cancel()
        await _leave(websocket, session)


async def _control(session: Any, text: str | None, *, own: tuple[str, ...], expected: str) -> str | None:
    """Answer a control message of a push channel (``ping``, ``auth``); return the type when it is one of
    the channel's ``own`` types, else ``None``. A bad message gets an error envelope; the socket stays open."""
    try:
        message = _parse(text or "")
        kind = message.get("type")
        if kind == "ping":
            await session.ok("pong", {})
        elif kind == "auth":
            await session.renew(message)
        elif kind in own:
            return str(kind)
        else:
            raise InvalidInput(expected, details={"field": "type"})
    except FaceportError as exc:
        await session.error(exc)
    return None


# ---- /ws/notifications -----------------------------------------------------------------------
async def notifications_socket(websocket: WebSocket) -> None:
    session = await _open(websocket, "notifications")
    if session is None:
        return
    ctx = session.ctx
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)

    def deliver(event: dict[str, Any]) -> None:  # any thread
        def put() -> None:
            if events.full():  # a slow reader loses the oldest events, never the server's memory
                events.get_nowait()
            events.put_nowait(event)

        loop.call_soon_threadsafe(put)

    unsubscribe = ctx.notifier.subscribe(deliver, owner=session.principal.owner,
                                         is_admin=session.principal.is_admin)
    receive: asyncio.Future[Any] = asyncio.ensure_future(_receive(websocket))
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({receive, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                event = getter.result()
                await session.send({"success": True, "type": event["type"], "data": event["data"],
                                    "meta": {"timestamp": event.get("timestamp") or now_iso(),
                                             "request_id": session.request_id, "event_id": event.get("id")}})
            else:
                getter.cancel()
            if receive in done:
                text, _data = receive.result()
                receive = asyncio.ensure_future(_receive(websocket))
                await _control(session, text, own=(), expected="this channel only sends; expected ping or auth")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        unsubscribe()
        receive.cancel()
        await _leave(websocket, session)


def install_platform_ws(app: FastAPI, settings: Any) -> None:
    """Register seed D's ``/ws/*`` channels on the main app (the hub's Redis client closes with the app)."""
    app.state.ws_hub = WsHub(settings.redis_url, settings.rate_limit_key_prefix)
    app.add_api_websocket_route("/ws/face-analysis", face_analysis_socket, name="ws_face_analysis")
    app.add_api_websocket_route("/ws/system-status", system_status_socket, name="ws_system_status")
    app.add_api_websocket_route("/ws/notifications", notifications_socket, name="ws_notifications")
