"""Seed E live rooms: who owns a room, what it filters, whether it streams.

State lives in process memory, or in Redis when ``FACEPORT_REDIS_URL`` is set so that every node
sees every room (a room's media still flows through the node that holds its publisher).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from faceport.engine.redact import ClassOptions, RedactOptions
from faceport.errors import FaceportError, InvalidInput, NotFound, StateUnavailable

log = logging.getLogger(__name__)

CONFIG_FIELDS: Final = ("face_blur", "plate_blur", "text_blur", "audio_processing", "audio_mode")
AUDIO_MODES: Final = ("bleep", "mute")
_PREFIX: Final = "faceport:privastream:room:"


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Seed E's ``start_processing`` config. Faces are hidden until the owner says otherwise."""

    face_blur: bool = True
    plate_blur: bool = False
    text_blur: bool = False
    audio_processing: bool = False
    # faceport's addition: with audio_processing, "mute" all (default) or "bleep" spoken personal data
    # (experimental: fragments of an item can still sound; see README "Live privacy filter")
    audio_mode: str = "mute"

    def redact_options(self) -> RedactOptions:
        # live video: full detection every 3rd frame, tracking in between; plates/text every 15th
        return RedactOptions(faces=ClassOptions(self.face_blur, 0.4), plates=ClassOptions(self.plate_blur, 0.25),
                             text=ClassOptions(self.text_blur, 0.35), detect_every=3, text_every=15)


def parse_live_config(data: Any) -> LiveConfig:
    """Validate ``start_processing``'s ``config`` (missing fields keep their defaults).

    Raises:
        InvalidInput: not an object, an unknown field, or a value that is not a boolean.
    """
    if data is None:
        return LiveConfig()
    if not isinstance(data, dict):
        raise InvalidInput("config: expected an object", details={"field": "config"})
    unknown = sorted(set(data) - set(CONFIG_FIELDS))
    if unknown:
        raise InvalidInput(f"config: unknown field {unknown[0]!r}; expected {', '.join(CONFIG_FIELDS)}",
                           details={"field": f"config.{unknown[0]}"})
    for name, value in data.items():
        if name == "audio_mode":
            if value not in AUDIO_MODES:
                raise InvalidInput(f"config.audio_mode: expected one of {', '.join(AUDIO_MODES)}",
                                   details={"field": "config.audio_mode"})
            continue
        if not isinstance(value, bool):
            raise InvalidInput(f"config.{name}: expected a boolean (true or false)",
                               details={"field": f"config.{name}"})
    return LiveConfig(**data)


def parse_room_id(value: Any) -> str:
    """A room id as the client sent it (``{roomId}``), checked for shape.

    Raises:
        InvalidInput: missing or not a room id.
    """
    if isinstance(value, dict):
        value = value.get("roomId")
    if not isinstance(value, str) or not value:
        raise InvalidInput("roomId: expected a room id string", details={"field": "roomId"})
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"room {value[:64]!r} not found", details={"field": "roomId"}) from None


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    owner: str
    created_at: float = field(default_factory=time.time)
    config: LiveConfig = field(default_factory=LiveConfig)
    streaming: bool = False
    processing: bool = False
    publisher_node: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Room:
        data = json.loads(raw)
        data["config"] = LiveConfig(**data.get("config") or {})
        return cls(**data)

    def public(self) -> dict[str, Any]:
        return {"roomId": self.room_id, "owner": self.owner, "createdAt": self.created_at,
                "streaming": self.streaming, "processing": self.processing, "config": asdict(self.config)}


def visible(room: Room, owner: str, *, admin: bool = False) -> bool:
    """Whether ``owner`` may see and steer ``room``."""
    return admin or room.owner == owner


class RoomStore:
    """Rooms in this process's memory."""

    def __init__(self, *, max_rooms: int, ttl: float) -> None:
        self.max_rooms = max_rooms
        self.ttl = ttl
        self._rooms: dict[str, Room] = {}

    async def create(self, owner: str) -> Room:
        """Raises: FaceportError TOO_MANY_ROOMS."""
        if len(await self.list()) >= self.max_rooms:
            raise _too_many(self.max_rooms)
        room = Room(str(uuid.uuid4()), owner)
        await self.put(room)
        return room

    async def get(self, room_id: str) -> Room:
        """Raises: NotFound."""
        room = self._rooms.get(room_id)
        if room is None:
            raise NotFound(f"room {room_id} not found", details={"field": "roomId"})
        return room

    async def put(self, room: Room) -> None:
        self._rooms[room.room_id] = room

    async def update(self, room_id: str, **changes: Any) -> Room:
        room = replace(await self.get(room_id), **changes)
        await self.put(room)
        return room

    async def delete(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    async def list(self) -> list[Room]:
        now = time.time()
        for room in list(self._rooms.values()):
            if not room.streaming and now - room.created_at > self.ttl:
                self._rooms.pop(room.room_id, None)
        return sorted(self._rooms.values(), key=lambda r: r.created_at)

    async def aclose(self) -> None:
        self._rooms.clear()


class RedisRoomStore(RoomStore):
    """Rooms in Redis (one key per room, expiring after the idle TTL), shared by every node."""

    def __init__(self, url: str, *, max_rooms: int, ttl: float) -> None:
        super().__init__(max_rooms=max_rooms, ttl=ttl)
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except FaceportError:
            raise
        except Exception as exc:  # redis down: say so in the surface's error
            log.warning("rooms: redis %s failed: %s", what, exc)
            raise StateUnavailable("shared room state (Redis) is unreachable; try again") from None

    async def get(self, room_id: str) -> Room:
        raw = await self._call("get", self._redis.get(_PREFIX + room_id))
        if raw is None:
            raise NotFound(f"room {room_id} not found", details={"field": "roomId"})
        return Room.from_json(raw)

    async def put(self, room: Room) -> None:
        await self._call("set", self._redis.set(_PREFIX + room.room_id, room.to_json(), ex=max(1, int(self.ttl))))

    async def delete(self, room_id: str) -> None:
        await self._call("delete", self._redis.delete(_PREFIX + room_id))

    async def list(self) -> list[Room]:
        keys = [key async for key in self._redis.scan_iter(match=_PREFIX + "*", count=500)]
        if not keys:
            return []
        values = await self._call("mget", self._redis.mget(keys))
        return sorted((Room.from_json(v) for v in values if v is not None), key=lambda r: r.created_at)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _too_many(limit: int) -> FaceportError:
    return FaceportError(f"too many rooms open (limit {limit}, FACEPORT_STREAM_MAX_ROOMS); close one or retry later",
                         code="TOO_MANY_ROOMS", details={"limit": limit})


def room_store(redis_url: str | None, *, max_rooms: int, ttl: float) -> RoomStore:
    if redis_url:
        return RedisRoomStore(redis_url, max_rooms=max_rooms, ttl=ttl)
    return RoomStore(max_rooms=max_rooms, ttl=ttl)
