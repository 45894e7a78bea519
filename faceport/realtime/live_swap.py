"""Seed A's Socket.IO surface (default namespace of the main app): live webcam face swap.

Client events: ``connect``, ``process_frame`` ``{frame: <data URL>}``, ``clear_source``, ``disconnect``,
and faceport's ``set_options`` ``{mouth_mask, face_enhancer, face_enhancer_blend, many_faces}`` (any subset;
per session, from the next frame on).
Server events: ``processed_frame`` (``{success: true, processed, stats}`` or
``{success: false, error, processed: <the frame sent>}``), ``status_update`` ``{message}``, and for
``set_options``: ``options`` ``{success: true, options: <all of the session's options>}`` or ``error``
``{success: false, error, code: "INVALID_INPUT", field}`` (the options stay as they were). The same
body is the event's acknowledgement when the client asks for one.

Rules:

- single user: a new connection becomes the active user; the previous one gets a
  ``status_update`` and is disconnected (across processes too, through the Redis manager);
- at most ``live_max_fps`` frames per second per user: excess frames are dropped without a reply,
  except the newest, which waits for the next slot: the last frame of a burst is always answered;
- backpressure: one frame is rendered at a time per connection (on the thread pool); while it
  renders only the newest waiting frame is kept, older ones are dropped and counted;
- shared state unreachable (Redis down): frames get the error form, new connections a
  ``status_update`` saying so before being disconnected; when Redis comes back empty the session
  that held the single-user lock takes it back;
- a session lasts at most ``live_session_timeout`` seconds and ends after ``live_idle_timeout``
  seconds without an event; the user is told why before being disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final
from urllib.parse import parse_qs

import socketio

from faceport.config import Settings
from faceport.engine.landmarks import FaceMeshTracker
from faceport.errors import FaceportError
from faceport.services.live_swap import (
    NO_FACE_IN_FRAME,
    STATE_UNAVAILABLE_MESSAGE,
    LiveOptions,
    LiveSwapService,
    RateWindow,
)

log = logging.getLogger(__name__)

NO_SOURCE: Final = "No source face uploaded: upload one first"
NOT_ACTIVE: Final = "Another user is active (single user mode)"
REPLACED: Final = "Another user connected; this session has ended (single user mode)"
PROCESSING_FAILED: Final = "Processing failed; see the server log"
STATE_UNAVAILABLE: Final = STATE_UNAVAILABLE_MESSAGE
API_KEY_COOKIE: Final = "faceport_api_key"
KEY_REQUIRED: Final = "API key required: send X-API-Key, or open the page once as /?api_key=KEY"


def presented_key(headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str],
                  auth: Any = None) -> str | None:
    """The API key a caller presents: Socket.IO ``auth`` ``{api_key}``, ``X-API-Key``, the page's cookie, or
    ``?api_key=`` (a browser cannot add a header to a page load or a WebSocket handshake)."""
    if isinstance(auth, dict) and isinstance(auth.get("api_key"), str):
        return str(auth["api_key"])
    return headers.get("x-api-key") or cookies.get(API_KEY_COOKIE) or query.get("api_key") or None


def key_problem(expected: str | None, given: str | None) -> str | None:
    """``None`` when the caller may use seed A (no key configured, or the right one given), else the error code."""
    if not expected:
        return None
    if not given:
        return "AUTH_REQUIRED"
    return None if hmac.compare_digest(given.encode(), expected.encode()) else "AUTH_INVALID"


def environ_api_key(environ: Mapping[str, Any], auth: Any) -> str | None:
    scope = environ.get("asgi.scope") or {}
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    cookies: dict[str, str] = {}
    try:
        cookies = {name: morsel.value for name, morsel in SimpleCookie(headers.get("cookie", "")).items()}
    except CookieError:
        log.debug("live swap: unreadable Cookie header ignored")
    query = {name: values[0] for name, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    return presented_key(headers, cookies, query, auth)


def _log_tracker_failure(future: asyncio.Task[FaceMeshTracker]) -> None:
    """Log (and so retrieve) a tracker that could not be built; the next frame reports it to the user."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("live swap: cannot build the face tracker: %s", exc)


