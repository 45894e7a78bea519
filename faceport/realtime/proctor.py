"""Seed C's proctoring WebSocket ``/ws``: ``{user_name, image, timestamp?}`` in,
``{action, reason, actual_username, send_time, finish_time}`` out.

Connection rules: over ``proctor_max_connections`` (or ``proctor_max_connections_per_ip`` from one
address) the socket is told ``CONNECTION_REFUSED`` and closed with 4002; a socket without a valid
first message (a registered client, with its token where one is needed) within
``proctor_handshake_timeout`` is told ``AUTHENTICATION_FAILED`` and closed with 4001, as is one
presenting a wrong or missing token (``token`` in the message or ``?token=``); a ``user_name``
outside the safe charset is never echoed back; an unknown client gets ACTION_ERROR /
REASON_CLIENT_NOT_AVAILABLE and the close code 4001; a blocked client gets ACTION_ERROR /
REASON_BLOCKED_CLIENT and the close code 1008 (also at once when an admin blocks it
mid-connection). Decoding and every check run on the thread pool; a frame slower than
``proctor_processing_timeout`` is answered PROCESSING_TIMEOUT. Malformed messages are
answered with ACTION_ERROR / INVALID_IMAGE_FORMAT and the connection stays usable.

Bounded latency under overload: every frame gets exactly one reply, but only the newest waiting
frame of a connection is decided. Each connection has one "latest frame" slot: while one of its
frames is being decided (or waits for a free worker), a newer frame replaces the waiting one, and
the replaced frame is answered at once with ``NO_ACTION`` / ``EMPTY_REASON`` and
``"superseded": true`` (it was never checked, so it neither acts nor counts towards debouncing;
the newer frame's decision follows). Across connections at most ``thread_pool_size`` frames are
decided at once (a semaphore; a frame past ``proctor_processing_timeout`` keeps its permit until
its thread is free), so the server holds at most one waiting and one deciding frame per connection
and never queues unboundedly. A frame's ``timestamp`` (a string or number) is echoed in its reply so
clients can match replies, which may arrive out of order when frames are superseded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from faceport.api.context import AppContext
from faceport.errors import InvalidImage
from faceport.services.proctor import Action, Decision, ProctorService, Reason
from faceport.store.proctor import USER_NAME_RULE, valid_user_name

log = logging.getLogger(__name__)

CLOSE_NETWORK_ERROR = 4000
CLOSE_AUTHENTICATION_FAILED = 4001
CLOSE_CONNECTION_REFUSED = 4002
CLOSE_BLOCKED = 1008
_NOT_JSON = object()


def _clock() -> str:
    return time.strftime("%H-%M-%S")


class ProctorHub:
    """Counts live connections of one app, in all and per client address; bounds decisions in flight."""

    def __init__(self) -> None:
        self.connections = 0
        self.per_address: dict[str, int] = {}
        self.max_in_flight = 0
        self.permits = asyncio.Semaphore(0)  # sized by bind() on the first connection
        self.in_flight = 0  # frames on the thread pool now (their permit is held)
        self.peak_in_flight = 0
        self.decided = 0  # frames run through decode + checks
        self.superseded = 0  # frames replaced by a newer one before they were decided
        self._shared: Any = None  # SharedConnectionSlots with FACEPORT_REDIS_URL

    def bind(self, max_in_flight: int) -> None:
        """Size the decision semaphore (the app's thread pool size) once, inside the serving event loop."""
        if self.max_in_flight == 0:
            self.max_in_flight = max_in_flight
            self.permits = asyncio.Semaphore(max_in_flight)

    def started(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def finished(self, _future: object = None) -> None:
        self.in_flight -= 1
        self.decided += 1
        self.permits.release()

    def shared_slots(self, settings: Any) -> Any:
        """Redis-counted caps across nodes (``FACEPORT_REDIS_URL``), built in the serving loop; else ``None``."""
        if self._shared is None and settings.redis_url:
            from faceport.services.proctor import SharedConnectionSlots

            self._shared = SharedConnectionSlots(settings.redis_url)
        return self._shared

    def leave(self, address: str) -> None:
        self.connections -= 1
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)


async def _refuse(websocket: WebSocket, error: str, message: str, code: int) -> None:
    """Seed C's connection error (``{error, message, code}``), then close with ``code``."""
    await websocket.send_json({"error": error, "message": message, "code": code})
    await websocket.close(code=code)


def _answer(decision: Decision, send_time: str) -> dict[str, Any]:
    reply = {"action": decision.action.name, "reason": decision.reason.name,
             "actual_username": decision.actual_username, "send_time": send_time, "finish_time": _clock()}
    if decision.message is not None:
        reply["message"] = decision.message
    return reply


def _error(reason: str, message: str, send_time: str) -> dict[str, Any]:
    return {"action": Action.ACTION_ERROR.name, "reason": reason, "message": message,
            "send_time": send_time, "finish_time": _clock()}


SUPERSEDED_MESSAGE = "frame not checked: a newer frame from this connection replaced it while waiting"


@dataclass(slots=True)
class _Frame:
    user_name: str
    image: object
    send_time: str
    timestamp: str | int | float | None


def _timestamp(message: dict[str, Any]) -> str | int | float | None:
    """The frame's ``timestamp`` when it is a short string or a number (echoed in the reply), else ``None``."""
    value = message.get("timestamp")
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 64):
        return value
    return None


