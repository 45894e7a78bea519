"""The Celery job runner (``FACEPORT_JOBS=celery``): jobs of the ``jobs`` table run on Celery workers over Redis.

The API node and the workers share the database and ``FACEPORT_HOME`` (uploads, outputs, media).
Life of a job::

    API node   create_job (queued) -> prepare(record) -> send task "faceport.run_job"(job id)
    worker     claim_job (running, lease) -> handler(record, progress) -> complete_job | fail_job -> on_finish
               (the claim is renewed every lease/3 s; progress, completion and failure need the claim)

Only the job id travels over the broker; the worker loads the parameters from the database.

Delivery guarantees:

- Tasks are acknowledged late (``task_acks_late``) and rejected back to the queue when the worker
  process dies (``task_reject_on_worker_lost``); Redis hands an unacknowledged message of a dead
  worker to another one after ``FACEPORT_CELERY_VISIBILITY_TIMEOUT``.
- A worker takes a job with :func:`~faceport.store.claim_job`: one conditional ``UPDATE`` that
  succeeds for a queued job or a running one whose lease expired. A second delivery of a job that
  ended, or that another worker holds, is therefore a no-op: a job completes exactly once.
- Every worker sweeps the table every lease/2 s and sends again the jobs of its kinds that are
  ``running`` under an expired lease (their worker was killed): they restart within about one lease
  on a live worker, long before the visibility timeout. At start it also sends again jobs left
  ``queued`` (a message lost with a Redis restart); duplicates are harmless for the reason above.
- Outputs are written to a hidden temporary file renamed over the final name (the services do
  this), so a killed attempt never leaves a half-written output under the final name.
- A cancelled job (``cancel``) stops at the handler's next progress report: progress writes need
  the job to be running and held by this worker, and the lease renewal notices the state change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from faceport.config import node_name
from faceport.errors import FaceportError, InvalidInput, NotFound, ProcessingFailed, QueueFull
from faceport.jobs.local import (
    JobCancelled,
    JobReads,
    PrepareHook,
    _Registration,
)
from faceport.store import (
    JobRecord,
    JobState,
    Store,
    claim_job,
    complete_job,
    count_jobs,
    fail_job,
    orphaned_jobs,
    renew_lease,
    update_progress,
)
from faceport.store.models import utcnow

log = logging.getLogger(__name__)

TASK_NAME = "faceport.run_job"
_DONE_KEY = "faceport:jobs:done:"  # a list the worker pushes to when a job ends (inline waiters block on it)
_WORKER_KEY = "faceport:jobs:workers:"  # one key per live worker process, with a TTL
_RESENT_KEY = "faceport:jobs:resent:"  # a worker that re-sent an orphaned job holds this for a lease


def broker_url(settings: Any) -> str:
    """The Celery broker URL.

    Raises:
        InvalidInput: neither ``FACEPORT_CELERY_BROKER_URL`` nor ``FACEPORT_REDIS_URL`` is set.
    """
    url = settings.celery_broker_url or settings.redis_url
    if not url:
        raise InvalidInput("FACEPORT_JOBS=celery needs a broker: set FACEPORT_REDIS_URL "
                           "(or FACEPORT_CELERY_BROKER_URL)")
    return str(url)


def make_celery(settings: Any) -> Any:
    """A Celery app configured for faceport jobs (late acks, requeue on worker loss, one message at a time)."""
    from celery import Celery

    app = Celery("faceport", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a busy worker does not sit on messages a free one could run
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,  # the jobs table holds results; no result backend
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.celery_visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class _Progress:
    """A handler's progress reporter on a worker: throttled writes that need the claim, cancel checks."""

    def __init__(self, runner: CeleryJobRunner, job_id: str, lost: threading.Event) -> None:
        self._runner = runner
        self._job_id = job_id
        self._lost = lost
        self._last_write = time.monotonic()
        self._last_value = 0.0

    def __call__(self, percent: float) -> None:
        if self._lost.is_set():
            raise JobCancelled(f"job {self._job_id} was cancelled or taken over")
        now = time.monotonic()
        if now - self._last_write < self._runner.progress_interval_s or percent <= self._last_value:
            return
        self._last_write, self._last_value = now, float(percent)
        try:
            with self._runner.store.session() as session:
                update_progress(session=session, job_id=self._job_id, progress=float(percent),
                                worker=self._runner.worker_id)
        except InvalidInput as exc:  # cancelled, or no longer ours
            self._lost.set()
            raise JobCancelled(str(exc)) from None