@dataclass(eq=False)
class LiveSession:
    """One connection's state. Only the event loop touches it; its tracker runs on one worker at a time."""

    sid: str
    connected_at: float = field(default_factory=time.monotonic)
    last_event: float = field(default_factory=time.monotonic)
    tracker: asyncio.Task[FaceMeshTracker] | None = None
    worker: asyncio.Task[None] | None = None
    watchdog: asyncio.Task[None] | None = None
    deferral: asyncio.Task[None] | None = None
    holds_lock: bool = False  # claimed the single-user lock and was not replaced: may take it back after an outage
    deferred: tuple[int, Any] | None = None  # (sequence, frame): the newest frame over the rate, for the next slot
    pending: tuple[int, str, str | None] | None = None  # (sequence, frame, source version)
    sequence: int = 0  # frames received, numbered on arrival so that late handlers cannot reorder them
    newest_queued: int = 0
    ending: bool = False
    replies: RateWindow = field(default_factory=RateWindow)
    dropped_rate_limited: int = 0
    dropped_stale: int = 0
    options: LiveOptions = field(default_factory=LiveOptions)


def error_form(error: str, frame: Any, *, max_chars: int) -> dict[str, Any]:
    """Seed A's error ``processed_frame``: the original frame comes back as ``processed``.

    ``processed`` is null when the frame is not a string or longer than ``max_chars`` (an oversized
    frame is not sent back).
    """
    echo = frame if isinstance(frame, str) and len(frame) <= max_chars else None
    return {"success": False, "error": error, "processed": echo}


def socketio_origins(origins: list[str]) -> Callable[[str | None, dict[str, Any]], bool] | None:
    """Socket.IO's ``cors_allowed_origins``: same-origin always, plus ``FACEPORT_CORS_ORIGINS``.

    ``None`` (no configured origins) keeps python-engineio's same-origin check.
    """
    if not origins:
        return None
    any_origin = "*" in origins
    allowed = frozenset(origins)

    def allow(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        same = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}".lower()
        return any_origin or origin == same or origin in allowed

    return allow


