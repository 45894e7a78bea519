"""Seed E live media: WebRTC (aiortc) publish and watch, every video frame filtered on the way.

One :class:`RoomStream` per room whose publisher is connected to this node:

- the publisher's video is read by a pump task that keeps only the newest frame (older ones are
  dropped and counted: never an unbounded queue), and :class:`FilteredVideoTrack` runs the privacy
  redactor (with face tracking) on the thread pool one frame at a time;
- a frame is never sent raw: until the redactor is loaded, and when filtering fails, frames are dropped;
- audio is passed through while ``audio_processing`` is off; when it is on, the output is the input
  delayed by a fixed ``FACEPORT_STREAM_AUDIO_DELAY_S`` with spoken personal data bleeped
  (:class:`faceport.engine.live_speech.LiveSpeechRedactor`: Whisper tiny.en passes over the last
  seconds on the thread pool; audio no pass has cleared in time is muted, never released), or
  all muted with ``audio_mode: "mute"``;
- viewers subscribe through aiortc's ``MediaRelay`` without buffering (newest frame wins), each
  through :class:`ViewerTrack`, which hands its sender a frame of its own: aiortc's encoders run
  on worker threads and change the frame they encode (``reformat`` through the frame's one
  scaler, ``pict_type`` for a keyframe, ``pts`` rebased), so two viewers' encoders on one shared
  frame crashed the process or left a viewer with a stalled sender (a second viewer of a
  Chromium-published room got 1 frame in 40 s). The filtered frame is made ``yuv420p`` once,
  so no encoder converts it again;
- when the publisher leaves, the filtered tracks end and every viewer's connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from faceport.engine.audio import PiiDetector, Transcriber
from faceport.engine.live_speech import LiveMode, LiveSpeechOptions, LiveSpeechRedactor
from faceport.engine.redact import Detections, build_redactor
from faceport.errors import FaceportError, InvalidInput
from faceport.services.rooms import LiveConfig

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024


def peer_connection() -> RTCPeerConnection:
    # no STUN/TURN servers: aiortc's default would reach out to Google's STUN server (offline by default)
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def parse_offer(sdp: bytes) -> RTCSessionDescription:
    """Raises: InvalidInput for an empty, oversized or non-SDP body."""
    if not sdp or len(sdp) > MAX_SDP_BYTES:
        raise InvalidInput(f"expected an SDP offer (application/sdp) of 1 byte to {MAX_SDP_BYTES} bytes")
    text = sdp.decode("utf-8", errors="replace")
    if not text.startswith("v=0") or "m=" not in text:
        raise InvalidInput("body is not an SDP offer (it must start with v=0 and have m= lines)")
    return RTCSessionDescription(sdp=text, type="offer")


@dataclass
class StreamStats:
    """Counters since the last ``processing_update`` (``window_*``) and in all."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    window_out: int = 0
    window_faces: int = 0
    window_plates: int = 0
    window_text: int = 0
    window_ms: float = 0.0
    window_started: float = field(default_factory=time.monotonic)
    last_faces: int = 0
    resized: int = 0  # frames scaled back to the stream's first size

    def count(self, found: Detections, ms: float) -> None:
        self.frames_out += 1
        self.window_out += 1
        self.window_faces += len(found.faces)
        self.window_plates += len(found.plates)
        self.window_text += len(found.text)
        self.window_ms += ms
        self.last_faces = len(found.faces)

    def snapshot(self) -> dict[str, Any]:
        """The update body's numbers; starts a new window."""
        now = time.monotonic()
        span = max(1e-6, now - self.window_started)
        n = self.window_out
        body = {"fps": round(n / span, 2), "frames": self.frames_out, "framesIn": self.frames_in,
                "dropped": self.dropped, "resized": self.resized,
                "detections": {"faces": self.last_faces, "faceFrames": self.window_faces,
                               "plates": self.window_plates, "text": self.window_text},
                "processingMs": round(self.window_ms / n, 1) if n else None}
        self.window_out = self.window_faces = self.window_plates = self.window_text = 0
        self.window_ms = 0.0
        self.window_started = now
        return body


