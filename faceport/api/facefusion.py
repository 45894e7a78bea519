"""Seed B, the FaceFusion-style REST API: ``/processors``, ``/process/image``, ``/process/video``,
``/download/{name}``, ``DELETE /output/{name}`` and ``/jobs/{job_id}`` (the seed's "future" webhook
section made real). ``X-API-Key`` is required when ``FACEPORT_API_KEY`` is set.

Uploads are copied to disk in chunks (at most ``max_upload_bytes`` each); all blocking work runs
on the thread pool, long videos in the job runner (see :mod:`faceport.services.facefusion`).
"""

from __future__ import annotations

import logging
import mimetypes
import shutil
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, GetCoreSchemaHandler
from pydantic_core import core_schema
from starlette.background import BackgroundTask

from faceport.api.context import AppContext
from faceport.api.deps import ApiKeyDep, ContextDep
from faceport.config import Settings
from faceport.errors import FileTooLarge, InvalidInput, ProcessingFailed
from faceport.services.facefusion import FaceFusionService, Media, ProcessRequest, parse_process_request

log = logging.getLogger(__name__)

router = APIRouter(tags=["facefusion"], dependencies=[ApiKeyDep])

_CHUNK = 1 << 20
MAX_SOURCES = 8


def body_limit(settings: Settings) -> int:
    """The request body limit of the process routes: a target of ``max_upload_bytes``, up to
    ``MAX_SOURCES`` source images of ``max_image_bytes`` each, and the form's overhead.

    Within it, a file over its own limit is refused by the route with a JSON 413 FILE_TOO_LARGE;
    a body over it is refused by the framework (413, plain text) before it is read.
    """
    return settings.max_upload_bytes + MAX_SOURCES * settings.max_image_bytes + (1 << 20)
_REQUEST_DOC = ("A ProcessRequest (components/schemas/ProcessRequest) as a JSON string, e.g. "
                '{"processors":["face_swapper"],"execution_providers":["cpu"]}; absent: all defaults.')


