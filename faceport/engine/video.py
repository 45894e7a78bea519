"""Video files in, video files out: probe, decode, a per-frame function, H.264 encode, audio kept.

The face swapper (``Pipeline.stream()``) and the privacy filter run their frame function
through :func:`process_video`; readers (tests, the proctoring client) use
:func:`iter_frames`. Everything here is PyAV (FFmpeg): any input FFmpeg decodes works
(H.264/HEVC/VP9/AV1 in mp4/mov/mkv/webm, MJPEG in avi, ...).

Timing: the output is constant-rate H.264 at ``fps`` (default: the input's average rate).
Each output frame shows the input frame that is on screen at that instant, so lowering
the rate drops frames, raising it repeats them, and variable-rate input becomes regular;
the duration stays that of the input. Dropped frames never reach the frame function.

Frames are shown to the frame function upright (a phone's rotation flag is applied), at
the output size (scaled by ``scale_percent``, then even-sized for yuv420p).

Audio is stream-copied when the output container takes its codec (AAC into mp4, ...),
otherwise decoded and re-encoded to AAC at the same rate and channel layout.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal, cast

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.reformatter import Colorspace, Interpolation, VideoReformatter
from av.video.stream import VideoStream

from faceport.engine.types import BGRImage
from faceport.errors import InvalidFormat, InvalidInput, ProcessingFailed, StorageUnavailable

__all__ = [
    "OUTPUT_SUFFIXES",
    "AudioFilter",
    "AudioMode",
    "AudioResult",
    "FrameFn",
    "VideoInfo",
    "VideoOptions",
    "VideoResult",
    "iter_frames",
    "output_size",
    "probe_video",
    "process_video",
]

log = logging.getLogger(__name__)

FrameFn = Callable[[BGRImage], BGRImage]
AudioMode = Literal["auto", "copy", "reencode", "drop"]
AudioResult = Literal["copied", "reencoded", "none"]
AudioFilter = Callable[[np.ndarray, float, int], np.ndarray]
"""Edits decoded audio: ``(samples (channels, n) float32 planar, start time s, rate Hz) -> same shape``."""

OUTPUT_SUFFIXES: Final[dict[str, str]] = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output file suffix → FFmpeg muxer."""

MIN_SCALE_PERCENT: Final = 10
MAX_SCALE_PERCENT: Final = 400
MAX_FPS: Final = 240.0

# Audio codecs each muxer takes as-is, and that common players read from it. Anything
# else (PCM into mp4, Opus into mov, ...) is re-encoded to AAC.
_COPYABLE_AUDIO: Final[dict[str, frozenset[str]]] = {
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "alac"}),
    "mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                      "pcm_f32le", "pcm_f32be"}),
    "matroska": frozenset({"aac", "mp3", "ac3", "eac3", "opus", "vorbis", "flac", "alac", "pcm_s16le", "pcm_s24le",
                           "pcm_s32le", "pcm_f32le"}),
}

# Demuxers that open a still image or text as a "video": refused, they are not uploads of video.
_NOT_VIDEO_FORMATS: Final = frozenset({"image2", "tty", "lavfi"})