class CeleryJobRunner(JobReads):
    """Jobs on Celery workers. The API node submits; ``faceport worker`` runs (:meth:`execute`).

    Args:
        store: The shared store holding the ``jobs`` table.
        settings: ``celery_*``, ``redis_url``, ``job_lease_seconds``, ``job_queue_max``, ``job_inline_timeout``.
        role: ``"api"`` (submits, waits for inline jobs) or ``"worker"`` (also runs, sweeps and heartbeats).
        concurrency: Jobs this worker process runs at once (``role="worker"``).
    """

    def __init__(self, store: Store, settings: Any, *, role: str = "api", concurrency: int = 1,
                 progress_interval_s: float = 1.0) -> None:
        import redis

        self.store = store
        self.settings = settings
        self.role = role
        self.concurrency = concurrency
        self.queue_max = settings.job_queue_max
        self.lease_s = float(settings.job_lease_seconds)
        self.progress_interval_s = progress_interval_s
        self.worker_id = f"{node_name(settings)}:{uuid.uuid4().hex[:8]}"
        self.celery = make_celery(settings)
        self.redis = redis.Redis.from_url(settings.redis_url or broker_url(settings), socket_timeout=5.0,
                                          socket_connect_timeout=2.0)
        self._registry: dict[str, _Registration] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._running: dict[str, threading.Event] = {}  # job id -> its "lost" event (this worker's jobs)
        self._running_lock = threading.Lock()
        runner = self

        @self.celery.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
        def run_job(job_id: str) -> None:
            runner.execute(job_id)

        self._task = run_job

    # ---- configuration ------------------------------------------------------------------
    def queue_for(self, kind: str) -> str:
        """The Celery queue of ``kind`` (``FACEPORT_CELERY_ROUTES``, else ``FACEPORT_CELERY_QUEUE``)."""
        return str(self.settings.celery_routes.get(kind, self.settings.celery_queue))

    # ---- state (system status) ---------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started and not self._stop.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def workers(self) -> int:
        """Worker processes alive now (each advertises itself in Redis while it runs)."""
        return self.alive_workers()

    def alive_workers(self) -> int:
        try:
            return sum(1 for _ in self.redis.scan_iter(match=_WORKER_KEY + "*", count=100))
        except Exception:  # Redis down: report no worker rather than failing a status page
            return 0

    def pending(self) -> int:
        """Jobs of the registered kinds waiting for a worker (``queued`` rows)."""
        with self.store.session() as session:
            return count_jobs(session=session, kinds=self.kinds, state=JobState.QUEUED)

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """API node: nothing to start (workers recover jobs). Worker: heartbeat and sweeper thread."""
        if self._started:
            return
        self._stop.clear()
        self._started = True
        if self.role == "worker":
            self._heartbeat_worker()
            self.sweep(include_queued=True)
            thread = threading.Thread(target=self._sweep_loop, name="faceport-job-sweeper", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        if not self._started:
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.role == "worker":
            try:
                self.redis.delete(_WORKER_KEY + self.worker_id)
            except Exception:
                log.debug("could not remove the worker key", exc_info=True)
        self._started = False

    # ---- submitting -----------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord:
        """Record a job and send it to the workers.

        Raises:
            QueueFull: ``job_queue_max`` jobs already wait, or the broker cannot be reached.
            InvalidInput: unknown kind or bad params.
            FaceportError: whatever ``prepare`` raised (the job is then failed with that code).
        """
        self._require_kind(kind)
        waiting = self.pending()
        if waiting >= self.queue_max:
            raise QueueFull(f"the job queue is full ({self.queue_max} jobs waiting); try again later",
                            details={"queue_max": self.queue_max})
        record = self._create(kind, params, prepare)
        self._send(record)
        log.info("queued job %s (%s) on Celery queue %s", record.id, kind, self.queue_for(kind))
        return record

    def run_inline(self, kind: str, params: dict[str, Any], *, prepare: PrepareHook | None = None) -> JobRecord:
        """Record a job, send it to the workers and wait for it to end (for requests answered synchronously).

        Returns:
            The completed job.

        Raises:
            FaceportError: the job failed (its stable code and message), was cancelled
                (``PROCESSING_FAILED``), or no worker ended it within ``job_inline_timeout``
                (``QUEUE_FULL``; the job keeps running and can be polled).
        """
        self._require_kind(kind)
        record = self._create(kind, params, prepare)
        self._send(record)
        final = self.wait_for(record.id, timeout=self.settings.job_inline_timeout)
        if final.state == JobState.COMPLETED:
            return final
        if final.state == JobState.FAILED:
            error = final.error or {}
            raise FaceportError(str(error.get("message") or "the job failed"),
                                code=str(error.get("code") or ProcessingFailed.code), details={"job_id": final.id})
        if final.state == JobState.CANCELLED:
            raise ProcessingFailed("the job was cancelled", details={"job_id": final.id})
        raise QueueFull(f"no worker finished the job within {self.settings.job_inline_timeout:g} s; it stays "
                        "queued (is `faceport worker` running?)", details={"job_id": final.id})

    def wait_for(self, job_id: str, *, timeout: float) -> JobRecord:
        """Block until the job ends or ``timeout`` passes (woken by the worker through Redis); the last record."""
        deadline = time.monotonic() + timeout
        record = self.get(job_id)
        while not record.is_terminal:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:  # the worker pushes when the job ends; the table stays the truth (a lost push costs a second)
                self.redis.blpop([_DONE_KEY + job_id], timeout=max(0.05, min(1.0, left)))
            except Exception:
                time.sleep(min(0.2, left))
            record = self.get(job_id)
        return record

    def _prepare_failed(self, job_id: str, code: str, message: str) -> None:
        self._fail_unclaimed(job_id, code, message)

    def _send(self, record: JobRecord) -> None:
        try:
            self._task.apply_async(args=[record.id], queue=self.queue_for(record.kind))
        except Exception as exc:  # broker unreachable: refuse now rather than accept a job nobody will run
            log.error("could not send job %s to the broker: %s", record.id, exc)
            self._fail_unclaimed(record.id, QueueFull.code, "the job broker (Redis) cannot be reached")
            raise QueueFull("the job broker cannot be reached; try again later",
                            details={"job_id": record.id}) from exc

    def _fail_unclaimed(self, job_id: str, code: str, message: str) -> None:
        try:
            with self.store.session() as session:
                fail_job(session=session, job_id=job_id, code=code, message=message)
        except InvalidInput:
            pass

    # ---- running (workers) ----------------------------------------------------------------------
    def execute(self, job_id: str) -> JobRecord | None:
        """Run one delivered job if it can be claimed; a job that ended or runs elsewhere is left alone.

        Returns:
            The final record when this worker ran the job, else ``None``.
        """
        try:
            with self.store.session() as session:
                record = claim_job(session=session, job_id=job_id, worker=self.worker_id, lease_seconds=self.lease_s)
        except NotFound:
            log.warning("job %s is not in the database; dropping its message", job_id)
            return None
        if record is None:
            current = self.get(job_id)
            log.info("job %s is %s%s; this delivery is a no-op", job_id, current.state.value,
                     f" on {current.worker}" if current.state == JobState.RUNNING else "")
            return None
        registration = self._registry.get(record.kind)
        if registration is None:
            return self._end(record, None, error=(ProcessingFailed.code,
                                                  f"worker {self.worker_id} has no handler for {record.kind!r}"))
        lost = threading.Event()
        with self._running_lock:
            self._running[job_id] = lost
        log.info("job %s (%s) started on %s (attempt %d)", record.id, record.kind, self.worker_id, record.attempts)
        started = time.monotonic()
        try:
            result = registration.handler(record, _Progress(self, record.id, lost))
        except JobCancelled:
            return self._end(record, registration, lost_claim=True, started=started)
        except FaceportError as exc:
            return self._end(record, registration, error=(exc.code, exc.message), started=started)
        except Exception as exc:
            log.exception("job %s (%s) crashed", record.id, record.kind)
            return self._end(record, registration, error=(ProcessingFailed.code,
                                                          f"internal error: {type(exc).__name__}"), started=started)
        finally:
            with self._running_lock:
                self._running.pop(job_id, None)
        return self._end(record, registration, result=result, started=started)

    def _end(self, record: JobRecord, registration: _Registration | None, *, result: Any = None,
             error: tuple[str, str] | None = None, lost_claim: bool = False, started: float | None = None
             ) -> JobRecord | None:
        final: JobRecord | None = None
        if not lost_claim:
            try:
                with self.store.session() as session:
                    if error is None:
                        final = complete_job(session=session, job_id=record.id, result=result, worker=self.worker_id)
                    else:
                        final = fail_job(session=session, job_id=record.id, code=error[0], message=error[1],
                                         worker=self.worker_id)
            except InvalidInput as exc:  # cancelled meanwhile, taken over, or an unserialisable result
                if "JSON" in exc.message:
                    final = fail_job_quietly(self.store, record.id, ProcessingFailed.code, exc.message, self.worker_id)
                else:
                    log.warning("job %s could not be ended here: %s", record.id, exc.message)
        if final is None:
            final = self.get(record.id)
            if final.state == JobState.RUNNING:  # another worker took it over: it finishes and cleans up
                log.warning("job %s lost its claim on %s; %s runs it now", record.id, self.worker_id, final.worker)
                return None
        elapsed = time.monotonic() - started if started is not None else 0.0
        log.info("job %s (%s) %s on %s in %.1f s", record.id, record.kind, final.state.value, self.worker_id, elapsed)
        if registration is not None and registration.on_finish is not None:
            try:
                registration.on_finish(final)
            except Exception:  # a finish hook (cleanup, webhook) must never change the job's outcome
                log.exception("finish hook of job %s failed", record.id)
        try:
            pipe = self.redis.pipeline()
            pipe.rpush(_DONE_KEY + record.id, final.state.value)
            pipe.expire(_DONE_KEY + record.id, 120)
            pipe.execute()
        except Exception:
            log.debug("could not signal the end of job %s", record.id, exc_info=True)
        return final

    # ---- worker housekeeping --------------------------------------------------------------------
    def _heartbeat_worker(self) -> None:
        info = {"worker": self.worker_id, "pid": os.getpid(), "concurrency": self.concurrency,
                "kinds": list(self.kinds), "at": utcnow().isoformat()}
        try:
            self.redis.set(_WORKER_KEY + self.worker_id, json.dumps(info), px=int(self.lease_s * 1000))
        except Exception as exc:
            log.warning("worker heartbeat failed: %s", exc)

    def _renew_leases(self) -> None:
        with self._running_lock:
            running = dict(self._running)
        for job_id, lost in running.items():
            try:
                with self.store.session() as session:
                    held = renew_lease(session=session, job_id=job_id, worker=self.worker_id,
                                       lease_seconds=self.lease_s)
            except Exception as exc:  # database briefly down: keep working, the lease has slack
                log.warning("could not renew the lease of job %s: %s", job_id, exc)
                continue
            if held is None:
                lost.set()  # cancelled or taken over: the handler stops at its next progress report

    def _sweep_loop(self) -> None:
        tick = max(0.2, self.lease_s / 3)
        next_sweep = time.monotonic() + self.lease_s / 2
        while not self._stop.wait(tick):
            self._heartbeat_worker()
            self._renew_leases()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.lease_s / 2
                try:
                    self.sweep()
                except Exception as exc:
                    log.warning("job sweep failed: %s", exc)

    def sweep(self, *, include_queued: bool = False) -> list[str]:
        """Send again the jobs of this worker's kinds that nobody holds (their worker died).

        Args:
            include_queued: Also jobs queued for over a lease (at start: a message may have been lost).

        Returns:
            The ids sent again.
        """
        if not self.kinds:
            return []
        queued_before = utcnow() - timedelta(seconds=self.lease_s) if include_queued else None
        with self.store.session() as session:
            orphans = orphaned_jobs(session=session, kinds=self.kinds, queued_before=queued_before)
        sent = []
        for record in orphans:
            try:  # one worker re-sends a given job per lease, however many sweep
                if not self.redis.set(_RESENT_KEY + record.id, self.worker_id, nx=True,
                                      px=int(self.lease_s * 1000)):
                    continue
                self._task.apply_async(args=[record.id], queue=self.queue_for(record.kind))
            except Exception as exc:
                log.warning("could not re-send job %s: %s", record.id, exc)
                continue
            sent.append(record.id)
        if sent:
            log.warning("re-sent %d job(s) no live worker held: %s", len(sent), ", ".join(sent))
        return sent

    def run_worker(self, *, queues: list[str], pool: str = "threads", loglevel: str = "INFO") -> None:
        """Run a Celery worker in this process until it is stopped (blocking)."""
        self.start()
        argv = ["worker", f"--pool={pool}", f"--concurrency={self.concurrency}", f"--queues={','.join(queues)}",
                f"--loglevel={loglevel}", f"--hostname=faceport-{self.worker_id.replace(':', '-')}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        try:
            self.celery.worker_main(argv=argv)
        finally:
            self.stop()


def fail_job_quietly(store: Store, job_id: str, code: str, message: str, worker: str | None) -> JobRecord | None:
    """Fail a job, or return ``None`` when it already left the state that allows it."""
    try:
        with store.session() as session:
            return fail_job(session=session, job_id=job_id, code=code, message=message, worker=worker)
    except InvalidInput:
        return None
