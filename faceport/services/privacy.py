"""Seed E, the privacy filter for files: blur faces, plates and text; bleep personal data in speech.

A request names an input and an output path relative to the media root
(``FACEPORT_MEDIA_ROOT``, default ``$FACEPORT_HOME/media``); both are confined to it (no
``..``, no absolute path outside, no symlink leading out, no over-long name). An existing
output is replaced only when the request says ``overwrite``. Every input is checked before a
job is queued (an image must decode, a video must probe, an audio file must hold audio).
Every accepted request is a row of the ``jobs`` table (kind ``privacy.process``) run by the
local job runner, so a restart requeues it. The job result holds the output path, timings,
counts and, with audio, the transcript with its redactions.

Multipart uploads are copied in chunks to a hidden staging file under ``uploads/`` (the size
limit checked while copying), renamed once the request is accepted and deleted when its job
ends; a refused upload is deleted at once. At start-up, before the runner resumes jobs, staging
files of requests that died mid-upload, uploads no waiting job needs and partial outputs of
interrupted jobs are removed. A media root that cannot be written is ``STORAGE_UNAVAILABLE``
(503) naming ``FACEPORT_MEDIA_ROOT``; no message names an absolute server path.

:func:`redact_file` is the pure function the jobs and the CLI share.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from faceport.config import Settings
from faceport.engine.audio import (
    AUDIO_SUFFIXES,
    Bleeper,
    PiiDetector,
    SpeechAnalyzer,
    SpeechOptions,
    SpeechResult,
    Transcriber,
    redact_audio_file,
)
from faceport.engine.imageio import load_image_file
from faceport.engine.redact import BlurOptions, ClassOptions, Detections, RedactOptions, TextFilter, build_redactor
from faceport.engine.text import load_spacy
from faceport.engine.video import OUTPUT_SUFFIXES, VideoOptions, probe_video, process_video
from faceport.errors import (
    FaceportError,
    FileTooLarge,
    InvalidFormat,
    InvalidInput,
    NotFound,
    OutputExists,
    ProcessingFailed,
    StorageUnavailable,
)
from faceport.jobs import ProgressFn
from faceport.services.privacy_report import ReportWriter, audio_spans, partial_report_path, report_path
from faceport.store import JobRecord, JobState

log = logging.getLogger(__name__)

JOB_KIND = "privacy.process"
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
Media = Literal["video", "image", "audio"]
UPLOAD_DIR = "uploads"
OUTPUT_DIR = "outputs"
STAGING_PREFIX = ".staging-"
ROOT_SETTING = "FACEPORT_MEDIA_ROOT"
MAX_PATH_CHARS = 1024  # a request path in all
MAX_NAME_BYTES = 255  # one name in it (NAME_MAX of common filesystems)
_CHUNK = 1 << 20
# errors that mean "this folder cannot be written", not "this request is wrong"
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR,
                             errno.EEXIST, errno.EIO})


# ---- configuration (seed E's Video and Audio Processing Config, plus the request's short flags) ----------------
class _Model(BaseModel):
    # strict: "yes" is not a boolean and "5" is not an integer (JSON has real ones)
    model_config = ConfigDict(extra="forbid", strict=True)


class ClassConfig(_Model):
    enabled: bool = True
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)


class PiiTextConfig(_Model):
    enabled: bool = True
    ocr: str = Field(default="ppocr_v4", description="Accepted for compatibility; PP-OCRv4 is used.")
    confidence_gate: float = Field(default=0.35, ge=0.0, le=1.0)
    mode: Literal["all", "pii"] = "pii"
    # pii mode precision, as Presidio's image redactor offers (faceport.engine.redact.TextFilter)
    entities: list[str] | None = Field(default=None, max_length=20, description="Kinds hidden in pii mode (name, "
                                       "email, phone, card, address, id, date, mrz, or Presidio's PERSON, ...); "
                                       "null: all.")
    allow_list: list[str] = Field(default_factory=list, max_length=1000, description="Terms never hidden.")
    deny_list: list[str] = Field(default_factory=list, max_length=1000, description="Terms always hidden.")
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Least match score hidden.")

    @field_validator("entities", "allow_list", "deny_list")
    @classmethod
    def _known_and_short(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        try:  # the engine's own checks, so a bad list is refused before a job is queued
            if info.field_name == "entities":
                TextFilter(entities=tuple(value or ()))
            else:
                TextFilter(**{str(info.field_name): tuple(value or ())})
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value

    def text_filter(self) -> TextFilter:
        if self.entities is None:
            return TextFilter(allow_list=tuple(self.allow_list), deny_list=tuple(self.deny_list),
                              score_threshold=self.score_threshold)
        return TextFilter(tuple(self.entities), tuple(self.allow_list), tuple(self.deny_list), self.score_threshold)


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
    detect_every: int = Field(default=1, ge=1, le=300, description="Full face detection every N frames.")
    fps: float | None = Field(default=None, gt=0, le=240)
    scale_percent: int = Field(default=100, ge=10, le=400)


class AudioConfig(_Model):
    enabled: bool = True
    whisper_model: str = Field(default="tiny.en", description="Accepted for compatibility; tiny.en is used.")
    chunk_seconds: int = Field(default=5, ge=1, le=30,
                               description="Accepted for compatibility; files are transcribed whole.")
    mouth_blur_window_ms: int = Field(default=500, ge=0, le=10_000)
    redaction: Literal["bleep", "silence"] = "bleep"
    pad_before_ms: int = Field(default=150, ge=0, le=2_000, description="Bleeped before each item.")
    pad_after_ms: int = Field(default=100, ge=0, le=2_000, description="Bleeped after each item.")
    language: str = Field(default="auto", pattern=r"^(auto|[a-z]{2,3})$",
                          description="Spoken language: auto (detected) or an ISO 639-1 code.")
    unsupported_language: Literal["fail", "skip", "process"] = Field(
        default="fail", description="Speech in a language without an offline named-entity model: fail the job, "
                                    "skip (audio left as it is) or process (trigger phrases and patterns only); "
                                    "skip and process add a warning to the result.")

    def speech_options(self) -> SpeechOptions:
        return SpeechOptions(language=self.language, unsupported_language=self.unsupported_language,
                             pad_before_s=self.pad_before_ms / 1000, pad_after_s=self.pad_after_ms / 1000,
                             chunk_seconds=self.chunk_seconds)


class PrivacyConfig(_Model):
    video: VideoConfig = Field(default_factory=VideoConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    report: bool = Field(default=False, description="Write <output>.report.json: every box hidden per frame and "
                         "why, every audio span redacted (faceport.services.privacy_report).")
    report_text: bool = Field(default=False, description="Put the raw text (plates, OCR values, spoken words) in "
                              "the report; left out by default.")

    def redact_options(self) -> RedactOptions:
        v, m = self.video, self.video.models
        face = m.face.enabled if v.face_detection is None else v.face_detection
        plate = m.license.enabled if v.plate_detection is None else v.plate_detection
        text = m.pii_text.enabled if v.text_detection is None else v.text_detection
        return RedactOptions(faces=ClassOptions(face, m.face.confidence),
                             plates=ClassOptions(plate, m.license.confidence),
                             text=ClassOptions(text, m.pii_text.confidence_gate), text_mode=m.pii_text.mode,
                             text_filter=m.pii_text.text_filter(),
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
        raise InvalidInput(f"config: expected an object, got {json_type(data)}", details={"field": "config"})
    try:
        return PrivacyConfig.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc, prefix="config") from None


_EXPECTED = {"string_type": "a string", "bool_type": "a boolean (true or false)", "int_type": "an integer",
             "float_type": "a number", "dict_type": "an object", "model_type": "an object", "list_type": "an array"}


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, for messages ("a string", "an object", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def invalid_input(exc: ValidationError, *, prefix: str = "") -> InvalidInput:
    """The first error of a validation as ``InvalidInput`` whose message names the field and the expected type."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "") or "body"
    expected = _EXPECTED.get(first["type"])
    text = f"expected {expected}, got {json_type(first.get('input'))}" if expected else first["msg"]
    return InvalidInput(f"{where}: {text}", details={"field": where})


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
        InvalidInput: empty, over-long (``MAX_PATH_CHARS`` in all, ``MAX_NAME_BYTES`` per name),
            not UTF-8, a ``..`` component, an absolute path outside the root, or a path (or
            symlink) that resolves outside the root.
    """
    if not relative or "\x00" in relative:
        raise InvalidInput(f"{field_name} must be a non-empty path", details={"field": field_name})
    if len(relative) > MAX_PATH_CHARS:
        raise InvalidInput(f"{field_name} is too long ({len(relative)} characters; at most {MAX_PATH_CHARS})",
                           details={"field": field_name})
    try:
        longest = max(len(part.encode("utf-8")) for part in relative.split("/"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{field_name} is not valid UTF-8 text", details={"field": field_name}) from None
    if longest > MAX_NAME_BYTES:
        raise InvalidInput(f"{field_name}: a name in it is {longest} bytes long; at most {MAX_NAME_BYTES} per file or "
                           "folder name", details={"field": field_name})
    candidate = Path(relative)
    if ".." in candidate.parts:
        raise InvalidInput(f"{field_name} must not contain '..'", details={"field": field_name})
    base = root.resolve()
    full = candidate if candidate.is_absolute() else base / candidate
    try:
        resolved = full.resolve()
    except (OSError, RuntimeError):  # a symlink loop, an unreadable folder
        raise InvalidInput(f"{field_name} cannot be resolved (symlink loop?)", details={"field": field_name}) from None
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
    report: Path | None = None  # the audit report written beside the output (``"report": true``)
    language: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"media": self.media, "processing_time": round(self.processing_time, 3), "frames": self.frames,
                "fps": round(self.fps, 2), "detections": {"faces": self.faces, "plates": self.plates,
                                                           "text_regions": self.text_regions},
                "audio": self.audio, "transcript": self.transcript, "redactions": self.redactions,
                "language": self.language, "warnings": self.warnings}


class Speech:
    """The ASR and PII models, loaded on first use, once per service (tiny.en, Whisper base, spaCy small)."""

    def __init__(self, cache: Any) -> None:
        self.analyzer = SpeechAnalyzer(
            english=lambda: Transcriber(cache.get("whisper_tiny_en")),
            multilingual=lambda: Transcriber(cache.get("whisper_base")),
            english_ner=lambda: PiiDetector(load_spacy(cache.get("spacy_en_core_web_sm"))))

    def analyse(self, source: Path, config: AudioConfig) -> SpeechResult:
        return self.analyzer.analyse(source, config.speech_options())


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
    audit = _audit(config, kind, source, target)
    try:
        result = _redact(cache, source, target, config, kind, report_progress, speech, audit, started)
    except BaseException:
        if audit is not None:
            audit.abort()
        raise
    if audit is not None:
        result.report = audit.close()
    return result


def _audit(config: PrivacyConfig, kind: Media, source: Path, target: Path) -> ReportWriter | None:
    if not config.report:
        return None
    fps = 0.0
    if kind == "video":
        fps = config.video.fps or probe_video(source).fps
    return ReportWriter(target, media=kind, source_name=source.name, config=config.model_dump(),
                        padding=config.video.blur.padding, fps=fps, include_text=config.report_text)


def _redact(cache: Any, source: Path, target: Path, config: PrivacyConfig, kind: Media,
            report_progress: Callable[[float], None], speech: Speech | None, audit: ReportWriter | None,
            started: float) -> RedactReport:
    options = config.redact_options()
    if kind == "image":
        image = load_image_file(source)
        redactor = build_redactor(cache, options)
        out, found = redactor.redact_image(image)
        _write_image(target, out)
        if audit is not None:
            audit.frame(found, image.shape)
            audit.written(0, 1)
        report_progress(100.0)
        return RedactReport("image", target, time.perf_counter() - started, frames=1, faces=len(found.faces),
                            plates=len(found.plates), text_regions=len(found.text))
    if kind == "audio":
        if not config.audio.enabled:
            raise InvalidInput("audio.enabled is false: nothing to do for an audio file", details={"field": "config"})
        heard = (speech or Speech(cache)).analyse(source, config.audio)
        report_progress(60.0)
        redactions = heard.redactions
        bleeper = Bleeper([(r.start, r.end) for r in redactions], mode=config.audio.redaction)
        if audit is not None and heard.action != "skipped":
            audit.audio(config.audio.redaction, audio_spans(redactions, bleeper.spans))
        redact_audio_file(source, target, bleeper)
        report_progress(100.0)
        return RedactReport("audio", target, time.perf_counter() - started,
                            transcript=_transcript(heard.words, redactions) if heard.action != "skipped" else None,
                            redactions=[_red(r) for r in redactions],
                            audio=config.audio.redaction if heard.action != "skipped" else "unredacted",
                            language=heard.language, warnings=heard.warnings)
    info = probe_video(source)
    video_options = VideoOptions()
    mouth_spans: list[tuple[float, float]] = []
    transcript: str | None = None
    redactions: list[Any] = []
    heard: SpeechResult | None = None
    share = 0.0
    if config.audio.enabled and info.has_audio:
        heard = (speech or Speech(cache)).analyse(source, config.audio)
        redactions = heard.redactions
        if heard.action != "skipped":
            bleeper = Bleeper([(r.start, r.end) for r in redactions], mode=config.audio.redaction)
            if audit is not None:
                audit.audio(config.audio.redaction, audio_spans(redactions, bleeper.spans))
            video_options = VideoOptions(audio_filter=bleeper)
            transcript = _transcript(heard.words, redactions)
        window = config.audio.mouth_blur_window_ms / 1000.0
        mouth_spans = [(r.start - window, r.end + window) for r in redactions] if window > 0 else []
        share = 15.0
        report_progress(share)
    redactor = build_redactor(cache, options, mouths=bool(mouth_spans))
    counts = {"faces": 0, "plates": 0, "text": 0}
    latest: list[Detections] = []

    def count(found: Detections) -> None:
        counts["faces"] = max(counts["faces"], len(found.faces))
        counts["plates"] = max(counts["plates"], len(found.plates))
        counts["text"] = max(counts["text"], len(found.text))
        latest[:] = [found]

    fps = config.video.fps or info.fps
    frame_fn = redactor.stream(fps=fps, mouth_spans=mouth_spans, on_frame=count)
    if audit is not None:
        frame_fn = _audited(frame_fn, latest, audit)
        video_options = dataclasses.replace(video_options, on_written=audit.written)
    result = process_video(source, target, frame_fn, fps=config.video.fps, scale_percent=config.video.scale_percent,
                           progress=lambda p: report_progress(share + p * (100.0 - share) / 100.0),
                           options=video_options)
    elapsed = time.perf_counter() - started
    return RedactReport("video", target, elapsed, frames=result.frames_out, fps=result.frames_out / max(elapsed, 1e-6),
                        faces=counts["faces"], plates=counts["plates"], text_regions=counts["text"],
                        transcript=transcript, redactions=[_red(r) for r in redactions],
                        audio="unredacted" if heard is not None and heard.action == "skipped" else result.audio,
                        language=None if heard is None else heard.language,
                        warnings=[] if heard is None else heard.warnings)


def _audited(frame_fn: Callable[[Any], Any], latest: list[Detections], audit: ReportWriter) -> Callable[[Any], Any]:
    """``frame_fn`` that hands each frame's detections (``latest``, set by its ``on_frame``) to the report."""

    def run(frame: Any) -> Any:
        out = frame_fn(frame)
        audit.frame(latest[-1] if latest else Detections(), frame.shape)
        return out

    return run


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
def _storage(what: str, exc: OSError) -> StorageUnavailable:
    """``STORAGE_UNAVAILABLE`` naming the media root's setting and the OS reason, never the path."""
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return StorageUnavailable(f"{what}: {reason}; check that {ROOT_SETTING} is a writable folder with free space",
                              details={"setting": ROOT_SETTING, "reason": reason})


