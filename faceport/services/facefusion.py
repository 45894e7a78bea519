"""Seed B, FaceFusion-style processing: face swap and enhancement of uploaded images and videos.

Every accepted request becomes a row of the ``jobs`` table (kind ``facefusion.image`` or
``facefusion.video``) whose inputs live in ``$FACEPORT_HOME/uploads/<job id>/`` until the
job ends. Images, and videos no longer than ``sync_video_max_seconds``, run within the request
(``JobQueue.run_inline``); longer videos are queued and run by the job runner. If the server
stops while a job runs, the next start runs it again from its kept inputs.

Outputs are written to ``$FACEPORT_HOME/outputs/<uuid>.<ext>`` (shown to clients as
``.api_outputs/<name>``, the seed's path) and purged after ``output_retention_hours``.
When a request names a ``webhook_url``, the job's outcome is POSTed to it once it ends.

The pure functions (:func:`render_image`, :func:`render_video`) are what the CLI uses too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from faceport.config import Settings
from faceport.engine.core import FaceEngine
from faceport.engine.detect import DETECTORS
from faceport.engine.imageio import decode_image, encode_image, load_image_file, sniff_format
from faceport.engine.models.sessions import available_providers
from faceport.engine.pipeline import (
    PROCESSOR_NAMES,
    Pipeline,
    PipelineOptions,
    available_processors,
    build_processors,
    with_embedding_reference,
)
from faceport.engine.types import BGRImage, Faces
from faceport.engine.video import VideoResult, probe_video, process_video
from faceport.errors import (
    FaceportError,
    InvalidFormat,
    InvalidImage,
    InvalidInput,
    MissingField,
    NoFace,
    NotFound,
    ProcessingFailed,
)
from faceport.jobs import JobQueue, ProgressFn
from faceport.store import JobRecord, JobState

log = logging.getLogger(__name__)

IMAGE_JOB_KIND = "facefusion.image"
VIDEO_JOB_KIND = "facefusion.video"
JOB_KINDS = (IMAGE_JOB_KIND, VIDEO_JOB_KIND)
Media = Literal["image", "video"]

OUTPUT_DISPLAY_DIR = ".api_outputs"
DETECTOR_NAMES = DETECTORS  # the engine registry
# FaceFusion's short execution provider names -> onnxruntime's.
PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_PUBLIC_ID = re.compile(r"api_(\d{8})_(\d{6})_([0-9a-f]{6})")
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
_IMAGE_EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".png"}
_ENCODE_FORMAT: dict[str, Literal["jpeg", "png", "webp"]] = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png",
                                                             ".webp": "webp"}
VIDEO_OUTPUT_EXT = ".mp4"
_PARTIAL_PREFIX = ".partial-"
_STAGING_PREFIX = ".staging-"
WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 10.0


# ---- the request ---------------------------------------------------------------------------------
class ProcessRequest(BaseModel):
    """Seed B's ``ProcessRequest`` (the ``request`` form field, a JSON string) plus faceport's additions."""

    model_config = ConfigDict(extra="forbid")

    processors: list[str] = Field(default_factory=lambda: ["face_swapper"], min_length=1, max_length=8,
                                  description=f"Applied in order; known: {', '.join(PROCESSOR_NAMES)}.")
    execution_providers: list[str] = Field(
        default_factory=lambda: ["cpu"], min_length=1, max_length=8,
        description="FaceFusion names (cpu, cuda, coreml, tensorrt, rocm, directml, openvino); each must be "
        "available on this server. The models run on the server's FACEPORT_EXECUTION_PROVIDERS.")
    execution_thread_count: int = Field(default=1, ge=1, le=32, description="1-32 (accepted for compatibility).")
    output_video_fps: float | None = Field(default=None, ge=1, le=120,
                                           description="Output FPS, 1-120; null keeps the input's.")
    output_image_scale: int = Field(default=100, ge=10, le=400, description="Output image size in percent, 10-400.")
    output_video_scale: int = Field(default=100, ge=10, le=400, description="Output video size in percent, 10-400.")
    face_detector_model: str | None = Field(default=None, description=f"One of {', '.join(DETECTOR_NAMES)}; "
                                            "null: the server's FACEPORT_DETECTOR.")
    face_detector_score: float = Field(default=0.5, ge=0.0, le=1.0, description="Detection threshold, 0.0-1.0.")
    face_selector_mode: Literal["all", "reference", "index"] = Field(
        default="all", description="all faces; the faces of the reference person; or the one at face_position.")
    reference_face_index: int = Field(
        default=0, ge=0, le=1000, description="reference mode: the reference person is this face (left to right) "
        "of the target image / of the first video frame with enough faces.")
    face_position: int = Field(default=0, ge=0, le=1000, description="index mode: the face to process, left to right.")
    face_enhancer_blend: int = Field(default=80, ge=0, le=100, description="face_enhancer strength in percent.")
    webhook_url: HttpUrl | None = Field(
        default=None, description="POSTed {job_id, status, output_path, error} when the job ends (http or https).")

    @field_validator("processors")
    @classmethod
    def _known_processors(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in PROCESSOR_NAMES]
        if unknown:
            raise ValueError(f"unknown processor {unknown[0]!r}; available: {', '.join(PROCESSOR_NAMES)}")
        return names

    @field_validator("execution_providers")
    @classmethod
    def _known_providers(cls, names: list[str]) -> list[str]:
        normalised = [name.strip().lower() for name in names]
        unknown = [name for name in normalised if name not in PROVIDER_NAMES]
        if unknown:
            raise ValueError(f"unknown execution provider {unknown[0]!r}; known: {', '.join(PROVIDER_NAMES)}; "
                             f"available here: {', '.join(local_providers())}")
        return normalised

    @field_validator("face_detector_model")
    @classmethod
    def _known_detector(cls, name: str | None) -> str | None:
        if name is not None and name not in DETECTOR_NAMES:
            raise ValueError(f"unknown face detector {name!r}; available: {', '.join(DETECTOR_NAMES)}")
        return name

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, url: HttpUrl | None) -> HttpUrl | None:
        if url is not None and not url.host:
            raise ValueError("webhook_url needs a host")
        return url


def parse_process_request(text: str | None) -> ProcessRequest:
    """Parse the ``request`` form field (a JSON object); absent or empty means all defaults.

    Raises:
        InvalidInput: malformed JSON (``details.field == "request"``), unknown fields (named in the
            message and ``details.unknown``), or a bad value (``details.field`` names it).
    """
    if text is None or not text.strip():
        return ProcessRequest()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"request: not valid JSON ({exc})", details={"field": "request"}) from None
    if not isinstance(data, dict):
        raise InvalidInput("request: must be a JSON object", details={"field": "request"})
    return validate_process_request(data)


def validate_process_request(data: dict[str, Any]) -> ProcessRequest:
    """Validate a ProcessRequest dict; errors name the field as :func:`parse_process_request` does."""
    unknown = sorted(key for key in data if key not in ProcessRequest.model_fields)
    if unknown:
        raise InvalidInput(f"request: unknown field(s) {', '.join(unknown)}; allowed: "
                           f"{', '.join(ProcessRequest.model_fields)}",
                           details={"field": unknown[0], "unknown": unknown})
    try:
        return ProcessRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"] if not isinstance(part, int)) or "request"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{field}: {message}", details={"field": field, "errors": [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()]}) from None


def local_providers() -> list[str]:
    """FaceFusion names of the execution providers onnxruntime offers on this machine."""
    available = set(available_providers())
    return [short for short, name in PROVIDER_NAMES.items() if name in available]


def check_providers(names: Sequence[str]) -> list[str]:
    """onnxruntime names of the requested providers.

    Raises:
        InvalidInput: one is not available here; the message lists the available ones.
    """
    here = local_providers()
    for name in names:
        if name not in here:
            raise InvalidInput(f"execution provider {name!r} is not available here; available: {', '.join(here)}",
                               details={"field": "execution_providers", "available": here})
    return [PROVIDER_NAMES[name] for name in names]


# ---- rendering (shared by the API jobs and the CLI) ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What a render needs from a ProcessRequest."""

    processors: tuple[str, ...] = ("face_swapper",)
    detector: str | None = None
    detector_score: float = 0.5
    selector: Literal["all", "reference", "index"] = "all"
    reference_face_index: int = 0
    face_position: int = 0
    enhancer_blend: int = 80
    image_scale: int = 100
    video_scale: int = 100
    video_fps: float | None = None

    @classmethod
    def from_request(cls, request: ProcessRequest) -> RenderOptions:
        return cls(processors=tuple(request.processors), detector=request.face_detector_model,
                   detector_score=request.face_detector_score, selector=request.face_selector_mode,
                   reference_face_index=request.reference_face_index, face_position=request.face_position,
                   enhancer_blend=request.face_enhancer_blend, image_scale=request.output_image_scale,
                   video_scale=request.output_video_scale, video_fps=request.output_video_fps)

    @property
    def needs_source(self) -> bool:
        return "face_swapper" in self.processors

    def pipeline_options(self) -> PipelineOptions:
        # "reference" is set once the reference face is known (with_embedding_reference)
        selector: Literal["all", "index"] = "index" if self.selector == "index" else "all"
        return PipelineOptions(detector=self.detector, detector_score=self.detector_score, selector=selector,
                               face_index=self.face_position)


