"""``AppContext``: what the app lifespan owns — settings, model store and cache, engine, thread pool, store."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faceport.config import Settings
from faceport.engine.core import EngineOptions, FaceEngine
from faceport.engine.models import ModelCache, ModelStore
from faceport.jobs import JobQueue, make_job_queue
from faceport.services.auth import build_auth
from faceport.services.facefusion import FaceFusionService
from faceport.services.gallery import load_gallery
from faceport.services.system import CountingThreadPool, SystemService
from faceport.store import Store, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class AppContext:
    """Shared by the main and the privacy app of one process."""

    settings: Settings
    models: ModelStore
    cache: ModelCache
    engine: FaceEngine
    executor: ThreadPoolExecutor
    store: Store
    auth: Any = None  # faceport.services.auth.AuthService
    gallery: Any = None  # faceport.services.gallery.Gallery
    jobs: JobQueue | None = None  # the job runner (long videos, batch work): local threads or Celery
    facefusion: FaceFusionService | None = None  # seed B
    privacy: Any = None  # faceport.services.privacy.PrivacyService (seed E)
    proctor: Any = None  # faceport.services.proctor.ProctorService (seed C)
    system: Any = None  # faceport.services.system.SystemService (seed D's /system/*)
    liveness: Any = None  # faceport.services.liveness.LivenessService (seed D's active anti-spoof sessions)
    gallery_sync: Any = None  # faceport.services.gallery.GallerySync, with FACEPORT_REDIS_URL
    notices: Any = None  # faceport.services.notices.ChangeNotices (gallery, proctoring registry), with Redis
    notifier: Any = None  # faceport.services.notify.Notifier (seed D's /ws/notifications)
    batch: Any = None  # faceport.services.batch.BatchService (seed D's /batch/*)
    started_at: float = field(default_factory=time.time)

    @classmethod
    def create(cls, settings: Settings, *, role: str = "api", concurrency: int | None = None) -> AppContext:
        """Open the database (migrations run here) and build the engine; loads no model yet.

        ``role="worker"`` builds the same services for ``faceport worker`` (its Celery runner runs jobs).
        """
        settings.home.mkdir(parents=True, exist_ok=True)
        models = ModelStore(settings.models_dir)
        cache = ModelCache(models, providers=settings.execution_providers, idle_ttl=settings.model_idle_ttl,
                           threads=2)
        engine = FaceEngine(cache, EngineOptions(detector=settings.detector, detector_score=settings.detector_score,
                                                 verify_threshold=settings.verify_threshold,
                                                 embedder=settings.embedder))
        executor = CountingThreadPool(max_workers=settings.thread_pool_size, thread_name_prefix="faceport-work")
        store = open_store(settings.resolved_database_url)
        log.info("store %s at revision %s", store.dialect, store.revision())
        jobs = make_job_queue(settings, store, role=role, concurrency=concurrency)
        facefusion = FaceFusionService(settings, engine, jobs)  # registers its job kinds
        from faceport.services.privacy import PrivacyService

        privacy = PrivacyService(settings, cache, jobs)  # registers its job kind
        from faceport.services.proctor import ProctorService

        context = cls(settings, models, cache, engine, executor, store,
                      auth=build_auth(settings, store), gallery=load_gallery(store), jobs=jobs, facefusion=facefusion,
                      privacy=privacy, proctor=ProctorService(settings, engine, store))
        from faceport.services.liveness import LivenessService

        context.liveness = LivenessService(settings, engine)
        context.system = SystemService(settings, models, cache, store, jobs=jobs, executor=executor,
                                       storage_probes=(facefusion.unwritable_storage, privacy.unwritable_storage),
                                       started_at=context.started_at)
        if settings.redis_url:  # several nodes on one database: other nodes' changes reach the in-memory caches
            from faceport.config import node_name
            from faceport.services.gallery import GallerySync
            from faceport.services.notices import ChangeNotices

            notices = ChangeNotices(settings.redis_url, node_name(settings))
            context.gallery_sync = GallerySync(context.gallery, notices)
            proctor = context.proctor
            proctor.on_change = lambda: notices.announce("proctor")
            notices.watch("proctor", proctor.reload)
            context.notices = notices
        from faceport.api.v1 import batch_ops  # noqa: F401  (registers the built-in batch operations)
        from faceport.services.batch import BatchService
        from faceport.services.notify import Notifier

        context.notifier = Notifier(settings.redis_url, settings.ws_redis_channel)
        context.system.notifier = context.notifier
        context.batch = BatchService(settings, store, jobs, context.notifier)  # registers its job kind
        context.batch.runtime = context
        return context

    def start(self) -> None:
        if self.notices is not None:
            self.notices.start()
        self.cache.start_janitor()
        if self.settings.preload_models:
            self.cache.preload(self.settings.preload_models)
        if self.facefusion is not None:
            self.facefusion.start()
        if self.privacy is not None:  # removes leftovers of interrupted jobs before the runner resumes them
            self.privacy.start()
        if self.notifier is not None:
            self.notifier.start()
        if self.batch is not None:  # removes staging folders of ended jobs before the runner resumes the rest
            self.batch.start()
        if self.jobs is not None:  # after every service registered its job kinds
            self.jobs.start()
        if self.proctor is not None:
            self.proctor.start()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking work (inference, decoding) on the thread pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self.notices is not None:
            self.notices.close()
        if self.proctor is not None:
            self.proctor.close()
        if self.liveness is not None:
            self.liveness.close()
        if self.jobs is not None:
            self.jobs.stop()
        if self.batch is not None:
            self.batch.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.facefusion is not None:
            self.facefusion.close()
        self.cache.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.dispose()