class FilteredVideoTrack(MediaStreamTrack):
    """The publisher's video, redacted. Newest frame wins; the rest are dropped and counted."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, stream: RoomStream) -> None:
        super().__init__()
        self.source = source
        self.stream = stream
        self._latest: VideoFrame | None = None
        self._arrived = asyncio.Event()
        self._source_ended = False
        self._pump = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = cast(VideoFrame, await self.source.recv())
                self.stream.stats.frames_in += 1
                if self._latest is not None:
                    self.stream.stats.dropped += 1
                self._latest = frame
                self._arrived.set()
        except MediaStreamError:
            pass
        finally:
            self._source_ended = True
            self._arrived.set()

    async def recv(self) -> VideoFrame:
        while True:
            while self._latest is None:
                if self._source_ended or self.readyState != "live":
                    self.stop()
                    raise MediaStreamError
                self._arrived.clear()
                await self._arrived.wait()
            frame, self._latest = self._latest, None
            out = await self.stream.filter_video(frame)
            if out is not None:
                return out

    def stop(self) -> None:
        super().stop()
        self._pump.cancel()


class FilteredAudioTrack(MediaStreamTrack):
    """The publisher's audio: passed through while audio processing is off; otherwise delayed by the
    stream's fixed delay with personal data bleeped (or all muted), one output frame per input frame."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, stream: RoomStream) -> None:
        super().__init__()
        self.source = source
        self.stream = stream
        self._held: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self._shape: tuple[int, int] | None = None  # (channels, rate) of the held audio
        self._fed = 0  # samples (at the source rate) given to the redactor
        self._redactor_seen: LiveSpeechRedactor | None = None

    async def recv(self) -> AudioFrame:
        try:
            frame = cast(AudioFrame, await self.source.recv())
        except MediaStreamError:
            self.stop()
            raise
        redactor = self.stream.speech_redactor()
        if redactor is None:
            self._held.clear()
            return frame
        samples = audio_samples(frame)
        rate = int(frame.sample_rate)
        if self._shape != (samples.shape[0], rate) or redactor is not self._redactor_seen:
            self._held.clear()  # new redactor (processing switched on, options changed) or new format
            self._shape, self._fed, self._redactor_seen = (samples.shape[0], rate), 0, redactor
        redactor.feed(samples, rate)
        self._held.append((samples, self._fed / rate))
        self._fed += samples.shape[1]
        newest_end = self._fed / rate
        oldest, start = self._held[0]
        if newest_end - start >= redactor.options.delay_s + oldest.shape[1] / rate - 1e-9:
            self._held.popleft()
            out = redactor.release(oldest, start, rate).samples
            if out.shape != samples.shape:  # frames of another size: pad/cut to the frame going out
                out = np.pad(out, ((0, 0), (0, max(0, samples.shape[1] - out.shape[1]))))[:, :samples.shape[1]]
        else:
            out = np.zeros_like(samples)  # the delay is filling
        return audio_frame(out, like=frame)