def require_source(options: RenderOptions, source_count: int) -> None:
    """Raises: MissingField (``source``) when face_swapper has no source image."""
    if options.needs_source and source_count == 0:
        raise MissingField("face_swapper needs a source image: send one or more 'source' files with a face",
                           details={"field": "source", "processors": list(options.processors)})


def _left_to_right(faces: Faces) -> Faces:
    return faces[np.argsort(faces.xyxy[:, 0], kind="stable")]


def _reference_options(engine: FaceEngine, frame: BGRImage, faces: Faces, options: RenderOptions) -> PipelineOptions:
    ordered = _left_to_right(faces)
    reference = engine.embedder().embed(frame, ordered[options.reference_face_index])
    if reference.embedding is None or not len(reference):
        raise NoFace("the reference face could not be embedded", details={"field": "target"})
    return with_embedding_reference(options.pipeline_options(), reference.embedding[0])


def _build(engine: FaceEngine, sources: Sequence[BGRImage], options: RenderOptions) -> list[Any]:
    try:
        return build_processors(engine, options.processors, sources=sources,
                                enhancer_strength=options.enhancer_blend / 100.0)
    except NoFace as exc:
        exc.details.setdefault("field", "source")
        raise


def check_sources(engine: FaceEngine, sources: Sequence[BGRImage], options: RenderOptions) -> None:
    """Every source image must show a face (only when face_swapper runs).

    Raises:
        NoFace: naming ``source`` and which image.
    """
    if not options.needs_source:
        return
    for index, image in enumerate(sources):
        if not len(engine.detect(image, max_faces=1)):
            raise NoFace(f"no face found in source image {index + 1} of {len(sources)}",
                         details={"field": "source", "index": index})


