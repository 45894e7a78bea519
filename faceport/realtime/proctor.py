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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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
    """Counts live connections of one app, in all and per client address."""

    def __init__(self) -> None:
        self.connections = 0
        self.per_address: dict[str, int] = {}

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
    return {"action": decision.action.name, "reason": decision.reason.name,
            "actual_username": decision.actual_username, "send_time": send_time, "finish_time": _clock()}


def _error(reason: str, message: str, send_time: str) -> dict[str, Any]:
    return {"action": Action.ACTION_ERROR.name, "reason": reason, "message": message,
            "send_time": send_time, "finish_time": _clock()}


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
    if hub.connections >= settings.proctor_max_connections:
        await _refuse(websocket, "CONNECTION_REFUSED", "Server is at full capacity", CLOSE_CONNECTION_REFUSED)
        return
    per_address = settings.proctor_max_connections_per_ip
    if per_address and hub.per_address.get(address, 0) >= per_address:
        await _refuse(websocket, "CONNECTION_REFUSED", "Too many connections from this address",
                      CLOSE_CONNECTION_REFUSED)
        return
    hub.connections += 1
    hub.per_address[address] = hub.per_address.get(address, 0) + 1
    query_token = websocket.query_params.get("token")
    authenticated: set[str] = set()  # user_names this connection has proven (token checked once per name)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = None
    subscribed_as: str | None = None
    handshake_deadline = loop.time() + settings.proctor_handshake_timeout
    try:
        while True:
            receive = asyncio.ensure_future(_receive_text(websocket))
            waiter = asyncio.ensure_future(changed.wait())
            timeout = None if authenticated else max(0.0, handshake_deadline - loop.time())
            done, _ = await asyncio.wait({receive, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:  # no valid first message in time: an idle socket must not hold a connection slot
                receive.cancel()
                waiter.cancel()
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
                    await websocket.send_json(_answer(Decision(Action.ACTION_ERROR, reason, subscribed_as or ""),
                                                      _clock()))
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
                await websocket.send_json(_error("INVALID_IMAGE_FORMAT", "message is not JSON", send_time))
                continue
            if not isinstance(message, dict):
                await websocket.send_json(_error("INVALID_IMAGE_FORMAT", "message must be a JSON object", send_time))
                continue
            user_name = message.get("user_name")
            if not valid_user_name(user_name):  # never looked up, never echoed back
                reply = _answer(Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE, ""), send_time)
                await websocket.send_json({**reply, "message": USER_NAME_RULE})
                await websocket.close(code=CLOSE_AUTHENTICATION_FAILED)
                return
            assert isinstance(user_name, str)
            client = service.client(user_name)
            if client is None:
                await websocket.send_json(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE,
                                                           user_name), send_time))
                await websocket.close(code=CLOSE_AUTHENTICATION_FAILED)
                return
            if user_name not in authenticated:
                if not service.token_accepted(client, message.get("token", query_token)):
                    log.info("proctoring: wrong or missing token for a client from %s", address)
                    await _refuse(websocket, "AUTHENTICATION_FAILED", "Wrong or missing client token",
                                  CLOSE_AUTHENTICATION_FAILED)
                    return
                authenticated.add(user_name)
            if subscribed_as != user_name:
                if unsubscribe is not None:
                    unsubscribe()
                subscribed_as = user_name
                unsubscribe = service.subscribe(user_name, lambda _s: loop.call_soon_threadsafe(changed.set))
            if client.state == "blocked":
                await websocket.send_json(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_BLOCKED_CLIENT,
                                                           user_name), send_time))
                await websocket.close(code=CLOSE_BLOCKED)
                return
            if client.state == "paused":
                await websocket.send_json(_answer(Decision(Action.ACTION_WARNING, Reason.REASON_PAUSED_CLIENT,
                                                           user_name), send_time))
                continue
            try:
                image = await ctx.run(service.decode, message.get("image"))
                decision = await asyncio.wait_for(ctx.run(service.check_frame, user_name, image),
                                                  timeout=ctx.settings.proctor_processing_timeout)
            except InvalidImage as exc:
                await websocket.send_json(_error("INVALID_IMAGE_FORMAT", exc.message, send_time))
                continue
            except TimeoutError:
                await websocket.send_json(_error("PROCESSING_TIMEOUT", "Processing took too long", send_time))
                continue
            await websocket.send_json(_answer(decision, send_time))
            if decision.reason is Reason.REASON_BLOCKED_CLIENT or service.client(user_name) is None or \
                    service.client(user_name).state == "blocked":  # type: ignore[union-attr]
                if decision.reason is not Reason.REASON_BLOCKED_CLIENT:
                    await websocket.send_json(_answer(Decision(Action.ACTION_ERROR, Reason.REASON_BLOCKED_CLIENT,
                                                               user_name), _clock()))
                await websocket.close(code=CLOSE_BLOCKED)
                return
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(address)
        if unsubscribe is not None:
            unsubscribe()


def install_proctor(app: FastAPI) -> None:
    """Register ``/ws`` on the main app."""
    app.state.proctor_hub = ProctorHub()
    app.add_api_websocket_route("/ws", proctor_socket, name="proctor_ws")
