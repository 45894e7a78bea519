"""System facts for health and status endpoints."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from faceport.engine.models import ModelCache, ModelStore
from faceport.store import count_jobs_by_state

# Capability -> models it needs. Later processors (face_swapper, face_enhancer, ...) add rows.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "face_detection": ("blazeface_full",),
    "face_landmarks": ("facemesh", "iris"),
    "face_recognition": ("blazeface_full", "dlib_shape5", "dlib_resnet_onnx"),
    # seed B processors (as faceport.engine.pipeline.available_processors)
    "face_swapper": ("blazeface_full", "facemesh"),
    "face_enhancer": ("blazeface_full", "facemesh"),
}


def processors_available(models: ModelStore) -> list[str]:
    """Capabilities whose models are all installed (cheap: no hashing, no loading)."""
    return [name for name, needs in CAPABILITIES.items() if all(models.is_installed(m) for m in needs)]


# ---- /api/v1/system/* (seed D §4, admin only) -------------------------------------------------
GPU_PROVIDER_PREFIXES = ("CUDA", "Tensorrt")
"""onnxruntime execution providers that run on an NVIDIA GPU (the only case NVML is asked)."""


class CountingThreadPool(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` that knows how many of its tasks are running now (``busy``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy = 0
        self._busy_lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._max_workers

    @property
    def busy(self) -> int:
        return self._busy

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def counted() -> Any:
            with self._busy_lock:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._busy_lock:
                    self._busy -= 1

        return super().submit(counted)


@dataclass(frozen=True, slots=True)
class Component:
    """One part of the server in ``/system/health``: ``ok`` or ``degraded`` with the reason."""

    status: Literal["ok", "degraded"]
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _component(problem: str | None, **details: Any) -> Component:
    return Component("degraded", problem, details) if problem else Component("ok", None, details)


@dataclass(frozen=True, slots=True)
class ModelState:
    """One manifest model as ``/system/models`` shows it."""

    name: str
    task: str
    runtime: str
    providers: list[str]
    default: bool
    installed: bool
    size_bytes: int  # files on disk
    loaded: bool
    sessions: int  # loaded sessions (a model used with several thread counts has one each)
    memory_bytes: int
    uses: int
    loaded_at: str | None
    last_used_at: str | None
    idle_seconds: float | None
    idle_ttl_seconds: float  # 0: never evicted on a timer
    pull_command: str


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _process() -> Any:
    import psutil

    return psutil.Process(os.getpid())


class SystemService:
    """Health, status, models and memory of this process, for ``/api/v1/system/*``.

    Every method blocks (database, disk, Redis, NVML): call it on a worker thread.

    Args:
        settings: Redis URL and the settings named in reasons.
        models: the model store (what is installed).
        cache: the process's only model cache (what is loaded).
        store: the database (health, jobs by state).
        jobs: the local job runner, if any.
        executor: the request thread pool.
        storage_probes: callables returning the unwritable folders as ``"<folder>:<setting>"``.
        started_at: ``time.time()`` when the process started serving.
    """

    def __init__(self, settings: Any, models: ModelStore, cache: ModelCache, store: Any, *, jobs: Any = None,
                 executor: ThreadPoolExecutor | None = None,
                 storage_probes: Sequence[Callable[[], list[str]]] = (), started_at: float | None = None) -> None:
        self.settings = settings
        self.models = models
        self.cache = cache
        self.store = store
        self.jobs = jobs
        self.executor = executor
        self.storage_probes = tuple(storage_probes)
        self.started_at = time.time() if started_at is None else started_at
        self.notifier: Any = None  # faceport.services.notify.Notifier: model loads/unloads reach admins' sockets
        import psutil

        self._process = _process()
        self._process.cpu_percent(None)  # the first reading is 0 by definition; later ones cover the interval
        psutil.cpu_percent(None)

    # ---- health -------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``{status: healthy|degraded, components: {name: Component}}``; Redis only when configured."""
        components = {"database": self._database(), "storage": self._storage(), "models": self._models_health(),
                      "job_runner": self._job_runner()}
        if self.settings.redis_url:
            components["redis"] = self._redis()
        healthy = all(c.status == "ok" for c in components.values())
        return {"status": "healthy" if healthy else "degraded", "components": components}

    def _database(self) -> Component:
        ok = self.store.ping()
        return _component(None if ok else f"database {self.store.url} does not answer (FACEPORT_DATABASE_URL)",
                          dialect=self.store.dialect)

    def unwritable_storage(self) -> list[str]:
        """Every folder that fails its write probe, as ``"<folder>:<setting>"`` (``/health`` reads it too)."""
        return [folder for probe in self.storage_probes for folder in probe()]

    def _storage(self) -> Component:
        unwritable = self.unwritable_storage()
        return _component(f"not writable: {', '.join(unwritable)}" if unwritable else None, unwritable=unwritable)

    def _models_health(self) -> Component:
        defaults = [spec.name for spec in self.models.defaults()]
        missing = [name for name in defaults if not self.models.is_installed(name)]
        loaded = sorted({entry.name.split("@", 1)[0] for entry in self.cache.info()})
        problem = f"not installed: {', '.join(missing)}; run: faceport models pull" if missing else None
        return _component(problem, installed=len(defaults) - len(missing), missing=missing, loaded=loaded,
                          processors_available=processors_available(self.models))

    def _job_runner(self) -> Component:
        if self.jobs is None:
            return _component("no job runner in this process")
        alive, workers = self.jobs.alive_workers(), self.jobs.workers
        if not self.jobs.started:
            problem: str | None = "the job runner is not running"
        elif getattr(self.jobs, "role", None) == "api" and alive == 0:  # FACEPORT_JOBS=celery
            problem = "no job worker is alive: start `faceport worker` (FACEPORT_JOBS=celery)"
        elif alive < workers:
            problem = f"{workers - alive} of {workers} job workers died (FACEPORT_JOB_WORKERS)"
        else:
            problem = None
        return _component(problem, workers=workers, workers_alive=alive)

    def _redis(self) -> Component:
        import redis

        client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            client.ping()
        except redis.RedisError as exc:
            return _component(f"Redis (FACEPORT_REDIS_URL) does not answer: {type(exc).__name__}")
        finally:
            client.close()
        return _component(None)

    # ---- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """CPU, memory, jobs (queue, workers, by state), thread pool and uptime."""
        import psutil

        host = psutil.virtual_memory()
        with self.store.session() as session:
            by_state = count_jobs_by_state(session=session)
        pool = self.executor
        return {
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "started_at": _iso(self.started_at),
            "cpu": {"process_percent": self._process.cpu_percent(None), "host_percent": psutil.cpu_percent(None),
                    "cores": psutil.cpu_count() or 1},
            "memory": {"process_rss_bytes": int(self._process.memory_info().rss),
                       "model_cache_bytes": self.cache.memory_bytes(),
                       "host_total_bytes": int(host.total), "host_available_bytes": int(host.available),
                       "host_used_percent": float(host.percent)},
            "jobs": {"queue_depth": self.jobs.pending() if self.jobs is not None else 0,
                     "queue_max": self.jobs.queue_max if self.jobs is not None else 0,
                     "workers": self.jobs.workers if self.jobs is not None else 0,
                     "workers_alive": self.jobs.alive_workers() if self.jobs is not None else 0,
                     "by_state": by_state},
            "thread_pool": {"size": getattr(pool, "_max_workers", 0) if pool is not None else 0,
                            "busy": pool.busy if isinstance(pool, CountingThreadPool) else None},
        }

    # ---- models ---------------------------------------------------------------------------
    def models_state(self) -> list[ModelState]:
        """Every manifest model: installed or not, loaded or not, memory, last use, TTL, runtime."""
        return [self._model_state(spec.name) for spec in self.models.specs()]

    def _model_state(self, name: str) -> ModelState:
        spec = self.models.spec(name)
        sessions = [m for m in self.cache.info() if m.name == name or m.name.startswith(f"{name}@")]
        installed = self.models.is_installed(name)
        size = self.models.status(name).size_bytes if installed else 0
        idle = min((m.idle_seconds for m in sessions), default=None)
        public = spec.source.package is not None or spec.source.installed_module is not None
        pull = f"faceport models pull {name}" + ("" if public else " --from FILE|URL --sha256 HEX")
        return ModelState(
            name=name, task=spec.task, runtime=spec.runtime,
            providers=list(self.cache.providers) if spec.runtime == "onnxruntime" else ["CPU"],
            default=spec.default, installed=installed, size_bytes=size, loaded=bool(sessions),
            sessions=len(sessions), memory_bytes=sum(m.memory_bytes for m in sessions),
            uses=sum(m.uses for m in sessions),
            loaded_at=_iso(min(m.loaded_at for m in sessions)) if sessions else None,
            last_used_at=_iso(time.time() - idle) if idle is not None else None,
            idle_seconds=round(idle, 3) if idle is not None else None,
            idle_ttl_seconds=self.cache.idle_ttl, pull_command=pull)

    def load_model(self, name: str) -> tuple[ModelState, bool]:
        """Load ``name`` into the cache; returns its state and whether this call loaded it.

        Raises:
            NotFound: no model of that name in the manifest.
            ModelUnavailable: not installed; the message names the pull command.
            ModelLoadFailed: the files are corrupt and a re-fetch did not help.
        """
        self.models.spec(name)
        self.models.require(name)  # never the cache's repair path for a model that was never installed
        was_loaded = self.cache.is_loaded(name)
        self.cache.get(name)
        if not was_loaded:
            self._notify("model.loaded", name)
        return self._model_state(name), not was_loaded

    def unload_model(self, name: str) -> tuple[ModelState, bool]:
        """Drop ``name`` (and its thread-count variants) from the cache; safe while a request uses it.

        Raises:
            NotFound: no model of that name in the manifest.
        """
        self.models.spec(name)
        unloaded = self.cache.unload(name)
        if unloaded:
            gc.collect()  # sessions in reference cycles would otherwise keep their memory until the next GC
            self._notify("model.unloaded", name)
        return self._model_state(name), unloaded

    def _notify(self, event: str, name: str, reason: str = "admin request") -> None:
        if self.notifier is not None:
            self.notifier.publish(event, {"model": name, "reason": reason}, admins=True)

    # ---- memory ---------------------------------------------------------------------------
    def vram(self) -> dict[str, Any]:
        """GPU memory through NVML when a CUDA/TensorRT provider is active and pynvml works; host memory always.

        ``device`` is ``"gpu"`` only when NVML answered; otherwise ``"host"`` with ``gpu_unavailable``
        saying why. GPU figures are never estimated.
        """
        import psutil

        host = psutil.virtual_memory()
        body: dict[str, Any] = {
            "device": "host", "gpus": [], "gpu_unavailable": None,
            "providers": list(self.cache.providers),
            "host": {"model_cache_bytes": self.cache.memory_bytes(),
                     "process_rss_bytes": int(self._process.memory_info().rss),
                     "host_total_bytes": int(host.total), "host_available_bytes": int(host.available)},
        }
        if not any(p.startswith(GPU_PROVIDER_PREFIXES) for p in self.cache.providers):
            body["gpu_unavailable"] = "no CUDA or TensorRT execution provider is active (FACEPORT_EXECUTION_PROVIDERS)"
            return body
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError:
            body["gpu_unavailable"] = "pynvml is not installed (pip install nvidia-ml-py)"
            return body
        try:
            pynvml.nvmlInit()
            try:
                gpus = []
                for index in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                    info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    name = pynvml.nvmlDeviceGetName(handle)
                    gpus.append({"index": index, "name": name.decode() if isinstance(name, bytes) else str(name),
                                 "total_bytes": int(info.total), "used_bytes": int(info.used),
                                 "free_bytes": int(info.free)})
            finally:
                pynvml.nvmlShutdown()
        except Exception as exc:  # NVML errors: no driver, no device; reported, never estimated
            body["gpu_unavailable"] = f"NVML failed: {exc}"
            return body
        body["device"], body["gpus"] = "gpu", gpus
        return body

    def optimize(self, idle_seconds: float | None = None) -> dict[str, Any]:
        """Evict idle models, collect garbage, report what was freed.

        Args:
            idle_seconds: evict models unused for longer than this; ``None``: the idle TTL
                (``FACEPORT_MODEL_IDLE_TTL``; 0 there evicts nothing, reported as ``idle_seconds: None``).
        """
        limit = self.cache.idle_ttl if idle_seconds is None else idle_seconds
        rss_before, models_before = int(self._process.memory_info().rss), self.cache.memory_bytes()
        evicted = self.cache.sweep(idle_seconds)
        for name in sorted({entry.split("@", 1)[0] for entry in evicted}):
            self._notify("model.unloaded", name, "optimize: idle")
        collected = gc.collect()
        rss_after, models_after = int(self._process.memory_info().rss), self.cache.memory_bytes()
        return {"models_evicted": sorted(evicted),
                "idle_seconds": limit if idle_seconds is not None or limit > 0 else None,
                "gc_objects_collected": collected,
                "model_cache_bytes_before": models_before, "model_cache_bytes_after": models_after,
                "model_cache_bytes_freed": models_before - models_after,
                "process_rss_bytes_before": rss_before, "process_rss_bytes_after": rss_after}
