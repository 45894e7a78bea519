"""The local job runner: jobs of the ``jobs`` table run on worker threads of this process.

Life of a job::

    submit()      create_job (queued) -> prepare(record) -> in-memory queue
    worker        start_job (running) -> handler(record, progress) -> complete_job | fail_job -> on_finish
    run_inline()  the same steps in the caller's thread (requests answered synchronously)

Nothing accepted is lost silently: ``start()`` first requeues jobs a previous process left
``running`` (``recover_interrupted_jobs``) and then queues every ``queued`` job of a registered
kind, oldest first, so they run again from the beginning. ``stop()`` makes running handlers
raise :class:`JobInterrupted` at their next progress report; those jobs stay ``running`` in the
table and are recovered by the next start. A handler that fails ends its job ``failed`` with a
stable code (the :class:`~faceport.errors.FaceportError` code, else ``PROCESSING_FAILED``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from faceport.errors import FaceportError, InvalidInput, NotFound, ProcessingFailed, QueueFull
from faceport.store import (
    JobRecord,
    JobState,
    Store,
    cancel_job,
    complete_job,
    create_job,
    fail_job,
    get_job,
    list_jobs,
    recover_interrupted_jobs,
    start_job,
    update_progress,
)
from faceport.store.models import Job

log = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]
"""Called by a handler with its progress in percent (0..100); may raise JobInterrupted or JobCancelled."""

JobHandler = Callable[[JobRecord, ProgressFn], Any]
"""Does the work of one job and returns its JSON-serialisable result; raises FaceportError on failure."""

FinishHook = Callable[[JobRecord], None]
"""Called once a job has ended (completed or failed) with its final record; must not raise."""

PrepareHook = Callable[[JobRecord], None]
"""Called after the job row exists and before the job can run (e.g. to move its inputs in place)."""


class JobInterrupted(Exception):
    """The runner is stopping: the job stays ``running`` and is requeued by the next start."""


class JobCancelled(Exception):
    """The job left the ``running`` state (cancelled) while its handler was working."""


@dataclass(frozen=True, slots=True)
class _Registration:
    handler: JobHandler
    on_finish: FinishHook | None


class _Progress:
    """A handler's progress reporter: throttled writes to the jobs table, stop and cancel checks."""

    def __init__(self, runner: LocalJobRunner, job_id: str) -> None:
        self._runner = runner
        self._job_id = job_id
        self._last_write = time.monotonic()
        self._last_value = 0.0

    def __call__(self, percent: float) -> None:
        if self._runner.stopping:
            raise JobInterrupted(f"job {self._job_id} interrupted: the runner is stopping")
        now = time.monotonic()
        if now - self._last_write < self._runner.progress_interval_s or percent <= self._last_value:
            return
        self._last_write, self._last_value = now, float(percent)
        try:
            with self._runner.store.session() as session:
                update_progress(session=session, job_id=self._job_id, progress=float(percent))
        except InvalidInput as exc:
            raise JobCancelled(str(exc)) from None


