"""Seed D's success envelope: ``{success, data, meta{timestamp, request_id, processing_time, vram_usage}}``."""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel

from faceport.api.errors import now_iso

T = TypeVar("T")


class MemoryUsage(BaseModel):
    used: str
    available: str
    device: str  # "gpu:0" when measured through NVML, "host" when it is the model cache's host memory


class Meta(BaseModel):
    timestamp: str
    request_id: str | None
    processing_time: float  # milliseconds
    vram_usage: MemoryUsage


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T
    meta: Meta


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f}GB" if n >= 1e8 else f"{n / 1e6:.1f}MB"


def memory_usage(request: Request) -> MemoryUsage:
    """GPU memory through NVML when a GPU provider is active; otherwise the model cache's host memory."""
    ctx = request.app.state.context
    if any(p.startswith(("CUDA", "Tensorrt")) for p in ctx.cache.providers):
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
            return MemoryUsage(used=_fmt_bytes(info.used), available=_fmt_bytes(info.total), device="gpu:0")
        except Exception:  # NVML missing or no device: fall back to host figures, labelled so
            pass
    import psutil

    return MemoryUsage(used=_fmt_bytes(ctx.cache.memory_bytes()),
                       available=_fmt_bytes(psutil.virtual_memory().available), device="host")


def ok(request: Request, data: Any) -> dict[str, Any]:
    started = getattr(request.state, "started", None)
    elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
    meta = Meta(timestamp=now_iso(), request_id=getattr(request.state, "request_id", None),
                processing_time=round(elapsed, 2), vram_usage=memory_usage(request))
    return {"success": True, "data": data, "meta": meta.model_dump()}