def render_image(engine: FaceEngine, sources: Sequence[BGRImage], target: BGRImage, options: RenderOptions, *,
                 max_pixels: int = 50_000_000) -> BGRImage:
    """Run the processors over one image and scale the result.

    Args:
        engine: The face engine.
        sources: BGR images of the person to put in (face_swapper).
        target: BGR (H, W, 3) uint8 image; not modified.
        options: Processors, detector and selection, output scale.
        max_pixels: Largest output (after scaling) accepted.

    Returns:
        A new BGR image, ``options.image_scale`` percent of the target's size.

    Raises:
        NoFace: no face in the target (``details.field == "target"``), or the selected position
            or reference index is beyond the faces found; or a source without a face.
        MissingField: face_swapper without a source.
        InvalidInput: the scaled output would exceed ``max_pixels``.
    """
    require_source(options, len(sources))
    height, width = target.shape[:2]
    out_w, out_h = max(1, round(width * options.image_scale / 100)), max(1, round(height * options.image_scale / 100))
    if out_w * out_h > max_pixels:
        raise InvalidInput(f"output_image_scale {options.image_scale}% makes a {out_w}x{out_h} image, over the "
                           f"limit of {max_pixels:,} pixels", details={"field": "output_image_scale"})
    processors = _build(engine, sources, options)
    faces = engine.detect(target, detector=options.detector, score_threshold=options.detector_score)
    if not len(faces):
        raise NoFace("no face found in the target image", details={"field": "target"})
    wanted = options.face_position if options.selector == "index" else (
        options.reference_face_index if options.selector == "reference" else 0)
    if wanted >= len(faces):
        name = "face_position" if options.selector == "index" else "reference_face_index"
        raise NoFace(f"{name} {wanted} is beyond the {len(faces)} face(s) found in the target image",
                     details={"field": "target", "faces": len(faces)})
    pipeline_options = (_reference_options(engine, target, faces, options) if options.selector == "reference"
                        else options.pipeline_options())
    result = Pipeline(engine, processors, pipeline_options).process_image(target)
    if (out_w, out_h) != (width, height):
        interpolation = cv2.INTER_AREA if options.image_scale < 100 else cv2.INTER_CUBIC
        result = np.ascontiguousarray(cv2.resize(result, (out_w, out_h), interpolation=interpolation), np.uint8)
    return result