def _check_output_folder(root: Path, target: Path) -> None:
    """Refuse an output below an existing file, or naming a folder (the request's mistake, not the storage's)."""
    if target.is_dir():
        raise InvalidInput(f"output_path {target.relative_to(root)} is a folder, not a file",
                           details={"field": "output_path"})
    for folder in (target.parent, *target.parent.parents):
        if folder == root or not folder.is_relative_to(root):
            break
        if folder.exists() and not folder.is_dir():
            raise InvalidInput(f"output_path: {folder.relative_to(root)} is a file, not a folder",
                               details={"field": "output_path"})


def _writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written in it.

    Raises:
        StorageUnavailable: read-only, full, or blocked (e.g. the root lies below a regular file).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".faceport-probe-"):
            pass
    except OSError as exc:
        raise _storage(f"{what} cannot be written", exc) from None


def _partials(target: Path) -> list[Path]:
    """Hidden partial files the engine writes next to ``target`` before renaming them over it."""
    stem, suffix = glob.escape(target.stem), glob.escape(target.suffix)
    if not target.parent.is_dir():
        return []
    return [*target.parent.glob(f".{stem}.partial{suffix}"), *target.parent.glob(f".{stem}.????????.partial{suffix}"),
            *([partial_report_path(target)] if partial_report_path(target).exists() else [])]


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
        """The media root, created if missing.

        Raises:
            StorageUnavailable: it cannot be created (read-only parent, a regular file in the way).
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage("the media root cannot be created", exc) from None
        return self.root

    def unwritable_storage(self) -> list[str]:
        """The media root when it fails a write probe (create and delete a small file), as ``media:<setting>``."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.ensure_root(), prefix=".probe-"):
                pass
        except (OSError, StorageUnavailable):
            return [f"media:{ROOT_SETTING}"]
        return []

    def start(self) -> int:
        """Remove what a previous process left behind; call before the job runner starts.

        Staging files of uploads that never became a job, uploads no waiting job needs, and
        partial outputs of jobs that were running when the process stopped. Returns files removed.
        """
        try:
            root = self.ensure_root().resolve()
        except StorageUnavailable as exc:
            log.warning("privacy: %s", exc.message)
            return 0
        waiting = self._waiting_jobs()
        needed = {str(r.params.get("input_path")) for r in waiting if r.params.get("upload")}
        removed = 0
        uploads = root / UPLOAD_DIR
        # with Celery workers other processes share the media root: an upload younger than an hour may be
        # another node's request in flight, and a running job's partial output belongs to a live worker
        shared = getattr(self.settings, "jobs", "local") == "celery"
        if uploads.is_dir():
            for path in uploads.iterdir():
                if path.is_file() and f"{UPLOAD_DIR}/{path.name}" not in needed \
                        and not (shared and time.time() - path.stat().st_mtime < 3600):
                    path.unlink(missing_ok=True)
                    removed += 1
        if shared:
            waiting = []  # a worker removes a job's partial outputs when it (re)starts the job, see _run
        for record in waiting:
            try:
                target = confine(root, str(record.params.get("output_path", "")), field_name="output_path")
            except FaceportError:
                continue
            for partial in _partials(target):
                partial.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("privacy: removed %d leftover upload(s)/partial output(s) of an earlier run", removed)
        return removed

    def _waiting_jobs(self) -> list[JobRecord]:
        if self.jobs is None:
            return []
        from faceport.store import list_jobs

        found: list[JobRecord] = []
        with self.jobs.store.session() as session:
            for state in (JobState.QUEUED, JobState.RUNNING):
                offset = 0
                while page := list_jobs(session=session, kind=JOB_KIND, state=state, limit=1000, offset=offset):
                    found.extend(page)
                    offset += len(page)
        return found

    def speech(self) -> Speech:
        if self._speech is None:
            self._speech = Speech(self.cache)
        return self._speech

    def validate(self, input_path: str, output_path: str | None, config: Any, *, overwrite: bool = False,
                 upload: bool = False) -> dict[str, Any]:
        """Check a request and return the job parameters.

        Args:
            input_path: Relative to the media root; ``uploads/`` only for an ``upload``.
            output_path: Relative to the media root; None: ``outputs/<name>.redacted.<id><suffix>``.
            config: Seed E's config object (None: defaults).
            overwrite: Replace an existing output.
            upload: The input is a multipart upload this service stored (deleted when the job ends).

        Raises:
            InvalidInput, InvalidFormat, InvalidImage, NotFound, OutputExists: as 400/404/409 errors.
            StorageUnavailable: the media root or the output folder cannot be written.
        """
        root = self.ensure_root().resolve()
        source = confine(root, input_path, field_name="input_path")
        if not upload:
            _not_reserved(root, source, "input_path")
        kind = media_kind(source)
        if not source.is_file():
            raise NotFound(f"input file not found: {source.relative_to(root)}", details={"field": "input_path"})
        parsed = parse_config(config)
        if output_path is None:
            suffix = ".mp4" if kind == "video" else source.suffix
            stem = source.stem.removeprefix(STAGING_PREFIX)
            output_path = f"{OUTPUT_DIR}/{stem}.redacted.{uuid.uuid4().hex[:8]}{suffix}"
        target = confine(root, output_path, field_name="output_path")
        _not_reserved(root, target, "output_path")
        out_kind = media_kind(target)
        if out_kind != kind:
            raise InvalidFormat(f"output_path must be a {kind} file like the input, got {target.suffix}",
                                details={"field": "output_path"})
        if target == source:
            raise InvalidInput("output_path must differ from input_path", details={"field": "output_path"})
        _check_output_folder(root, target)
        if target.exists() and not overwrite:
            raise OutputExists(f"output_path {target.relative_to(root)} already exists; send \"overwrite\": true "
                               "to replace it", details={"field": "output_path"})
        if parsed.report and report_path(target).exists() and not overwrite:
            raise OutputExists(f"the report {report_path(target).relative_to(root)} already exists; send "
                               "\"overwrite\": true to replace it", details={"field": "output_path"})
        estimate = 5.0
        if kind == "video":
            info = probe_video(source)  # a corrupt or audio-only file is refused here, before queuing
            estimate = info.frame_count / (self._fps_measured or 8.0) + (info.duration_s * 0.1 if info.has_audio else 0)
        elif kind == "audio":
            _check_audio(source)
        else:
            _check_image(source, max_pixels=self.settings.max_image_pixels, max_bytes=self.settings.max_image_bytes)
        _writable_folder(target.parent, "the output folder")
        return {"input_path": str(source.relative_to(root)), "output_path": str(target.relative_to(root)),
                "config": parsed.model_dump(), "media": kind, "estimated_time": round(estimate, 1),
                "overwrite": overwrite, "upload": upload}

    def submit(self, input_path: str, output_path: str | None, config: Any, *, overwrite: bool = False) -> JobRecord:
        try:
            params = self.validate(input_path, output_path, config, overwrite=overwrite)
        except FaceportError as exc:
            raise _scrubbed(exc, self.root.resolve()) from None
        return self.jobs.submit(JOB_KIND, params)

    def submit_upload(self, filename: str, stream: IO[bytes], output_path: str | None, config: Any, *,
                      overwrite: bool = False) -> JobRecord:
        """Store a multipart upload under ``uploads/`` and queue its job (blocking: run on the thread pool).

        The bytes are copied in chunks to a hidden staging file, the size limit
        (``max_upload_bytes``) checked while copying; a refused upload is deleted at once, an
        accepted one when its job ends.

        Raises:
            As :meth:`validate`, and FileTooLarge over ``max_upload_bytes``.
        """
        suffix = Path(filename or "").suffix.lower()
        media_kind(Path(f"x{suffix}"))  # an unsupported type is refused before copying anything
        parse_config(config)
        folder = self.ensure_root() / UPLOAD_DIR
        _writable_folder(folder, "the upload folder")
        token = uuid.uuid4().hex
        staging = folder / f"{STAGING_PREFIX}{token}{suffix}"
        final = folder / f"{token}{suffix}"
        try:
            self._copy(stream, staging)
            params = self.validate(f"{UPLOAD_DIR}/{staging.name}", output_path, config, overwrite=overwrite,
                                   upload=True)
            os.replace(staging, final)
            params["input_path"] = f"{UPLOAD_DIR}/{final.name}"
            return self.jobs.submit(JOB_KIND, params)
        except FaceportError as exc:
            staging.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            # messages name the client's file, not the server's staging copy or its folder
            client_name = Path(filename or "upload").name[:100] or "upload"
            scrubbed = _scrubbed(exc, self.root.resolve(), {f"{UPLOAD_DIR}/{staging.name}": client_name,
                                                            staging.name: client_name})
            raise scrubbed from None
        except BaseException:
            staging.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise

    def _copy(self, stream: IO[bytes], target: Path) -> None:
        limit = self.settings.max_upload_bytes
        written = 0
        try:
            with target.open("xb") as out:
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise FileTooLarge(f"file exceeds the {limit // (1024 * 1024)} MB limit",
                                           details={"field": "file", "limit_bytes": limit})
                    out.write(chunk)
        except OSError as exc:
            raise _storage("the upload folder cannot be written", exc) from None

    def _run(self, record: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        params = record.params
        root = self.root.resolve()
        try:
            source = confine(root, params["input_path"], field_name="input_path")
            target = confine(root, params["output_path"], field_name="output_path")
            if target.exists() and not params.get("overwrite", True):  # rows from before "overwrite" replaced
                raise OutputExists(f"output_path {params['output_path']} appeared after the job was queued; "
                                   "send \"overwrite\": true to replace it", details={"field": "output_path"})
            if record.attempts > 1:  # an earlier attempt was killed mid-write: its partial output is litter
                for partial in _partials(target):
                    partial.unlink(missing_ok=True)
            config = parse_config(params.get("config"))
            speech = self.speech() if config.audio.enabled and params.get("media") in ("audio", "video") else None
            _writable_folder(target.parent, "the output folder")
            report = redact_file(self.cache, source, target, config, progress=progress, speech=speech)
        except StorageUnavailable:
            raise
        except FaceportError as exc:
            cause = exc.__cause__
            if isinstance(exc, ProcessingFailed) and isinstance(cause, Exception) \
                    and getattr(cause, "errno", None) in _STORAGE_ERRNOS:  # PyAV could not write the output
                raise _storage("the output could not be written", OSError(cause.errno, "")) from None
            raise _scrubbed(exc, root) from None
        except OSError as exc:
            if exc.errno in _STORAGE_ERRNOS:
                raise _storage("the output could not be written", exc) from None
            raise
        if report.media == "video" and report.fps > 0:
            self._fps_measured = report.fps
        result = {**report.as_dict(), "output_path": params["output_path"]}
        if report.report is not None:
            result["report_path"] = str(report.report.relative_to(root))
        return result

    def report_file(self, job_id: str) -> Path:
        """The audit report of a completed job that asked for one (``"report": true``).

        Raises:
            NotFound: unknown job, another kind of job, not completed, no report asked for, or
                the file is gone (retention, deleted by hand).
        """
        record = self.job(job_id)
        result = record.result if isinstance(record.result, dict) else {}
        relative = result.get("report_path")
        if record.state != JobState.COMPLETED or not isinstance(relative, str):
            raise NotFound(f"job {job_id} has no report (send \"report\": true in its config)",
                           details={"job_id": job_id})
        try:
            path = confine(self.root.resolve(), relative, field_name="report_path")
        except FaceportError:
            raise NotFound(f"the report of job {job_id} is gone", details={"job_id": job_id}) from None
        if not path.is_file():
            raise NotFound(f"the report of job {job_id} is gone", details={"job_id": job_id})
        return path

    def _finished(self, record: JobRecord) -> None:
        log.info("privacy job %s %s", record.id, record.state)
        if record.params.get("upload"):  # the stored upload served its only purpose
            try:
                source = confine(self.root.resolve(), str(record.params["input_path"]), field_name="input_path")
                source.unlink(missing_ok=True)
            except (FaceportError, OSError) as exc:
                log.warning("privacy job %s: could not delete its upload: %s", record.id, exc)

    def job(self, job_id: str) -> JobRecord:
        """Raises: NotFound for an unknown id or a job of another kind."""
        from faceport.store import get_job

        with self.jobs.store.session() as session:
            record = get_job(session=session, job_id=job_id)
        if record.kind != JOB_KIND:
            raise NotFound(f"job {job_id} not found")
        return record


def _not_reserved(root: Path, path: Path, field_name: str) -> None:
    relative = path.relative_to(root)
    if relative.parts and relative.parts[0] == UPLOAD_DIR:
        raise InvalidInput(f"{field_name} must not be inside {UPLOAD_DIR}/, the folder of multipart uploads",
                           details={"field": field_name})


def _scrubbed(exc: FaceportError, root: Path, names: dict[str, str] | None = None) -> FaceportError:
    """The same error with the media root taken out of its message (no absolute server path in any error).

    ``names`` maps further text to replace (a staging file's name to the client's file name).
    """
    message = exc.message.replace(f"{root}{os.sep}", "").replace(str(root), ROOT_SETTING)
    for old, new in (names or {}).items():
        message = message.replace(old, new)
    if message == exc.message:
        return exc
    details = {k: v for k, v in exc.details.items() if not (isinstance(v, str) and v.startswith(os.sep))}
    return type(exc)(message, details=details, code=exc.code)


def _check_image(path: Path, *, max_pixels: int, max_bytes: int) -> None:
    """Refuse an empty, truncated or undecodable image before a job is queued.

    Raises:
        InvalidImage: as :func:`~faceport.engine.imageio.decode_image`.
        FileTooLarge: over ``max_image_bytes``.
    """
    try:
        load_image_file(path, max_pixels=max_pixels, max_bytes=max_bytes)
    except FileTooLarge:
        raise FileTooLarge(f"the image exceeds the {max_bytes // (1024 * 1024)} MB image limit",
                           details={"field": "input_path", "limit_bytes": max_bytes}) from None
    except OSError as exc:
        raise InvalidFormat(f"{path.name} cannot be read: {os.strerror(exc.errno) if exc.errno else exc}",
                            details={"field": "input_path"}) from None


def _check_audio(path: Path) -> None:
    import av
    import av.error

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InvalidFormat(f"{path.name} has no audio stream")
    except av.error.FFmpegError as exc:
        raise InvalidFormat(f"{path.name} is not a readable audio file: {exc.strerror or exc}") from exc