_AAC_FRAME_SIZE: Final = 1024
_DEFAULT_LAYOUTS: Final = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_MAX_CONSECUTIVE_READ_ERRORS: Final = 32  # av_read_frame failing this often in a row ends the input
_MAX_PROBE_PACKETS: Final = 500  # packets read while looking for a first decodable frame
_LOGGED_DAMAGE: Final = 5
_MAX_GAP_S: Final = 300.0  # a timestamp jump longer than this is damage, not a still scene
MAX_OUTPUT_PIXELS: Final = 7680 * 4320  # corrupt packets logged one by one; the rest are only counted


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a video file holds, read from its headers and first frame.

    Attributes:
        width: Displayed width in pixels (after the file's rotation flag).
        height: Displayed height in pixels.
        fps: Average frame rate.
        frame_count: Frame count from the header, else duration x fps (an estimate).
        duration_s: Duration of the whole file in seconds (0.0 when unknown).
        video_codec: FFmpeg codec name ("h264", "hevc", "mjpeg", ...).
        has_audio: Whether there is an audio stream.
        audio_codec: FFmpeg codec name of the first audio stream, else None.
        audio_rate: Its sample rate in Hz, else None.
        audio_channels: Its channel count, else None.
        container: Container name ("mp4", "mov", "avi", "matroska", ...).
        rotation: Counter-clockwise degrees (0, 90, 180, 270) applied to decoded frames for display.
    """

    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    container: str
    rotation: int = 0


@dataclass(frozen=True, slots=True)
class VideoOptions:
    """Encoder settings of :func:`process_video` beyond rate and size.

    Attributes:
        codec: FFmpeg video encoder; ``libx264`` (output is always yuv420p).
        crf: x264 constant rate factor, 0 (lossless) to 51; 20 is visually transparent for most footage.
        preset: x264 speed/size trade-off ("ultrafast" ... "veryslow").
        threads: Encoder and decoder threads; 0 lets FFmpeg pick from the CPU count.
        audio: "auto" copies the audio when the output container takes its codec and re-encodes
            to AAC otherwise; "copy" refuses to re-encode; "reencode" always makes AAC; "drop" writes no audio.
        audio_bitrate_per_channel: AAC bitrate per channel in bit/s when re-encoding.
        max_frames: Stop after this many output frames (previews, tests); None for the whole file.
        faststart: Put the mp4/mov index first so browsers can play while downloading.
        audio_filter: Edits the audio samples (bleeps, silence) before AAC encoding; implies
            re-encoding. Ignored with audio="drop".
        on_written: Called after each ``frame_fn`` call with (index of the first output frame
            its result filled, how many output frames it filled): the rate conversion repeats a
            frame's result when the output rate is higher or timestamps leave a gap (audit reports).
    """

    codec: str = "libx264"
    crf: int = 20
    preset: str = "veryfast"
    threads: int = 0
    audio: AudioMode = "auto"
    audio_bitrate_per_channel: int = 64_000
    max_frames: int | None = None
    faststart: bool = True
    audio_filter: AudioFilter | None = None
    on_written: Callable[[int, int], None] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise InvalidInput(f"crf must be 0-51, got {self.crf}", details={"field": "crf"})
        if self.threads < 0:
            raise InvalidInput(f"threads must be >= 0, got {self.threads}", details={"field": "threads"})
        if self.audio not in ("auto", "copy", "reencode", "drop"):
            raise InvalidInput(f"audio must be auto, copy, reencode or drop, got {self.audio!r}",
                               details={"field": "audio"})
        if self.max_frames is not None and self.max_frames < 1:
            raise InvalidInput(f"max_frames must be >= 1, got {self.max_frames}", details={"field": "max_frames"})
        if not 8_000 <= self.audio_bitrate_per_channel <= 320_000:
            raise InvalidInput(f"audio_bitrate_per_channel must be 8000-320000, got {self.audio_bitrate_per_channel}",
                               details={"field": "audio_bitrate_per_channel"})


@dataclass(frozen=True, slots=True)
class VideoResult:
    """What :func:`process_video` wrote.

    Attributes:
        frames_in: Frames decoded from the input.
        frames_out: Frames encoded into the output (after rate conversion).
        fps_out: Output frame rate.
        duration_s: Output video duration in seconds (frames_out / fps_out).
        width: Output width in pixels (even).
        height: Output height in pixels (even).
        audio: "copied" (packets remuxed untouched), "reencoded" (to AAC) or "none".
        elapsed_s: Wall time of the whole call in seconds.
        skipped_packets: Corrupt packets skipped (each logged as a warning, the first few one by one).
    """

    frames_in: int
    frames_out: int
    fps_out: float
    duration_s: float
    width: int
    height: int
    audio: AudioResult
    elapsed_s: float
    skipped_packets: int = 0


class _Damage:
    """Counts corrupt packets and read errors, logging the first few of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def note(self, what: str, exc: Exception) -> None:
        self.count += 1
        if self.count <= _LOGGED_DAMAGE:
            log.warning("%s: skipping %s: %s", self.name, what, exc)
        elif self.count == _LOGGED_DAMAGE + 1:
            log.warning("%s: more damage, no longer logged one by one", self.name)


# ---------------------------------------------------------------------------------------------
# Reading


_STORAGE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                             errno.ENOENT, errno.EISDIR})