class JobReads:
    """Registering job kinds and reading jobs from ``self.store``: what every runner offers besides running them."""

    store: Store
    _registry: dict[str, _Registration]

    def register(self, kind: str, handler: JobHandler, *, on_finish: FinishHook | None = None) -> None:
        """Run jobs of ``kind`` with ``handler`` (on this process or on workers); ``on_finish`` sees each
        final record where the job ran.

        Raises:
            InvalidInput: ``kind`` already has a handler.
        """
        if kind in self._registry:
            raise InvalidInput(f"job kind {kind!r} already has a handler")
        self._registry[kind] = _Registration(handler, on_finish)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._registry)

    def _require_kind(self, kind: str) -> None:
        if kind not in self._registry:
            raise InvalidInput(f"no handler for job kind {kind!r}; registered: {', '.join(self._registry)}")

    def _create(self, kind: str, params: dict[str, Any], prepare: PrepareHook | None) -> JobRecord:
        """Write the job row, then run ``prepare`` on it; a failing ``prepare`` fails the job (its code kept)."""
        with self.store.session() as session:
            record = create_job(session=session, kind=kind, params=params)
        if prepare is not None:
            try:
                prepare(record)
            except Exception as exc:
                code = exc.code if isinstance(exc, FaceportError) else ProcessingFailed.code
                # a FaceportError's message only: an OSError's text holds absolute server paths
                reason = exc.message if isinstance(exc, FaceportError) else type(exc).__name__
                self._prepare_failed(record.id, code, f"could not prepare the job: {reason}")
                raise
        return record

    def _prepare_failed(self, job_id: str, code: str, message: str) -> None:
        raise NotImplementedError

    def get(self, job_id: str) -> JobRecord:
        """Raises: NotFound."""
        with self.store.session() as session:
            return get_job(session=session, job_id=job_id)

    def find_by_id_prefix(self, prefix: str, *, kinds: tuple[str, ...] | None = None,
                          limit: int = 16) -> list[JobRecord]:
        """Jobs whose id starts with ``prefix`` (hex), oldest first; for short public ids.

        Raises:
            InvalidInput: ``prefix`` is not 1 to 32 lowercase hex digits.
        """
        if not 1 <= len(prefix) <= 32 or any(c not in "0123456789abcdef" for c in prefix):
            raise InvalidInput(f"job id prefix must be 1 to 32 hex digits, got {prefix!r}")
        query = select(Job).where(Job.id.startswith(prefix, autoescape=True))
        if kinds:
            query = query.where(Job.kind.in_(kinds))
        query = query.order_by(Job.created_at, Job.id).limit(limit)
        with self.store.session() as session:
            return [JobRecord.from_row(job) for job in session.scalars(query)]

    def wait(self, job_id: str, *, timeout: float = 600.0, poll_s: float = 0.1) -> JobRecord:
        """Block until the job ends or ``timeout`` passes; returns the last record read."""
        deadline = time.monotonic() + timeout
        record = self.get(job_id)
        while not record.is_terminal and time.monotonic() < deadline:
            time.sleep(poll_s)
            record = self.get(job_id)
        return record

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; a running handler stops at its next progress report.

        Raises:
            NotFound: no such job. InvalidInput: it already ended.
        """
        with self.store.session() as session:
            record = cancel_job(session=session, job_id=job_id)
        log.info("cancelled job %s (%s)", record.id, record.kind)
        return record


class LocalJobRunner(JobReads):
    """Runs jobs of registered kinds on ``workers`` threads, with at most ``queue_max`` waiting.

    Args:
        store: The store holding the ``jobs`` table.
        workers: Jobs run at once (threads).
        queue_max: Jobs accepted by :meth:`submit` and not yet started; more raise ``QueueFull``.
        progress_interval_s: Least seconds between two progress writes of one job.
    """

    def __init__(self, store: Store, *, workers: int = 1, queue_max: int = 16,
                 progress_interval_s: float = 1.0) -> None:
        if workers < 1 or queue_max < 1:
            raise InvalidInput(f"workers and queue_max must be at least 1, got {workers} and {queue_max}")
        self.store = store
        self.workers = workers
        self.queue_max = queue_max
        self.progress_interval_s = progress_interval_s
        self._registry: dict[str, _Registration] = {}
        self._queue: deque[str] = deque()
        self._reserved = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False

    # ---- configuration ------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def started(self) -> bool:
        return self._started and not self.stopping

    def alive_workers(self) -> int:
        """Worker threads running now (``workers`` while the runner is healthy)."""
        return sum(thread.is_alive() for thread in self._threads)

    def pending(self) -> int:
        """Jobs waiting for a worker."""
        with self._cond:
            return len(self._queue)

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Requeue interrupted jobs, queue every waiting job of a registered kind, start the workers."""
        if self._started:
            return
        with self.store.session() as session:
            recover_interrupted_jobs(session=session)
            waiting = self._queued_jobs(session)
        with self._cond:
            known = set(self._queue)
            self._queue.extend(job.id for job in waiting if job.id not in known)
        if waiting:
            log.info("resuming %d queued job(s): %s", len(waiting), ", ".join(j.id for j in waiting))
        self._stopping.clear()
        self._started = True
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"faceport-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _queued_jobs(self, session: Any) -> list[JobRecord]:
        jobs: list[JobRecord] = []
        for kind in self._registry:
            offset = 0
            while page := list_jobs(session=session, kind=kind, state=JobState.QUEUED, limit=1000, offset=offset):
                jobs.extend(page)
                offset += len(page)
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; running jobs are interrupted at their next progress report.

        Interrupted jobs stay ``running`` in the table and run again after the next ``start()``.
        """
        if not self._started:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("job worker %s still busy after %.0f s; leaving it (daemon thread)", thread.name, timeout)
        self._threads.clear()
        self._started = False

    # ---- submitting -----------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord:
        """Queue a job; a worker runs it.

        Args:
            kind: A registered job kind.
            params: JSON-serialisable parameters, given to the handler as ``record.params``.
            prepare: Runs after the row exists, before any worker can take the job.

        Returns:
            The queued job.

        Raises:
            QueueFull: ``queue_max`` jobs are already waiting.
            InvalidInput: unknown kind or bad params.
            FaceportError: whatever ``prepare`` raised (the job is then failed with that code).
        """
        self._require_kind(kind)
        with self._cond:
            if len(self._queue) + self._reserved >= self.queue_max:
                raise QueueFull(f"the job queue is full ({self.queue_max} jobs waiting); try again later",
                                details={"queue_max": self.queue_max})
            self._reserved += 1
        try:
            record = self._create(kind, params, prepare)
            with self._cond:
                self._queue.append(record.id)
                self._cond.notify()
        finally:
            with self._cond:
                self._reserved -= 1
        log.info("queued job %s (%s)", record.id, kind)
        return record

    def run_inline(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord:
        """Record and run a job in the calling thread (blocking); for work answered within a request.

        The job is in the table like any other: if the process dies while it runs, the next
        start requeues it and a worker runs it again.

        Returns:
            The completed job.

        Raises:
            FaceportError: the handler's error (the job is failed with its code first).
        """
        self._require_kind(kind)
        record = self._create(kind, params, prepare)
        with self.store.session() as session:
            record = start_job(session=session, job_id=record.id)
        return self._run(record, reraise=True)

    def _prepare_failed(self, job_id: str, code: str, message: str) -> None:
        self._fail(job_id, code, message)

    # ---- running ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping.is_set():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                job_id = self._queue.popleft()
            try:
                with self.store.session() as session:
                    record = start_job(session=session, job_id=job_id)
            except (InvalidInput, NotFound) as exc:
                log.info("skipping job %s: %s", job_id, exc)
                continue
            try:
                self._run(record, reraise=False)
            except Exception:  # the worker must outlive any one job; _run already recorded the failure
                log.exception("job worker error on %s", job_id)

    def _run(self, record: JobRecord, *, reraise: bool) -> JobRecord:
        registration = self._registry.get(record.kind)
        if registration is None:
            final = self._fail(record.id, ProcessingFailed.code, f"no handler for job kind {record.kind!r}")
            self._finish(None, final)
            return final
        started = time.monotonic()
        try:
            result = registration.handler(record, _Progress(self, record.id))
        except JobInterrupted:
            log.warning("job %s interrupted by shutdown; it runs again after the next start", record.id)
            if reraise:
                raise ProcessingFailed("the server is stopping; the job runs again after it restarts",
                                       details={"job_id": record.id}) from None
            return self.get(record.id)
        except JobCancelled:
            log.info("job %s was cancelled while running", record.id)
            final = self.get(record.id)
            self._finish(registration, final)
            return final
        except FaceportError as exc:
            final = self._fail(record.id, exc.code, exc.message)
            log.info("job %s (%s) failed: %s", record.id, record.kind, exc)
            self._finish(registration, final)
            if reraise:
                raise
            return final
        except Exception as exc:
            log.exception("job %s (%s) crashed", record.id, record.kind)
            final = self._fail(record.id, ProcessingFailed.code, f"internal error: {type(exc).__name__}")
            self._finish(registration, final)
            if reraise:
                raise ProcessingFailed("internal error while processing; see the server log",
                                       details={"job_id": record.id}) from exc
            return final
        try:
            with self.store.session() as session:
                final = complete_job(session=session, job_id=record.id, result=result)
        except InvalidInput as exc:  # cancelled meanwhile, or an unserialisable result
            log.warning("job %s could not be completed: %s", record.id, exc)
            final = self._fail(record.id, ProcessingFailed.code, exc.message) if "JSON" in exc.message \
                else self.get(record.id)
        log.info("job %s (%s) %s in %.1f s", record.id, record.kind, final.state.value, time.monotonic() - started)
        self._finish(registration, final)
        return final

    def _fail(self, job_id: str, code: str, message: str) -> JobRecord:
        try:
            with self.store.session() as session:
                return fail_job(session=session, job_id=job_id, code=code, message=message)
        except InvalidInput:  # already ended (cancelled)
            return self.get(job_id)

    @staticmethod
    def _finish(registration: _Registration | None, record: JobRecord) -> None:
        if registration is None or registration.on_finish is None:
            return
        try:
            registration.on_finish(record)
        except Exception:  # a finish hook (cleanup, webhook) must never change the job's outcome
            log.exception("finish hook of job %s failed", record.id)
