"""Seed A's live swap: the one source face, the active user, frame admission (15 fps) and statistics.

One :class:`LiveSwapService` per server process. What must hold across processes lives in a
:class:`LiveState`: process memory by default, Redis when ``FACEPORT_REDIS_URL`` is set, so that
several server processes behind a load balancer still have one active user, one rate limit per
user and one source face:

- the active user is a Redis lock key (``SET key sid PX ttl GET``: taking it over is atomic and
  returns the previous holder; releasing compares the holder first, so a user that was replaced
  never releases its successor's lock);
- the rate limit is GCRA (one "theoretical arrival time" per user), evaluated in one Lua script
  together with the active-user check and the source version, so a frame costs one round trip;
- the source image's bytes and a version id are stored together; each process builds its
  swapper once per version.

When Redis cannot be reached every state call raises :class:`StateUnavailable`; when it comes
back empty (restarted without persistence), the session that held the lock takes it back
(:meth:`LiveSwapService.reclaim`) and the source this process last used is stored again.

Rendering (decode, track, swap, encode) is blocking and runs on the thread pool; the
service's async methods never block the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import numpy as np

from faceport.config import Settings
from faceport.engine.core import FaceEngine
from faceport.engine.enhance import DEFAULT_STRENGTH, ClassicalEnhancer
from faceport.engine.imageio import decode_image, parse_data_url, sniff_format, to_data_url
from faceport.engine.landmarks import FaceMeshTracker
from faceport.engine.models import ModelStore
from faceport.engine.pipeline import PipelineOptions, Processor, large_enough
from faceport.engine.swap import build_swapper
from faceport.engine.swap.mesh import MeshSwapper
from faceport.errors import FileTooLarge, InvalidImage, InvalidInput, NoFace, StateUnavailable

try:
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - redis is only needed with FACEPORT_REDIS_URL
    _RedisError = OSError  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)
Runner = Callable[..., Coroutine[Any, Any, Any]]  # AppContext.run: blocking work on the thread pool

STATS_WINDOW: Final = 30  # seed A: "statistics updated every 30 frames"
FRAME_FORMATS: Final = ("jpeg", "png", "webp")  # seed A frames are JPEG/PNG/WebP data URLs
_FRAME_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/jpg", "image/png", "image/webp"})
NO_FACE_IN_FRAME: Final = "No face detected in frame"
MANY_FACES_MAX: Final = 4  # faces tracked per frame when a session asks for many faces
DEFAULT_ENHANCER_BLEND: Final = round(DEFAULT_STRENGTH * 100)  # BENCHMARKS.md "Swap colour, enhancer, live options"


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """One live session's options, set over Socket.IO with ``set_options`` (issue 16, point 7).

    Attributes:
        mouth_mask: keep the target's whole mouth (Deep-Live-Cam's mouth mask: speech stays the camera's).
        face_enhancer: run the classical face enhancer after the swap.
        face_enhancer_blend: its strength in percent (FaceFusion's name), 0-100.
        many_faces: swap every tracked face (up to ``MANY_FACES_MAX``) of at least the server's minimum
            size (``FACEPORT_SWAP_MIN_FACE_PX`` / ``FACEPORT_SWAP_MIN_FACE_RATIO``); off: the server's
            ``FACEPORT_LIVE_MAX_FACES`` faces.
    """

    mouth_mask: bool = False
    face_enhancer: bool = False
    face_enhancer_blend: int = DEFAULT_ENHANCER_BLEND
    many_faces: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"mouth_mask": self.mouth_mask, "face_enhancer": self.face_enhancer,
                "face_enhancer_blend": self.face_enhancer_blend, "many_faces": self.many_faces}

    def updated(self, data: Any) -> LiveOptions:
        """These options with the fields in ``data`` changed; all or nothing.

        Raises:
            InvalidInput: ``data`` is not an object, names an unknown option, or has a value of the wrong
                type or range (``details["field"]`` names it).
        """
        if not isinstance(data, dict):
            raise InvalidInput("options must be an object, e.g. {\"mouth_mask\": true}",
                               details={"field": None, "allowed": sorted(self.as_dict())})
        values = self.as_dict()
        for name, value in data.items():
            if name not in values:
                raise InvalidInput(f"unknown option {name!r}; known: {', '.join(sorted(values))}",
                                   details={"field": name, "allowed": sorted(values)})
            if name == "face_enhancer_blend":
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100 \
                        or value != value:
                    raise InvalidInput("face_enhancer_blend must be a number from 0 to 100",
                                       details={"field": name, "value": repr(value)[:40]})
                values[name] = round(value)
            elif not isinstance(value, bool):
                raise InvalidInput(f"{name} must be true or false", details={"field": name, "value": repr(value)[:40]})
            else:
                values[name] = value
        return LiveOptions(**values)
STATE_UNAVAILABLE_MESSAGE: Final = "The server cannot reach its shared state; try again shortly"


@dataclass(frozen=True, slots=True)
class Admission:
    """What the shared state says about one incoming frame.

    Attributes:
        active: the sender is the active user.
        allowed: within the frame rate (always False when not active).
        source_version: id of the current source face, ``None`` when none is loaded.
        retry_after: when not allowed, seconds until a frame from the sender would be.
    """

    active: bool
    allowed: bool
    source_version: str | None
    retry_after: float = 0.0


class LiveState(Protocol):
    """State that single-user mode, the frame rate and the source face share across processes."""

    async def claim(self, sid: str) -> str | None:
        """Make ``sid`` the active user; returns the previous one (``None`` when there was none)."""

    async def release(self, sid: str) -> bool:
        """Forget ``sid``'s rate state; drop the active user only if it is still ``sid``."""

    async def active_user(self) -> str | None:
        """The active user's sid."""

    async def reclaim(self, sid: str) -> bool:
        """Make ``sid`` the active user only if nobody is (the lock was lost); True when ``sid`` now is."""

    async def admit(self, sid: str) -> Admission:
        """Check one frame from ``sid``: active user, frame rate (consumes a slot when allowed), source."""

    async def set_source(self, data: bytes) -> str:
        """Store a source image's bytes; returns its new version id."""

    async def load_source(self) -> tuple[str, bytes] | None:
        """The current source image's version id and bytes."""

    async def source_version(self) -> str | None:
        """The current source image's version id."""

    async def clear_source(self) -> bool:
        """Remove the source image; True when there was one."""

    async def restore_source(self, version: str, data: bytes) -> bool:
        """Store a source image under ``version`` only if none is stored; True when it was stored."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryLiveState:
    """:class:`LiveState` in process memory (one server process)."""

    def __init__(self, *, max_fps: float) -> None:
        self._interval = 1.0 / max_fps
        self._tolerance = self._interval / 2  # absorbs jitter: a frame may come half an interval early
        self._active: str | None = None
        self._tat: dict[str, float] = {}
        self._source: tuple[str, bytes] | None = None

    async def claim(self, sid: str) -> str | None:
        previous, self._active = self._active, sid
        return previous

    async def release(self, sid: str) -> bool:
        self._tat.pop(sid, None)
        if self._active == sid:
            self._active = None
            return True
        return False

    async def active_user(self) -> str | None:
        return self._active

    async def reclaim(self, sid: str) -> bool:
        if self._active is None:
            self._active = sid
        return self._active == sid

    async def admit(self, sid: str) -> Admission:
        version = self._source[0] if self._source else None
        if self._active != sid:
            return Admission(False, False, version)
        now = time.monotonic()
        tat = self._tat.get(sid, now)
        if now < tat - self._tolerance:
            return Admission(True, False, version, tat - self._tolerance - now)
        self._tat[sid] = max(tat, now) + self._interval
        return Admission(True, True, version)

    async def set_source(self, data: bytes) -> str:
        version = uuid.uuid4().hex
        self._source = (version, data)
        return version

    async def load_source(self) -> tuple[str, bytes] | None:
        return self._source

    async def source_version(self) -> str | None:
        return self._source[0] if self._source else None

    async def clear_source(self) -> bool:
        had, self._source = self._source is not None, None
        return had

    async def restore_source(self, version: str, data: bytes) -> bool:
        if self._source is not None:
            return False
        self._source = (version, data)
        return True

    async def aclose(self) -> None:
        return None


# KEYS: active, tat, source version; ARGV: sid, interval (us), tolerance (us).
# Redis' own clock (TIME) so that processes on several machines agree.
_ADMIT_LUA: Final = """
local version = redis.call('GET', KEYS[3]) or ''
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0, version, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat > 0 and now < tat - tonumber(ARGV[3]) then return {1, 0, version, tat - tonumber(ARGV[3]) - now} end
if tat < now then tat = now end
tat = tat + interval
redis.call('SET', KEYS[2], string.format('%.0f', tat), 'PX', math.ceil(2 * interval / 1000) + 1000)
return {1, 1, version, 0}
"""
_RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _shared(method: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Turn a Redis failure of ``method`` into :class:`StateUnavailable` (a 503, never a 500)."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (_RedisError, OSError) as exc:
            raise StateUnavailable(STATE_UNAVAILABLE_MESSAGE, details={"reason": type(exc).__name__}) from exc

    return wrapper


class RedisLiveState:
    """:class:`LiveState` in Redis, shared by every server process using the same URL and prefix."""

    def __init__(self, url: str, *, prefix: str, max_fps: float, lock_ttl: float) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        base = f"{{{prefix}}}"  # one hash slot: the scripts touch several keys
        self._active_key = f"{base}:active"
        self._source_key = f"{base}:source"
        self._version_key = f"{base}:source_version"
        self._tat_prefix = f"{base}:tat:"
        self._interval_us = round(1_000_000 / max_fps)
        self._tolerance_us = self._interval_us // 2
        self._lock_ttl_ms = max(1000, round(lock_ttl * 1000))
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._release = self._redis.register_script(_RELEASE_LUA)

    @_shared
    async def claim(self, sid: str) -> str | None:
        previous = await self._redis.set(self._active_key, sid, px=self._lock_ttl_ms, get=True)
        return previous.decode() if isinstance(previous, bytes) else previous

    @_shared
    async def release(self, sid: str) -> bool:
        await self._redis.delete(self._tat_prefix + sid)
        return bool(await self._release(keys=[self._active_key], args=[sid]))

    @_shared
    async def active_user(self) -> str | None:
        value = await self._redis.get(self._active_key)
        return value.decode() if isinstance(value, bytes) else value

    @_shared
    async def admit(self, sid: str) -> Admission:
        active, allowed, version, wait_us = await self._admit(
            keys=[self._active_key, self._tat_prefix + sid, self._version_key],
            args=[sid, self._interval_us, self._tolerance_us])
        text = version.decode() if isinstance(version, bytes) else str(version)
        return Admission(bool(active), bool(allowed), text or None, max(0, int(wait_us)) / 1_000_000)

    @_shared
    async def reclaim(self, sid: str) -> bool:
        if await self._redis.set(self._active_key, sid, px=self._lock_ttl_ms, nx=True):
            return True
        return bool(await self.active_user() == sid)

    @_shared
    async def restore_source(self, version: str, data: bytes) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._source_key, data, nx=True)
            pipe.set(self._version_key, version, nx=True)
            stored = await pipe.execute()
        return bool(stored[1])

    @_shared
    async def set_source(self, data: bytes) -> str:
        version = uuid.uuid4().hex
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._source_key, data)
            pipe.set(self._version_key, version)
            await pipe.execute()
        return version

    @_shared
    async def load_source(self) -> tuple[str, bytes] | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._version_key)
            pipe.get(self._source_key)
            version, data = await pipe.execute()
        if not version or not data:
            return None
        return version.decode(), bytes(data)

    @_shared
    async def source_version(self) -> str | None:
        value = await self._redis.get(self._version_key)
        return value.decode() if value else None

    @_shared
    async def clear_source(self) -> bool:
        return bool(await self._redis.delete(self._source_key, self._version_key))

    async def aclose(self) -> None:
        await self._redis.aclose()


def build_live_state(settings: Settings) -> LiveState:
    """Redis-backed state when ``redis_url`` is set, else process memory."""
    if settings.redis_url:
        return RedisLiveState(settings.redis_url, prefix=settings.live_redis_prefix, max_fps=settings.live_max_fps,
                              lock_ttl=settings.live_session_timeout + 60.0)
    return MemoryLiveState(max_fps=settings.live_max_fps)


@dataclass
class RateWindow:
    """Times of the last ``STATS_WINDOW`` events, for a smoothed rate and average."""

    stamps: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    values: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))

    def add(self, stamp: float, value: float = 0.0) -> None:
        self.stamps.append(stamp)
        self.values.append(value)

    def rate(self) -> float:
        """Events per second over the window (0 until two events)."""
        if len(self.stamps) < 2:
            return 0.0
        span = self.stamps[-1] - self.stamps[0]
        return (len(self.stamps) - 1) / span if span > 0 else 0.0

    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0


@dataclass
class LiveStats:
    """Process-wide counters of seed A's ``/status`` and ``processed_frame.stats``.

    ``frame_count`` counts frames answered (``swap_count`` swapped + ``error_count`` answered with
    the error form); dropped frames get no answer and are counted apart.
    """

    frame_count: int = 0
    swap_count: int = 0
    error_count: int = 0
    dropped_rate_limited: int = 0
    dropped_stale: int = 0
    processing: RateWindow = field(default_factory=RateWindow)

    def record(self, *, swapped: bool, processing_ms: float | None) -> None:
        self.frame_count += 1
        if swapped:
            self.swap_count += 1
        else:
            self.error_count += 1
        if processing_ms is not None:
            self.processing.add(time.monotonic(), processing_ms)
        if self.frame_count % STATS_WINDOW == 0:
            log.debug("live swap: %d frames, %d swapped, %d errors, %.1f ms avg, %d+%d dropped",
                      self.frame_count, self.swap_count, self.error_count, self.avg_processing_time,
                      self.dropped_rate_limited, self.dropped_stale)

    @property
    def avg_processing_time(self) -> float:
        """Milliseconds per frame over the last ``STATS_WINDOW`` processed frames."""
        return round(self.processing.mean(), 1)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One swapped frame.

    Attributes:
        processed: the swapped frame as a ``data:image/jpeg;base64,...`` URL.
        faces: faces swapped (at least 1).
        processing_ms: decode + track + swap + encode time.
    """

    processed: str
    faces: int
    processing_ms: float


class LiveSwapService:
    """The source face and frame rendering of seed A, for one server process."""

    def __init__(self, settings: Settings, engine: FaceEngine, models: ModelStore, run: Runner,
                 state: LiveState | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.models = models
        self.run = run
        self.state = state or build_live_state(settings)
        self.stats = LiveStats()
        self._swapper: tuple[str, Processor] | None = None
        self._source_data: tuple[str, bytes] | None = None  # the source last used here, to restore after an outage
        self._swapper_lock = asyncio.Lock()

    @property
    def detector_name(self) -> str:
        return self.settings.live_detector or self.engine.options.detector

    @property
    def required_models(self) -> tuple[str, ...]:
        names = [self.detector_name, "facemesh"]
        fallback = self.settings.live_fallback_detector
        if fallback and fallback != self.detector_name:
            names.append(fallback)
        if self.engine.options.iris:
            names.append("iris")
        return tuple(names)

    def models_loaded(self) -> bool:
        """Every model a live frame needs is installed (each loads in well under a second on first use)."""
        return all(self.models.is_installed(name) for name in self.required_models)

    def new_tracker(self, many_faces: bool = False) -> FaceMeshTracker:
        """A tracker for one connection's stream (blocking: loads models on first use).

        It re-detects on the same frame when it loses a face, keeps a detected face whose mesh agrees
        with the detection even when FaceMesh's presence score is low, and falls back to
        ``live_fallback_detector`` when the detector finds nothing. It runs FaceMesh without the iris
        model: the swap, the enhancer and the tracking read only the 468 mesh points, and the two eye crops
        cost about 3 ms of CPU per face and frame (the source photo still gets its iris points).
        """
        fallback = self.settings.live_fallback_detector
        max_faces = max(self.settings.live_max_faces, MANY_FACES_MAX) if many_faces else self.settings.live_max_faces
        return self.engine.tracker(detector=self.detector_name, max_faces=max_faces,
                                   redetect_every=self.settings.live_redetect_every,
                                   fallback=fallback if fallback != self.detector_name else None,
                                   trust_detector=True, iris=False)

    # ---- source face -----------------------------------------------------------------
    def _build_swapper(self, data: bytes) -> Processor:
        image = decode_image(data, max_pixels=self.settings.max_image_pixels,
                             max_bytes=self.settings.live_source_max_bytes)
        return build_swapper(self.engine, [image])

    async def upload_source(self, data: bytes) -> None:
        """Make the face in ``data`` (JPEG/PNG/BMP/WebP bytes) the source for every frame.

        Raises:
            InvalidImage: not a decodable image within the pixel limit.
            FileTooLarge: over ``live_source_max_bytes``.
            NoFace: no face in the image.
        """
        swapper = await self.run(self._build_swapper, data)
        version = await self.state.set_source(data)
        async with self._swapper_lock:
            self._swapper = (version, swapper)
            self._source_data = (version, data)
        log.info("live swap: new source face (%d bytes, version %s)", len(data), version)

    async def clear_source(self) -> bool:
        """Forget the source face; True when there was one."""
        had = await self.state.clear_source()
        async with self._swapper_lock:
            self._swapper = None
            self._source_data = None
        return had

    def forget_source(self) -> None:
        """The shared state says no source is loaded (cleared elsewhere): nothing to restore after an outage."""
        self._source_data = None

    async def reclaim(self, sid: str) -> bool:
        """Take back the active-user lock for ``sid`` when the shared state lost it (Redis restarted empty).

        The source face this process last used is stored again when the state has none.

        Raises:
            StateUnavailable: the shared state cannot be reached.
        """
        if not await self.state.reclaim(sid):
            return False
        saved = self._source_data
        if saved is not None and await self.state.source_version() is None:
            await self.state.restore_source(*saved)
            log.info("live swap: restored source version %s in the shared state", saved[0])
        return True

    async def swapper_for(self, version: str | None) -> Processor | None:
        """The swapper of source ``version``, built here once when another process stored it."""
        if version is None:
            return None
        async with self._swapper_lock:
            if self._swapper is not None and self._swapper[0] == version:
                return self._swapper[1]
            loaded = await self.state.load_source()
            if loaded is None:
                return None
            current, data = loaded
            swapper: Processor = await self.run(self._build_swapper, data)
            self._swapper = (current, swapper)
            self._source_data = (current, data)
            return swapper

    async def source_loaded(self) -> bool:
        return await self.state.source_version() is not None

    async def status(self) -> dict[str, Any]:
        """Seed A's ``GET /status`` body, exactly its fields."""
        return {"frame_count": self.stats.frame_count, "swap_count": self.stats.swap_count,
                "error_count": self.stats.error_count, "avg_processing_time": self.stats.avg_processing_time,
                "source_face_loaded": await self.source_loaded(), "models_loaded": self.models_loaded()}

    # ---- frames ----------------------------------------------------------------------
    def check_frame_size(self, frame: str) -> None:
        """Refuse an oversized frame before any decoding (cheap: only its length).

        Raises:
            FileTooLarge: the data URL's payload is over ``live_frame_max_bytes``.
        """
        limit = self.settings.live_frame_max_bytes
        if len(frame) > limit * 4 // 3 + 1024:
            raise FileTooLarge(f"frame is {len(frame):,} characters, over the limit of "
                               f"{limit // (1024 * 1024)} MB", details={"size": len(frame), "max_bytes": limit})

    def decode_frame(self, frame: str) -> Any:
        """Decode a ``data:image/(jpeg|png|webp);base64,...`` frame, or its raw base64 (blocking).

        Returns:
            (H, W, 3) uint8 BGR image.

        Raises:
            InvalidImage: bad base64, not a JPEG/PNG/WebP image, or too many pixels.
            FileTooLarge: over ``live_frame_max_bytes``.
        """
        self.check_frame_size(frame)
        if frame.lstrip()[:5].lower() == "data:":
            media_type, payload = parse_data_url(frame)
        else:  # raw base64 without the "data:" prefix (as seed C's clients send images) is accepted too
            media_type, payload = parse_data_url("data:;base64," + frame)
        if media_type is not None and media_type not in _FRAME_MEDIA_TYPES:
            raise InvalidImage(f"frame must be a JPEG, PNG or WebP data URL, not {media_type}",
                               details={"media_type": media_type})
        fmt = sniff_format(payload)
        if fmt not in FRAME_FORMATS:
            raise InvalidImage("frame is not a JPEG, PNG or WebP image" + (f" (it is {fmt.upper()})" if fmt else ""),
                               details={"detected": fmt})
        return decode_image(payload, max_pixels=self.settings.live_frame_max_pixels,
                            max_bytes=self.settings.live_frame_max_bytes)

    def with_options(self, swapper: Processor, options: LiveOptions) -> Processor:
        """``swapper`` as a session's options want it (the mouth mask; inswapper has none and is returned as is)."""
        if isinstance(swapper, MeshSwapper) and swapper.options.mouth_mask != options.mouth_mask:
            clone = copy.copy(swapper)
            clone.options = replace(swapper.options, mouth_mask=options.mouth_mask)
            return clone
        return swapper

    def render(self, frame: str, tracker: FaceMeshTracker, swapper: Processor,
               options: LiveOptions | None = None) -> Rendered:
        """Decode, track, swap (and enhance) and encode one frame (blocking: call it on the thread pool).

        Raises:
            InvalidImage: as for :meth:`decode_frame`.
            FileTooLarge: as for :meth:`decode_frame`.
            NoFace: no face in the frame (``details["processing_ms"]`` says how long finding none took).
        """
        options = options or LiveOptions()
        started = time.perf_counter()
        image = self.decode_frame(frame)
        faces = tracker.process(image)
        if options.many_faces and len(faces) > 1:
            sizes = PipelineOptions(min_face_px=self.settings.swap_min_face_px,
                                    min_face_ratio=self.settings.swap_min_face_ratio)
            faces = faces[np.flatnonzero(large_enough(faces, sizes))]
        if len(faces) == 0:
            raise NoFace(NO_FACE_IN_FRAME, details={"processing_ms": (time.perf_counter() - started) * 1000.0})
        swapped = self.with_options(swapper, options).process(image, faces)
        if options.face_enhancer and options.face_enhancer_blend > 0:
            swapped = ClassicalEnhancer(options.face_enhancer_blend / 100.0).process(swapped, faces)
        processed = to_data_url(swapped, "jpeg", quality=self.settings.live_jpeg_quality)
        return Rendered(processed, len(faces), (time.perf_counter() - started) * 1000.0)

    async def aclose(self) -> None:
        await self.state.aclose()