def _reason(exc: Exception) -> str:
    """An FFmpeg/OS error's reason without the file name it carries (an absolute server path)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def _open_input(path: Path) -> InputContainer:
    if not path.is_file():
        raise InvalidInput(f"no such video file: {path.name}", details={"file": path.name})
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise InvalidFormat(f"{path.name} is not a readable media file (truncated, corrupt or not audio/video): "
                            f"{_reason(exc)}", details={"file": path.name}) from exc


def _pick_video_stream(container: InputContainer, name: str) -> VideoStream:
    if container.format.name in _NOT_VIDEO_FORMATS or container.format.name.endswith("_pipe"):
        raise InvalidFormat(f"{name} is a still image or text, not a video",
                            details={"container": container.format.name})
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        if container.streams.audio:
            raise InvalidFormat(f"{name} has no video stream (audio only)",
                                details={"container": container.format.name})
        raise InvalidFormat(f"{name} has no video stream", details={"container": container.format.name})
    stream = next((s for s in streams if s.disposition & Disposition.default), streams[0])
    if not stream.codec_context.width or not stream.codec_context.height:
        raise InvalidFormat(f"{name}: the video stream has no frame size (corrupt header)")
    return stream


def _pick_audio_stream(container: InputContainer) -> AudioStream | None:
    streams = [s for s in container.streams.audio if s.codec_context.sample_rate and s.codec_context.channels]
    if not streams:
        return None
    if len(streams) > 1:
        log.info("%d audio streams; keeping the default one", len(streams))
    return next((s for s in streams if s.disposition & Disposition.default), streams[0])


def _average_rate(stream: VideoStream) -> Fraction:
    """A sane average frame rate: the header's, else FFmpeg's guess, else 25."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < rate <= 1000:
            return Fraction(rate).limit_denominator(1001)
    return Fraction(25)


def _file_duration(container: InputContainer, stream: VideoStream) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return 0.0


def _video_duration(container: InputContainer, stream: VideoStream) -> float:
    """Duration of the video stream itself (the file's when the stream does not say)."""
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return _file_duration(container, stream)


def _container_name(container: InputContainer) -> str:
    name = container.format.name
    if "mp4" in name.split(","):
        brand = str(container.metadata.get("major_brand", "")).strip()
        return "mov" if brand == "qt" else "mp4"
    return name.split(",")[0]


def _packets(container: InputContainer, streams: Sequence[av.stream.Stream], damage: _Damage) -> Iterator[Packet[Any]]:
    """Demux ``streams``, stepping over read errors; ends with PyAV's empty flush packets."""
    errors = 0
    while True:
        try:
            for packet in container.demux(*streams):
                errors = 0
                yield packet
            return
        except av.error.FFmpegError as exc:
            errors += 1
            damage.note("unreadable data", exc)
            if errors >= _MAX_CONSECUTIVE_READ_ERRORS:
                log.warning("%s: giving up reading after %d errors in a row", damage.name, errors)
                return


def _decode_video(stream: VideoStream, packet: Packet[Any], damage: _Damage) -> list[VideoFrame]:
    try:
        return stream.decode(packet)
    except av.error.FFmpegError as exc:
        damage.note("corrupt video packet", exc)
        return []


def _to_ndarray(frame: VideoFrame) -> BGRImage:
    """The pixels of a bgr24 frame as an (H, W, 3) uint8 array."""
    return cast(BGRImage, frame.to_ndarray())


def _quarter_turns(frame: VideoFrame) -> int:
    """Counter-clockwise quarter turns that put the frame upright (from its display matrix)."""
    try:
        degrees = frame.rotation
    except ValueError:  # a degenerate display matrix (NaN angle): show the frame as stored
        return 0
    return round(degrees / 90) % 4 if degrees else 0


