"""Change notices between processes sharing one database: Redis pub/sub, one channel per topic.

A process that commits a change to state other processes cache in memory (the gallery index, the
proctoring client registry) calls :meth:`ChangeNotices.announce`; every other process watching the
topic runs its reload function, in a thread of its own per topic, so bursts of notices coalesce into
one reload. After a lost Redis connection every watched topic reloads once, since notices may have
been missed. Notices are best effort: the database stays the truth.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "faceport:changed:"


class ChangeNotices:
    """Announce and hear changes over Redis (``FACEPORT_REDIS_URL``).

    Args:
        redis_url: The Redis every process uses.
        origin: This process's name; its own notices are not heard back.
    """

    def __init__(self, redis_url: str, origin: str) -> None:
        import redis

        self.origin = f"{origin}:{id(self):x}"
        self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=2.0)
        self._listen = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, health_check_interval=10)
        self._topics: dict[str, tuple[Callable[[], None], threading.Event]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.reloads: dict[str, int] = {}

    def watch(self, topic: str, reload: Callable[[], None]) -> None:
        """Run ``reload`` (blocking is fine) after other processes announce ``topic``. Call before :meth:`start`."""
        self._topics[topic] = (reload, threading.Event())

    def announce(self, topic: str) -> None:
        """Tell the other processes ``topic`` changed (raises on a Redis error; callers log it)."""
        self._redis.publish(CHANNEL_PREFIX + topic, json.dumps({"origin": self.origin}))

    def start(self) -> None:
        self._spawn(self._subscribe, "faceport-notices")
        for topic in self._topics:
            self._spawn(lambda topic=topic: self._reload_loop(topic), f"faceport-reload-{topic}")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for _, dirty in self._topics.values():
            dirty.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._redis.close()
        self._listen.close()

    def _subscribe(self) -> None:
        import redis

        connected_before = False
        while not self._stop.is_set():
            try:
                pubsub = self._listen.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(*(CHANNEL_PREFIX + topic for topic in self._topics))
                if connected_before:  # notices sent while we were away are lost: catch up once
                    for _, dirty in self._topics.values():
                        dirty.set()
                connected_before = True
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None or message.get("type") != "message":
                        continue
                    channel = message["channel"].decode() if isinstance(message["channel"], bytes) \
                        else str(message["channel"])
                    try:
                        origin = json.loads(message["data"]).get("origin")
                    except (ValueError, AttributeError):
                        origin = None
                    watched = self._topics.get(channel.removeprefix(CHANNEL_PREFIX))
                    if watched is not None and origin != self.origin:
                        watched[1].set()
                pubsub.close()
            except (redis.RedisError, OSError) as exc:
                log.warning("change notices: Redis unreachable (%s); retrying", exc)
                self._stop.wait(1.0)

    def _reload_loop(self, topic: str) -> None:
        reload, dirty = self._topics[topic]
        while not self._stop.is_set():
            dirty.wait()
            if self._stop.is_set():
                return
            dirty.clear()
            try:
                reload()
                self.reloads[topic] = self.reloads.get(topic, 0) + 1
            except Exception:
                log.exception("change notices: reloading %s failed; retrying in a second", topic)
                self._stop.wait(1.0)
                dirty.set()
