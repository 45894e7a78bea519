"""Seed B, FaceFusion-style processing: face swap and enhancement of uploaded images and videos.

Every accepted request becomes a row of the ``jobs`` table (kind ``facefusion.image`` or
``facefusion.video``) whose inputs live in ``$FACEPORT_HOME/uploads/<job id>/`` until the
job ends. Images, and videos no longer than ``sync_video_max_seconds``, run within the request
(``JobQueue.run_inline``); longer videos are queued and run by the job runner. If the server
stops while a job runs, the next start runs it again from its kept inputs.

Outputs are written to ``$FACEPORT_HOME/outputs/<uuid>.<ext>`` (shown to clients as
``.api_outputs/<name>``, the seed's path) and purged after ``output_retention_hours``.
When a request names a ``webhook_url``, the job's outcome is POSTed to it once it ends: a signed,
retried delivery kept in the ``webhook_deliveries`` table (see :mod:`faceport.services.webhooks`).
A folder that cannot be written is a ``StorageUnavailable`` naming its setting, never a path.

The pure functions (:func:`render_image`, :func:`render_video`) are what the CLI uses too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator, model_validator

from faceport.config import Settings
from faceport.engine.core import FaceEngine
from faceport.engine.detect import DETECTORS
from faceport.engine.imageio import decode_image, encode_image, load_image_file, sniff_format
from faceport.engine.models.sessions import available_providers
from faceport.engine.pipeline import (
    FACE_ORDERS,
    PROCESSOR_NAMES,
    FaceOrder,
    FaceSelector,
    Pipeline,
    PipelineOptions,
    available_processors,
    build_processors,
    order_faces,
    with_embedding_reference,
)
from faceport.engine.swap.masks import MASK_REGIONS, REGION_ALIASES, MaskType, expand_regions
from faceport.engine.swap.mesh import SwapOptions
from faceport.engine.types import BGRImage, Faces
from faceport.engine.video import VideoOptions, VideoResult, probe_video, process_video
from faceport.errors import (
    FaceportError,
    InvalidFormat,
    InvalidImage,
    InvalidInput,
    MissingField,
    NoFace,
    NotFound,
    ProcessingFailed,
    StorageUnavailable,
)
from faceport.jobs import JobQueue, ProgressFn
from faceport.services.webhooks import WebhookDispatcher
from faceport.store import JobRecord, JobState, list_jobs
from faceport.store.webhooks import delivery_for_job, job_ids_with_deliveries

log = logging.getLogger(__name__)

IMAGE_JOB_KIND = "facefusion.image"
VIDEO_JOB_KIND = "facefusion.video"
JOB_KINDS = (IMAGE_JOB_KIND, VIDEO_JOB_KIND)
Media = Literal["image", "video"]

OUTPUT_DISPLAY_DIR = ".api_outputs"
# FaceFusion's detector names -> the nearest detector faceport has (one table). yoloface_8n, FaceFusion's
# default, is a fast 5-keypoint detector: YuNet is ours (and FaceFusion's "yunet" is the same model).
# retinaface and scrfd are multi-scale detectors good on small faces, and "many" runs all of FaceFusion's and
# merges them: CenterFace, our most robust on small faces.
FACEFUSION_DETECTORS: dict[str, str] = {
    "yoloface_8n": "yunet",
    "retinaface": "centerface",
    "scrfd": "centerface",
    "many": "centerface",
}
NATIVE_DETECTORS = DETECTORS  # the engine registry
DETECTOR_NAMES = (*NATIVE_DETECTORS, *FACEFUSION_DETECTORS)
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
_DEFAULT_MAX_FACES = PipelineOptions().max_faces
_STAGING_PREFIX = ".staging-"


def _default_mask_types() -> list[MaskType]:
    return ["box"]


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
    execution_thread_count: int | None = Field(
        default=None, ge=1, le=32, description="1-32: inference threads of this job's models (onnxruntime "
        "intra-op / LiteRT threads) and video codec threads; null: the server's defaults.")
    output_video_fps: float | None = Field(default=None, ge=1, le=120,
                                           description="Output FPS, 1-120; null keeps the input's.")
    output_image_scale: int = Field(default=100, ge=10, le=400, description="Output image size in percent, 10-400.")
    output_video_scale: int = Field(default=100, ge=10, le=400, description="Output video size in percent, 10-400.")
    face_detector_model: str | None = Field(
        default=None, description=f"One of {', '.join(DETECTOR_NAMES)}; FaceFusion's names run the nearest "
        f"detector here ({', '.join(f'{k}->{v}' for k, v in FACEFUSION_DETECTORS.items())}); null: the server's "
        "FACEPORT_DETECTOR. The detector that ran is in the response's face_detector.")
    face_detector_score: float = Field(default=0.5, ge=0.0, le=1.0, description="Detection threshold, 0.0-1.0.")
    face_selector_mode: Literal["all", "many", "one", "reference", "index"] = Field(
        default="all", description="FaceFusion's modes: many (alias all: every face, faces under the minimum size "
        "left alone); one (the first face in face_selector_order); reference (the reference person's face); "
        "index (the face at face_position in face_selector_order).")
    face_selector_order: FaceOrder = Field(
        default="left-right", description=f"Order of faces for one, index and reference_face_index: "
        f"{', '.join(FACE_ORDERS)} (FaceFusion's default is large-small; ours keeps positions left to right).")
    face_selector_gender: Literal["female", "male"] | None = Field(
        default=None, description="Only faces of this apparent gender (Cydral gender-v1); null: any.")
    face_selector_age_start: int | None = Field(
        default=None, ge=0, le=100, description="Only faces of at least this apparent age (Cydral age-v1).")
    face_selector_age_end: int | None = Field(
        default=None, ge=0, le=100, description="Only faces of at most this apparent age.")
    face_selector_min_size: int | None = Field(
        default=None, ge=0, le=4096, description="many/all/one: faces whose shorter side is under this many pixels "
        "are left alone; null: the server's FACEPORT_SWAP_MIN_FACE_PX (and FACEPORT_SWAP_MIN_FACE_RATIO of the "
        "largest face); 0 processes every face found.")
    reference_face_index: int = Field(
        default=0, ge=0, le=1000, description="reference mode: the reference person is this face (in "
        "face_selector_order) of the target image / of the first video frame with enough faces.")
    reference_face_distance: float | None = Field(
        default=None, ge=0.0, le=2.0, description="reference mode: largest identity distance (dlib ResNet L2; "
        "0.6 = the verify threshold) for a face to count as the reference person; null: the server's "
        "FACEPORT_VERIFY_THRESHOLD.")
    face_position: int = Field(default=0, ge=0, le=1000,
                               description="index mode: the face to process, in face_selector_order.")
    face_enhancer_blend: int = Field(
        default=80, ge=0, le=100, description="face_enhancer strength in percent (FaceFusion's name). 80, "
        "FaceFusion's default, is also faceport's by measurement: after a swap the classical enhancer at 80 "
        "leaves the seam metric and the identity distance as they are and adds skin detail (BENCHMARKS.md).")
    # FaceFusion's face masks and Deep-Live-Cam's mouth mask (faceport.engine.swap.masks)
    face_mask_types: list[MaskType] = Field(
        default_factory=_default_mask_types, min_length=1, max_length=3,
        description="face_swapper masks, intersected: box (the face outline, forehead edge left out, cut by "
        "face_mask_padding), occlusion (classical, no neural occluder: the source's non-skin - glasses frames, hair "
        "strands - is not pasted, and the target's non-skin inside the face - a hand, a microphone, a fringe, a "
        "beard - stays on top, judged by each face's own skin colour; a hand over the face is also found by "
        "MediaPipe's hand landmarks and kept whatever its colour), region (the face_mask_regions, from the "
        "face mesh). Default box: it keeps identity transfer highest (BENCHMARKS.md).")
    face_mask_regions: list[str] = Field(
        default_factory=lambda: list(MASK_REGIONS), min_length=1, max_length=len(MASK_REGIONS) + len(REGION_ALIASES),
        description=f"region mask: parts of the face to swap, {', '.join(MASK_REGIONS)} (left/right: the person's "
        f"own); also {', '.join(REGION_ALIASES)} for both parts. Default: all.")
    face_mask_blur: float = Field(default=0.3, ge=0.0, le=1.0,
                                  description="Softness of the mask's edge, 0 (hard) to 1 (FaceFusion's default 0.3).")
    face_mask_padding: list[float] = Field(
        default_factory=lambda: [0.0, 0.0, 0.0, 0.0], min_length=1, max_length=4,
        description="box mask: top, right, bottom, left of the face left out, percent of its height/width (0-100); "
        "1, 2 or 3 values expand as in CSS (and FaceFusion's CLI).")
    mouth_mask: bool = Field(default=False, description="Keep the target's whole mouth, lips included (Deep-Live-Cam's "
                             "mouth mask): speech and expression stay the target's; identity transfer is weaker.")
    webhook_url: HttpUrl | None = Field(
        default=None, description="POSTed {job_id, status, output_path, error} when the job ends (http or https, "
        "public addresses only unless FACEPORT_WEBHOOK_ALLOW_PRIVATE); signed with X-Faceport-Signature, retried "
        "with backoff; deliveries are shown in GET /jobs/{job_id}.")

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

    @model_validator(mode="after")
    def _age_range(self) -> ProcessRequest:
        start, end = self.face_selector_age_start, self.face_selector_age_end
        if start is not None and end is not None and start > end:
            raise ValueError(f"face_selector_age_start {start} is above face_selector_age_end {end}")
        return self

    @field_validator("face_mask_types")
    @classmethod
    def _distinct_mask_types(cls, names: list[MaskType]) -> list[MaskType]:
        if len(set(names)) != len(names):
            raise ValueError("face_mask_types lists a type twice")
        return names

    @field_validator("face_mask_regions")
    @classmethod
    def _known_regions(cls, names: list[str]) -> list[str]:
        return list(expand_regions(names))

    @field_validator("face_mask_padding")
    @classmethod
    def _padding(cls, values: list[float]) -> list[float]:
        if any(not 0 <= value <= 100 for value in values):
            raise ValueError("face_mask_padding values are percent, 0-100")
        if len(values) == 1:
            values = values * 4
        elif len(values) == 2:
            values = values * 2
        elif len(values) == 3:
            values = [*values, values[1]]
        top, right, bottom, left = values
        if top + bottom >= 100 or left + right >= 100:
            raise ValueError("face_mask_padding leaves nothing of the face (top + bottom or left + right >= 100)")
        return [top, right, bottom, left]

    def swap_options(self) -> SwapOptions:
        """The mesh swapper's options this request asks for."""
        top, right, bottom, left = self.face_mask_padding
        return SwapOptions(mask_types=tuple(self.face_mask_types), mask_regions=tuple(self.face_mask_regions),
                           mask_blur=self.face_mask_blur, mask_padding=(top, right, bottom, left),
                           mouth_mask=self.mouth_mask)

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
    selector: FaceSelector = "all"
    order: FaceOrder = "left-right"
    gender: Literal["female", "male"] | None = None
    age_start: int | None = None
    age_end: int | None = None
    min_face_px: int = 0
    min_face_ratio: float = 0.0
    reference_face_index: int = 0
    reference_distance: float | None = None
    face_position: int = 0
    enhancer_blend: int = 80
    image_scale: int = 100
    video_scale: int = 100
    video_fps: float | None = None
    threads: int | None = None  # inference and codec threads of this render; None: the server's defaults
    swap: SwapOptions = field(default_factory=SwapOptions)  # the mesh swapper's masks (face_mask_*, mouth_mask)

    @classmethod
    def from_request(cls, request: ProcessRequest, settings: Settings | None = None) -> RenderOptions:
        """The render a request asks for; ``settings`` gives the server's minimum face size (none: no minimum)."""
        if request.face_selector_min_size is not None:
            min_px, min_ratio = request.face_selector_min_size, 0.0
        elif settings is not None:
            min_px, min_ratio = settings.swap_min_face_px, settings.swap_min_face_ratio
        else:
            min_px, min_ratio = 0, 0.0
        return cls(processors=tuple(request.processors), detector=native_detector(request.face_detector_model),
                   detector_score=request.face_detector_score, selector=request.face_selector_mode,
                   order=request.face_selector_order, gender=request.face_selector_gender,
                   age_start=request.face_selector_age_start, age_end=request.face_selector_age_end,
                   min_face_px=min_px, min_face_ratio=min_ratio,
                   reference_face_index=request.reference_face_index,
                   reference_distance=request.reference_face_distance, face_position=request.face_position,
                   enhancer_blend=request.face_enhancer_blend, image_scale=request.output_image_scale,
                   video_scale=request.output_video_scale, video_fps=request.output_video_fps,
                   threads=request.execution_thread_count, swap=request.swap_options())

    @property
    def needs_source(self) -> bool:
        return "face_swapper" in self.processors

    def pipeline_options(self) -> PipelineOptions:
        # "reference" is set once the reference face is known (with_embedding_reference)
        selector: FaceSelector = "many" if self.selector in ("all", "reference") else self.selector
        wanted = self.face_position if self.selector == "index" else self.reference_face_index
        options = PipelineOptions(detector=self.detector, detector_score=self.detector_score, selector=selector,
                                  face_index=self.face_position, order=self.order, gender=self.gender,
                                  age_start=self.age_start, age_end=self.age_end, min_face_px=self.min_face_px,
                                  min_face_ratio=self.min_face_ratio, max_faces=max(_DEFAULT_MAX_FACES, wanted + 1))
        if self.reference_distance is not None:
            options = replace(options, reference_threshold=self.reference_distance)
        return options


