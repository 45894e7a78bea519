"""Seed E, the privacy filter for files: blur faces, plates and text; bleep personal data in speech.

A request names an input and an output path relative to the media root
(``FACEPORT_MEDIA_ROOT``, default ``$FACEPORT_HOME/media``); both are confined to it (no
``..``, no absolute path outside, no symlink leading out). Every accepted request is a row of
the ``jobs`` table (kind ``privacy.process``) run by the local job runner, so a restart
requeues it. The job result holds the output path, timings, counts and, with audio, the
transcript with its redactions.

:func:`redact_file` is the pure function the jobs and the CLI share.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faceport.config import Settings
from faceport.engine.audio import AUDIO_SUFFIXES, Bleeper, PiiDetector, Transcriber, redact_audio_file, redact_words
from faceport.engine.imageio import load_image_file
from faceport.engine.redact import BlurOptions, ClassOptions, Detections, RedactOptions, build_redactor
from faceport.engine.text import load_spacy
from faceport.engine.video import OUTPUT_SUFFIXES, VideoOptions, probe_video, process_video
from faceport.errors import InvalidFormat, InvalidInput, NotFound, ProcessingFailed
from faceport.jobs import ProgressFn
from faceport.store import JobRecord

log = logging.getLogger(__name__)

JOB_KIND = "privacy.process"
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
Media = Literal["video", "image", "audio"]
UPLOAD_DIR = "uploads"
OUTPUT_DIR = "outputs"


# ---- configuration (seed E's Video and Audio Processing Config, plus the request's short flags) ----------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassConfig(_Model):
    enabled: bool = True
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)


class PiiTextConfig(_Model):
    enabled: bool = True
    ocr: str = Field(default="ppocr_v4", description="Accepted for compatibility; PP-OCRv4 is used.")
    confidence_gate: float = Field(default=0.35, ge=0.0, le=1.0)
    mode: Literal["all", "pii"] = "pii"


class ModelsConfig(_Model):
    face: ClassConfig = Field(default_factory=lambda: ClassConfig(confidence=0.4))
    license: ClassConfig = Field(default_factory=lambda: ClassConfig(confidence=0.25))
    pii_text: PiiTextConfig = Field(default_factory=PiiTextConfig)


class BlurConfig(_Model):
    type: Literal["gaussian", "pixelate", "solid"] = "gaussian"
    kernel_size: int = Field(default=41, ge=3, le=255)
    padding: int = Field(default=4, ge=0, le=200)


class VideoConfig(_Model):
    face_detection: bool | None = None
    plate_detection: bool | None = None
    text_detection: bool | None = None
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    blur: BlurConfig = Field(default_factory=BlurConfig)
    detect_every: int = Field(default=3, ge=1, le=300, description="Full face detection every N frames.")
    fps: float | None = Field(default=None, gt=0, le=240)
    scale_percent: int = Field(default=100, ge=10, le=400)


class AudioConfig(_Model):
    enabled: bool = True
    whisper_model: str = Field(default="tiny.en", description="Accepted for compatibility; tiny.en is used.")
    chunk_seconds: int = Field(default=5, ge=1, le=30)
    mouth_blur_window_ms: int = Field(default=500, ge=0, le=10_000)
    redaction: Literal["bleep", "silence"] = "bleep"


class PrivacyConfig(_Model):
    video: VideoConfig = Field(default_factory=VideoConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)

    def redact_options(self) -> RedactOptions:
        v, m = self.video, self.video.models
        face = m.face.enabled if v.face_detection is None else v.face_detection
        plate = m.license.enabled if v.plate_detection is None else v.plate_detection
        text = m.pii_text.enabled if v.text_detection is None else v.text_detection
        return RedactOptions(faces=ClassOptions(face, m.face.confidence),
                             plates=ClassOptions(plate, m.license.confidence),
                             text=ClassOptions(text, m.pii_text.confidence_gate), text_mode=m.pii_text.mode,
                             blur=BlurOptions(v.blur.type, v.blur.kernel_size, v.blur.padding),
                             detect_every=v.detect_every)


def parse_config(data: Any) -> PrivacyConfig:
    """Validate a request's ``config`` object (None: defaults).

    Raises:
        InvalidInput: not an object, unknown field or bad value (``details.field`` names it).
    """
    if data is None:
        return PrivacyConfig()
    if not isinstance(data, dict):
        raise InvalidInput("config must be a JSON object", details={"field": "config"})
    try:
        return PrivacyConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"config.{where}: {first['msg']}", details={"field": f"config.{where}"}) from None


def media_kind(path: Path) -> Media:
    """The kind of media a file name says it holds.

    Raises:
        InvalidFormat: an unsupported suffix (``Unsupported file type: .xyz``).
    """
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    raise InvalidFormat(f"Unsupported file type: {suffix or '(none)'}", details={"suffix": suffix})


def confine(root: Path, relative: str, *, field_name: str) -> Path:
    """``relative`` resolved inside ``root``, refusing any escape.

    Raises:
        InvalidInput: empty, a ``..`` component, an absolute path outside the root, or a
            path (or symlink) that resolves outside the root.
    """
    if not relative or "\x00" in relative:
        raise InvalidInput(f"{field_name} must be a non-empty path", details={"field": field_name})
    candidate = Path(relative)
    if ".." in candidate.parts:
        raise InvalidInput(f"{field_name} must not contain '..'", details={"field": field_name})
    base = root.resolve()
    full = candidate if candidate.is_absolute() else base / candidate
    resolved = full.resolve()
    if not resolved.is_relative_to(base):
        raise InvalidInput(f"{field_name} is outside the media root", details={"field": field_name})
    return resolved


# ---- the work ----------------------------------------------------------------------------------------------------
@dataclass
class RedactReport:
    """What :func:`redact_file` did (the job result)."""

    media: Media
    output: Path
    processing_time: float
    frames: int = 0
    fps: float = 0.0
    faces: int = 0
    plates: int = 0
    text_regions: int = 0
    transcript: str | None = None
    redactions: list[dict[str, Any]] = field(default_factory=list)
    audio: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return {"media": self.media, "processing_time": round(self.processing_time, 3), "frames": self.frames,
                "fps": round(self.fps, 2), "detections": {"faces": self.faces, "plates": self.plates,
                                                           "text_regions": self.text_regions},
                "audio": self.audio, "transcript": self.transcript, "redactions": self.redactions}


class Speech:
    """The ASR and PII models, loaded once per service (tiny.en and spaCy small)."""

    def __init__(self, cache: Any) -> None:
        self.transcriber = Transcriber(cache.get("whisper_tiny_en"))
        self.pii = PiiDetector(load_spacy(cache.get("spacy_en_core_web_sm")))


def redact_file(cache: Any, source: Path, target: Path, config: PrivacyConfig, *,
                progress: Callable[[float], None] | None = None, speech: Speech | None = None) -> RedactReport:
    """Redact one image, video or audio file.

    Args:
        cache: The model cache.
        source: Input file (image, video or audio by suffix).
        target: Output file (same kind of media).
        config: Seed E config.
        progress: Percent callback, rising 0-100.
        speech: Loaded ASR/PII models (loaded here when None and audio is enabled).

    Raises:
        InvalidFormat: unsupported, unreadable or corrupt input; input and output kinds differ.
        InvalidInput: bad paths or options.
        ModelUnavailable: a needed model is not installed.
    """
    started = time.perf_counter()
    report_progress = progress or (lambda _p: None)
    kind, out_kind = media_kind(source), media_kind(target)
    if kind != out_kind and not (kind == "video" and out_kind == "video"):
        raise InvalidFormat(f"output must be {kind} like the input, got {target.suffix}",
                            details={"field": "output_path"})
    if kind == "video" and target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InvalidFormat(f"Unsupported video output type: {target.suffix}; use one of {', '.join(OUTPUT_SUFFIXES)}",
                            details={"field": "output_path"})
    target.parent.mkdir(parents=True, exist_ok=True)
    options = config.redact_options()
    if kind == "image":
        image = load_image_file(source)
        redactor = build_redactor(cache, options)
        out, found = redactor.redact_image(image)
        _write_image(target, out)
        report_progress(100.0)
        return RedactReport("image", target, time.perf_counter() - started, frames=1, faces=len(found.faces),
                            plates=len(found.plates), text_regions=len(found.text))
    if kind == "audio":
        if not config.audio.enabled:
            raise InvalidInput("audio.enabled is false: nothing to do for an audio file", details={"field": "config"})
        speech = speech or Speech(cache)
        words, _ = speech.transcriber.transcribe(source, chunk_seconds=config.audio.chunk_seconds)
        report_progress(60.0)
        redactions = redact_words(words, speech.pii)
        redact_audio_file(source, target, Bleeper([(r.start, r.end) for r in redactions], mode=config.audio.redaction))
        report_progress(100.0)
        return RedactReport("audio", target, time.perf_counter() - started, transcript=_transcript(words, redactions),
                            redactions=[_red(r) for r in redactions], audio=config.audio.redaction)
    info = probe_video(source)
    video_options = VideoOptions()
    mouth_spans: list[tuple[float, float]] = []
    transcript: str | None = None
    redactions: list[Any] = []
    share = 0.0
    if config.audio.enabled and info.has_audio:
        speech = speech or Speech(cache)
        words, _ = speech.transcriber.transcribe(source, chunk_seconds=config.audio.chunk_seconds)
        redactions = redact_words(words, speech.pii)
        bleeper = Bleeper([(r.start, r.end) for r in redactions], mode=config.audio.redaction)
        video_options = VideoOptions(audio_filter=bleeper)
        window = config.audio.mouth_blur_window_ms / 1000.0
        mouth_spans = [(r.start - window, r.end + window) for r in redactions] if window > 0 else []
        transcript = _transcript(words, redactions)
        share = 15.0
        report_progress(share)
    redactor = build_redactor(cache, options, mouths=bool(mouth_spans))
    counts = {"faces": 0, "plates": 0, "text": 0}

    def count(found: Detections) -> None:
        counts["faces"] = max(counts["faces"], len(found.faces))
        counts["plates"] = max(counts["plates"], len(found.plates))
        counts["text"] = max(counts["text"], len(found.text))

    fps = config.video.fps or info.fps
    frame_fn = redactor.stream(fps=fps, mouth_spans=mouth_spans, on_frame=count)
    result = process_video(source, target, frame_fn, fps=config.video.fps, scale_percent=config.video.scale_percent,
                           progress=lambda p: report_progress(share + p * (100.0 - share) / 100.0),
                           options=video_options)
    elapsed = time.perf_counter() - started
    return RedactReport("video", target, elapsed, frames=result.frames_out, fps=result.frames_out / max(elapsed, 1e-6),
                        faces=counts["faces"], plates=counts["plates"], text_regions=counts["text"],
                        transcript=transcript, redactions=[_red(r) for r in redactions], audio=result.audio)


def _red(r: Any) -> dict[str, Any]:
    return {"type": r.kind, "start": round(r.start, 2), "end": round(r.end, 2), "text": r.text}


def _transcript(words: list[Any], redactions: list[Any]) -> str:
    hidden = {i: r.kind for r in redactions for i in range(r.first_word, r.last_word + 1)}
    parts: list[str] = []
    for i, word in enumerate(words):
        if i in hidden:
            if i - 1 not in hidden:
                parts.append(f" [{hidden[i].upper()}]")
            continue
        parts.append(word.text)
    return "".join(parts).strip()


def _write_image(target: Path, image: Any) -> None:
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    ok, data = cv2.imencode(target.suffix.lower() if target.suffix.lower() != ".jpeg" else ".jpg", image)
    if not ok:
        raise ProcessingFailed(f"could not encode {target.suffix} image")
    partial.write_bytes(data.tobytes())
    os.replace(partial, target)


# ---- the service ---------------------------------------------------------------------------------------------------
class PrivacyService:
    """Privacy jobs over the media root (seed E's REST API)."""

    def __init__(self, settings: Settings, cache: Any, jobs: Any) -> None:
        self.settings = settings
        self.cache = cache
        self.jobs = jobs
        self.root = Path(getattr(settings, "media_root", None) or settings.home / "media")
        self._speech: Speech | None = None
        self._fps_measured: float | None = None  # video frames per second of the last finished job
        if jobs is not None:
            jobs.register(JOB_KIND, self._run, on_finish=self._finished)

    def ensure_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def speech(self) -> Speech:
        if self._speech is None:
            self._speech = Speech(self.cache)
        return self._speech

    def validate(self, input_path: str, output_path: str | None, config: Any) -> dict[str, Any]:
        """Check a request and return the job parameters.

        Raises:
            InvalidInput, InvalidFormat, NotFound: as the seed's 400/404 errors.
        """
        root = self.ensure_root()
        source = confine(root, input_path, field_name="input_path")
        kind = media_kind(source)
        if not source.is_file():
            raise NotFound(f"input file not found: {input_path}", details={"field": "input_path"})
        if output_path is None:
            suffix = ".mp4" if kind == "video" else source.suffix
            output_path = f"{OUTPUT_DIR}/{source.stem}.redacted.{uuid.uuid4().hex[:8]}{suffix}"
        target = confine(root, output_path, field_name="output_path")
        out_kind = media_kind(target)
        if out_kind != kind:
            raise InvalidFormat(f"output_path must be a {kind} file like the input, got {target.suffix}",
                                details={"field": "output_path"})
        if target == source:
            raise InvalidInput("output_path must differ from input_path", details={"field": "output_path"})
        parsed = parse_config(config)
        estimate = 5.0
        if kind == "video":
            info = probe_video(source)  # a corrupt or audio-only file is refused here, before queuing
            estimate = info.frame_count / (self._fps_measured or 8.0) + (info.duration_s * 0.1 if info.has_audio else 0)
        elif kind == "audio":
            _check_audio(source)
        return {"input_path": str(source.relative_to(root.resolve())),
                "output_path": str(target.relative_to(root.resolve())),
                "config": parsed.model_dump(), "media": kind, "estimated_time": round(estimate, 1)}

    def submit(self, input_path: str, output_path: str | None, config: Any) -> JobRecord:
        params = self.validate(input_path, output_path, config)
        return self.jobs.submit(JOB_KIND, params)

    def save_upload(self, filename: str, data_iter: Callable[[], bytes]) -> str:
        """Store an uploaded file under ``uploads/`` of the media root; returns its relative path."""
        suffix = Path(filename or "").suffix.lower()
        media_kind(Path(f"x{suffix}"))
        folder = self.ensure_root() / UPLOAD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}{suffix}"
        (folder / name).write_bytes(data_iter())
        return f"{UPLOAD_DIR}/{name}"

    def _run(self, record: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        params = record.params
        root = self.root.resolve()
        source = confine(root, params["input_path"], field_name="input_path")
        target = confine(root, params["output_path"], field_name="output_path")
        config = parse_config(params.get("config"))
        speech = self.speech() if config.audio.enabled and params.get("media") in ("audio", "video") else None
        report = redact_file(self.cache, source, target, config, progress=progress, speech=speech)
        if report.media == "video" and report.fps > 0:
            self._fps_measured = report.fps
        return {**report.as_dict(), "output_path": params["output_path"]}

    def _finished(self, record: JobRecord) -> None:
        log.info("privacy job %s %s", record.id, record.state)

    def job(self, job_id: str) -> JobRecord:
        """Raises: NotFound for an unknown id or a job of another kind."""
        from faceport.store import get_job

        with self.jobs.store.session() as session:
            record = get_job(session=session, job_id=job_id)
        if record.kind != JOB_KIND:
            raise NotFound(f"job {job_id} not found")
        return record


def _check_audio(path: Path) -> None:
    import av
    import av.error

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InvalidFormat(f"{path.name} has no audio stream")
    except av.error.FFmpegError as exc:
        raise InvalidFormat(f"{path.name} is not a readable audio file: {exc.strerror or exc}") from exc
