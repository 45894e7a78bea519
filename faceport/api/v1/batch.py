"""Seed D batches: ``POST /batch/submit``, ``GET /batch/status/{id}``, ``GET /batch/results/{id}``,
``DELETE /batch/cancel/{id}``, ``GET /batch/list``.

A batch belongs to its submitter (``Principal.owner``); someone else's batch is ``NOT_FOUND``;
admins see and cancel every batch. Submissions count against the batch rate limit
(``FACEPORT_RATE_LIMIT_BATCH``, seed D: 10 per hour) on top of the user limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from faceport.api.context import AppContext
from faceport.api.deps import ContextDep, CurrentPrincipal
from faceport.api.envelope import Envelope, ok
from faceport.api.errors import platform_code
from faceport.api.ratelimit import api_v1_dependencies, rate_limit
from faceport.errors import FileTooLarge, InvalidFormat, InvalidInput, MissingField
from faceport.principal import Principal
from faceport.services.batch import BatchStatus, Source, operation_names
from faceport.services.gallery import owner_scope

router = APIRouter(prefix="/api/v1/batch", tags=["batch"], dependencies=api_v1_dependencies("user"))

_FILE_FIELDS = ("images", "images[]", "files", "files[]", "image")
_TEXT_FIELDS = ("images_base64", "images_base64[]")
_ARCHIVE_FIELDS = ("archive", "zip")
_ZIP_MAGIC = b"PK\x03\x04"
_RESERVED = {"operation", "options", "subject_id", "archive", "archive_name", "images"}


class SubmitOut(BaseModel):
    batch_id: str
    job_id: str
    state: str
    operation: str
    total: int
    created_at: datetime
    status_url: str
    results_url: str


class ItemError(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class BatchStatusOut(BaseModel):
    batch_id: str
    owner: str
    state: str = Field(description="queued, running, completed, failed or cancelled")
    operation: str
    progress: float = Field(description="percent of images processed")
    total: int
    processed: int
    succeeded: int
    failed: int = Field(description="images with an error (the batch itself may still complete)")
    eta_seconds: float | None = Field(description="at this batch's measured speed; null before a measurement")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None = Field(description="when the batch and its results are purged")
    error: ItemError | None = Field(description="why the batch failed as a whole")


class BatchItemOut(BaseModel):
    index: int
    name: str
    status: str = Field(description="ok or error")
    result: Any | None = Field(description="what the operation's /face/* route answers in data")
    error: ItemError | None
    processing_time: float = Field(description="milliseconds")


class BatchResultsOut(BaseModel):
    batch: BatchStatusOut
    items: list[BatchItemOut]
    page: int
    size: int
    count: int = Field(description="items matching the filter, stored so far")
    pages: int


class BatchListOut(BaseModel):
    batches: list[BatchStatusOut]
    page: int
    size: int
    total: int
    pages: int


def _error(raw: dict[str, Any] | None) -> ItemError | None:
    if not raw:
        return None
    code, details = platform_code(str(raw.get("code", "PROCESSING_FAILED")), dict(raw.get("details") or {}))
    return ItemError(code=code, message=str(raw.get("message", "")), details=details)


def _status_out(status: BatchStatus) -> BatchStatusOut:
    record, job = status.record, status.record.job
    progress = 100.0 if job.state.value == "completed" else round(100.0 * record.processed / record.total, 1)
    return BatchStatusOut(batch_id=record.id, owner=record.owner, state=job.state.value, operation=record.operation,
                          progress=progress, total=record.total, processed=record.processed,
                          succeeded=record.succeeded, failed=record.failed, eta_seconds=status.eta_seconds,
                          created_at=record.created_at, started_at=job.started_at, finished_at=job.finished_at,
                          expires_at=record.expires_at, error=_error(job.error))


def _scope(principal: Principal) -> str | None:
    """Whose batches the caller sees: their own; admins every one."""
    return None if principal.is_admin else principal.owner


async def _sources(request: Request, ctx: AppContext) -> tuple[dict[str, Any], list[Source]]:
    """The submission's fields and its image sources, from multipart or JSON.

    Raises:
        InvalidFormat: another content type, bad JSON, bad base64 archive.
    """
    settings = ctx.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    sources: list[Source] = []
    if content_type == "multipart/form-data":
        form = await request.form(max_files=settings.batch_max_items + 8, max_fields=settings.batch_max_items + 64,
                                  max_part_size=settings.max_image_bytes * 4 // 3 + 4096)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in _FILE_FIELDS + _ARCHIVE_FIELDS:
                    raise InvalidInput(f"unexpected file field {key!r}; send images as 'images' or an archive "
                                       "as 'archive'", details={"field": key})
                head = value.file.read(4)
                value.file.seek(0)
                is_zip = key in _ARCHIVE_FIELDS or head == _ZIP_MAGIC
                sources.append(Source(value.filename or key, "zip" if is_zip else "file", file=value.file))
            elif key in _TEXT_FIELDS:
                sources.append(Source(f"image_{len(sources)}", "base64", text=value))
            else:
                fields.setdefault(key, value)
        if isinstance(fields.get("options"), str) and fields["options"].strip():
            try:
                fields["options"] = json.loads(fields["options"])
            except ValueError as exc:
                raise InvalidFormat(f"options is not valid JSON: {exc}", details={"field": "options"}) from None
    elif content_type == "application/json":
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidFormat(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidFormat("JSON body must be an object")
        images = body.pop("images", None) or []
        if not isinstance(images, list):
            raise InvalidInput("images must be a list of base64 strings or {name, image} objects",
                               details={"field": "images"})
        for number, entry in enumerate(images):
            if isinstance(entry, str):
                sources.append(Source(f"image_{number}", "base64", text=entry))
            elif isinstance(entry, dict) and isinstance(entry.get("image"), str):
                sources.append(Source(str(entry.get("name") or f"image_{number}"), "base64", text=entry["image"]))
            else:
                raise InvalidInput(f"images[{number}] must be a base64 string or {{name, image}}",
                                   details={"field": f"images[{number}]"})
        archive = body.pop("archive", None)
        if archive is not None:
            if not isinstance(archive, str):
                raise InvalidInput("archive must be a base64 string", details={"field": "archive"})
            if len(archive) > settings.batch_max_bytes * 4 // 3 + 1024:
                raise FileTooLarge("archive exceeds FACEPORT_BATCH_MAX_BYTES", details={"field": "archive"})
            payload = archive.split(",", 1)[1] if archive.startswith("data:") else archive
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidFormat("archive is not valid base64", details={"field": "archive"}) from None
            sources.append(Source(str(body.get("archive_name") or "archive.zip"), "zip", file=io.BytesIO(data)))
        fields = body
    elif content_type:
        raise InvalidFormat(f"unsupported content type {content_type!r}; send multipart/form-data or "
                            "application/json", details={"content_type": content_type})
    return fields, sources


@router.post("/submit", status_code=202, response_model=Envelope[SubmitOut], summary="Submit a batch job",
             dependencies=[Depends(rate_limit("batch"))],
             responses={403: {"description": "AUTH_FORBIDDEN: options.owner (another owner's gallery) needs the "
                                             "admin role"},
                        404: {"description": "NOT_FOUND: subject_id is not one of the caller's subjects"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "operation": {"type": "string", "enum": ["detect", "recognize", "verify", "analyze",
                                                              "demographics"]},
                     "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                     "archive": {"type": "string", "format": "binary", "description": "zip of images"},
                     "images_base64": {"type": "array", "items": {"type": "string"}},
                     "options": {"type": "string", "description": "JSON object: the operation's parameters"},
                     "subject_id": {"type": "string", "description": "verify: the subject to compare with"}}}},
                 "application/json": {"schema": {"type": "object", "properties": {
                     "operation": {"type": "string"},
                     "images": {"type": "array", "items": {"type": "string", "description": "base64 or data URL"}},
                     "archive": {"type": "string", "description": "base64 zip"},
                     "options": {"type": "object"}, "subject_id": {"type": "string"}}}}}}})
async def submit(request: Request, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    service = ctx.batch
    service.check_capacity()
    fields, sources = await _sources(request, ctx)
    operation = fields.get("operation")
    if not isinstance(operation, str) or not operation:
        raise MissingField(f"operation is required: one of {', '.join(operation_names())}",
                           details={"field": "operation"})
    options = fields.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("options must be a JSON object", details={"field": "options"})
    # the operation's parameters may also come as top-level fields, as on the /face/* routes
    options = {**{k: v for k, v in fields.items() if k not in _RESERVED}, **options}
    subject_id = fields.get("subject_id") or options.get("subject_id")
    if subject_id is not None and (not isinstance(subject_id, str) or len(subject_id) > 64):
        raise InvalidInput("subject_id must be a string of at most 64 characters", details={"field": "subject_id"})
    requested_owner = options.get("owner")
    gallery_owner = owner_scope(principal, requested_owner if isinstance(requested_owner, str) else None)
    params = {"gallery_owner": gallery_owner, "subject_id": subject_id}
    options = await ctx.run(service.validate, operation, options, params)
    incoming = service.incoming_folder()
    items = await ctx.run(service.stage, sources, incoming)
    record = await ctx.run(service.submit, owner=principal.owner, operation=operation, options=options,
                           params=params, incoming=incoming, items=items)
    base = "/api/v1/batch"
    data = SubmitOut(batch_id=record.id, job_id=record.id, state=record.job.state.value, operation=operation,
                     total=record.total, created_at=record.created_at, status_url=f"{base}/status/{record.id}",
                     results_url=f"{base}/results/{record.id}")
    return ok(request, data.model_dump(mode="json"))


@router.get("/status/{batch_id}", name="batch_status", response_model=Envelope[BatchStatusOut],
            summary="State, progress, counts and ETA of a batch")
async def status(request: Request, batch_id: str, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    result = await ctx.run(ctx.batch.status, batch_id, owner=_scope(principal))
    return ok(request, _status_out(result).model_dump(mode="json"))


@router.get("/results/{batch_id}", response_model=Envelope[BatchResultsOut],
            summary="Per-image results and errors, paged (available while the batch runs)")
async def results(request: Request, batch_id: str, ctx: ContextDep, principal: CurrentPrincipal,
                  page: int = Query(1, ge=1, le=1_000_000), size: int = Query(50, ge=1, le=500),
                  status: str | None = Query(None, pattern="^(ok|error)$",
                                             description="only items with this status")) -> dict[str, Any]:
    record, items, count = await ctx.run(ctx.batch.results, batch_id, owner=_scope(principal), status=status,
                                         limit=size, offset=(page - 1) * size)
    out = BatchResultsOut(
        batch=_status_out(BatchStatus(record, ctx.batch.eta(record))),
        items=[BatchItemOut(index=i.index, name=i.name, status=i.status, result=i.result, error=_error(i.error),
                            processing_time=round(i.elapsed_ms, 2)) for i in items],
        page=page, size=size, count=count, pages=math.ceil(count / size) if count else 0)
    return ok(request, out.model_dump(mode="json"))


@router.delete("/cancel/{batch_id}", response_model=Envelope[BatchStatusOut],
               summary="Cancel a queued or running batch (a running one stops before its next image)")
async def cancel(request: Request, batch_id: str, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    record = await ctx.run(ctx.batch.cancel, batch_id, owner=_scope(principal))
    return ok(request, _status_out(BatchStatus(record, ctx.batch.eta(record))).model_dump(mode="json"))


@router.get("/list", response_model=Envelope[BatchListOut], summary="The caller's batches (admins: all), newest first",
            responses={403: {"description": "AUTH_FORBIDDEN: ?owner= needs the admin role"}})
async def list_batches(request: Request, ctx: ContextDep, principal: CurrentPrincipal,
                       page: int = Query(1, ge=1, le=1_000_000), size: int = Query(20, ge=1, le=200),
                       state: str | None = Query(None, pattern="^(queued|running|completed|failed|cancelled)$"),
                       owner: str | None = Query(None, min_length=1, max_length=64,
                                                 description="admins: only this owner's batches")) -> dict[str, Any]:
    scope = owner_scope(principal, owner)
    statuses, total = await ctx.run(ctx.batch.list, owner=scope, state=state, limit=size, offset=(page - 1) * size)
    out = BatchListOut(batches=[_status_out(s) for s in statuses], page=page, size=size, total=total,
                       pages=math.ceil(total / size) if total else 0)
    return ok(request, out.model_dump(mode="json"))