def native_detector(name: str | None) -> str | None:
    """The faceport detector that runs for a request's ``face_detector_model`` (FaceFusion names mapped)."""
    return None if name is None else FACEFUSION_DETECTORS.get(name, name)


def require_source(options: RenderOptions, source_count: int) -> None:
    """Raises: MissingField (``source``) when face_swapper has no source image."""
    if options.needs_source and source_count == 0:
        raise MissingField("face_swapper needs a source image: send one or more 'source' files with a face",
                           details={"field": "source", "processors": list(options.processors)})


def _reference_options(engine: FaceEngine, frame: BGRImage, faces: Faces, options: RenderOptions) -> PipelineOptions:
    ordered = faces[order_faces(faces, options.order)]
    reference = engine.embedder().embed(frame, ordered[options.reference_face_index])
    if reference.embedding is None or not len(reference):
        raise NoFace("the reference face could not be embedded", details={"field": "target"})
    base = options.pipeline_options()
    if options.reference_distance is None:
        base = replace(base, reference_threshold=engine.options.verify_threshold)
    return with_embedding_reference(base, reference.embedding[0])


def _build(engine: FaceEngine, sources: Sequence[BGRImage], options: RenderOptions) -> list[Any]:
    try:
        return build_processors(engine, options.processors, sources=sources,
                                enhancer_strength=options.enhancer_blend / 100.0, swap_options=options.swap)
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
    base = options.pipeline_options()
    # the faces the pipeline works on: detected once, with the pipeline's own detector, threshold and limit
    faces = engine.detect(target, detector=base.detector, score_threshold=base.detector_score,
                          max_faces=base.max_faces, landmarks=True)
    if not len(faces):
        raise NoFace("no face found in the target image", details={"field": "target"})
    check_face_index(options, len(faces), "the target image")
    pipeline_options = (_reference_options(engine, target, faces, options) if options.selector == "reference"
                        else base)
    result = Pipeline(engine, processors, pipeline_options).process_faces(target, faces)
    if (out_w, out_h) != (width, height):
        interpolation = cv2.INTER_AREA if options.image_scale < 100 else cv2.INTER_CUBIC
        result = np.ascontiguousarray(cv2.resize(result, (out_w, out_h), interpolation=interpolation), np.uint8)
    return result