class RequestJson(str):
    """The ``request`` form field: a JSON string whose OpenAPI schema references ``ProcessRequest``.

    It is validated by :func:`parse_process_request` (errors name the field), not by FastAPI.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def must_be_text(value: Any) -> str:
            if not isinstance(value, str):
                raise ValueError("request must be a JSON string")
            return value

        return core_schema.no_info_plain_validator_function(
            must_be_text, json_schema_input_schema=core_schema.json_schema(handler.generate_schema(ProcessRequest)))


class ProcessorInfo(BaseModel):
    name: str
    available: bool


class ProcessResponse(BaseModel):
    job_id: str = Field(examples=["api_20250101_120000_abc123"])
    status: Literal["completed", "queued"]
    output_path: str | None = Field(examples=[".api_outputs/550e8400-e29b-41d4-a716-446655440000.jpg"])


class JobError(BaseModel):
    code: str
    message: str


class WebhookAttempt(BaseModel):
    at: str
    status: int | None = Field(description="HTTP status the receiver answered; null: no answer")
    error: str | None


class WebhookDeliveryStatus(BaseModel):
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending: not yet delivered, retried with exponential backoff; failed: gave up")
    attempts: int
    last_status: int | None
    error: str | None = Field(description="why the last attempt failed")
    delivered_at: str | None
    next_attempt_at: str | None
    history: list[WebhookAttempt]


class JobStatusResponse(BaseModel):
    job_id: str
    status: Literal["queued", "processing", "completed", "failed"]
    progress: float = Field(description="percent, 0-100")
    output_path: str | None = None
    error: JobError | None = None
    created_at: str
    finished_at: str | None = None
    face_detector: str | None = Field(default=None, description="The detector that ran (or will run): "
                                      "FaceFusion's names are mapped to the nearest one here.",
                                      examples=["centerface"])
    webhook: WebhookDeliveryStatus | None = Field(default=None, description="The webhook_url delivery, if any.")


class DeleteResponse(BaseModel):
    status: Literal["deleted"]
    name: str


def _service(ctx: AppContext) -> FaceFusionService:
    if ctx.facefusion is None:
        raise ProcessingFailed("the FaceFusion service is not set up in this app context")
    return ctx.facefusion


def _copy_limited(source: BinaryIO, dest: Path, *, field: str, max_bytes: int) -> None:
    """Copy an upload to ``dest`` in chunks, refusing it once it passes ``max_bytes``."""
    source.seek(0)
    total = 0
    with dest.open("wb") as out:
        while chunk := source.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise FileTooLarge(f"{field} exceeds the {max_bytes / (1024 * 1024):g} MB upload limit",
                                   details={"field": field, "limit_bytes": max_bytes})
            out.write(chunk)


async def _process(ctx: AppContext, media: Media, target: UploadFile, sources: list[UploadFile] | None,
                   request_json: str | None) -> ProcessResponse:
    service = _service(ctx)
    request = parse_process_request(request_json)
    sources = list(sources or [])
    if len(sources) > MAX_SOURCES:
        raise InvalidInput(f"at most {MAX_SOURCES} source images, got {len(sources)}",
                           details={"field": "source", "max": MAX_SOURCES})
    # on the thread pool: the webhook check resolves its host name
    await ctx.run(service.check_request, request, source_count=len(sources))
    staging = await ctx.run(service.new_staging_dir)
    try:
        limit = ctx.settings.max_upload_bytes
        target_name = service.upload_name("target", target.filename)
        try:
            await ctx.run(_copy_limited, target.file, staging / target_name, field="target", max_bytes=limit)
            source_names = []
            for index, upload in enumerate(sources):
                name = service.upload_name("source", upload.filename, index)
                await ctx.run(_copy_limited, upload.file, staging / name, field="source",
                              max_bytes=ctx.settings.max_image_bytes)
                source_names.append(name)
        except OSError as exc:
            raise service.storage_unavailable("uploads", exc) from None
        accepted = await ctx.run(service.accept, media, request, staging, target_name, source_names)
    finally:
        if staging.exists():  # not accepted: nothing refers to these files
            await ctx.run(shutil.rmtree, staging, True)
    return ProcessResponse(job_id=accepted.job_id, status=accepted.status, output_path=accepted.output_path)


TargetFile = Annotated[UploadFile, File(description="The image or video to process.")]
SourceFiles = Annotated[list[UploadFile] | None, File(
    description="Face image(s) of the person to put in; repeat the field for several images of one person. "
    "Required by face_swapper.")]
RequestField = Annotated[RequestJson | None, Form(alias="request", description=_REQUEST_DOC)]


@router.get("/processors", response_model=list[ProcessorInfo], summary="List processors")
async def list_processors(ctx: ContextDep) -> list[ProcessorInfo]:
    return [ProcessorInfo(**row) for row in await ctx.run(_service(ctx).processors)]


@router.post("/process/image", response_model=ProcessResponse, summary="Process an image")
async def process_image(ctx: ContextDep, target: TargetFile, source: SourceFiles = None,
                        request_json: RequestField = None) -> ProcessResponse:
    """Swap and/or enhance the faces of ``target``; answers once the output is written."""
    return await _process(ctx, "image", target, source, request_json)


@router.post("/process/video", response_model=ProcessResponse, summary="Process a video")
async def process_video(ctx: ContextDep, target: TargetFile, source: SourceFiles = None,
                        request_json: RequestField = None) -> ProcessResponse:
    """Swap and/or enhance the faces of every frame (audio kept). Videos up to
    ``FACEPORT_SYNC_VIDEO_MAX_SECONDS`` answer ``completed``; longer ones ``queued``: poll
    ``GET /jobs/{job_id}`` or pass ``webhook_url``."""
    return await _process(ctx, "video", target, source, request_json)


@router.get("/download/{name}", response_class=FileResponse, summary="Download an output",
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(ctx: ContextDep, name: str,
                   cleanup: Annotated[bool, Query(description="delete the output once sent")] = False
                   ) -> FileResponse:
    path = await ctx.run(_service(ctx).output_file, name)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    task = BackgroundTask(path.unlink, missing_ok=True) if cleanup else None
    return FileResponse(path, media_type=media_type, filename=path.name, background=task)


@router.delete("/output/{name}", response_model=DeleteResponse, summary="Delete an output")
async def delete_output(ctx: ContextDep, name: str) -> DeleteResponse:
    await ctx.run(_service(ctx).delete_output, name)
    return DeleteResponse(status="deleted", name=name)


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, summary="Job status")
async def job_status(ctx: ContextDep, job_id: str) -> JobStatusResponse:
    status = await ctx.run(_service(ctx).job_status, job_id)
    error = JobError(**status.error) if status.error else None
    webhook = WebhookDeliveryStatus.model_validate(status.webhook) if status.webhook else None
    return JobStatusResponse(job_id=status.job_id, status=status.status, progress=status.progress,
                             output_path=status.output_path, error=error, created_at=status.created_at,
                             finished_at=status.finished_at, face_detector=status.face_detector, webhook=webhook)