def audio_samples(frame: AudioFrame) -> np.ndarray:
    """(channels, n) float32 in -1..1 of an audio frame of any sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    if data.dtype == np.int16:
        return (data.astype(np.float32) / 32768.0).reshape(channels, -1)
    if data.dtype == np.int32:
        return (data.astype(np.float32) / 2147483648.0).reshape(channels, -1)
    if data.dtype == np.uint8:
        return ((data.astype(np.float32) - 128.0) / 128.0).reshape(channels, -1)
    return data.astype(np.float32).reshape(channels, -1)


def audio_frame(samples: np.ndarray, *, like: AudioFrame) -> AudioFrame:
    """An audio frame of ``like``'s format, layout, rate and timing carrying ``samples`` ((channels, n))."""
    name = like.format.name
    clipped = np.clip(samples, -1.0, 1.0)
    if name.startswith("s16"):
        data: np.ndarray = (clipped * 32767.0).astype(np.int16)
    elif name.startswith("s32"):
        data = (clipped * 2147483647.0).astype(np.int32)
    elif name.startswith("u8"):
        data = (clipped * 127.0 + 128.0).astype(np.uint8)
    elif name.startswith("dbl"):
        data = clipped.astype(np.float64)
    else:
        data = clipped.astype(np.float32)
    if not like.format.is_planar:
        data = data.T.reshape(1, -1)
    out = AudioFrame.from_ndarray(np.ascontiguousarray(data), format=name, layout=like.layout.name)
    out.pts, out.sample_rate, out.time_base = like.pts, like.sample_rate, like.time_base
    return out


def even_size(image: np.ndarray) -> np.ndarray:
    """``image`` cropped to even width and height (4:2:0 chroma needs both)."""
    h, w = image.shape[:2]
    return image if h % 2 == 0 and w % 2 == 0 else image[:h - h % 2, :w - w % 2]


def own_copy(frame: VideoFrame | AudioFrame) -> VideoFrame | AudioFrame:
    """A frame with its own buffers and timing, equal to ``frame``."""
    if isinstance(frame, VideoFrame):
        copy: VideoFrame | AudioFrame = VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    else:
        copy = AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name)
        copy.sample_rate = frame.sample_rate
    copy.pts, copy.time_base = frame.pts, frame.time_base
    return copy