def check_face_index(options: RenderOptions, found: int, where: str) -> None:
    """Raises: InvalidInput naming ``face_position`` / ``reference_face_index`` when it is beyond ``found`` faces."""
    if options.selector not in ("index", "reference"):
        return
    name = "face_position" if options.selector == "index" else "reference_face_index"
    wanted = options.face_position if options.selector == "index" else options.reference_face_index
    if wanted >= found:
        raise InvalidInput(f"{name} {wanted} is beyond the {found} face(s) found in {where} (positions count "
                           f"from 0, {options.order})", details={"field": name, "faces": found})


class VideoFrames:
    """The per-frame function of one video: detection + tracking, selection, processors.

    Frames without faces pass through unchanged. In reference mode the reference person is the
    ``reference_face_index``-th face (left to right) of the first frame with enough faces.
    ``most_faces`` and ``selected`` tell afterwards whether the selection ever matched.
    """

    def __init__(self, engine: FaceEngine, processors: Sequence[Any], options: RenderOptions) -> None:
        self.engine = engine
        self.processors = processors
        self.options = options
        self.most_faces = 0
        self._pipeline: Pipeline | None = None
        self._stream: Callable[[BGRImage], BGRImage] | None = None
        if options.selector != "reference":
            self._pipeline = Pipeline(engine, processors, options.pipeline_options())
            self._stream = self._pipeline.stream()

    def __call__(self, frame: BGRImage) -> BGRImage:
        if self._stream is None:  # reference mode, reference person not seen yet
            faces = self.engine.detect(frame, detector=self.options.detector,
                                       score_threshold=self.options.detector_score)
            self.most_faces = max(self.most_faces, len(faces))
            if len(faces) <= self.options.reference_face_index:
                return frame
            self._pipeline = Pipeline(self.engine, self.processors,
                                      _reference_options(self.engine, frame, faces, self.options))
            self._stream = self._pipeline.stream()
        return self._stream(frame)

    def check_selection(self) -> None:
        """Raises: InvalidInput (naming the index field) when faces were found but never as many as selected."""
        found = max(self.most_faces, self._pipeline.most_faces if self._pipeline is not None else 0)
        if found and not (self.options.selector == "reference" and self._stream is not None):
            check_face_index(self.options, found, "any frame of the target video")


