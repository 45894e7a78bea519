"""Seed D system management: ``/api/v1/system/*`` (admin only).

``GET /system/health``, ``GET /system/status``, ``GET /system/models``, ``POST /system/models/load``,
``POST /system/models/unload``, ``GET /system/vram``, ``POST /system/optimize``. Each needs an admin
(Bearer JWT or X-API-Key): a plain user gets ``AUTH_FORBIDDEN``, no credentials ``AUTH_REQUIRED``.
Everything is read from, or acts on, the process's one ``ModelCache``, job runner and database
(:class:`faceport.services.system.SystemService`), on a worker thread.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from faceport.api.deps import AdminPrincipal, current_principal, get_context
from faceport.api.envelope import Envelope, ok
from faceport.api.ratelimit import rate_limit
from faceport.services.system import SystemService

router = APIRouter(prefix="/api/v1/system", tags=["system"])
AUTHENTICATED = [Depends(current_principal), Depends(rate_limit("user"))]
# load/unload name a model: unknown is 404, not installed (or unloadable) 503; FastAPI cannot derive these
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found: NOT_FOUND (no model of that name in the manifest)"},
    503: {"description": "Service unavailable: MODEL_UNAVAILABLE (not installed: the message names the "
                         "`faceport models pull` command)"},
}


def get_system(request: Request) -> SystemService:
    system: SystemService = get_context(request).system
    return system


SystemDep = Annotated[SystemService, Depends(get_system)]


# ---- schemas ----------------------------------------------------------------------------------
class ComponentOut(BaseModel):
    status: Literal["ok", "degraded"]
    reason: str | None = Field(description="why it is degraded, naming the setting or command that fixes it")
    details: dict[str, Any]


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded"]
    components: dict[str, ComponentOut] = Field(
        description="database, storage, models, job_runner, and redis when FACEPORT_REDIS_URL is set")


class CpuOut(BaseModel):
    process_percent: float = Field(description="this process since the previous reading (100 = one core)")
    host_percent: float
    cores: int


class MemoryOut(BaseModel):
    process_rss_bytes: int
    model_cache_bytes: int
    host_total_bytes: int
    host_available_bytes: int
    host_used_percent: float


class JobsOut(BaseModel):
    queue_depth: int = Field(description="jobs accepted and waiting for a worker")
    queue_max: int
    workers: int
    workers_alive: int
    by_state: dict[str, int] = Field(description="jobs in the jobs table per state")


class ThreadPoolOut(BaseModel):
    size: int
    busy: int | None = Field(description="tasks running on the pool now")


class StatusOut(BaseModel):
    uptime_seconds: float
    started_at: str
    cpu: CpuOut
    memory: MemoryOut
    jobs: JobsOut
    thread_pool: ThreadPoolOut


class ModelOut(BaseModel):
    name: str
    task: str
    runtime: str
    providers: list[str]
    default: bool = Field(description="pulled by `faceport models pull` without arguments")
    installed: bool
    size_bytes: int
    loaded: bool
    sessions: int
    memory_bytes: int = Field(description="resident memory the load added (measured), at least the file size")
    uses: int
    loaded_at: str | None
    last_used_at: str | None
    idle_seconds: float | None
    idle_ttl_seconds: float = Field(description="unloaded after this long unused; 0: never (FACEPORT_MODEL_IDLE_TTL)")
    pull_command: str


class ModelList(BaseModel):
    items: list[ModelOut]
    total: int
    loaded: int
    memory_bytes: int


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, examples=["yunet"], description="a name from GET /system/models")


class ModelAction(BaseModel):
    changed: bool = Field(description="false when the model already was loaded (load) or not loaded (unload)")
    model: ModelOut


class GpuOut(BaseModel):
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int


class HostMemoryOut(BaseModel):
    model_cache_bytes: int
    process_rss_bytes: int
    host_total_bytes: int
    host_available_bytes: int


class VramOut(BaseModel):
    device: Literal["gpu", "host"] = Field(description="gpu only when NVML answered; GPU figures are never estimated")
    gpus: list[GpuOut]
    gpu_unavailable: str | None
    providers: list[str]
    host: HostMemoryOut


class OptimizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_seconds: float | None = Field(default=None, ge=0, le=10**9, description=(
        "evict models unused for longer than this; default: the idle TTL (FACEPORT_MODEL_IDLE_TTL)"))


class OptimizeOut(BaseModel):
    models_evicted: list[str]
    idle_seconds: float | None = Field(description="the idle limit applied; null: FACEPORT_MODEL_IDLE_TTL is 0 "
                                                   "(never) and no idle_seconds was given, so nothing was evicted")
    gc_objects_collected: int
    model_cache_bytes_before: int
    model_cache_bytes_after: int
    model_cache_bytes_freed: int
    process_rss_bytes_before: int
    process_rss_bytes_after: int


def _model(state: Any) -> dict[str, Any]:
    return ModelOut(**dataclasses.asdict(state)).model_dump(mode="json")


# ---- routes -------------------------------------------------------------------------------------
@router.get("/health", response_model=Envelope[HealthOut], dependencies=AUTHENTICATED,
            summary="Health of the database, storage, models, job runner and Redis (admin)")
async def system_health(request: Request, _admin: AdminPrincipal, system: SystemDep) -> dict[str, Any]:
    health = await get_context(request).run(system.health)
    components = {name: dataclasses.asdict(c) for name, c in health["components"].items()}
    return ok(request, HealthOut(status=health["status"], components=components).model_dump(mode="json"))


@router.get("/status", response_model=Envelope[StatusOut], dependencies=AUTHENTICATED,
            summary="CPU, memory, job queue and workers, jobs by state, thread pool, uptime (admin)")
async def system_status(request: Request, _admin: AdminPrincipal, system: SystemDep) -> dict[str, Any]:
    status = await get_context(request).run(system.status)
    return ok(request, StatusOut(**status).model_dump(mode="json"))


@router.get("/models", response_model=Envelope[ModelList], dependencies=AUTHENTICATED,
            summary="Every model of the manifest: installed, loaded, memory, last use, idle TTL (admin)")
async def system_models(request: Request, _admin: AdminPrincipal, system: SystemDep) -> dict[str, Any]:
    states = await get_context(request).run(system.models_state)
    loaded = [s for s in states if s.loaded]
    return ok(request, ModelList(items=[ModelOut(**dataclasses.asdict(s)) for s in states], total=len(states),
                                 loaded=len(loaded), memory_bytes=sum(s.memory_bytes for s in loaded))
              .model_dump(mode="json"))


@router.post("/models/load", response_model=Envelope[ModelAction], dependencies=AUTHENTICATED,
             responses=MODEL_ERRORS, summary="Load a model into the cache now (admin)")
async def load_model(request: Request, body: ModelRequest, _admin: AdminPrincipal,
                     system: SystemDep) -> dict[str, Any]:
    state, changed = await get_context(request).run(system.load_model, body.model)
    return ok(request, {"changed": changed, "model": _model(state)})


@router.post("/models/unload", response_model=Envelope[ModelAction], dependencies=AUTHENTICATED,
             responses={404: MODEL_ERRORS[404]},
             summary="Unload a model (admin); requests already using it finish with it")
async def unload_model(request: Request, body: ModelRequest, _admin: AdminPrincipal,
                       system: SystemDep) -> dict[str, Any]:
    state, changed = await get_context(request).run(system.unload_model, body.model)
    return ok(request, {"changed": changed, "model": _model(state)})


@router.get("/vram", response_model=Envelope[VramOut], dependencies=AUTHENTICATED,
            summary="GPU memory (NVML, with a CUDA/TensorRT provider) or host memory, labelled (admin)")
async def system_vram(request: Request, _admin: AdminPrincipal, system: SystemDep) -> dict[str, Any]:
    return ok(request, VramOut(**await get_context(request).run(system.vram)).model_dump(mode="json"))


@router.post("/optimize", response_model=Envelope[OptimizeOut], dependencies=AUTHENTICATED,
             summary="Evict idle models and collect garbage; reports what was freed (admin)")
async def optimize(request: Request, _admin: AdminPrincipal, system: SystemDep,
                   body: OptimizeRequest | None = None) -> dict[str, Any]:
    idle = body.idle_seconds if body is not None else None
    return ok(request, OptimizeOut(**await get_context(request).run(system.optimize, idle)).model_dump(mode="json"))
