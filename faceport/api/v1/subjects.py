"""Seed D gallery routes: subjects (people) and their example faces, as CompreFace's face collection.

``/api/v1/face/subjects[/{subject_id}[/faces[/{face_id}]]]``. Enrolling a face stores its
embedding, box and score, never the image. Every route needs an authenticated caller;
database and inference work runs on the thread pool.

Subjects belong to their creator (:attr:`faceport.principal.Principal.owner`): callers see
and change only their own, and someone else's subject is ``NOT_FOUND``; admins see every
subject and may list one owner's with ``?owner=``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from faceport.api.deps import ContextDep, CurrentPrincipal
from faceport.api.envelope import Envelope, ok
from faceport.api.ratelimit import api_v1_dependencies
from faceport.api.requests import body_doc, image_field, read_fields
from faceport.errors import ProcessingFailed
from faceport.services.gallery import EMBEDDING_MODEL, Gallery, owner_scope
from faceport.store.gallery import MAX_NAME_LENGTH, MAX_OWNER_LENGTH, FaceRecord, SubjectRecord

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["gallery"], dependencies=api_v1_dependencies("user"))

MAX_PAGE_SIZE = 100

SubjectName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH)]


class SubjectCreate(BaseModel):
    """Body of ``POST /face/subjects``."""

    model_config = ConfigDict(extra="forbid")

    name: SubjectName = Field(description="display name, unique among your subjects; surrounding spaces are trimmed")


class SubjectUpdate(BaseModel):
    """Body of ``PUT /face/subjects/{subject_id}``."""

    model_config = ConfigDict(extra="forbid")

    name: SubjectName = Field(description="the new name, unique among the owner's subjects")


class SubjectPublic(BaseModel):
    id: str
    name: str
    face_count: int
    created_at: datetime
    owner: str | None = Field(description="who it belongs to: a user id, or key:<api key id> for a service key")

    @classmethod
    def from_record(cls, record: SubjectRecord) -> SubjectPublic:
        return cls(id=record.id, name=record.name, face_count=record.face_count, created_at=record.created_at,
                   owner=record.owner)


class SubjectPage(BaseModel):
    items: list[SubjectPublic]
    page: int
    size: int
    total: int


class SubjectDeleted(BaseModel):
    id: str
    name: str
    faces_deleted: int


class BBox(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class FacePublic(BaseModel):
    id: str
    subject_id: str
    bbox: BBox = Field(description="pixels in the enrolled image")
    score: float = Field(description="detector confidence")
    created_at: datetime

    @classmethod
    def from_record(cls, record: FaceRecord) -> FacePublic:
        x1, y1, x2, y2 = (round(v, 2) for v in record.bbox)
        return cls(id=record.id, subject_id=record.subject_id, bbox=BBox(x1=x1, y1=y1, x2=x2, y2=y2),
                   score=round(record.score, 4), created_at=record.created_at)


class FaceList(BaseModel):
    subject_id: str
    items: list[FacePublic]
    total: int


class EnrolParams(BaseModel):
    """Non-image fields of ``POST /face/subjects/{subject_id}/faces`` (none yet)."""

    model_config = ConfigDict(extra="ignore")


def _gallery(ctx: ContextDep) -> Gallery:
    if not isinstance(ctx.gallery, Gallery):
        raise ProcessingFailed("the gallery is not loaded")
    return ctx.gallery


GalleryDep = Annotated[Gallery, Depends(_gallery)]


@router.post("/face/subjects", status_code=201, response_model=Envelope[SubjectPublic], summary="Add a subject")
async def create_subject(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                         body: SubjectCreate) -> dict[str, Any]:
    record = await ctx.run(gallery.create_subject, body.name, owner=principal.owner)
    return ok(request, SubjectPublic.from_record(record).model_dump())


@router.get("/face/subjects", response_model=Envelope[SubjectPage], summary="List subjects by name")
async def list_subjects(
    request: Request,
    ctx: ContextDep,
    gallery: GalleryDep,
    principal: CurrentPrincipal,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page")] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="subjects per page")] = 20,
    owner: Annotated[str | None, Query(min_length=1, max_length=MAX_OWNER_LENGTH,
                                       description="admins: only this owner's subjects")] = None,
) -> dict[str, Any]:
    scope = owner_scope(principal, owner)
    records, total = await ctx.run(gallery.list_subjects, page, size, owner=scope)
    data = SubjectPage(items=[SubjectPublic.from_record(r) for r in records], page=page, size=size, total=total)
    return ok(request, data.model_dump())


@router.get("/face/subjects/{subject_id}", response_model=Envelope[SubjectPublic], summary="One subject")
async def get_subject(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                      subject_id: str) -> dict[str, Any]:
    record = await ctx.run(gallery.get_subject, subject_id, owner=owner_scope(principal))
    return ok(request, SubjectPublic.from_record(record).model_dump())


@router.put("/face/subjects/{subject_id}", response_model=Envelope[SubjectPublic], summary="Rename a subject")
async def rename_subject(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                         subject_id: str, body: SubjectUpdate) -> dict[str, Any]:
    record = await ctx.run(gallery.rename_subject, subject_id, body.name, owner=owner_scope(principal))
    return ok(request, SubjectPublic.from_record(record).model_dump())


@router.delete("/face/subjects/{subject_id}", response_model=Envelope[SubjectDeleted],
               summary="Delete a subject and its faces")
async def delete_subject(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                         subject_id: str) -> dict[str, Any]:
    record = await ctx.run(gallery.delete_subject, subject_id, owner=owner_scope(principal))
    data = SubjectDeleted(id=record.id, name=record.name, faces_deleted=record.face_count)
    return ok(request, data.model_dump())


@router.post("/face/subjects/{subject_id}/faces", status_code=201, response_model=Envelope[FacePublic],
             summary="Enrol a face of the subject (exactly one face per image)",
             openapi_extra=body_doc(EnrolParams, {"image": "JPEG, PNG, BMP or WebP with exactly one face"}))
async def add_face(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                   subject_id: str) -> dict[str, Any]:
    scope = owner_scope(principal)
    fields = await read_fields(request)
    image = await image_field(ctx, fields, "image")
    if image is None:  # pragma: no cover - image_field raises MissingField when required
        raise RuntimeError("image_field returned no image for a required field")
    record = await ctx.run(gallery.enrol_image, subject_id, image, ctx.engine, owner=scope)
    request.state.model_used = f"{ctx.engine.options.detector},{EMBEDDING_MODEL}"
    return ok(request, FacePublic.from_record(record).model_dump())


@router.get("/face/subjects/{subject_id}/faces", response_model=Envelope[FaceList], summary="A subject's faces")
async def list_faces(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                     subject_id: str) -> dict[str, Any]:
    records = await ctx.run(gallery.list_faces, subject_id, owner=owner_scope(principal))
    data = FaceList(subject_id=subject_id, items=[FacePublic.from_record(r) for r in records], total=len(records))
    return ok(request, data.model_dump())


@router.delete("/face/subjects/{subject_id}/faces/{face_id}", response_model=Envelope[FacePublic],
               summary="Delete one face of a subject")
async def delete_face(request: Request, ctx: ContextDep, gallery: GalleryDep, principal: CurrentPrincipal,
                      subject_id: str, face_id: str) -> dict[str, Any]:
    record = await ctx.run(gallery.delete_face, subject_id, face_id, owner=owner_scope(principal))
    return ok(request, FacePublic.from_record(record).model_dump())
