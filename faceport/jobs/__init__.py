"""Background jobs over the ``jobs`` table.

:class:`JobQueue` is what services need from a runner; :class:`LocalJobRunner` (the default)
runs jobs on worker threads of the server process and resumes interrupted ones after a restart;
:class:`~faceport.jobs.celery_runner.CeleryJobRunner` (``FACEPORT_JOBS=celery``) runs them on
Celery workers (``faceport worker``) over Redis, on the same ``jobs`` table.
"""

from __future__ import annotations

from typing import Any, Protocol

from faceport.jobs.local import (
    FinishHook,
    JobCancelled,
    JobHandler,
    JobInterrupted,
    JobReads,
    LocalJobRunner,
    PrepareHook,
    ProgressFn,
)
from faceport.store import JobRecord


class JobQueue(Protocol):
    """A job runner as services see it."""

    def register(self, kind: str, handler: JobHandler, *, on_finish: FinishHook | None = None) -> None: ...

    def submit(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord: ...

    def run_inline(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord: ...

    def get(self, job_id: str) -> JobRecord: ...

    def cancel(self, job_id: str) -> JobRecord: ...

    def pending(self) -> int: ...

    def find_by_id_prefix(self, prefix: str, *, kinds: tuple[str, ...] | None = None,
                          limit: int = 16) -> list[JobRecord]: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


def make_job_queue(settings: Any, store: Any, *, role: str = "api", concurrency: int | None = None) -> JobQueue:
    """The runner ``FACEPORT_JOBS`` names: local threads, or Celery workers (``role="worker"`` runs them)."""
    if settings.jobs == "celery":
        from faceport.jobs.celery_runner import CeleryJobRunner

        return CeleryJobRunner(store, settings, role=role, concurrency=concurrency or settings.job_workers)
    return LocalJobRunner(store, workers=settings.job_workers, queue_max=settings.job_queue_max)


__all__ = [
    "FinishHook",
    "JobCancelled",
    "JobHandler",
    "JobInterrupted",
    "JobQueue",
    "JobReads",
    "LocalJobRunner",
    "PrepareHook",
    "ProgressFn",
    "make_job_queue",
]
