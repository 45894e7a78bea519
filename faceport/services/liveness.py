"""Active liveness sessions: create a random challenge sequence, take frames, give the verdict.

One :class:`LivenessService` per server process. Sessions are owned: the caller that created
one (its ``Principal.owner``) and admins may send frames to it and read it; anyone else gets
``NOT_FOUND``. A session accepts frames for ``liveness_session_ttl`` seconds of server time;
its verdict stays readable for ``liveness_result_ttl`` seconds more.

State lives in process memory by default and in Redis when ``FACEPORT_REDIS_URL`` is set
(one key per session holding the owner, expiry and the serialised
:class:`~faceport.engine.active_liveness.ActiveSession`, written back after each frame under
a per-session Redis lock), so frames of one session may reach any server process.

:meth:`LivenessService.add_frame` is the one entry for frames: the REST frame route calls it,
and a WebSocket handler (``/ws/face-analysis``) calls it the same way. Every method blocks
(inference, Redis): run them on the thread pool (``AppContext.run``).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from faceport.config import Settings
from faceport.engine.active_liveness import (
    CHALLENGES,
    INSTRUCTIONS,
    TURNS,
    ActiveOptions,
    ActiveSession,
    Challenge,
    FrameOutcome,
    random_challenges,
)
from faceport.engine.core import FaceEngine
from faceport.engine.types import BGRImage
from faceport.errors import FaceportError, InvalidInput, NotFound, StateUnavailable
from faceport.principal import Principal

log = logging.getLogger(__name__)

METHOD = ("active challenge (FaceMesh pose, eye and mouth openness, face size) + 3-D parallax "
          "(homography residual of tracked face points) + identity (dlib_resnet) + presentation cues "
          "(border, moire)")


def analyse_frame(engine: FaceEngine, session: ActiveSession, t: float, image: BGRImage) -> FrameOutcome:
    """Detect the largest face of one frame, add it to ``session`` (embedding only when it asks)."""
    faces = engine.detect(image, landmarks=True)
    if len(faces) == 0:
        return session.add_frame(t, image, None)
    face = faces.sorted_by_area()[0]
    assert face.landmarks is not None

    def embed() -> np.ndarray | None:
        embedded = engine.embedder().embed(image, face)
        return embedded.embedding[0] if embedded.embedding is not None and len(embedded) else None

    return session.add_frame(t, image, face.landmarks[0], face.xyxy[0], embed)


@dataclass
class SessionRecord:
    id: str
    owner: str
    created_at: float  # server epoch seconds
    expires_at: float
    state: ActiveSession


@dataclass(frozen=True, slots=True)
class FrameReport:
    """A session after one frame, and what that frame showed."""

    record: SessionRecord
    outcome: FrameOutcome


class SessionStore(Protocol):
    def put(self, record: SessionRecord) -> None: ...
    def get(self, session_id: str) -> SessionRecord | None: ...
    def lock(self, session_id: str) -> Any: ...  # a context manager serialising one session's frames
    def close(self) -> None: ...


class MemorySessionStore:
    """Sessions in this process's memory; expired ones are dropped ``retention`` seconds after expiry."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._records: dict[str, SessionRecord] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _purge(self, now: float) -> None:
        for key in [k for k, r in self._records.items() if r.expires_at + self.retention < now]:
            self._records.pop(key, None)
            self._locks.pop(key, None)

    def put(self, record: SessionRecord) -> None:
        with self._guard:
            self._purge(time.time())
            self._records[record.id] = record

    def get(self, session_id: str) -> SessionRecord | None:
        with self._guard:
            record = self._records.get(session_id)
            return record if record is None or record.expires_at + self.retention >= time.time() else None

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(session_id, threading.Lock())
        with lock:
            yield

    def close(self) -> None:
        self._records.clear()


class RedisSessionStore:
    """Sessions in Redis (``<prefix>:<id>``), shared by every process using the same URL and prefix."""

    def __init__(self, url: str, *, prefix: str, retention: float) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.prefix = prefix
        self.retention = retention

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:{session_id}"

    @contextmanager
    def _shared(self) -> Iterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as exc:
            raise StateUnavailable("The server cannot reach its shared state; try again shortly",
                                   details={"reason": type(exc).__name__}) from exc

    def put(self, record: SessionRecord) -> None:
        meta = json.dumps({"owner": record.owner, "created_at": record.created_at, "expires_at": record.expires_at})
        ttl_ms = max(1, int((record.expires_at + self.retention - time.time()) * 1000))
        with self._shared():
            self._redis.hset(self._key(record.id), mapping={"meta": meta, "state": record.state.to_bytes()})
            self._redis.pexpire(self._key(record.id), ttl_ms)

    def get(self, session_id: str) -> SessionRecord | None:
        with self._shared():
            values = cast(list[bytes | None], self._redis.hmget(self._key(session_id), ["meta", "state"]))
        if not values or values[0] is None or values[1] is None:
            return None
        meta = json.loads(values[0])
        return SessionRecord(session_id, meta["owner"], meta["created_at"], meta["expires_at"],
                             ActiveSession.from_bytes(values[1]))

    @contextmanager
    def lock(self, session_id: str) -> Iterator[None]:
        with self._shared():
            lock = self._redis.lock(f"{self._key(session_id)}:lock", timeout=30, blocking_timeout=30)
            if not lock.acquire():
                raise StateUnavailable("another frame of this session is still being processed")
        try:
            yield
        finally:
            with self._shared():
                lock.release()

    def close(self) -> None:
        self._redis.close()


