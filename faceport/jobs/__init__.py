"""Background jobs over the ``jobs`` table.

:class:`JobQueue` is what services need from a runner; :class:`LocalJobRunner` (the default)
runs jobs on worker threads of the server process and resumes interrupted ones after a restart.
"""

from __future__ import annotations

from typing import Any, Protocol

from faceport.jobs.local import (
    FinishHook,
    JobCancelled,
    JobHandler,
    JobInterrupted,
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

    def find_by_id_prefix(self, prefix: str, *, kinds: tuple[str, ...] | None = None,
                          limit: int = 16) -> list[JobRecord]: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


__all__ = [
    "FinishHook",
    "JobCancelled",
    "JobHandler",
    "JobInterrupted",
    "JobQueue",
    "LocalJobRunner",
    "PrepareHook",
    "ProgressFn",
]