def video_frame_fn(engine: FaceEngine, sources: Sequence[BGRImage], options: RenderOptions) -> VideoFrames:
    """The per-frame function of one video (see :class:`VideoFrames`).

    Raises:
        MissingField, NoFace: as :func:`render_image`, for the sources.
    """
    require_source(options, len(sources))
    return VideoFrames(engine, _build(engine, sources, options), options)


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
        InvalidInput: index/reference mode selected a face beyond those found in any frame (no output is left).
    """
    frame_fn = video_frame_fn(engine, sources, options)
    video_options = VideoOptions(threads=options.threads or 0)
    result = process_video(target, output, frame_fn, fps=options.video_fps, scale_percent=options.video_scale,
                           progress=progress, options=video_options)
    try:
        frame_fn.check_selection()
    except InvalidInput:
        output.unlink(missing_ok=True)
        raise
    return result


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
    face_detector: str | None = None
    webhook: dict[str, Any] | None = None  # the delivery of the job's webhook, if it has one


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
        self.outputs_dir = settings.output_dir or settings.home / "outputs"
        self.uploads_dir = settings.upload_dir or settings.home / "uploads"
        self.retention_s = settings.output_retention_hours * 3600.0
        self.webhooks = WebhookDispatcher(settings, jobs.store)  # type: ignore[attr-defined]
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        for kind in JOB_KINDS:
            jobs.register(kind, self._run_job, on_finish=self._on_finish)

    # ---- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Create the directories, purge expired outputs and stale uploads, start the periodic purge and
        the webhook sender (pending deliveries of earlier runs resume; ended jobs whose notice was never
        recorded get one)."""
        for folder in ("outputs", "uploads"):
            try:
                self._folder(folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # keep serving: /health says degraded, requests say STORAGE_UNAVAILABLE
                log.error("%s", self.storage_unavailable(folder, exc))
        try:
            self.purge()
        except OSError as exc:
            log.warning("output purge failed: %s", exc)
        self._enqueue_missed_webhooks()
        self.webhooks.start()
        if self._janitor is None:
            self._stop.clear()
            self._janitor = threading.Thread(target=self._purge_loop, name="faceport-output-purge", daemon=True)
            self._janitor.start()

    def close(self) -> None:
        self._stop.set()
        self.webhooks.close()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
            self._janitor = None

    # ---- storage ----------------------------------------------------------------------------
    def _folder(self, folder: Literal["outputs", "uploads"]) -> Path:
        return self.outputs_dir if folder == "outputs" else self.uploads_dir

    def folder_setting(self, folder: Literal["outputs", "uploads"]) -> str:
        """The setting that places ``folder``: its own (when set), else FACEPORT_HOME."""
        own = self.settings.output_dir if folder == "outputs" else self.settings.upload_dir
        if own is not None:
            return "FACEPORT_OUTPUT_DIR" if folder == "outputs" else "FACEPORT_UPLOAD_DIR"
        return "FACEPORT_HOME"

    def storage_unavailable(self, folder: Literal["outputs", "uploads"], exc: OSError | StorageUnavailable
                            ) -> StorageUnavailable:
        """The error for a failed write in ``folder``: names its setting and the reason, never a path."""
        setting = self.folder_setting(folder)
        if isinstance(exc, StorageUnavailable):
            reason = str(exc.details.get("reason") or "not writable")
        else:
            reason = exc.strerror or type(exc).__name__
        where = f"the {folder} folder ({setting}" + ("" if setting != "FACEPORT_HOME" else f"/{folder}") + ")"
        return StorageUnavailable(f"{where} cannot be written: {reason}; check that it exists, is a writable "
                                  "folder and has free space", details={"setting": setting, "folder": folder,
                                                                         "reason": reason})

    def unwritable_storage(self) -> list[str]:
        """Folders that fail a write probe (create and delete a small file), as ``<folder>:<setting>``."""
        problems = []
        for folder in ("outputs", "uploads"):
            try:
                directory = self._folder(folder)
                directory.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
                    pass
            except OSError:
                problems.append(f"{folder}:{self.folder_setting(folder)}")
        return problems

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
        options = RenderOptions.from_request(request, self.settings)
        require_source(options, source_count)
        if request.webhook_url is not None:
            self.webhooks.check(str(request.webhook_url))
        return options

    def new_staging_dir(self) -> Path:
        """A fresh directory for one request's uploads (moved to ``uploads/<job id>`` once accepted)."""
        path = self.uploads_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise self.storage_unavailable("uploads", exc) from None
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
            try:
                os.replace(staging, self.uploads_dir / record.id)
            except OSError as exc:
                raise self.storage_unavailable("uploads", exc) from None

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
        options = RenderOptions.from_request(validate_process_request(params["request"]), self.settings)
        engine = self.engine.with_threads(options.threads)  # sessions of this thread count, not shared ones
        sources = [self._load_source(inputs / name, index) for index, name in enumerate(params["sources"])]
        name = params["output_name"]
        try:
            self.outputs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.storage_unavailable("outputs", exc) from None
        if params["media"] == "image":
            target = self._decode_target((inputs / params["target"]).read_bytes())
            result = render_image(engine, sources, target, options, max_pixels=self.settings.max_image_pixels)
            partial = self.outputs_dir / f"{_PARTIAL_PREFIX}{name}"  # hidden: no valid output name starts with "."
            try:
                partial.write_bytes(encode_for_suffix(result, Path(name).suffix))
                os.replace(partial, self.outputs_dir / name)
            except OSError as exc:
                raise self.storage_unavailable("outputs", exc) from None
            finally:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
        else:
            try:  # process_video writes atomically (a hidden partial file renamed at the end)
                render_video(engine, sources, inputs / params["target"], self.outputs_dir / name, options,
                             progress=progress)
            except (InvalidFormat, InvalidImage) as exc:
                exc.details.setdefault("field", "target")
                raise
            except (StorageUnavailable, OSError) as exc:
                raise self.storage_unavailable("outputs", exc) from None
        return {"output_name": name, "output_path": output_display_path(name),
                "face_detector": options.detector or self.settings.detector,
                "execution_thread_count": options.threads}

    def _on_finish(self, record: JobRecord) -> None:
        shutil.rmtree(self.uploads_dir / record.id, ignore_errors=True)
        self._enqueue_webhook(record)

    def _enqueue_webhook(self, record: JobRecord) -> None:
        url = record.params.get("request", {}).get("webhook_url")
        if url:
            status = self._status(record)
            body = {"job_id": status.job_id, "status": status.status, "output_path": status.output_path,
                    "error": status.error}
            self.webhooks.enqueue(record.id, url, body)

    def _enqueue_missed_webhooks(self, window_s: float = 86_400.0) -> None:
        """Ended jobs (of the last day) whose webhook was never recorded: the process died in between."""
        store = self.webhooks.store
        cutoff = time.time() - window_s
        with store.session() as session:
            ended = [record for kind in JOB_KINDS for state in (JobState.COMPLETED, JobState.FAILED)
                     for record in list_jobs(session=session, kind=kind, state=state, limit=200)
                     if record.finished_at is not None and record.finished_at.timestamp() > cutoff
                     and record.params.get("request", {}).get("webhook_url")]
            known = job_ids_with_deliveries(session=session, job_ids=[record.id for record in ended])
        for record in ended:
            if record.id not in known:
                log.warning("job %s ended without its webhook being recorded; sending it now", record.id)
                self._enqueue_webhook(record)

    def job_status(self, job_id: str) -> JobStatus:
        """The status of a job by its public id.

        Raises:
            NotFound: no such job.
        """
        match = _PUBLIC_ID.fullmatch(job_id)
        if match:
            for record in self.jobs.find_by_id_prefix(match.group(3), kinds=JOB_KINDS):
                if public_job_id(record) == job_id:
                    return replace(self._status(record), webhook=self._webhook_status(record.id))
        raise NotFound(f"job {job_id!r} not found", details={"job_id": job_id})

    def _status(self, record: JobRecord) -> JobStatus:
        result = record.result if isinstance(record.result, dict) else {}
        status = _STATUS[record.state]
        error = record.error
        if record.state == JobState.CANCELLED:
            error = {"code": "CANCELLED", "message": "the job was cancelled"}
        request = record.params.get("request", {})
        detector = (result.get("face_detector") or native_detector(request.get("face_detector_model"))
                    or self.settings.detector)
        return JobStatus(job_id=public_job_id(record), status=status,  # type: ignore[arg-type]
                         progress=round(record.progress, 1), output_path=result.get("output_path"), error=error,
                         created_at=record.created_at.isoformat(),
                         finished_at=record.finished_at.isoformat() if record.finished_at else None,
                         face_detector=detector)

    def _webhook_status(self, job_id: str) -> dict[str, Any] | None:
        with self.webhooks.store.session() as session:
            delivery = delivery_for_job(session=session, job_id=job_id)
        if delivery is None:
            return None
        return {"state": delivery.state, "attempts": delivery.attempts, "last_status": delivery.last_status,
                "error": delivery.error,
                "delivered_at": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
                "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.state == "pending" else None,
                "history": delivery.history}

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