class LiveSwapSocket:
    """The Socket.IO server of seed A; mount :meth:`asgi_app` at ``/socket.io`` on the main app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        manager: socketio.AsyncManager | None = None
        if settings.redis_url:
            manager = socketio.AsyncRedisManager(settings.redis_url, channel=f"{settings.live_redis_prefix}:socketio")
        # always_connect: the CONNECT reply goes out before the handler runs, so the handler can emit
        self.sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, always_connect=True,
                                        cors_allowed_origins=socketio_origins(settings.cors_origins),
                                        max_http_buffer_size=settings.live_message_max_bytes,
                                        logger=False, engineio_logger=False)
        self.sessions: dict[str, LiveSession] = {}
        self._service: LiveSwapService | None = None
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("process_frame", self.on_process_frame)
        self.sio.on("clear_source", self.on_clear_source)
        self.sio.on("set_options", self.on_set_options)

    def asgi_app(self) -> socketio.ASGIApp:
        """The ASGI app to mount at ``/socket.io`` (the mount does the routing)."""
        return socketio.ASGIApp(self.sio, socketio_path=None)

    @property
    def service(self) -> LiveSwapService:
        if self._service is None:
            raise RuntimeError("LiveSwapSocket.start() was not called (the app lifespan calls it)")
        return self._service

    async def start(self, service: LiveSwapService) -> None:
        self._service = service

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            for task in (session.worker, session.watchdog, session.deferral):
                if task is not None:
                    task.cancel()
        self.sessions.clear()
        with contextlib.suppress(Exception):  # the server is going down; nothing is left to tell
            await self.sio.shutdown()

    async def status_update(self, sid: str, message: str) -> None:
        """Send ``status_update`` to ``sid``, wherever it is connected (through the queue with Redis).

        A connection of this process is sent to directly, so that it hears even while Redis is down.
        """
        local = sid in self.sessions or self.sio.manager.is_connected(sid, "/")
        await self.sio.emit("status_update", {"message": message}, to=sid, ignore_queue=local)

    async def notify_active(self, message: str) -> None:
        """Send ``status_update`` to the active user, if any."""
        sid = await self.service.state.active_user()
        if sid is not None:
            await self.status_update(sid, message)

    def _error(self, error: str, frame: Any) -> dict[str, Any]:
        return error_form(error, frame, max_chars=self.settings.live_frame_max_bytes * 4 // 3 + 1024)

    async def _reply(self, sid: str, body: dict[str, Any]) -> None:
        # frames arrive at the process holding the connection: no need to publish on the queue
        await self.sio.emit("processed_frame", body, to=sid, ignore_queue=True)

    # ---- events ----------------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        """Make ``sid`` the active user; tell and disconnect the previous one."""
        service = self.service
        problem = key_problem(self.settings.api_key, environ_api_key(environ, auth))
        if problem is not None:
            log.info("live swap: %s refused (%s)", sid, problem)
            await self.status_update(sid, KEY_REQUIRED if problem == "AUTH_REQUIRED" else "Invalid API key")
            return False
        session = LiveSession(sid)
        self.sessions[sid] = session
        try:
            previous = await service.state.claim(sid)
        except Exception as exc:  # Redis down: say why before the connection is refused
            log.warning("live swap: cannot record %s as the active user; refusing it: %s", sid, exc)
            self.sessions.pop(sid, None)
            await self.status_update(sid, STATE_UNAVAILABLE)
            return False
        session.holds_lock = True
        log.info("live swap: %s connected from %s", sid, (environ.get("asgi.scope") or {}).get("client"))
        if previous is not None and previous != sid:
            log.info("live swap: %s replaces %s (single user mode)", sid, previous)
            await self.status_update(previous, REPLACED)
            await self.sio.disconnect(previous)
        if self.sessions.get(sid) is not session:  # gone while the takeover was awaited
            return False
        loop = asyncio.get_running_loop()
        session.tracker = loop.create_task(service.run(service.new_tracker))  # loads the models early
        session.tracker.add_done_callback(_log_tracker_failure)
        session.watchdog = loop.create_task(self._watch(session))
        try:
            source = await service.source_loaded()
        except FaceportError:
            source = False
        await self.status_update(sid, "Connected. " + ("Source face ready!" if source
                                                        else "Upload a source face to start."))
        return True

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        session.ending = True
        current = asyncio.current_task()
        for task in (session.worker, session.watchdog, session.tracker, session.deferral):
            if task is not None and task is not current:
                task.cancel()
        try:
            await self.service.state.release(sid)
        except Exception as exc:  # Redis down: the lock expires by itself
            log.warning("live swap: cannot release %s in the shared state: %s", sid, exc)
        log.info("live swap: %s disconnected (%s); %d frames dropped over the rate, %d stale",
                 sid, reason, session.dropped_rate_limited, session.dropped_stale)

    async def on_process_frame(self, sid: str, data: Any = None) -> None:
        session = self.sessions.get(sid)
        if session is None or session.ending:
            return
        session.sequence += 1
        session.last_event = time.monotonic()
        await self._submit(session, session.sequence, data.get("frame") if isinstance(data, dict) else None)

    async def _is_active(self, session: LiveSession) -> bool:
        """``session`` is the active user, taking the lock back if the shared state lost it.

        Raises:
            StateUnavailable: the shared state cannot be reached.
        """
        current = await self.service.state.active_user()
        if current == session.sid:
            return True
        if current is None and session.holds_lock and await self.service.reclaim(session.sid):
            log.info("live swap: %s took the single-user lock back (the shared state had lost it)", session.sid)
            return True
        session.holds_lock = False
        return False

    async def _submit(self, session: LiveSession, sequence: int, frame: Any) -> None:
        """Admit one frame: active user, frame rate (the newest excess frame waits), checks; then queue it."""
        sid = session.sid
        service = self.service
        try:
            admission = await service.state.admit(sid)
            if not admission.active and session.holds_lock and await self._is_active(session):
                admission = await service.state.admit(sid)
        except Exception as exc:  # Redis down: answer rather than leave the page waiting
            log.warning("live swap: cannot check a frame from %s against the shared state: %s", sid, exc)
            await self._reply(sid, self._error(STATE_UNAVAILABLE, None))
            return
        if not admission.active:
            await self._reply(sid, self._error(NOT_ACTIVE, frame))
            return
        if not admission.allowed:
            self._defer(session, sequence, frame, admission.retry_after)
            return
        if not isinstance(frame, str) or not frame:
            service.stats.record(swapped=False, processing_ms=None)
            await self._reply(sid, self._error("frame is required: {frame: 'data:image/jpeg;base64,...'}", None))
            return
        try:
            service.check_frame_size(frame)
        except FaceportError as exc:
            service.stats.record(swapped=False, processing_ms=None)
            await self._reply(sid, self._error(exc.message, frame))
            return
        if admission.source_version is None:
            service.forget_source()
            service.stats.record(swapped=False, processing_ms=None)
            await self._reply(sid, self._error(NO_SOURCE, frame))
            return
        self._enqueue(session, sequence, frame, admission.source_version)

    def _drop_rate_limited(self, session: LiveSession) -> None:
        session.dropped_rate_limited += 1
        self.service.stats.dropped_rate_limited += 1

    def _defer(self, session: LiveSession, sequence: int, frame: Any, wait: float) -> None:
        """Over the rate: keep only the newest such frame, for the next slot; older ones are dropped silently."""
        if session.deferred is not None:
            self._drop_rate_limited(session)  # of two frames over the rate only the newer one waits
            if session.deferred[0] > sequence:  # this one is the older (its handler ran late)
                return
        session.deferred = (sequence, frame)
        if session.deferral is None or session.deferral.done():
            session.deferral = asyncio.get_running_loop().create_task(self._release_deferred(session, wait))

    async def _release_deferred(self, session: LiveSession, wait: float) -> None:
        await asyncio.sleep(max(wait, 0.001))
        session.deferral = None  # a frame deferred again below schedules a new release
        if session.ending or session.deferred is None:
            return
        sequence, frame = session.deferred
        session.deferred = None
        if sequence < session.newest_queued:  # a newer frame got a slot meanwhile
            self._drop_rate_limited(session)
            return
        await self._submit(session, sequence, frame)

    def _enqueue(self, session: LiveSession, sequence: int, frame: str, version: str) -> None:
        """Keep only the newest waiting frame; start the worker when idle."""
        stats = self.service.stats
        if sequence < session.newest_queued:  # an older frame whose handler ran late
            session.dropped_stale += 1
            stats.dropped_stale += 1
            return
        session.newest_queued = sequence
        if session.pending is not None:
            session.dropped_stale += 1
            stats.dropped_stale += 1
        session.pending = (sequence, frame, version)
        if session.worker is None or session.worker.done():
            session.worker = asyncio.get_running_loop().create_task(self._drain(session))

    async def _drain(self, session: LiveSession) -> None:
        while session.pending is not None and not session.ending:
            _, frame, version = session.pending
            session.pending = None
            reply = await self._render(session, frame, version)
            if session.ending:
                return
            session.replies.add(time.monotonic())
            await self._reply(session.sid, reply)

    async def _render(self, session: LiveSession, frame: str, version: str | None) -> dict[str, Any]:
        service = self.service
        try:
            swapper = await service.swapper_for(version)
            if swapper is None:  # cleared while the frame waited
                service.stats.record(swapped=False, processing_ms=None)
                return self._error(NO_SOURCE, frame)
            if session.tracker is None:  # set in on_connect; kept for a handler racing it
                session.tracker = asyncio.get_running_loop().create_task(
                    service.run(service.new_tracker, session.options.many_faces))
            tracker = await session.tracker
            rendered = await service.run(service.render, frame, tracker, swapper, session.options)
        except FaceportError as exc:
            service.stats.record(swapped=False, processing_ms=exc.details.get("processing_ms"))
            if exc.code != "NO_FACE" or exc.message != NO_FACE_IN_FRAME:
                log.debug("live swap: frame refused: %s", exc)
            return self._error(exc.message, frame)
        except Exception:
            log.exception("live swap: rendering a frame failed")
            service.stats.record(swapped=False, processing_ms=None)
            return self._error(PROCESSING_FAILED, frame)
        service.stats.record(swapped=True, processing_ms=rendered.processing_ms)
        return {"success": True, "processed": rendered.processed, "stats": self._stats(session)}

    def _stats(self, session: LiveSession) -> dict[str, Any]:
        stats = self.service.stats
        # fps and avg_processing_time are smoothed over the last STATS_WINDOW frames
        return {"frame_count": stats.frame_count, "swap_count": stats.swap_count,
                "avg_processing_time": stats.avg_processing_time, "fps": round(session.replies.rate(), 1)}

    async def on_clear_source(self, sid: str, data: Any = None) -> None:
        session = self.sessions.get(sid)
        if session is None:
            return
        session.last_event = time.monotonic()
        try:
            if not await self._is_active(session):
                await self.status_update(sid, NOT_ACTIVE)
                return
            await self.service.clear_source()
        except FaceportError as exc:  # Redis down
            await self.status_update(sid, exc.message)
            return
        await self.status_update(sid, "Source cleared")

    async def on_set_options(self, sid: str, data: Any = None) -> dict[str, Any] | None:
        """Change this session's options (all or nothing); reply ``options``, or ``error`` for a bad value."""
        session = self.sessions.get(sid)
        if session is None or session.ending:
            return None
        session.last_event = time.monotonic()
        try:
            options = session.options.updated(data)
        except FaceportError as exc:
            body = {"success": False, "error": exc.message, "code": exc.code, "field": exc.details.get("field")}
            await self.sio.emit("error", body, to=sid, ignore_queue=True)
            return body
        if options.many_faces != session.options.many_faces:  # track more (or fewer) faces from the next frame
            service = self.service  # the old tracker is left to finish (a frame may be awaiting it)
            session.tracker = asyncio.get_running_loop().create_task(
                service.run(service.new_tracker, options.many_faces))
            session.tracker.add_done_callback(_log_tracker_failure)
        session.options = options
        log.info("live swap: %s options %s", sid, options.as_dict())
        body = {"success": True, "options": options.as_dict()}
        await self.sio.emit("options", body, to=sid, ignore_queue=True)
        return body

    # ---- timeouts --------------------------------------------------------------------
    async def _watch(self, session: LiveSession) -> None:
        """End the session at the session timeout or after the idle timeout, telling the user why."""
        settings = self.settings
        while True:
            now = time.monotonic()
            session_end = session.connected_at + settings.live_session_timeout
            idle_end = session.last_event + settings.live_idle_timeout
            if now >= session_end:
                message = f"Session expired after {settings.live_session_timeout:g} s; reconnect to continue"
                break
            if now >= idle_end:
                message = f"Disconnected after {settings.live_idle_timeout:g} s without activity"
                break
            await asyncio.sleep(min(session_end, idle_end) - now)
        log.info("live swap: %s: %s", session.sid, message)
        session.ending = True
        await self.status_update(session.sid, message)
        await self.sio.disconnect(session.sid)