class ViewerTrack(MediaStreamTrack):
    """One viewer's view of a relayed track: every frame a copy of its own (see the module notes)."""

    def __init__(self, relayed: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = relayed.kind
        self.relayed = relayed

    async def recv(self) -> VideoFrame | AudioFrame:
        try:
            frame = await self.relayed.recv()
        except MediaStreamError:
            self.stop()
            raise
        return own_copy(cast(VideoFrame | AudioFrame, frame))

    def stop(self) -> None:
        super().stop()
        self.relayed.stop()


@dataclass(eq=False)
class Viewer:
    session_id: str
    pc: RTCPeerConnection


class RoomStream:
    """One room's publisher on this node, its filter and its viewers."""

    def __init__(self, room_id: str, config: LiveConfig, *, cache: Any,
                 run: Callable[..., Awaitable[Any]], max_viewers: int,
                 speech: Callable[[], tuple[Transcriber, PiiDetector]] | None = None,
                 audio_delay_s: float = 5.0) -> None:
        self.room_id = room_id
        self.session_id = uuid.uuid4().hex
        self.config = config
        self.cache = cache
        self.run = run
        self.max_viewers = max_viewers
        self.pc = peer_connection()
        self.stats = StreamStats()
        self.relay = MediaRelay()
        self.video: FilteredVideoTrack | None = None
        self.audio: FilteredAudioTrack | None = None
        self.viewers: dict[str, Viewer] = {}
        self.started = time.monotonic()
        self.closed = asyncio.Event()
        self._filter: Callable[[np.ndarray], np.ndarray] | None = None
        self._filter_config: LiveConfig | None = None
        self._loading: asyncio.Task[None] | None = None
        self._last_found = Detections()
        self.size: tuple[int, int] | None = None  # (width, height) every viewer gets
        self.speech = speech
        self.audio_delay_s = audio_delay_s
        self._speech: LiveSpeechRedactor | None = None
        self._listening: asyncio.Task[None] | None = None

    # ---- audio ---------------------------------------------------------------------------------
    def speech_redactor(self) -> LiveSpeechRedactor | None:
        """The stream's live speech redactor while audio processing is on (None: pass through).

        A new one (and a new delay) starts whenever processing is switched on or its mode changes.
        """
        if not self.config.audio_processing:
            self._speech = None
            return None
        mode: LiveMode = "mute" if self.config.audio_mode == "mute" or self.speech is None else "bleep"
        if self._speech is None or self._speech.options.mode != mode:
            self._speech = LiveSpeechRedactor(self.speech or _no_models,
                                              LiveSpeechOptions(mode=mode, delay_s=self.audio_delay_s))
            if mode == "bleep" and (self._listening is None or self._listening.done()):
                self._listening = asyncio.ensure_future(self._listen())
        return self._speech

    async def _listen(self) -> None:
        """Passes of the live speech redactor on the thread pool, one after another, while bleeping."""
        failures = 0
        while not self.closed.is_set():
            redactor = self._speech
            if redactor is None or redactor.options.mode != "bleep":
                return
            if redactor.pending_s() < 0.3:  # not enough new speech for a pass yet
                await asyncio.sleep(0.05)
                continue
            try:
                await self.run(redactor.analyse)
                failures = 0
            except Exception:  # the audio stays muted (nothing is cleared), the stream goes on
                failures += 1
                log.exception("live privacy: room %s: speech pass failed (%d in a row); audio stays muted",
                              self.room_id, failures)
                await asyncio.sleep(min(5.0, 0.5 * failures))

    def audio_stats(self) -> dict[str, Any]:
        """The ``audio`` part of ``processing_update``."""
        if not self.config.audio_processing:
            return {"mode": "passthrough"}
        redactor = self._speech
        if redactor is None:
            return {"mode": "mute" if self.config.audio_mode == "mute" else "bleep",
                    "delayMs": round(self.audio_delay_s * 1000)}
        return redactor.snapshot()

    # ---- filter --------------------------------------------------------------------------------
    def _build(self, config: LiveConfig) -> Callable[[np.ndarray], np.ndarray]:
        redactor = build_redactor(self.cache, config.redact_options())
        stats_hook: dict[str, Detections] = {}

        def remember(found: Detections) -> None:
            stats_hook["found"] = found

        step = redactor.stream(fps=30.0, on_frame=remember)

        def run(image: np.ndarray) -> np.ndarray:
            out = step(image)
            self._last_found = stats_hook.get("found", Detections())
            return out

        return run

    async def _load(self, config: LiveConfig) -> None:
        self._filter = await self.run(self._build, config)
        self._filter_config = config

    def ensure_filter(self) -> asyncio.Task[None]:
        """Load (or reload after a config change) the redactor in the background."""
        if self._loading is None or (self._loading.done() and self._filter_config != self.config):
            self._loading = asyncio.ensure_future(self._load(self.config))
        return self._loading

    async def set_config(self, config: LiveConfig) -> None:
        if config != self.config:
            self.config = config
            await self.ensure_filter()

    async def filter_video(self, frame: VideoFrame) -> VideoFrame | None:
        """The frame redacted, or None (dropped: filter not loaded or failed). Never the raw frame."""
        loading = self.ensure_filter()
        if self._filter is None:
            try:
                await asyncio.shield(loading)
            except Exception:
                log.exception("live privacy: room %s: cannot load the filter", self.room_id)
                self._loading = None
                self.stats.dropped += 1
                await asyncio.sleep(1.0)
                return None
        fn = self._filter
        assert fn is not None
        started = time.perf_counter()
        try:
            image = frame.to_ndarray(format="bgr24")
            out = even_size(await self.run(fn, image))
            if self.size is None:
                self.size = (out.shape[1], out.shape[0])
            elif (out.shape[1], out.shape[0]) != self.size:
                # a browser lowers its resolution under load; viewers keep the first size (aiortc's
                # decoder stalled on every size change, Chromium's did not)
                out = cv2.resize(out, self.size, interpolation=cv2.INTER_AREA)
                self.stats.resized += 1
        except Exception:
            log.exception("live privacy: room %s: filtering a frame failed; frame dropped", self.room_id)
            self.stats.dropped += 1
            return None
        self.stats.count(self._last_found, (time.perf_counter() - started) * 1000.0)
        # once here, in the encoders' format, rather than in every viewer's encoder
        i420: np.ndarray = cv2.cvtColor(out, cv2.COLOR_BGR2YUV_I420).astype(np.uint8, copy=False)
        result = VideoFrame.from_ndarray(i420, format="yuv420p")
        # our own 90 kHz clock from the stream's start: the publisher's timestamps start anywhere
        # (a browser's at a random 32-bit offset), which the viewers' decoders do not all accept
        result.pts = int((time.monotonic() - self.started) * 90000)
        result.time_base = fractions.Fraction(1, 90000)
        return result

    # ---- publisher -----------------------------------------------------------------------------
    async def accept_publisher(self, offer: RTCSessionDescription) -> str:
        """Answer the publisher's offer; returns the answer SDP."""

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.video is None:
                self.video = FilteredVideoTrack(track, self)
            elif track.kind == "audio" and self.audio is None:
                self.audio = FilteredAudioTrack(track, self)

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

        await _apply_offer(self.pc, offer)
        if self.video is None:
            await self.pc.close()
            raise InvalidInput("the WHIP offer has no video track to publish")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.ensure_filter()
        return str(self.pc.localDescription.sdp)

    # ---- viewers -------------------------------------------------------------------------------
    async def add_viewer(self, offer: RTCSessionDescription) -> tuple[str, str]:
        """Answer a viewer's offer with the filtered tracks; returns (session id, answer SDP).

        Raises:
            FaceportError: TOO_MANY_VIEWERS.
        """
        if len(self.viewers) >= self.max_viewers:
            raise too_many_viewers(self.max_viewers)
        pc = peer_connection()
        viewer = Viewer(uuid.uuid4().hex, pc)
        self.viewers[viewer.session_id] = viewer

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.remove_viewer(viewer.session_id)

        try:
            await _apply_offer(pc, offer)
            kinds = {t.kind for t in pc.getTransceivers()}
            if self.video is not None and "video" in kinds:
                pc.addTrack(ViewerTrack(self.relay.subscribe(self.video, buffered=False)))
            if self.audio is not None and "audio" in kinds:
                pc.addTrack(ViewerTrack(self.relay.subscribe(self.audio, buffered=False)))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.remove_viewer(viewer.session_id)
            raise
        return viewer.session_id, str(pc.localDescription.sdp)

    async def remove_viewer(self, session_id: str) -> bool:
        viewer = self.viewers.pop(session_id, None)
        if viewer is None:
            return False
        with contextlib.suppress(Exception):
            await viewer.pc.close()
        return True

    async def close(self) -> None:
        """End the stream: the filtered tracks end, every viewer's connection closes."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self._listening is not None:
            self._listening.cancel()
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()
        for session_id in list(self.viewers):
            await self.remove_viewer(session_id)
        with contextlib.suppress(Exception):
            await self.pc.close()


def _no_models() -> tuple[Transcriber, PiiDetector]:
    raise RuntimeError("no speech models: this stream can only mute")


async def _apply_offer(pc: RTCPeerConnection, offer: RTCSessionDescription) -> None:
    """Raises: InvalidInput when aiortc cannot use the offer (malformed, no common codec, no DTLS fingerprint)."""
    try:
        await pc.setRemoteDescription(offer)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, InvalidStateError) as exc:
        await pc.close()
        raise InvalidInput(f"unusable SDP offer: {str(exc)[:200] or type(exc).__name__}") from None


def too_many_viewers(limit: int) -> FaceportError:
    return FaceportError(f"this room has its maximum of {limit} viewers (FACEPORT_STREAM_MAX_VIEWERS)",
                         code="TOO_MANY_VIEWERS", details={"limit": limit})