def video_frame_fn(engine: FaceEngine, sources: Sequence[BGRImage], options: RenderOptions
                   ) -> Callable[[BGRImage], BGRImage]:
    """The per-frame function of one video: detection + tracking, selection, processors.

    Frames without faces pass through unchanged. In reference mode the reference person is the
    ``reference_face_index``-th face (left to right) of the first frame with enough faces.

    Raises:
        MissingField, NoFace: as :func:`render_image`, for the sources.
    """
    require_source(options, len(sources))
    processors = _build(engine, sources, options)
    if options.selector != "reference":
        return Pipeline(engine, processors, options.pipeline_options()).stream()
    stream: Callable[[BGRImage], BGRImage] | None = None

    def run(frame: BGRImage) -> BGRImage:
        nonlocal stream
        if stream is None:
            faces = engine.detect(frame, detector=options.detector, score_threshold=options.detector_score)
            if len(faces) <= options.reference_face_index:
                return frame
            stream = Pipeline(engine, processors, _reference_options(engine, frame, faces, options)).stream()
        return stream(frame)

    return run


def render_video(engine: FaceEngine, sources: Sequence[BGRImage], target: Path, output: Path,
                 options: RenderOptions, *, progress: Callable[[float], None] | None = None) -> VideoResult:
    """Process a video file into ``output`` (container from its suffix); audio is kept.

    Args:
        engine: The face engine.
        sources: BGR images of the person to put in (face_swapper).
        target: Input video file.
        output: Output file; its suffix picks the container (.mp4, .m4v, .mov, .mkv). Written
            atomically: nothing is left there on failure.
        options: Processors, detector and selection, fps and scale.
        progress: Called with the percentage done (0..100); raise from it to cancel.

    Returns:
        Frame counts, output rate and size, and what happened to the audio.

    Raises:
        InvalidFormat: not a readable video.
        MissingField, NoFace: as :func:`video_frame_fn`.
    """
    frame_fn = video_frame_fn(engine, sources, options)
    return process_video(target, output, frame_fn, fps=options.video_fps, scale_percent=options.video_scale,
                         progress=progress)


def image_output_suffix(data: bytes) -> str:
    """The output suffix for an image target: its own format (BMP becomes PNG)."""
    return _IMAGE_EXT.get(sniff_format(data) or "", ".jpg")