def _stamped(reply: dict[str, Any], frame: _Frame) -> dict[str, Any]:
    if frame.timestamp is not None:
        reply["timestamp"] = frame.timestamp
    return reply


class _Slot:
    """One connection's newest waiting frame and the task that decides frames one at a time."""

    def __init__(self, websocket: WebSocket, hub: ProctorHub, ctx: AppContext) -> None:
        self.websocket = websocket
        self.hub = hub
        self.ctx = ctx
        self.waiting: _Frame | None = None
        self.ready = asyncio.Event()
        self.send_lock = asyncio.Lock()

    async def send(self, reply: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.websocket.send_json(reply)

    async def put(self, frame: _Frame) -> None:
        """Make ``frame`` the waiting one; the frame it replaces is answered as superseded at once."""
        old, self.waiting = self.waiting, frame
        self.ready.set()
        if old is not None:
            self.hub.superseded += 1
            reply = _answer(Decision(Action.NO_ACTION, Reason.EMPTY_REASON, old.user_name), old.send_time)
            await self.send(_stamped({**reply, "superseded": True, "message": SUPERSEDED_MESSAGE}, old))

    async def decide_forever(self) -> None:
        """Decide the newest waiting frame whenever a permit is free; returns after closing a blocked socket."""
        service: ProctorService = self.ctx.proctor
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            await self.hub.permits.acquire()
            frame, self.waiting = self.waiting, None
            self.ready.clear()
            if frame is None:  # cannot happen (only this task takes frames); keep the permit count right
                self.hub.permits.release()
                continue
            future = loop.run_in_executor(self.ctx.executor, _decode_and_check, service, frame.user_name, frame.image)
            self.hub.started()
            future.add_done_callback(self.hub.finished)  # the permit is held until the thread is free
            done, _ = await asyncio.wait({future}, timeout=self.ctx.settings.proctor_processing_timeout)
            if not done:
                await self.send(_stamped(_error("PROCESSING_TIMEOUT", "Processing took too long", frame.send_time),
                                         frame))
                await asyncio.wait({future})  # this client's next frame waits for its thread (client.lock)
                if not future.cancelled():
                    future.exception()  # retrieved: the late result or error is dropped
                continue
            try:
                decision = future.result()
            except InvalidImage as exc:
                await self.send(_stamped(_error("INVALID_IMAGE_FORMAT", exc.message, frame.send_time), frame))
                continue
            await self.send(_stamped(_answer(decision, frame.send_time), frame))
            user_name = frame.user_name
            client = service.client(user_name)
            if decision.reason is Reason.REASON_BLOCKED_CLIENT or client is None or client.state == "blocked":
                if decision.reason is not Reason.REASON_BLOCKED_CLIENT:
                    await self.send(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_BLOCKED_CLIENT, user_name),
                                            _clock()))
                await self.websocket.close(code=CLOSE_BLOCKED)
                return