def _first_frame(container: InputContainer, stream: VideoStream, damage: _Damage) -> VideoFrame | None:
    for read, packet in enumerate(_packets(container, [stream], damage)):
        frames = _decode_video(stream, packet, damage)
        if frames:
            return frames[0]
        if read >= _MAX_PROBE_PACKETS:
            break
    return None


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video file's streams, size, rate and duration, and check a first frame decodes.

    Args:
        path: A local video file (any container and codec FFmpeg reads).

    Returns:
        The file's :class:`VideoInfo`.

    Raises:
        InvalidInput: The file does not exist.
        InvalidFormat: Not a media file, a truncated or corrupt header, a still image, no video
            stream (audio only), or no decodable frame.
    """
    file = Path(path)
    damage = _Damage(file.name)
    with _open_input(file) as container:
        stream = _pick_video_stream(container, file.name)
        audio = _pick_audio_stream(container)
        rate = _average_rate(stream)
        duration = _file_duration(container, stream)
        codec = stream.codec_context.codec.canonical_name
        stream.thread_type = "SLICE"  # one frame only: frame threading would just add latency
        first = _first_frame(container, stream, damage)
        if first is None:
            raise InvalidFormat(f"{file.name}: no decodable video frame ({codec})", details={"codec": codec})
        turns = _quarter_turns(first)
        width, height = first.width, first.height
        if turns % 2:
            width, height = height, width
        frames = stream.frames if stream.frames > 0 else round(_video_duration(container, stream) * rate)
        return VideoInfo(
            width=width,
            height=height,
            fps=float(rate),
            frame_count=int(frames),
            duration_s=duration,
            video_codec=codec,
            has_audio=audio is not None,
            audio_codec=None if audio is None else audio.codec_context.codec.canonical_name,
            audio_rate=None if audio is None else audio.codec_context.sample_rate,
            audio_channels=None if audio is None else audio.codec_context.channels,
            container=_container_name(container),
            rotation=turns * 90,
        )


def iter_frames(path: str | os.PathLike[str], *, max_frames: int | None = None
                ) -> Iterator[tuple[int, float, BGRImage]]:
    """Decoded frames of a video file, upright, in presentation order.

    Corrupt packets are skipped with a warning. The file is checked (:func:`probe_video`)
    when this is called; it is opened for decoding on the first ``next()``.

    Args:
        path: A local video file.
        max_frames: Stop after this many frames; None for all.

    Returns:
        An iterator of ``(index, seconds, frame)``: index from 0; presentation time in
        seconds as stored in the file (usually starting at 0); frame (H, W, 3) uint8 BGR,
        C-contiguous, a new array each time.

    Raises:
        InvalidInput: The file does not exist, or ``max_frames`` < 1.
        InvalidFormat: As :func:`probe_video`.
    """
    if max_frames is not None and max_frames < 1:
        raise InvalidInput(f"max_frames must be >= 1, got {max_frames}", details={"field": "max_frames"})
    file = Path(path)
    info = probe_video(file)
    return _iter_frames(file, info, max_frames)


def _iter_frames(file: Path, info: VideoInfo, max_frames: int | None) -> Iterator[tuple[int, float, BGRImage]]:
    damage = _Damage(file.name)
    step = 1.0 / info.fps
    with _open_input(file) as container:
        stream = _pick_video_stream(container, file.name)
        stream.thread_type = "AUTO"
        to_bgr = VideoReformatter()
        turns = info.rotation // 90
        index = 0
        last_t = -math.inf
        for packet in _packets(container, [stream], damage):
            for frame in _decode_video(stream, packet, damage):
                t = frame.time
                if t is None or t <= last_t:
                    t = last_t + step if last_t > -math.inf else 0.0
                last_t = t
                image = _to_ndarray(to_bgr.reformat(frame, format="bgr24"))
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                yield index, t, image
                index += 1
                if max_frames is not None and index >= max_frames:
                    return


# ---------------------------------------------------------------------------------------------
# Writing


def output_size(width: int, height: int, scale_percent: int = 100) -> tuple[int, int]:
    """The encoded size for a displayed ``width`` x ``height`` input: scaled, then even (yuv420p).

    At 100 % an odd size loses its last column/row (cropped, not resampled); other scales
    resample straight to the nearest even size at or below the exact one.

    >>> output_size(640, 360, 50)
    (320, 180)
    >>> output_size(175, 143)
    (174, 142)
    """
    w = max(2, round(width * scale_percent / 100))
    h = max(2, round(height * scale_percent / 100))
    return w - w % 2, h - h % 2


def _output_format(path: Path) -> str:
    fmt = OUTPUT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"output must end in {', '.join(OUTPUT_SUFFIXES)}, got {path.name!r}",
                           details={"field": "output", "allowed": list(OUTPUT_SUFFIXES)})
    return fmt


def _target_rate(fps: float | None, input_rate: Fraction) -> Fraction:
    if fps is None:
        return input_rate
    if not isinstance(fps, int | float) or not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
        raise InvalidInput(f"fps must be > 0 and <= {MAX_FPS:g}, got {fps!r}", details={"field": "fps"})
    return Fraction(fps).limit_denominator(1001)


def _check_scale(scale_percent: int) -> None:
    if isinstance(scale_percent, bool) or not isinstance(scale_percent, int) \
            or not MIN_SCALE_PERCENT <= scale_percent <= MAX_SCALE_PERCENT:
        raise InvalidInput(f"scale_percent must be an integer {MIN_SCALE_PERCENT}-{MAX_SCALE_PERCENT}, "
                           f"got {scale_percent!r}", details={"field": "scale_percent"})


class _AudioOut:
    """The output's audio: packets copied as they are, or decoded, resampled and encoded to AAC."""

    def __init__(self, out: OutputContainer, source: AudioStream, *, reencode: bool, bitrate_per_channel: int,
                 damage: _Damage, audio_filter: AudioFilter | None = None) -> None:
        self.out = out
        self.audio_filter = audio_filter
        self.source = source
        self.reencode = reencode
        self.until: float | None = None  # file time after which audio is dropped (max_frames)
        self.damage = damage
        self.resampler: AudioResampler | None = None
        self.next_pts: int | None = None
        if not reencode:
            self.stream = out.add_stream_from_template(source)
            return
        ctx = source.codec_context
        # "6 channels" (order unknown, e.g. from WAV) becomes the usual layout of that many channels.
        layout = ctx.layout
        if "channels" in layout.name and ctx.channels in _DEFAULT_LAYOUTS:
            layout = av.AudioLayout(_DEFAULT_LAYOUTS[ctx.channels])
        rate = ctx.sample_rate
        supported = av.Codec("aac", "w").audio_rates
        if supported and rate not in supported:
            rate = min(supported, key=lambda r: abs(r - ctx.sample_rate))
        self.rate = rate
        self.stream = out.add_stream("aac", rate=rate)
        self.stream.codec_context.layout = layout
        self.stream.codec_context.format = "fltp"
        self.stream.codec_context.bit_rate = bitrate_per_channel * layout.nb_channels
        self.stream.codec_context.time_base = Fraction(1, rate)
        self.resampler = AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=_AAC_FRAME_SIZE)

    def past_end(self, packet: Packet[Any]) -> bool:
        """Whether ``packet`` starts after the end time (max_frames), so reading can stop."""
        return (self.until is not None and packet.pts is not None and packet.time_base is not None
                and float(packet.pts * packet.time_base) > self.until)

    def push(self, packet: Packet[Any]) -> None:
        if not self.reencode:
            if packet.size == 0:  # PyAV's end-of-stream marker, not data
                return
            if packet.pts is None or packet.dts is None:
                self.damage.note("audio packet without timestamps", ValueError("no pts"))
                return
            if self.past_end(packet):
                return
            packet.stream = self.stream
            self.out.mux(packet)
            return
        try:
            frames = self.source.decode(packet)
        except av.error.FFmpegError as exc:
            self.damage.note("corrupt audio packet", exc)
            return
        for frame in frames:
            if self.until is not None and frame.time is not None and frame.time > self.until:
                return
            self._encode(frame)

    def _encode(self, frame: AudioFrame | None) -> None:
        if self.resampler is None:
            return
        if self.next_pts is None and frame is not None:
            self.next_pts = max(0, round((frame.time or 0.0) * self.rate))
        for chunk in self.resampler.resample(frame):
            if self.audio_filter is not None:
                samples = chunk.to_ndarray().astype(np.float32)
                edited = self.audio_filter(samples, (self.next_pts or 0) / self.rate, self.rate)
                replaced = AudioFrame.from_ndarray(np.ascontiguousarray(edited, np.float32), format="fltp",
                                                   layout=chunk.layout.name)
                replaced.sample_rate = chunk.sample_rate
                chunk = replaced
            chunk.pts = self.next_pts
            chunk.time_base = Fraction(1, self.rate)
            self.next_pts = (self.next_pts or 0) + chunk.samples
            self.out.mux(self.stream.encode(chunk))

    def close(self) -> None:
        if self.reencode and self.next_pts is not None:
            self._encode(None)
            self.out.mux(self.stream.encode(None))


