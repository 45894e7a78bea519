"""``GET /health`` — the union of seeds B, D and E: status, version, timestamp, processors_available."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from faceport import __version__
from faceport.api.deps import ContextDep
from faceport.api.errors import now_iso
from faceport.config import node_name
from faceport.services.system import processors_available

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str  # "healthy" | "degraded"
    version: str
    timestamp: str
    processors_available: list[str]
    database: str
    storage: str  # "ok" | "unwritable"
    storage_unwritable: list[str]  # "<folder>:<setting>", e.g. "media:FACEPORT_MEDIA_ROOT"
    uptime_seconds: float
    node: str  # FACEPORT_NODE_NAME (default host:pid): which API node answered, behind a load balancer
    job_runner: str  # FACEPORT_JOBS: "local" or "celery"


@router.get("/health", response_model=Health, summary="Service health")
async def health(ctx: ContextDep) -> JSONResponse:
    database_ok = await ctx.run(ctx.store.ping)
    # a write probe (create + delete one small file) of the output and upload folders and the media root
    unwritable = await ctx.run(ctx.system.unwritable_storage) if ctx.system is not None else []
    healthy = database_ok and not unwritable
    body = Health(
        status="healthy" if healthy else "degraded",
        version=__version__,
        timestamp=now_iso(),
        processors_available=processors_available(ctx.models),
        database="ok" if database_ok else "unreachable",
        storage="unwritable" if unwritable else "ok",
        storage_unwritable=unwritable,
        uptime_seconds=round(time.time() - ctx.started_at, 3),
        node=node_name(ctx.settings),
        job_runner=ctx.settings.jobs,
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
