"""User notifications (seed D's ``/ws/notifications``): job finished, batch progress, model loaded/unloaded.

:class:`Notifier` delivers an event to the subscribers it is meant for: the owner of a job, or
every admin for system events (model loads). ``publish`` is thread-safe and never raises, so job
workers and services call it freely. Without Redis events reach the subscribers of this process;
with ``FACEPORT_REDIS_URL`` every event goes through one Redis pub/sub channel
(``FACEPORT_WS_REDIS_CHANNEL``) and each process delivers what it receives there to its own
subscribers, so a job finished on a worker or on another API node reaches the user's socket
wherever it is connected. When Redis cannot be reached the event is delivered locally (logged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class _Subscriber:
    callback: Callback
    owner: str
    is_admin: bool


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notifier:
    """Routes events to subscribed sockets, across processes through Redis when configured.

    Args:
        redis_url: ``FACEPORT_REDIS_URL`` or ``None`` (this process only).
        channel: the Redis pub/sub channel.
    """

    def __init__(self, redis_url: str | None = None, channel: str = "faceport:notify") -> None:
        self.redis_url = redis_url
        self.channel = channel
        self._lock = threading.Lock()
        self._subscribers: dict[int, _Subscriber] = {}
        self._next = 0
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._publisher: Any = None
        self.delivered = 0

    # ---- subscribing ----------------------------------------------------------------------
    def subscribe(self, callback: Callback, *, owner: str, is_admin: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` (from any thread) for events of ``owner`` (and system events for admins).

        Returns:
            A function that ends the subscription.
        """
        with self._lock:
            key = self._next
            self._next += 1
            self._subscribers[key] = _Subscriber(callback, owner, is_admin)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    # ---- publishing ---------------------------------------------------------------------
    def publish(self, event_type: str, data: dict[str, Any], *, owner: str | None = None,
                admins: bool = False) -> None:
        """Send an event to ``owner``'s subscribers, and to every admin's when ``admins``; never raises."""
        event = {"id": uuid.uuid4().hex[:16], "type": event_type, "owner": owner, "admins": admins,
                 "timestamp": _now_iso(), "data": data}
        if self.redis_url and self._listening.is_set():
            try:
                self._redis().publish(self.channel, json.dumps(event, default=str))
                return
            except Exception as exc:  # Redis down: this node's subscribers still hear it
                log.warning("notifications: Redis publish failed (%s); delivering on this node only", exc)
                self._publisher = None
        self._deliver(event)

    def _redis(self) -> Any:
        if self._publisher is None:
            import redis

            self._publisher = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        return self._publisher

    def _deliver(self, event: dict[str, Any]) -> None:
        owner, admins = event.get("owner"), bool(event.get("admins"))
        with self._lock:
            targets = [s for s in self._subscribers.values()
                       if (owner is not None and s.owner == owner) or (admins and s.is_admin)]
        for subscriber in targets:
            try:
                subscriber.callback(event)
                self.delivered += 1
            except Exception:  # one broken socket must not stop the others' events
                log.exception("notifications: a subscriber failed")

    # ---- cross-node listener ------------------------------------------------------------
    def start(self, wait: float = 3.0) -> None:
        """Start listening on the Redis channel (when configured); waits up to ``wait`` s for the subscription."""
        if not self.redis_url or self._listener is not None:
            return
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, name="faceport-notify", daemon=True)
        self._listener.start()
        self._listening.wait(wait)

    def _listen(self) -> None:
        import redis

        backoff = 0.5
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._listening.set()
                backoff = 0.5
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        event = json.loads(message["data"])
                    except (TypeError, ValueError):
                        continue
                    if isinstance(event, dict):
                        self._deliver(event)
            except Exception as exc:  # reconnect: events meanwhile are delivered locally by publish()
                self._listening.clear()
                log.warning("notifications: Redis subscription lost (%s); retrying in %.1f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(10.0, backoff * 2)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # closing a broken connection
                    pass
        self._listening.clear()

    @property
    def cross_node(self) -> bool:
        """Whether events currently travel through Redis."""
        return self._listening.is_set()

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:  # already broken
                pass
            self._publisher = None


class Throttle:
    """True at most once per ``interval`` seconds (and always when forced): for progress events."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -float("inf")

    def __call__(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False