class LivenessService:
    """Active-liveness sessions over a :class:`FaceEngine` and a session store."""

    def __init__(self, settings: Settings, engine: FaceEngine, store: SessionStore | None = None,
                 options: ActiveOptions | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.options = options or ActiveOptions(turn_degrees=settings.liveness_turn_degrees,
                                                step_timeout_s=settings.liveness_step_timeout)
        if store is None:
            store = (RedisSessionStore(settings.redis_url, prefix=settings.liveness_redis_prefix,
                                       retention=settings.liveness_result_ttl)
                     if settings.redis_url else MemorySessionStore(settings.liveness_result_ttl))
        self.store = store

    def create(self, principal: Principal, *, challenges: list[str] | None = None,
               length: int | None = None) -> SessionRecord:
        """A new session owned by ``principal`` with a random sequence (``length`` steps).

        ``challenges`` fixes the sequence (admins only: a test and calibration seam; it must hold a turn,
        since only turns measure 3-D consistency).

        Raises:
            FaceportError AUTH_FORBIDDEN: ``challenges`` from a non-admin.
            InvalidInput: unknown or repeated challenges, no turn, or a bad ``length``.
        """
        if challenges is not None:
            if not principal.is_admin:
                raise FaceportError("only admins may fix the challenge sequence", code="AUTH_FORBIDDEN",
                                    details={"field": "challenges"})
            unknown = [c for c in challenges if c not in CHALLENGES]
            if unknown or not challenges or len(challenges) > 8:
                raise InvalidInput(f"challenges must be 1..8 of {', '.join(CHALLENGES)}",
                                   details={"field": "challenges", "unknown": unknown})
            if not any(c in TURNS for c in challenges):
                raise InvalidInput("the challenge sequence needs a turn (turn_left or turn_right): only turns "
                                   "measure 3-D consistency", details={"field": "challenges"})
            sequence: tuple[Challenge, ...] = tuple(challenges)  # type: ignore[arg-type]
        else:
            n = length if length is not None else self.settings.liveness_challenges
            if not 2 <= n <= len(CHALLENGES):
                raise InvalidInput(f"length must be 2..{len(CHALLENGES)}", details={"field": "length"})
            sequence = random_challenges(n)
        now = time.time()
        record = SessionRecord("lv_" + secrets.token_urlsafe(12), principal.owner, now,
                               now + self.settings.liveness_session_ttl, ActiveSession(sequence, self.options))
        self.store.put(record)
        log.info("liveness session %s for %s: %s", record.id, principal.owner, ",".join(sequence))
        return record

    def get(self, session_id: str, principal: Principal) -> SessionRecord:
        """The session, expired if its time ran out.

        Raises:
            NotFound: no such session, or someone else's (admins see every session).
        """
        record = self.store.get(session_id)
        if record is None or (record.owner != principal.owner and not principal.is_admin):
            raise NotFound("no such liveness session", details={"session_id": session_id})
        if time.time() > record.expires_at and record.state.status == "in_progress":
            record.state.expire()
        return record

    def add_frame(self, session_id: str, principal: Principal, image: BGRImage,
                  timestamp_ms: float) -> FrameReport:
        """Analyse one frame of a session (client timestamp in milliseconds) and store the new state.

        A frame arriving after the session finished changes nothing and reports the final state.

        Raises:
            NotFound: as :meth:`get`. InvalidInput: timestamps not increasing, too many frames.
            StateUnavailable: Redis cannot be reached.
        """
        with self.store.lock(session_id):
            record = self.get(session_id, principal)
            state = record.state
            if state.status != "in_progress":
                return FrameReport(record, FrameOutcome(state.status, state.step, False))
            if state.frames >= self.settings.liveness_max_frames:
                state.expire()
                self.store.put(record)
                raise InvalidInput(f"a session takes at most {self.settings.liveness_max_frames} frames",
                                   details={"field": "image"})
            try:
                outcome = analyse_frame(self.engine, state, float(timestamp_ms) / 1000.0, image)
            except ValueError as exc:
                raise InvalidInput(str(exc), details={"field": "timestamp"}) from None
            self.store.put(record)
            return FrameReport(record, outcome)

    def close(self) -> None:
        self.store.close()


def instruction(challenge: str) -> str:
    return INSTRUCTIONS[challenge]  # type: ignore[index]