def encode_for_suffix(image: BGRImage, suffix: str) -> bytes:
    """Encode by file suffix (.jpg/.jpeg, .png, .webp).

    Raises:
        InvalidInput: another suffix.
    """
    fmt = _ENCODE_FORMAT.get(suffix.lower())
    if fmt is None:
        raise InvalidInput(f"unsupported image output type {suffix!r}; use .jpg, .png or .webp",
                           details={"field": "output"})
    return encode_image(image, fmt, quality=95)


# ---- the service ---------------------------------------------------------------------------------------------
def public_job_id(record: JobRecord) -> str:
    """Seed B's job id, ``api_YYYYMMDD_HHMMSS_<6 hex>`` (UTC creation time, first 6 hex of the row id)."""
    return f"api_{record.created_at:%Y%m%d_%H%M%S}_{record.id[:6]}"


def output_display_path(name: str) -> str:
    return f"{OUTPUT_DISPLAY_DIR}/{name}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A request turned into a job: ``status`` is ``completed`` (ran within the request) or ``queued``."""

    job_id: str
    status: Literal["completed", "queued"]
    output_path: str | None


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    status: Literal["queued", "processing", "completed", "failed"]
    progress: float
    output_path: str | None
    error: dict[str, Any] | None
    created_at: str
    finished_at: str | None


_STATUS = {JobState.QUEUED: "queued", JobState.RUNNING: "processing", JobState.COMPLETED: "completed",
           JobState.FAILED: "failed", JobState.CANCELLED: "failed"}


