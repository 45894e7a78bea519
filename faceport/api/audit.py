"""Seed D's audit log: one JSON line per request on every app, personal data masked.

Each line: ``time``, ``app``, ``request_id``, ``principal`` (``user:<id>`` / ``key:<id>``, never a
name), ``user`` (the name, masked), ``type`` (``http``/``websocket``), ``method``, ``route`` (the
route template, e.g. ``/api/v1/face/subjects/{subject_id}``), ``path`` (e-mail addresses masked;
never the query string, which may carry keys or tokens), ``status``, ``latency_ms``, ``model``
(``X-Model-Used``), ``client_ip``. Request and response bodies (images) are never read.

A WebSocket (``/ws``, Socket.IO's upgrade) is logged once, at its handshake: status 101 when
accepted, else the refusal's status.

The file is ``FACEPORT_AUDIT_LOG`` (default ``<home>/audit.log``; ``off`` disables it), rotated by
:class:`logging.handlers.RotatingFileHandler` at ``FACEPORT_AUDIT_LOG_MAX_BYTES`` keeping
``FACEPORT_AUDIT_LOG_BACKUPS`` files. The main and privacy apps of one process share one handler
per file; several worker processes must each be given their own file.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.config import Settings

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-])[A-Za-z0-9.-]*?(\.[A-Za-z]{2,24})\b")


def mask_email(text: str) -> str:
    """Mask every e-mail address in ``text``: first letters and the top-level domain stay.

    Examples:
        >>> mask_email("mail john.doe@example.com now")
        'mail j***@e***.com now'
    """
    return _EMAIL.sub(r"\1***@\2***\3", text)


def mask_name(name: str | None) -> str | None:
    """A user or key name reduced to its first character (an e-mail keeps its first letters and TLD).

    Examples:
        >>> mask_name("alice"), mask_name("apikey:ci-runner"), mask_name("ada@example.org"), mask_name(None)
        ('a***', 'apikey:c***', 'a***@e***.org', None)
    """
    if name is None:
        return None
    if "@" in name and _EMAIL.search(name):
        return mask_email(name)
    prefix, _, rest = name.rpartition(":")
    kept = f"{prefix}:" if prefix else ""
    return f"{kept}{rest[:1]}***" if rest else f"{kept}***"


class _SharedHandlers:
    """One rotating handler per file in this process, closed when its last user closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[Path, tuple[RotatingFileHandler, int]] = {}

    def acquire(self, path: Path, max_bytes: int, backups: int) -> RotatingFileHandler:
        key = path.resolve()
        with self._lock:
            if key in self._handlers:
                handler, users = self._handlers[key]
            else:
                key.parent.mkdir(parents=True, exist_ok=True)
                handler, users = RotatingFileHandler(key, maxBytes=max_bytes, backupCount=backups,
                                                     encoding="utf-8"), 0
                handler.setFormatter(logging.Formatter("%(message)s"))
            self._handlers[key] = (handler, users + 1)
            return handler

    def release(self, path: Path) -> None:
        key = path.resolve()
        with self._lock:
            if key not in self._handlers:
                return
            handler, users = self._handlers[key]
            if users <= 1:
                del self._handlers[key]
                handler.close()
            else:
                self._handlers[key] = (handler, users - 1)


_HANDLERS = _SharedHandlers()


class AuditLog:
    """Writes audit lines for one app; the file opens on the first line and closes with :meth:`close`."""

    def __init__(self, settings: Settings, app_name: str) -> None:
        self.path = settings.audit_log_path
        self.app_name = app_name
        self._max_bytes = settings.audit_log_max_bytes
        self._backups = settings.audit_log_backups
        self._handler: RotatingFileHandler | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._handler is None:
            self._handler = _HANDLERS.acquire(self.path, self._max_bytes, self._backups)
        line = json.dumps({"time": _now(), "app": self.app_name, **entry}, separators=(",", ":"), default=str)
        record = logging.LogRecord("faceport.audit", logging.INFO, __file__, 0, line, None, None)
        self._handler.handle(record)

    def close(self) -> None:
        if self._handler is not None and self.path is not None:
            self._handler = None
            _HANDLERS.release(self.path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _route_template(scope: Scope) -> str | None:
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else None


def _principal(state: dict[str, Any]) -> tuple[str | None, str | None]:
    principal = state.get("principal")
    if principal is None:
        return None, None
    return principal.rate_key, mask_name(principal.username)


def _model_used(state: dict[str, Any]) -> str | None:
    value = state.get("model_used")
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(str(v) for v in value)


class AuditMiddleware:
    """Pure ASGI: logs when the response is complete (HTTP) or at the handshake (WebSocket); bodies untouched."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.audit.enabled:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        outcome: dict[str, Any] = {"status": None, "logged": False}

        def record() -> None:
            if outcome["logged"]:
                return
            outcome["logged"] = True
            principal, user = _principal(state)
            client = scope.get("client")
            try:
                self.audit.write({
                    "request_id": state.get("request_id"), "principal": principal, "user": user,
                    "type": scope["type"], "method": scope.get("method", "GET"), "route": _route_template(scope),
                    "path": mask_email(scope.get("path", ""))[:512], "status": outcome["status"] or 500,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2), "model": _model_used(state),
                    "client_ip": client[0] if client else None})
            except OSError:  # a full disk must not fail the request
                log.exception("could not write the audit log %s", self.audit.path)

        async def send_and_note(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                outcome["status"] = message["status"]
            elif kind == "websocket.accept":
                outcome["status"] = 101
                record()
            elif kind == "websocket.close" and outcome["status"] is None:
                outcome["status"] = 403  # closed before accepting: the server answers the handshake with 403
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            record()
