"""Seed C's proctoring decisions: client registry, per-frame checks, policy with debouncing, evidence.

One :class:`ProctorService` per server process. The registry (states and reference
embeddings) is held in memory and written through to the store; admin changes reach live
connections at once through listeners. Frames are decoded and checked on the thread pool
(:meth:`ProctorService.check_frame` is blocking); only frames that triggered an action
other than NO_ACTION are kept, as JPEG evidence rows in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.config import Settings
from faceport.engine.core import FaceEngine
from faceport.engine.imageio import decode_image
from faceport.engine.liveness import LivenessOptions, LivenessResult, LivenessTracker
from faceport.engine.objects import ObjectDetector, PhoneCheck, PhoneGate, PhoneGateOptions
from faceport.engine.types import BGRImage
from faceport.errors import InvalidImage, NoFace, NotFound
from faceport.store import Store
from faceport.store import proctor as repo
from faceport.store.models import utcnow

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
NO_REFERENCE_MESSAGE = "no reference face"


class Action(Enum):
    """Seed C's actions and their codes."""

    NO_ACTION = 0
    ACTION_LOCK_SCREEN = 1
    ACTION_SIGN_OUT = 2
    ACTION_WARNING = 3
    ACTION_ERROR = 4


class Reason(Enum):
    """Seed C's reasons and their codes; ``REASON_MULTIPLE_FACES`` (8) is faceport's extension."""

    EMPTY_REASON = 0
    REASON_NO_FACE = 1
    REASON_SPOOF_IMAGE = 2
    REASON_WRONG_USER = 3
    REASON_PHONE_DETECTION = 4
    REASON_PAUSED_CLIENT = 5
    REASON_BLOCKED_CLIENT = 6
    REASON_CLIENT_NOT_AVAILABLE = 7
    REASON_MULTIPLE_FACES = 8


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one frame; ``details`` (scores, deciding methods) goes to evidence, not the wire."""

    action: Action
    reason: Reason
    actual_username: str
    details: dict[str, Any] = field(default_factory=dict)
    message: str | None = None  # sent on the wire with ACTION_ERROR answers that need words


@dataclass
class _Client:
    user_name: str
    state: str
    violations: int
    embeddings: NDArray[np.float32]
    token_hash: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    liveness: LivenessTracker | None = None  # created on the first frame (needs settings)
    phone_gate: PhoneGate | None = None  # created on the first frame (needs settings)
    streak_reason: Reason | None = None
    streak: int = 0


Listener = Callable[[str], None]  # called with the new state ("paused", "active", "blocked", "deleted")


class ProctorService:
    """Registry, checks and policy of the proctoring WebSocket."""

    def __init__(self, settings: Settings, engine: FaceEngine, store: Store) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()
        self._listeners: dict[str, set[Listener]] = {}
        self.on_change: Callable[[], None] | None = None  # announces committed changes to other nodes
        self.actions = {Reason[k]: Action[v] for k, v in settings.proctor_actions.items()}
        self.check_ms: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None
        self.reload()

    def start(self) -> None:
        """Purge evidence past its retention now and every ``proctor_purge_interval`` seconds."""
        if self._purger is not None:
            return
        self._stop.clear()
        self._purger = threading.Thread(target=self._purge_loop, name="proctor-purge", daemon=True)
        self._purger.start()

    def close(self) -> None:
        self._stop.set()
        if self._purger is not None:
            self._purger.join(timeout=5)
            self._purger = None

    def _purge_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.purge_evidence()
            except Exception:  # a database hiccup must not end the purge loop
                log.exception("proctoring evidence purge failed")
            self._stop.wait(self.settings.proctor_purge_interval)

    # registry -----------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the registry from the store (at start, and after another node announced a change).

        Live connections of clients whose state changed (paused, blocked, deleted elsewhere) hear it,
        as they do for changes made on this node. A client's debouncing streak is kept.
        """
        with self.store.session() as session:
            records = repo.list_clients(session=session)
        with self._lock:
            before = {name: client.state for name, client in self._clients.items()}
            fresh = {r.user_name: _Client(r.user_name, r.state, r.violations, r.embeddings, r.token_hash)
                     for r in records}
            for name, client in fresh.items():
                old = self._clients.get(name)
                if old is not None and old.state == client.state:
                    client.streak, client.streak_reason = old.streak, old.streak_reason
            self._clients = fresh
        for name, state in before.items():
            now = fresh[name].state if name in fresh else "deleted"
            if now != state:
                self._notify(name, now)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # telling other nodes is best effort: the change itself is committed
                log.warning("could not announce a proctoring registry change", exc_info=True)

    def client(self, user_name: str) -> _Client | None:
        with self._lock:
            return self._clients.get(user_name)

    def set_token(self, user_name: str, token: str | None = None) -> tuple[repo.ClientRecord, str]:
        """Give a client a token (``token``, or a new random one); returns the record and the token in clear.

        Only the SHA-256 digest is stored: the token is shown once, to the admin who set it.

        Raises:
            NotFound: unknown client. InvalidInput: a given token shorter than 16 or longer than 256 characters.
        """
        if token is None:
            token = secrets.token_urlsafe(32)
        elif not 16 <= len(token) <= 256:
            from faceport.errors import InvalidInput

            raise InvalidInput("token must be 16 to 256 characters", details={"field": "token"})
        return self._store_token(user_name, token_digest(token)), token

    def clear_token(self, user_name: str) -> repo.ClientRecord:
        """Remove a client's token. Raises: NotFound."""
        return self._store_token(user_name, None)

    def _store_token(self, user_name: str, digest: str | None) -> repo.ClientRecord:
        """Write a client's token digest (None: no token) to the store and to its live registry entry."""
        with self.store.session() as session:
            record = repo.set_token(session=session, user_name=user_name, token_hash=digest)
        with self._lock:
            client = self._clients.get(user_name)
            if client is not None:
                client.token_hash = digest
        self._changed()
        return record

    def token_accepted(self, client: _Client, presented: object) -> bool:
        """A client with a token must present it; one without is served unless ``proctor_require_token``."""
        if client.token_hash is None:
            return not self.settings.proctor_require_token
        if not isinstance(presented, str) or not presented or len(presented) > 256:
            return False
        return hmac.compare_digest(token_digest(presented), client.token_hash)

    def create_client(self, user_name: str) -> repo.ClientRecord:
        with self.store.session() as session:
            record = repo.create_client(session=session, user_name=user_name)
        with self._lock:
            self._clients[record.user_name] = _Client(record.user_name, record.state, 0, record.embeddings)
        self._changed()
        return record

    def get_client(self, user_name: str) -> repo.ClientRecord:
        with self.store.session() as session:
            return repo.get_client(session=session, user_name=user_name)

    def list_clients(self) -> list[repo.ClientRecord]:
        with self.store.session() as session:
            return repo.list_clients(session=session)

    def delete_client(self, user_name: str) -> None:
        with self.store.session() as session:
            repo.delete_client(session=session, user_name=user_name)
        with self._lock:
            self._clients.pop(user_name, None)
        self._notify(user_name, "deleted")
        self._changed()

    def add_face(self, user_name: str, image: BGRImage) -> repo.ClientRecord:
        """Enrol one reference face (blocking: runs detection and the embedder).

        Raises:
            NotFound: unknown client. NoFace: no face. InvalidInput: several faces.
        """
        if self.client(user_name) is None:
            raise NotFound(f"proctoring client {repo.shown_name(user_name)} not found",
                           details={"user_name": user_name if repo.valid_user_name(user_name) else None})
        faces = self.engine.detect(image)
        if len(faces) == 0:
            raise NoFace("no face detected in the image")
        if len(faces) > 1:
            from faceport.errors import InvalidInput

            raise InvalidInput(f"{len(faces)} faces in the image; a reference image must show one face",
                               details={"faces": len(faces)})
        embedded = self.engine.embedder().embed(image, faces)
        assert embedded.embedding is not None
        with self.store.session() as session:
            record = repo.add_face(session=session, user_name=user_name, embedding=embedded.embedding[0])
        with self._lock:
            client = self._clients.get(user_name)
            if client is not None:
                client.embeddings = record.embeddings
        self._changed()
        return record

    def set_state(self, user_name: str, state: str) -> repo.ClientRecord:
        """pause ("paused"), resume/unblock ("active"), block ("blocked"); live connections hear at once."""
        with self.store.session() as session:
            record = repo.set_state(session=session, user_name=user_name, state=state,
                                    reset_violations=state == "active")
        with self._lock:
            client = self._clients.get(user_name)
            if client is not None:
                client.state = state
                client.violations = record.violations
                client.streak, client.streak_reason = 0, None
        self._notify(user_name, state)
        self._changed()
        return record

    def subscribe(self, user_name: str, listener: Listener) -> Callable[[], None]:
        """Hear state changes of ``user_name``; returns the unsubscribe function."""
        with self._lock:
            self._listeners.setdefault(user_name, set()).add(listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.get(user_name, set()).discard(listener)

        return unsubscribe

    def _notify(self, user_name: str, state: str) -> None:
        with self._lock:
            listeners = list(self._listeners.get(user_name, ()))
        for listener in listeners:
            listener(state)

    # frames -------------------------------------------------------------------------------------
    def check_image_field(self, image: object) -> str:
        """The ``image`` field when it is a non-empty string within the size limit (cheap: nothing decoded).

        Raises: InvalidImage.
        """
        if not isinstance(image, str) or not image:
            raise InvalidImage("image must be a non-empty base64 string or data URL")
        limit = self.settings.max_image_bytes
        if len(image) > limit * 4 // 3 + 1024:
            raise InvalidImage(f"image exceeds the {limit // (1024 * 1024)} MB limit")
        return image

    def decode(self, image: object) -> BGRImage:
        """A frame as BGR; a large JPEG at reduced size (``proctor_decode_side``).

        Raises: InvalidImage (also for a missing/non-string field or an oversized image).
        """
        limit = self.settings.max_image_bytes
        image = self.check_image_field(image)
        try:
            return decode_image(image, max_pixels=self.settings.max_image_pixels, max_bytes=limit,
                                reduce_to=self.settings.proctor_decode_side or None)
        except InvalidImage:
            raise
        except Exception as exc:  # FileTooLarge and friends: all are an invalid image on this surface
            raise InvalidImage(getattr(exc, "message", str(exc))) from exc

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            self.check_ms.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            if len(self.check_ms[name]) > 10_000:
                del self.check_ms[name][:5000]

    def inspect(self, client: _Client, image: BGRImage, now: float | None = None) -> tuple[Reason, str, dict[str, Any]]:
        """Run every check on one frame; the first reason found (phone, no face, wrong user, spoof, several).

        ``now``: the frame's time in seconds for the temporal spoof checks (default: the monotonic clock).
        """
        details: dict[str, Any] = {}
        faces = self._timed("face_detection+landmarks", lambda: self.engine.detect(image, landmarks=True))
        details["faces"] = len(faces)
        phone = self._phone_check(client, image)
        phone_score = phone.score
        details["phone"] = {"method": "ssd_mobilenet_v3_coco:cell_phone", "score": round(phone_score, 3),
                            "checked": phone.checked, "changed": round(phone.changed, 4)}
        if client.liveness is None:
            client.liveness = LivenessTracker(LivenessOptions(still_seconds=self.settings.proctor_still_seconds,
                                                              still_frames=self.settings.proctor_still_frames))
        liveness = client.liveness
        if len(faces) == 0:
            liveness.reset()
        # A phone held up in front of the camera usually hides the face: the phone decides first.
        if phone_score >= self.settings.proctor_phone_score:
            details["decided_by"] = "ssd_mobilenet_v3_coco:cell_phone"
            return Reason.REASON_PHONE_DETECTION, client.user_name, details
        if len(faces) == 0:
            details["decided_by"] = "face_detection:" + self.engine.options.detector
            return Reason.REASON_NO_FACE, client.user_name, details
        largest = faces.sorted_by_area()[0]
        actual = client.user_name
        if len(client.embeddings):
            embedded = self._timed("identity_embedding", lambda: self.engine.embedder().embed(image, largest))
            assert embedded.embedding is not None
            vector = embedded.embedding[0]
            distance = float(np.linalg.norm(client.embeddings - vector, axis=1).min())
            threshold = self.engine.options.verify_threshold
            details["identity"] = {"method": "dlib_resnet_l2", "distance": round(distance, 4), "threshold": threshold}
            if distance > threshold:
                actual = self.best_match(vector)
                details["decided_by"] = "dlib_resnet_l2"
                return Reason.REASON_WRONG_USER, actual, details
        else:
            details["identity"] = {"method": "none", "note": "client has no reference face"}
        if self.settings.proctor_liveness:
            assert largest.landmarks is not None
            live: LivenessResult = self._timed("liveness", lambda: liveness.update(
                image, largest.xyxy[0], largest.landmarks[0], now=now))
            details["liveness"] = {"live": live.live, "method": live.method, "score": round(live.score, 4),
                                   **live.details}
            if not live.live:
                details["decided_by"] = "liveness:" + live.method
                return Reason.REASON_SPOOF_IMAGE, actual, details
        if len(faces) > 1:
            details["decided_by"] = "face_detection:count"
            return Reason.REASON_MULTIPLE_FACES, actual, details
        return Reason.EMPTY_REASON, actual, details

    def _phone_check(self, client: _Client, image: BGRImage) -> PhoneCheck:
        """The SSD phone score of this frame, or the client's last "no phone" answer when the frame barely
        changed (bounded by ``proctor_phone_reuse_frames`` / ``_seconds``; works with or without a face)."""
        if client.phone_gate is None:
            s = self.settings
            client.phone_gate = PhoneGate(PhoneGateOptions(
                max_reuse_frames=s.proctor_phone_reuse_frames, max_reuse_seconds=s.proctor_phone_reuse_seconds,
                change_fraction=s.proctor_phone_change, hit_score=s.proctor_phone_score))
        return client.phone_gate.check(image, lambda frame: self._timed("phone_detection", lambda: ObjectDetector(
            self.engine.cache.get("ssd_mobilenet_v3_coco")).phones(frame, score_threshold=0.3).max_score))

    def best_match(self, vector: NDArray[np.float32]) -> str:
        """The registered client whose reference face is nearest within the threshold, else "unknown"."""
        best, best_name = self.engine.options.verify_threshold, UNKNOWN
        with self._lock:
            clients = list(self._clients.values())
        for other in clients:
            if len(other.embeddings):
                d = float(np.linalg.norm(other.embeddings - vector, axis=1).min())
                if d <= best:
                    best, best_name = d, other.user_name
        return best_name

    def check_frame(self, user_name: str, image: BGRImage, *, now: float | None = None) -> Decision:
        """Checks, policy and debouncing for one decoded frame of ``user_name`` (blocking).

        ``now``: when the frame was taken, in seconds (default: when it is checked).
        """
        client = self.client(user_name)
        if client is None:
            return Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE, user_name)
        with client.lock:
            if client.state == "blocked":
                return Decision(Action.ACTION_ERROR, Reason.REASON_BLOCKED_CLIENT, user_name)
            if client.state == "paused":
                return Decision(Action.ACTION_WARNING, Reason.REASON_PAUSED_CLIENT, user_name)
            if self.settings.proctor_require_reference and not len(client.embeddings):
                return Decision(Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE, user_name,
                                message=NO_REFERENCE_MESSAGE)
            reason, actual, details = self.inspect(client, image, now)
            if reason is Reason.EMPTY_REASON:
                client.streak, client.streak_reason = 0, None
                return Decision(Action.NO_ACTION, reason, actual, details)
            client.streak = client.streak + 1 if client.streak_reason is reason else 1
            client.streak_reason = reason
            action = self.actions.get(reason, Action.ACTION_WARNING)
            details["consecutive"] = client.streak
            if action is not Action.ACTION_WARNING and client.streak < self.settings.proctor_debounce_frames:
                return Decision(Action.NO_ACTION, Reason.EMPTY_REASON, actual, details)
            decision = Decision(action, reason, actual, details)
            self._record(client, decision, image)
        return decision

    def _record(self, client: _Client, decision: Decision, image: BGRImage) -> None:
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        counts = decision.action in (Action.ACTION_SIGN_OUT, Action.ACTION_LOCK_SCREEN)
        block = False
        with self.store.session() as session:
            if ok:
                repo.add_evidence(session=session, user_name=client.user_name, action=decision.action.name,
                                  reason=decision.reason.name, actual_username=decision.actual_username,
                                  details=_jsonable(decision.details), image=jpeg.tobytes())
            if counts:
                client.violations = repo.add_violation(session=session, user_name=client.user_name)
                limit = self.settings.proctor_block_after
                if limit and client.violations >= limit:
                    repo.set_state(session=session, user_name=client.user_name, state="blocked")
                    client.state = "blocked"
                    block = True
        if block:
            log.info("proctoring client blocked after %d violations", client.violations)
            self._notify(client.user_name, "blocked")

    # evidence -----------------------------------------------------------------------------------
    def purge_evidence(self) -> int:
        cutoff = utcnow() - timedelta(days=self.settings.proctor_evidence_retention_days)
        with self.store.session() as session:
            removed = repo.purge_evidence(session=session, older_than=cutoff)
        if removed:
            log.info("purged %d proctoring evidence frames", removed)
        return removed