def _decode_and_check(service: ProctorService, user_name: str, image: object) -> Decision:
    """Decode and check one frame in a single trip to the thread pool (blocking). Raises: InvalidImage."""
    return service.check_frame(user_name, service.decode(image))


async def _receive_text(websocket: WebSocket) -> str | None:
    """The next message as text; a binary message is read as UTF-8 (``None`` when it is not UTF-8).

    Raises:
        WebSocketDisconnect: the client went away.
    """
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None


async def proctor_socket(websocket: WebSocket) -> None:
    """Serve one proctoring connection."""
    app = websocket.app
    ctx: AppContext = app.state.context
    hub: ProctorHub = app.state.proctor_hub
    service: ProctorService = ctx.proctor
    await websocket.accept()
    settings = ctx.settings
    address = websocket.client.host if websocket.client else "unknown"
    per_address = settings.proctor_max_connections_per_ip
    slot_token: str | None = None
    refused: str | None = None
    shared = hub.shared_slots(settings)
    if shared is not None:  # several nodes: the caps hold across all of them
        try:
            slot_token = await shared.acquire(address, max_total=settings.proctor_max_connections,
                                              max_per_address=per_address)
            refused = shared.refused if slot_token is None else None
        except Exception as exc:  # Redis down: this node's own counts still bound it
            log.warning("proctoring: shared connection caps unavailable (%s); counting on this node only", exc)
            shared = None
    if refused is None and hub.connections >= settings.proctor_max_connections:
        refused = "total"
    if refused is None and per_address and hub.per_address.get(address, 0) >= per_address:
        refused = "address"
    if refused is not None:
        if slot_token is not None and shared is not None:
            await shared.release(slot_token)
        message = "Server is at full capacity" if refused == "total" else "Too many connections from this address"
        await _refuse(websocket, "CONNECTION_REFUSED", message, CLOSE_CONNECTION_REFUSED)
        return
    hub.connections += 1
    hub.per_address[address] = hub.per_address.get(address, 0) + 1
    hub.bind(settings.thread_pool_size)
    query_token = websocket.query_params.get("token")
    authenticated: set[str] = set()  # user_names this connection has proven (token checked once per name)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = None
    subscribed_as: str | None = None
    handshake_deadline = loop.time() + settings.proctor_handshake_timeout
    slot = _Slot(websocket, hub, ctx)
    decider = asyncio.ensure_future(slot.decide_forever())
    pending: list[asyncio.Future[Any]] = [decider]  # cancelled when the connection ends

    def wake(_state: str) -> None:  # an admin changed the client's state (called from any thread)
        loop.call_soon_threadsafe(changed.set)

    try:
        while True:
            receive = asyncio.ensure_future(_receive_text(websocket))
            waiter = asyncio.ensure_future(changed.wait())
            pending[1:] = [receive, waiter]
            timeout = None if authenticated else max(0.0, handshake_deadline - loop.time())
            done, _ = await asyncio.wait({receive, waiter, decider}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if decider in done:  # it closed a blocked client's socket, or the socket failed under it
                if not decider.cancelled() and decider.exception() is not None and \
                        not isinstance(decider.exception(), (WebSocketDisconnect, RuntimeError, OSError)):
                    log.error("proctoring: deciding frames failed", exc_info=decider.exception())
                return
            if not done:  # no valid first message in time: an idle socket must not hold a connection slot
                log.info("proctoring: closing a connection from %s without a valid first message", address)
                await _refuse(websocket, "AUTHENTICATION_FAILED",
                              f"No valid first message within {settings.proctor_handshake_timeout:g} s",
                              CLOSE_AUTHENTICATION_FAILED)
                return
            if receive not in done:
                receive.cancel()
                changed.clear()
                client = service.client(subscribed_as or "")
                if client is None or client.state == "blocked":
                    reason = Reason.REASON_BLOCKED_CLIENT if client else Reason.REASON_CLIENT_NOT_AVAILABLE
                    await slot.send(_answer(Decision(Action.ACTION_ERROR, reason, subscribed_as or ""), _clock()))
                    await websocket.close(code=CLOSE_BLOCKED if client else CLOSE_AUTHENTICATION_FAILED)
                    return
                continue
            waiter.cancel()
            text = receive.result()
            send_time = _clock()
            try:
                message = json.loads(text) if text is not None else _NOT_JSON
            except ValueError:
                message = _NOT_JSON
            if message is _NOT_JSON:
                await slot.send(_error("INVALID_IMAGE_FORMAT", "message is not JSON", send_time))
                continue
            if not isinstance(message, dict):
                await slot.send(_error("INVALID_IMAGE_FORMAT", "message must be a JSON object", send_time))
                continue
            user_name = message.get("user_name")
            if not valid_user_name(user_name):  # never looked up, never echoed back
                reply = _answer(Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE, ""), send_time)
                await slot.send({**reply, "message": USER_NAME_RULE})
                await websocket.close(code=CLOSE_AUTHENTICATION_FAILED)
                return
            assert isinstance(user_name, str)
            client = service.client(user_name)
            if client is None:
                await slot.send(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE,
                                                 user_name), send_time))
                await websocket.close(code=CLOSE_AUTHENTICATION_FAILED)
                return
            if user_name not in authenticated:
                if not service.token_accepted(client, message.get("token", query_token)):
                    log.info("proctoring: wrong or missing token for a client from %s", address)
                    async with slot.send_lock:
                        await _refuse(websocket, "AUTHENTICATION_FAILED", "Wrong or missing client token",
                                      CLOSE_AUTHENTICATION_FAILED)
                    return
                authenticated.add(user_name)
            if subscribed_as != user_name:
                if unsubscribe is not None:
                    unsubscribe()
                subscribed_as = user_name
                unsubscribe = service.subscribe(user_name, wake)
            frame = _Frame(user_name, message.get("image"), send_time, _timestamp(message))
            if client.state == "blocked":
                await slot.send(_stamped(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_BLOCKED_CLIENT,
                                                          user_name), send_time), frame))
                await websocket.close(code=CLOSE_BLOCKED)
                return
            if client.state == "paused":
                await slot.send(_stamped(_answer(Decision(Action.ACTION_WARNING, Reason.REASON_PAUSED_CLIENT,
                                                          user_name), send_time), frame))
                continue
            try:  # a missing or oversized image is answered at once, never queued
                service.check_image_field(frame.image)
            except InvalidImage as exc:
                await slot.send(_stamped(_error("INVALID_IMAGE_FORMAT", exc.message, send_time), frame))
                continue
            await slot.put(frame)  # decided by the slot's task; a frame still waiting there is superseded
    except WebSocketDisconnect:
        pass
    finally:
        for task in pending:
            if not task.done():
                task.cancel()
        hub.leave(address)
        if unsubscribe is not None:
            unsubscribe()
        if slot_token is not None and shared is not None:
            try:
                await shared.release(slot_token)
            except Exception as exc:  # the slot expires by itself
                log.warning("proctoring: could not free a shared connection slot: %s", exc)


def install_proctor(app: FastAPI) -> None:
    """Register ``/ws`` on the main app."""
    app.state.proctor_hub = ProctorHub()
    app.add_api_websocket_route("/ws", proctor_socket, name="proctor_ws")
