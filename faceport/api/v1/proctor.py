"""Admin routes of the proctoring registry (seed C): clients, reference faces, state, evidence.

``/api/v1/proctor/clients[/{user_name}[/faces|/pause|/resume|/block|/unblock|/token]]`` and
``/api/v1/proctor/evidence[/{evidence_id}[/image]]``. Admin only (Bearer JWT or X-API-Key of
an admin); seed D envelopes. A state change reaches the client's live ``/ws`` connection at once.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from faceport.api.deps import AdminPrincipal, ContextDep
from faceport.api.envelope import Envelope, ok
from faceport.api.uploads import image_from_request
from faceport.store.proctor import USER_NAME_PATTERN, ClientRecord, EvidenceRecord

router = APIRouter(prefix="/api/v1/proctor", tags=["proctoring"])


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the charset rule (USER_NAME_PATTERN) is checked by the repository: 400 INVALID_INPUT, value not echoed
    user_name: str = Field(min_length=1, max_length=64,
                           description=f"1 to 64 characters from A-Z a-z 0-9 . _ @ - (^{USER_NAME_PATTERN.pattern}$)")


class TokenSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(default=None, min_length=16, max_length=256,
                              description="the token to set; omitted: the server makes a random one")


class ClientPublic(BaseModel):
    user_name: str
    state: str
    violations: int
    face_count: int
    has_token: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ClientRecord) -> ClientPublic:
        return cls(user_name=record.user_name, state=record.state, violations=record.violations,
                   face_count=len(record.embeddings), has_token=record.token_hash is not None,
                   created_at=record.created_at, updated_at=record.updated_at)


class ClientToken(ClientPublic):
    token: str = Field(description="the client's token in clear; shown only in this answer (only a hash is kept)")


class ClientList(BaseModel):
    clients: list[ClientPublic]
    total: int


class EvidencePublic(BaseModel):
    id: str
    user_name: str
    action: str
    reason: str
    actual_username: str
    details: dict[str, Any]
    created_at: datetime
    image_base64: str | None = None

    @classmethod
    def of(cls, record: EvidenceRecord) -> EvidencePublic:
        return cls(id=record.id, user_name=record.user_name, action=record.action, reason=record.reason,
                   actual_username=record.actual_username, details=record.details, created_at=record.created_at,
                   image_base64=base64.b64encode(record.image).decode() if record.image is not None else None)


class EvidenceList(BaseModel):
    evidence: list[EvidencePublic]
    total: int


class Deleted(BaseModel):
    deleted: str


@router.post("/clients", status_code=201, response_model=Envelope[ClientPublic])
async def create_client(request: Request, body: ClientCreate, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    record = await ctx.run(ctx.proctor.create_client, body.user_name)
    return ok(request, ClientPublic.of(record).model_dump(mode="json"))


@router.get("/clients", response_model=Envelope[ClientList])
async def list_clients(request: Request, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    records = await ctx.run(ctx.proctor.list_clients)
    return ok(request, ClientList(clients=[ClientPublic.of(r) for r in records], total=len(records))
              .model_dump(mode="json"))


@router.get("/clients/{user_name}", response_model=Envelope[ClientPublic])
async def get_client(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    return ok(request, ClientPublic.of(await ctx.run(ctx.proctor.get_client, user_name)).model_dump(mode="json"))


@router.delete("/clients/{user_name}", response_model=Envelope[Deleted])
async def delete_client(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    await ctx.run(ctx.proctor.delete_client, user_name)
    return ok(request, {"deleted": user_name})


@router.post("/clients/{user_name}/faces", status_code=201, response_model=Envelope[ClientPublic])
async def add_face(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal,
                   image: Annotated[UploadFile, File(description="a photo showing exactly one face")]
                   ) -> dict[str, Any]:
    decoded = await image_from_request(ctx, upload=image, base64_text=None)
    record = await ctx.run(ctx.proctor.add_face, user_name, decoded)
    return ok(request, ClientPublic.of(record).model_dump(mode="json"))


@router.post("/clients/{user_name}/token", response_model=Envelope[ClientToken])
async def set_token(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal,
                    body: TokenSet | None = None) -> dict[str, Any]:
    """Set the client's /ws token (given, or a random one); it is returned once and stored hashed."""
    record, token = await ctx.run(ctx.proctor.set_token, user_name, body.token if body else None)
    return ok(request, ClientToken(**ClientPublic.of(record).model_dump(), token=token).model_dump(mode="json"))


@router.delete("/clients/{user_name}/token", response_model=Envelope[ClientPublic])
async def clear_token(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    return ok(request, ClientPublic.of(await ctx.run(ctx.proctor.clear_token, user_name)).model_dump(mode="json"))


def _state_route(path: str, state: str) -> None:
    async def change(request: Request, user_name: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
        record = await ctx.run(ctx.proctor.set_state, user_name, state)
        return ok(request, ClientPublic.of(record).model_dump(mode="json"))

    change.__name__ = f"{path}_client"
    router.add_api_route(f"/clients/{{user_name}}/{path}", change, methods=["POST"],
                         response_model=Envelope[ClientPublic], summary=f"{path.capitalize()} a client")


for _path, _state in (("pause", "paused"), ("resume", "active"), ("block", "blocked"), ("unblock", "active")):
    _state_route(_path, _state)


@router.get("/evidence", response_model=Envelope[EvidenceList])
async def list_evidence(request: Request, ctx: ContextDep, _: AdminPrincipal, user_name: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    from faceport.store import proctor as repo

    def read() -> tuple[list[EvidenceRecord], int]:
        with ctx.store.session() as session:
            return repo.list_evidence(session=session, user_name=user_name, limit=limit, offset=offset)

    records, total = await ctx.run(read)
    return ok(request, EvidenceList(evidence=[EvidencePublic.of(r) for r in records], total=total)
              .model_dump(mode="json"))


def _get(ctx: Any, evidence_id: str) -> EvidenceRecord:
    from faceport.store import proctor as repo

    with ctx.store.session() as session:
        return repo.get_evidence(session=session, evidence_id=evidence_id)


@router.get("/evidence/{evidence_id}", response_model=Envelope[EvidencePublic])
async def get_evidence(request: Request, evidence_id: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    return ok(request, EvidencePublic.of(await ctx.run(_get, ctx, evidence_id)).model_dump(mode="json"))


@router.get("/evidence/{evidence_id}/image", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
async def get_evidence_image(evidence_id: str, ctx: ContextDep, _: AdminPrincipal) -> Response:
    record = await ctx.run(_get, ctx, evidence_id)
    return Response(content=record.image or b"", media_type="image/jpeg")


@router.delete("/evidence/{evidence_id}", response_model=Envelope[Deleted])
async def delete_evidence(request: Request, evidence_id: str, ctx: ContextDep, _: AdminPrincipal) -> dict[str, Any]:
    from faceport.store import proctor as repo

    def remove() -> None:
        with ctx.store.session() as session:
            repo.delete_evidence(session=session, evidence_id=evidence_id)

    await ctx.run(remove)
    return ok(request, {"deleted": evidence_id})