def token_digest(token: str) -> str:
    """SHA-256 hex of a client token (tokens are random or at least 16 characters: no slow hash needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if tonumber(ARGV[2]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
if tonumber(ARGV[3]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 4)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 4)
return 0
"""

_REFRESH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[i + 1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2] or '0') * 4 + 1000)
return 0
"""


class SharedConnectionSlots:
    """Seed C's connection caps (in all, per client address) counted across every node, in Redis.

    Each live connection is a member of two sorted sets (all, its address) scored by when it
    expires; the owning process pushes the expiry forward every ``ttl_s / 3`` seconds, so a node
    that dies frees its slots within ``ttl_s``. Admission is one Lua script (check both caps, add),
    timed by Redis' own clock. Build it inside the serving event loop.
    """

    def __init__(self, url: str, *, prefix: str = "faceport:proctor:conns", ttl_s: float = 30.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._acquire = self._redis.register_script(_ACQUIRE_LUA)
        self._refresh = self._redis.register_script(_REFRESH_LUA)
        self._live: dict[str, str] = {}  # token -> address
        self._refresher: Any = None
        self.refused = ""  # "total" or "address": the cap that refused the last acquire

    def _keys(self, address: str) -> list[str]:
        return [f"{self._prefix}:all", f"{self._prefix}:addr:{address}"]

    async def acquire(self, address: str, *, max_total: int, max_per_address: int) -> str | None:
        """A slot token, or ``None`` with the cap that refused it in :attr:`refused`.

        Raises:
            redis.RedisError, OSError: Redis unreachable (the caller falls back to its own counts).
        """
        import asyncio

        token = uuid.uuid4().hex
        verdict = int(await self._acquire(keys=self._keys(address),
                                          args=[token, max_total, max_per_address, self._ttl_ms]))
        if verdict:
            self.refused = "total" if verdict == 1 else "address"
            return None
        self._live[token] = address
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._refresh_forever())
        return token

    async def release(self, token: str) -> None:
        address = self._live.pop(token, None)
        if address is None:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(address):
                pipe.zrem(key, token)
            await pipe.execute()

    async def _refresh_forever(self) -> None:
        import asyncio

        while self._live:
            await asyncio.sleep(self._ttl_ms / 3000)
            by_address: dict[str, list[str]] = {}
            for token, address in list(self._live.items()):
                by_address.setdefault(address, []).append(token)
            try:
                for address, tokens in by_address.items():
                    for key in self._keys(address):
                        args = [value for token in tokens for value in (token, self._ttl_ms)]
                        await self._refresh(keys=[key], args=args)
            except Exception as exc:  # Redis down: the slots expire; admissions fall back to local counts
                log.warning("proctoring: could not refresh connection slots in Redis: %s", exc)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self._redis.aclose()