class FaceFusionService:
    """Seed B's use cases over the engine, the jobs table and two directories.

    Args:
        settings: ``home`` (uploads/ and outputs/), limits, ``sync_video_max_seconds``,
            ``output_retention_hours``.
        engine: The shared face engine.
        jobs: The job runner; the service registers its two job kinds on it.
    """

    def __init__(self, settings: Settings, engine: FaceEngine, jobs: JobQueue) -> None:
        self.settings = settings
        self.engine = engine
        self.jobs = jobs
        self.outputs_dir = settings.home / "outputs"
        self.uploads_dir = settings.home / "uploads"
        self.retention_s = settings.output_retention_hours * 3600.0
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        for kind in JOB_KINDS:
            jobs.register(kind, self._run_job, on_finish=self._on_finish)

    # ---- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Create the directories, purge expired outputs and stale uploads, start the periodic purge."""
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self.purge()
        if self._janitor is None:
            self._stop.clear()
            self._janitor = threading.Thread(target=self._purge_loop, name="faceport-output-purge", daemon=True)
            self._janitor.start()

    def close(self) -> None:
        self._stop.set()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
            self._janitor = None

    def _purge_loop(self) -> None:
        interval = max(1.0, min(600.0, self.retention_s / 4))
        while not self._stop.wait(interval):
            try:
                self.purge()
            except OSError as exc:
                log.warning("output purge failed: %s", exc)

    def purge(self, now: float | None = None) -> int:
        """Delete outputs older than the retention window and uploads no job needs; returns files removed."""
        now = time.time() if now is None else now
        removed = 0
        if self.outputs_dir.is_dir():
            for path in self.outputs_dir.iterdir():
                try:
                    if path.is_file() and now - path.stat().st_mtime > self.retention_s:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        if self.uploads_dir.is_dir():
            for path in self.uploads_dir.iterdir():
                if path.is_dir() and self._upload_dir_unused(path, now):
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("purged %d expired output(s)/upload(s)", removed)
        return removed

    def _upload_dir_unused(self, path: Path, now: float) -> bool:
        if path.name.startswith(_STAGING_PREFIX):  # a request that died while uploading
            return now - path.stat().st_mtime > 3600
        try:
            return self.jobs.get(path.name).is_terminal
        except NotFound:
            return now - path.stat().st_mtime > 3600

    # ---- requests ---------------------------------------------------------------------------
    def processors(self) -> list[dict[str, Any]]:
        """Seed B's processor list: ``[{"name", "available"}]``."""
        return [{"name": name, "available": ok} for name, ok in available_processors(self.engine).items()]

    def check_request(self, request: ProcessRequest, *, source_count: int) -> RenderOptions:
        """Cheap checks before reading any upload: providers, a source for face_swapper.

        Raises:
            InvalidInput: a provider not available here. MissingField: no source for face_swapper.
        """
        check_providers(request.execution_providers)
        options = RenderOptions.from_request(request)
        require_source(options, source_count)
        return options

    def new_staging_dir(self) -> Path:
        """A fresh directory for one request's uploads (moved to ``uploads/<job id>`` once accepted)."""
        path = self.uploads_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def upload_name(role: str, filename: str | None, index: int | None = None) -> str:
        """A safe file name for an upload: its role plus the client's suffix when harmless."""
        suffix = Path(filename or "").suffix.lower()
        suffix = suffix if _SAFE_SUFFIX.fullmatch(suffix) else ".bin"
        return f"{role}{'' if index is None else f'_{index}'}{suffix}"

    def accept(self, media: Media, request: ProcessRequest, staging: Path, target: str, sources: Sequence[str]
               ) -> Accepted:
        """Check the uploaded files in ``staging``, record the job and run or queue it (blocking).

        Raises:
            InvalidImage / InvalidFormat: the target is not an image / a video (``field: target``), or
                a source is not an image (``field: source``).
            NoFace: a source without a face; an image target without a face.
            QueueFull: too many queued jobs.
        """
        options = self.check_request(request, source_count=len(sources))
        source_images = [self._load_source(staging / name, index) for index, name in enumerate(sources)]
        check_sources(self.engine, source_images, options)
        output_suffix = VIDEO_OUTPUT_EXT
        sync = True
        if media == "image":
            data = (staging / target).read_bytes()
            self._decode_target(data)
            output_suffix = image_output_suffix(data)
        else:
            duration = self._probe_target(staging / target)
            sync = duration <= self.settings.sync_video_max_seconds
        output_name = f"{uuid.uuid4()}{output_suffix}"
        params = {"media": media, "request": request.model_dump(mode="json"), "target": target,
                  "sources": list(sources), "output_name": output_name}
        kind = IMAGE_JOB_KIND if media == "image" else VIDEO_JOB_KIND

        def move_inputs(record: JobRecord) -> None:
            os.replace(staging, self.uploads_dir / record.id)

        if sync:
            record = self.jobs.run_inline(kind, params, prepare=move_inputs)
            return Accepted(public_job_id(record), "completed", output_display_path(output_name))
        record = self.jobs.submit(kind, params, prepare=move_inputs)
        return Accepted(public_job_id(record), "queued", None)

    def _load_source(self, path: Path, index: int) -> BGRImage:
        try:
            return load_image_file(path, max_pixels=self.settings.max_image_pixels,
                                   max_bytes=self.settings.max_image_bytes)
        except FaceportError as exc:
            exc.details.update(field="source", index=index)
            raise

    def _decode_target(self, data: bytes) -> BGRImage:
        try:
            return decode_image(data, max_pixels=self.settings.max_image_pixels)
        except InvalidImage as exc:
            exc.details["field"] = "target"
            raise

    @staticmethod
    def _probe_target(path: Path) -> float:
        try:
            info = probe_video(path)
        except FaceportError as exc:
            exc.details["field"] = "target"
            raise
        duration = float(info.duration_s or 0.0)
        if not np.isfinite(duration) or duration < 0:
            raise InvalidFormat("the target video has no usable duration", details={"field": "target"})
        return duration

    # ---- jobs ---------------------------------------------------------------------------------
    def _run_job(self, record: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        params = record.params
        inputs = self.uploads_dir / record.id
        if not inputs.is_dir():
            raise ProcessingFailed(f"the inputs of job {public_job_id(record)} are gone; submit it again")
        options = RenderOptions.from_request(validate_process_request(params["request"]))
        sources = [self._load_source(inputs / name, index) for index, name in enumerate(params["sources"])]
        name = params["output_name"]
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        if params["media"] == "image":
            target = self._decode_target((inputs / params["target"]).read_bytes())
            result = render_image(self.engine, sources, target, options, max_pixels=self.settings.max_image_pixels)
            partial = self.outputs_dir / f"{_PARTIAL_PREFIX}{name}"  # hidden: no valid output name starts with "."
            try:
                partial.write_bytes(encode_for_suffix(result, Path(name).suffix))
                os.replace(partial, self.outputs_dir / name)
            finally:
                partial.unlink(missing_ok=True)
        else:
            try:  # process_video writes atomically (a hidden partial file renamed at the end)
                render_video(self.engine, sources, inputs / params["target"], self.outputs_dir / name, options,
                             progress=progress)
            except (InvalidFormat, InvalidImage) as exc:
                exc.details.setdefault("field", "target")
                raise
        return {"output_name": name, "output_path": output_display_path(name)}

    def _on_finish(self, record: JobRecord) -> None:
        shutil.rmtree(self.uploads_dir / record.id, ignore_errors=True)
        url = record.params.get("request", {}).get("webhook_url")
        if url:
            payload = self._status(record)
            body = {"job_id": payload.job_id, "status": payload.status, "output_path": payload.output_path,
                    "error": payload.error}
            threading.Thread(target=deliver_webhook, args=(url, body), name="faceport-webhook", daemon=True).start()

    def job_status(self, job_id: str) -> JobStatus:
        """The status of a job by its public id.

        Raises:
            NotFound: no such job.
        """
        match = _PUBLIC_ID.fullmatch(job_id)
        if match:
            for record in self.jobs.find_by_id_prefix(match.group(3), kinds=JOB_KINDS):
                if public_job_id(record) == job_id:
                    return self._status(record)
        raise NotFound(f"job {job_id!r} not found", details={"job_id": job_id})

    @staticmethod
    def _status(record: JobRecord) -> JobStatus:
        result = record.result if isinstance(record.result, dict) else {}
        status = _STATUS[record.state]
        error = record.error
        if record.state == JobState.CANCELLED:
            error = {"code": "CANCELLED", "message": "the job was cancelled"}
        return JobStatus(job_id=public_job_id(record), status=status,  # type: ignore[arg-type]
                         progress=round(record.progress, 1), output_path=result.get("output_path"), error=error,
                         created_at=record.created_at.isoformat(),
                         finished_at=record.finished_at.isoformat() if record.finished_at else None)

    # ---- outputs ------------------------------------------------------------------------------
    def output_file(self, name: str) -> Path:
        """The path of an existing output.

        Raises:
            InvalidInput: a name that is not a plain file name (no separators, no leading dot).
            NotFound: no such output.
        """
        if not _SAFE_NAME.fullmatch(name):
            raise InvalidInput(f"invalid output name {name!r}: use the name from output_path",
                               details={"field": "name"})
        root = self.outputs_dir.resolve()
        path = (root / name).resolve()
        if path.parent != root or not path.is_file():
            raise NotFound(f"output {name!r} not found (outputs are kept "
                           f"{self.settings.output_retention_hours:g} hours)", details={"name": name})
        return path

    def delete_output(self, name: str) -> None:
        """Raises: InvalidInput (bad name), NotFound."""
        path = self.output_file(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"output {name!r} not found", details={"name": name}) from None
        log.info("deleted output %s", name)


def deliver_webhook(url: str, payload: dict[str, Any], *, attempts: int = WEBHOOK_ATTEMPTS,
                    timeout: float = WEBHOOK_TIMEOUT_S, backoff_s: float = 1.0) -> bool:
    """POST ``payload`` as JSON to ``url``; retried with exponential backoff; never raises.

    Returns:
        Whether a 2xx answer came back.
    """
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, json=payload, timeout=timeout)
            if response.is_success:
                log.info("webhook %s answered %d for job %s", url, response.status_code, payload.get("job_id"))
                return True
            log.warning("webhook %s answered %d (attempt %d/%d)", url, response.status_code, attempt, attempts)
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed (attempt %d/%d): %s", url, attempt, attempts, exc)
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    log.error("webhook %s gave up after %d attempts for job %s", url, attempts, payload.get("job_id"))
    return False