class _Transcode:
    """One :func:`process_video` run: the demux → decode → frame_fn → encode loop and its state."""

    def __init__(self, inp: InputContainer, out: OutputContainer, out_format: str, frame_fn: FrameFn,
                 info: VideoInfo, rate: Fraction, scale_percent: int, progress: Callable[[float], None] | None,
                 opts: VideoOptions, name: str) -> None:
        self.inp, self.out, self.frame_fn, self.progress, self.opts = inp, out, frame_fn, progress, opts
        self.damage = _Damage(name)
        self.video = _pick_video_stream(inp, name)
        self.video.thread_type = "AUTO"
        self.video.codec_context.thread_count = opts.threads
        self.in_rate = _average_rate(self.video)
        self.rate = rate
        self.rate_f = float(rate)
        self.duration = _video_duration(inp, self.video) or info.duration_s
        self.turns = info.rotation // 90

        # Sizes: frames are scaled (coded orientation), turned upright, cropped to even.
        self.width, self.height = output_size(info.width, info.height, scale_percent)
        self.scale: tuple[int, int] | None = None
        if scale_percent != 100:
            self.scale = (self.height, self.width) if self.turns % 2 else (self.width, self.height)
        self.interpolation = Interpolation.AREA if scale_percent < 100 else Interpolation.BICUBIC
        self.shape = (self.height, self.width, 3)
        if self.width * self.height > MAX_OUTPUT_PIXELS:
            raise InvalidInput(f"output {self.width}x{self.height} is larger than 8K; lower scale_percent",
                               details={"field": "scale_percent"})

        self.encoder = cast(VideoStream, out.add_stream(opts.codec, rate=rate))
        ctx = self.encoder.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = 1 / rate
        ctx.thread_count = opts.threads
        ctx.options = {"crf": str(opts.crf), "preset": opts.preset}
        # Keep the input's YUV matrix so colours survive the round trip through BGR.
        self.bt709 = self.video.codec_context.colorspace == 1
        ctx.colorspace = 1 if self.bt709 else (6 if self.video.codec_context.colorspace in (5, 6) else 2)
        ctx.color_range = 1
        self.matrix = Colorspace.ITU709 if self.bt709 else Colorspace.ITU601
        self.to_bgr = VideoReformatter()
        self.to_yuv = VideoReformatter()

        self.audio: _AudioOut | None = None
        source = _pick_audio_stream(inp)
        if source is not None and opts.audio != "drop":
            codec = source.codec_context.codec.canonical_name
            copyable = codec in _COPYABLE_AUDIO[out_format]
            if opts.audio == "copy" and not copyable:
                raise InvalidInput(f"{codec} audio cannot be copied into {out_format}; use audio='auto'",
                                   details={"field": "audio", "codec": codec})
            reencode = opts.audio == "reencode" or not copyable or opts.audio_filter is not None
            self.audio = _AudioOut(out, source, reencode=reencode, bitrate_per_channel=opts.audio_bitrate_per_channel,
                                   damage=self.damage, audio_filter=opts.audio_filter)

        self.frames_in = 0
        self.frames_out = 0
        self.t0: float | None = None
        self.pts0 = 0
        self.last_t = -math.inf
        self.last_duration = 1.0 / float(self.in_rate)
        self.held: VideoFrame | None = None
        self.reported = -1.0

    # The rate conversion: slot k (time t0 + k / rate) shows the last frame whose time is at
    # most k / rate + half an input frame (the tolerance absorbs timestamp rounding).
    def _slot(self, rel: float) -> int:
        return max(0, math.ceil((rel - 0.5 / float(self.in_rate)) * self.rate_f - 1e-6))

    def run(self) -> None:
        streams: list[av.stream.Stream] = [self.video]
        if self.audio is not None:
            streams.append(self.audio.source)
        done = False
        for packet in _packets(self.inp, streams, self.damage):
            if self.audio is not None and packet.stream is self.audio.source:
                if done and self.audio.past_end(packet):
                    break
                self.audio.push(packet)
                continue
            if done:
                if self.audio is None:
                    break
                continue
            for frame in _decode_video(self.video, packet, self.damage):
                if self._take(frame):
                    done = True
                    break
        if self.t0 is None:
            raise InvalidFormat(f"{self.damage.name}: no decodable video frames")
        self._finish_video()
        if self.audio is not None:
            self.audio.close()

    def _take(self, frame: VideoFrame) -> bool:
        """Queue one decoded frame; returns True once max_frames output frames are written."""
        self.frames_in += 1
        t = frame.time
        if t is None or t <= self.last_t:
            t = self.last_t + self.last_duration if self.last_t > -math.inf else 0.0
        if self.t0 is None:
            self.t0 = t
            self.pts0 = max(0, round(t * self.rate_f))
            if self.opts.max_frames is not None and self.audio is not None:
                self.audio.until = t + self.opts.max_frames / self.rate_f
        self.last_t = t
        if frame.duration and frame.time_base is not None:
            self.last_duration = float(frame.duration * frame.time_base)
        rel = t - self.t0
        slot = self._slot(rel)
        if slot - self.frames_out > _MAX_GAP_S * self.rate_f:
            # A corrupt timestamp: carry on one frame after the last, instead of repeating a
            # frame for hours.
            log.warning("%s: timestamp jumps %.0f s at frame %d; treated as damage", self.damage.name,
                        rel - self.frames_out / self.rate_f, self.frames_in)
            self.t0 += rel - (self.frames_out + 1) / self.rate_f
            rel = t - self.t0
            slot = self._slot(rel)
        if self.held is not None and slot > self.frames_out:
            self._emit(self.held, slot - self.frames_out)
        self.held = frame
        self._report(rel)
        return self.opts.max_frames is not None and self.frames_out >= self.opts.max_frames

    def _finish_video(self) -> None:
        if self.held is not None and self.t0 is not None:
            end = self.last_t + self.last_duration - self.t0
            slots = round(end * self.rate_f) - self.frames_out
            if self.frames_out == 0:
                slots = max(slots, 1)
            if slots > 0:
                self._emit(self.held, slots)
            self.held = None
        for packet in self.encoder.encode(None):
            self.out.mux(packet)

    def _emit(self, frame: VideoFrame, repeats: int) -> None:
        """Run the frame function once on ``frame`` and encode the result ``repeats`` times."""
        if self.opts.max_frames is not None:
            repeats = min(repeats, self.opts.max_frames - self.frames_out)
            if repeats <= 0:
                return
        if self.scale is None:
            bgr = self.to_bgr.reformat(frame, format="bgr24")
        else:
            bgr = self.to_bgr.reformat(frame, width=self.scale[0], height=self.scale[1], format="bgr24",
                                       interpolation=self.interpolation)
        image = _to_ndarray(bgr)
        if self.turns:
            image = np.rot90(image, self.turns)
        if image.shape != self.shape:  # odd size at 100 %: crop the last column/row
            image = image[: self.height, : self.width]
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)
        result = self.frame_fn(image)
        if not isinstance(result, np.ndarray) or result.shape != self.shape or result.dtype != np.uint8:
            got = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
            raise ProcessingFailed(f"the frame function returned {got}, expected uint8 {self.shape}",
                                   details={"expected": list(self.shape), "frame": self.frames_out})
        if not result.flags.c_contiguous:
            result = np.ascontiguousarray(result)
        # A zero-copy view of ``result``; the reformat below copies it into the encoder's frame.
        yuv = self.to_yuv.reformat(VideoFrame.from_numpy_buffer(result, format="bgr24"), format="yuv420p",
                                   src_colorspace=self.matrix, dst_colorspace=self.matrix,
                                   dst_color_range="MPEG")
        first = self.frames_out
        for _ in range(repeats):
            yuv.pts = self.pts0 + self.frames_out
            self.out.mux(self.encoder.encode(yuv))
            self.frames_out += 1
        if self.opts.on_written is not None:
            self.opts.on_written(first, repeats)

    def _report(self, rel: float) -> None:
        if self.progress is None or self.duration <= 0:
            return
        done = rel / self.duration
        if self.opts.max_frames is not None:
            done = max(done, self.frames_out / self.opts.max_frames)
        percent = min(99.0, max(0.0, 100.0 * done))
        if percent >= self.reported + 1.0:
            self.reported = percent
            self.progress(percent)


def process_video(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    frame_fn: FrameFn,
    *,
    fps: float | None = None,
    scale_percent: int = 100,
    progress: Callable[[float], None] | None = None,
    options: VideoOptions | None = None,
) -> VideoResult:
    """Decode a video, pass every output frame through ``frame_fn``, encode H.264, keep the audio.

    The output is written to a hidden temporary file next to ``output_path`` and renamed
    over it at the end; on any failure nothing is left behind. Corrupt packets are skipped
    with a warning. Raise from ``progress`` to cancel.

    Args:
        input_path: Any video FFmpeg decodes.
        output_path: Where to write; the suffix picks the container (.mp4, .m4v, .mov, .mkv).
        frame_fn: Called once per output frame, in order, with an upright (H, W, 3) uint8 BGR,
            C-contiguous image of the output size; returns an image of the same shape and dtype
            (a new array or the same one). Frames that the rate conversion drops are not passed.
        fps: Output frame rate (0 < fps <= 240); None keeps the input's average rate. The
            duration stays that of the input: frames are dropped or repeated by timestamp.
        scale_percent: Output size in percent of the input, 10-400; sizes are rounded to even.
        progress: Called with a percentage, 0-100, rising, from the decoded timestamps;
            100 once the output is in place.
        options: Encoder and audio settings.

    Returns:
        Counts, output rate, size and duration, and what happened to the audio.

    Raises:
        InvalidInput: Bad ``fps``/``scale_percent``/suffix, missing input, output directory
            missing, output same as input, or audio="copy" for a codec the container refuses.
        InvalidFormat: As :func:`probe_video`, or the file yields no decodable frame.
        ProcessingFailed: ``frame_fn`` returned a wrong shape or dtype, or encoding/writing failed.
    """
    started = time.perf_counter()
    opts = options or VideoOptions()
    source, target = Path(input_path), Path(output_path)
    out_format = _output_format(target)
    _check_scale(scale_percent)
    if fps is not None:
        _target_rate(fps, Fraction(25))
    if not target.parent.is_dir():
        raise InvalidInput(f"the output directory of {target.name} does not exist", details={"field": "output"})
    if source.exists() and target.exists() and source.resolve() == target.resolve():
        raise InvalidInput("output must not overwrite the input", details={"field": "output"})
    try:
        av.Codec(opts.codec, "w")
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"video encoder {opts.codec!r} is not available", details={"field": "codec"}) from exc
    info = probe_video(source)
    rate = _target_rate(fps, Fraction(info.fps).limit_denominator(1001))

    partial = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.partial{target.suffix}")
    container_options = {"movflags": "+faststart"} if opts.faststart and out_format in ("mp4", "mov") else {}
    try:
        with _open_input(source) as inp:
            try:
                with av.open(str(partial), mode="w", format=out_format, container_options=container_options) as out:
                    job = _Transcode(inp, out, out_format, frame_fn, info, rate, scale_percent, progress, opts,
                                     source.name)
                    job.run()
            except av.error.FFmpegError as exc:
                if exc.errno in _STORAGE_ERRNOS:
                    raise StorageUnavailable(f"the output video cannot be written: {_reason(exc)}",
                                             details={"reason": _reason(exc)}) from exc
                raise ProcessingFailed(f"{source.name}: encoding failed: {_reason(exc)}") from exc
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if job.damage.count:
        log.warning("%s: %d corrupt packets skipped", source.name, job.damage.count)
    if progress is not None:
        progress(100.0)
    audio: AudioResult = "none" if job.audio is None else ("reencoded" if job.audio.reencode else "copied")
    return VideoResult(
        frames_in=job.frames_in,
        frames_out=job.frames_out,
        fps_out=job.rate_f,
        duration_s=job.frames_out / job.rate_f,
        width=job.width,
        height=job.height,
        audio=audio,
        elapsed_s=time.perf_counter() - started,
        skipped_packets=job.damage.count,
    )
