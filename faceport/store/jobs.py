"""Job repository: keyword-only functions over a session, returning detached records.

State machine (anything else raises :class:`~faceport.errors.InvalidInput`)::

    queued  --start_job-->             running
    running --update_progress-->       running
    running --complete_job-->          completed
    queued | running --fail_job-->     failed
    queued | running --cancel_job-->   cancelled
    running --recover_interrupted_jobs--> queued   (after a restart)
    queued | running (lease expired) --claim_job(worker)--> running   (Celery workers, attempts + 1)

A claimed job belongs to its ``worker`` until ``lease_until``; ``renew_lease`` extends it, and
``update_progress`` / ``complete_job`` / ``fail_job`` given ``worker`` succeed only for the claim
holder, so a worker that lost its claim (presumed dead, the job taken over) can never end the job.

Each transition is one conditional ``UPDATE ... WHERE state IN (...)``, so two runners
racing for the same job cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from faceport.errors import InvalidInput, NotFound
from faceport.store.models import TERMINAL_STATES, Job, JobState, utcnow

logger = logging.getLogger(__name__)

MAX_KIND_LENGTH = 64
MAX_LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as read from the store, detached from any session.

    ``error`` is ``{"code": <stable faceport error code>, "message": <text>}`` or ``None``.
    Timestamps are timezone-aware UTC.
    """

    id: str
    kind: str
    state: JobState
    progress: float
    params: dict[str, Any]
    result: Any | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0

    @property
    def is_terminal(self) -> bool:
        """Whether the job is completed, failed or cancelled and will not change again."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_row(cls, job: Job) -> JobRecord:
        """Copy an ORM ``Job`` into a record that is safe to use after the session closes."""
        return cls(
            id=job.id,
            kind=job.kind,
            state=JobState(job.state),
            progress=float(job.progress),
            params=deepcopy(job.params),
            result=deepcopy(job.result),
            error=deepcopy(job.error),
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            worker=job.worker,
            lease_until=job.lease_until,
            attempts=int(job.attempts or 0),
        )


def create_job(*, session: Session, kind: str, params: Mapping[str, Any]) -> JobRecord:
    """Queue a new job.

    Args:
        session: Open session; the job is committed with it.
        kind: What the job does, e.g. ``"video"``, ``"batch"``; 1 to 64 characters.
        params: JSON-serialisable parameters (stored as JSON; tuples read back as lists).

    Returns:
        The queued job, progress 0.

    Raises:
        InvalidInput: ``kind`` is empty or too long, or ``params`` is not a JSON object.
    """
    if not isinstance(kind, str) or not kind.strip() or len(kind) > MAX_KIND_LENGTH:
        raise InvalidInput(f"job kind must be a non-empty string of at most {MAX_KIND_LENGTH} characters")
    if not isinstance(params, Mapping):
        raise InvalidInput(f"job params must be a JSON object, got {type(params).__name__}")
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        kind=kind,
        state=JobState.QUEUED.value,
        progress=0.0,
        params=_as_json(params, what="params"),
        result=None,
        error=None,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    logger.debug("queued job %s (%s)", job.id, kind)
    return JobRecord.from_row(job)


def get_job(*, session: Session, job_id: str) -> JobRecord:
    """Read one job.

    Raises:
        NotFound: No job has this id.
    """
    return JobRecord.from_row(_load(session, job_id))


def list_jobs(
    *,
    session: Session,
    kind: str | None = None,
    state: JobState | str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[JobRecord]:
    """List jobs, newest first.

    Args:
        session: Open session.
        kind: Only jobs of this kind.
        state: Only jobs in this state (``"queued"``, ``"running"``, ...).
        limit: Page size, 1 to 1000.
        offset: Jobs to skip, at least 0.

    Returns:
        Up to ``limit`` jobs ordered by creation time, newest first.

    Raises:
        InvalidInput: Unknown state, or ``limit``/``offset`` out of range.
    """
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset must be at least 0, got {offset}")
    query = select(Job)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if state is not None:
        query = query.where(Job.state == _parse_state(state).value)
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    return [JobRecord.from_row(job) for job in session.scalars(query)]


def count_jobs_by_state(*, session: Session) -> dict[str, int]:
    """Number of jobs in each state, every state present (0 when none): one ``GROUP BY`` query."""
    counts = {state.value: 0 for state in JobState}
    for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        counts[str(state)] = int(count)
    return counts


def start_job(*, session: Session, job_id: str) -> JobRecord:
    """Mark a queued job as running and stamp ``started_at``.

    Raises:
        NotFound: No job has this id.
        InvalidInput: The job is not queued (already started, or finished).
    """
    now = utcnow()
    return _transition(
        session,
        job_id,
        action="start",
        allowed=(JobState.QUEUED,),
        values={"state": JobState.RUNNING.value, "started_at": now, "updated_at": now},
    )


def update_progress(*, session: Session, job_id: str, progress: float, worker: str | None = None) -> JobRecord:
    """Record how far a running job is; values outside 0..100 are clamped.

    Raises:
        NotFound: No job has this id.
        InvalidInput: ``progress`` is not a finite number, or the job is not running
            (a runner seeing this after ``cancel_job`` should stop), or ``worker`` no longer holds it.
    """
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not math.isfinite(progress):
        raise InvalidInput(f"progress must be a finite number, got {progress!r}")
    clamped = min(100.0, max(0.0, float(progress)))
    return _transition(
        session,
        job_id,
        action="update progress of",
        allowed=(JobState.RUNNING,),
        values={"progress": clamped, "updated_at": utcnow()},
        worker=worker,
    )


def complete_job(*, session: Session, job_id: str, result: Any, worker: str | None = None) -> JobRecord:
    """Mark a running job as completed with its result; progress becomes 100.

    Args:
        session: Open session.
        job_id: The job.
        result: JSON-serialisable outcome (paths, counts, ...); ``None`` is allowed.

    Raises:
        NotFound: No job has this id.
        InvalidInput: ``result`` is not JSON-serialisable, or the job is not running.
    """
    now = utcnow()
    return _transition(
        session,
        job_id,
        action="complete",
        allowed=(JobState.RUNNING,),
        values={
            "state": JobState.COMPLETED.value,
            "progress": 100.0,
            "result": _as_json(result, what="result"),
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
        },
        worker=worker,
    )


def fail_job(*, session: Session, job_id: str, code: str, message: str, worker: str | None = None) -> JobRecord:
    """Mark a queued or running job as failed with a stable error code.

    Args:
        session: Open session.
        job_id: The job.
        code: Stable code, e.g. ``faceport.errors.ProcessingFailed.code``.
        message: Human-readable explanation.

    Raises:
        NotFound: No job has this id.
        InvalidInput: ``code`` is empty, or the job already finished.
    """
    if not isinstance(code, str) or not code:
        raise InvalidInput("error code must be a non-empty string")
    now = utcnow()
    return _transition(
        session,
        job_id,
        action="fail",
        allowed=(JobState.QUEUED, JobState.RUNNING),
        values={
            "state": JobState.FAILED.value,
            "error": {"code": code, "message": str(message)},
            "finished_at": now,
            "updated_at": now,
            "lease_until": None,
        },
        worker=worker,
    )


def cancel_job(*, session: Session, job_id: str) -> JobRecord:
    """Cancel a queued or running job; its runner sees the state and stops.

    Raises:
        NotFound: No job has this id.
        InvalidInput: The job already finished (completed, failed or cancelled).
    """
    now = utcnow()
    return _transition(
        session,
        job_id,
        action="cancel",
        allowed=(JobState.QUEUED, JobState.RUNNING),
        values={"state": JobState.CANCELLED.value, "finished_at": now, "updated_at": now},
    )


def claim_job(*, session: Session, job_id: str, worker: str, lease_seconds: float) -> JobRecord | None:
    """Take a job for ``worker``: a queued one, or a running one whose lease expired (its worker died).

    A running job without a lease belongs to a local runner (:func:`start_job`) and is never taken.

    One conditional ``UPDATE``: of several workers claiming at once exactly one wins. A job taken
    over restarts from the beginning (progress 0); ``attempts`` counts the starts.

    Returns:
        The running job now held by ``worker``, or ``None`` when it is not claimable (ended,
        cancelled, or running under another worker's live lease).

    Raises:
        NotFound: No job has this id.
    """
    now = utcnow()
    claimable = or_(
        Job.state == JobState.QUEUED.value,
        # no lease: a local runner's job (start_job), never taken over by a worker
        and_(Job.state == JobState.RUNNING.value, Job.lease_until.is_not(None), Job.lease_until < now),
    )
    statement = (
        update(Job)
        .where(Job.id == job_id, claimable)
        .values(state=JobState.RUNNING.value, worker=worker, lease_until=now + timedelta(seconds=lease_seconds),
                attempts=Job.attempts + 1, progress=0.0, started_at=now, updated_at=now)
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    job = session.scalars(statement).one_or_none()
    if job is None:
        _load(session, job_id)  # NotFound for an unknown id
        return None
    return JobRecord.from_row(job)


def renew_lease(*, session: Session, job_id: str, worker: str, lease_seconds: float) -> JobRecord | None:
    """Extend ``worker``'s claim on a running job; ``None`` when it no longer holds it (cancelled, taken over)."""
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING.value, Job.worker == worker)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    job = session.scalars(statement).one_or_none()
    return None if job is None else JobRecord.from_row(job)


def orphaned_jobs(*, session: Session, kinds: tuple[str, ...], queued_before: datetime | None = None,
                  limit: int = MAX_LIST_LIMIT) -> list[JobRecord]:
    """Jobs of ``kinds`` no live worker holds: running under an expired lease, and, when ``queued_before``
    is given, queued since before it. Oldest first. A running job without a lease is a local runner's
    (:func:`start_job`): never listed."""
    now = utcnow()
    lost = and_(Job.state == JobState.RUNNING.value, Job.lease_until.is_not(None), Job.lease_until < now)
    condition = lost if queued_before is None else or_(
        lost, and_(Job.state == JobState.QUEUED.value, Job.created_at < queued_before))
    query = (select(Job).where(Job.kind.in_(kinds), condition).order_by(Job.created_at, Job.id).limit(limit))
    return [JobRecord.from_row(job) for job in session.scalars(query)]


def count_jobs(*, session: Session, kinds: tuple[str, ...], state: JobState) -> int:
    """Jobs of ``kinds`` in ``state`` (one ``COUNT``)."""
    query = select(func.count()).select_from(Job).where(Job.kind.in_(kinds), Job.state == state.value)
    return int(session.scalar(query) or 0)


def recover_interrupted_jobs(*, session: Session) -> list[JobRecord]:
    """Put jobs left ``running`` by a previous process back in the queue.

    Call once at start-up, before the runner takes jobs, when no other runner shares
    the database: a job another live process is running would be requeued too.
    Progress and ``started_at`` are reset, since the work restarts from the beginning.

    Returns:
        The requeued jobs, oldest first.
    """
    statement = (
        update(Job)
        .where(Job.state == JobState.RUNNING.value)
        .values(state=JobState.QUEUED.value, progress=0.0, started_at=None, updated_at=utcnow())
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    records = sorted(
        (JobRecord.from_row(job) for job in session.scalars(statement)),
        key=lambda record: (record.created_at, record.id),
    )
    if records:
        logger.warning(
            "requeued %d job(s) interrupted by a restart: %s", len(records), ", ".join(r.id for r in records)
        )
    return records


def _load(session: Session, job_id: str) -> Job:
    # populate_existing: another session or process may have changed the row.
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id!r} not found", details={"job_id": job_id})
    return job


def _transition(
    session: Session,
    job_id: str,
    *,
    action: str,
    allowed: tuple[JobState, ...],
    values: dict[str, Any],
    worker: str | None = None,
) -> JobRecord:
    """Apply ``values`` if the job is in an ``allowed`` state (and held by ``worker``, when given), atomically."""
    conditions = [Job.id == job_id, Job.state.in_([state.value for state in allowed])]
    if worker is not None:
        conditions.append(Job.worker == worker)
    statement = (
        update(Job)
        .where(*conditions)
        .values(**values)
        .returning(Job)
        .execution_options(populate_existing=True)
    )
    job = session.scalars(statement).one_or_none()
    if job is None:
        current = _load(session, job_id)
        held = "" if worker is None or current.worker == worker else f" and held by {current.worker or 'nobody'}"
        raise InvalidInput(
            f"cannot {action} job {job_id}: it is {current.state}{held}",
            details={"job_id": job_id, "state": current.state, "allowed": [state.value for state in allowed]},
        )
    return JobRecord.from_row(job)


def _parse_state(state: JobState | str) -> JobState:
    try:
        return JobState(state)
    except ValueError:
        valid = ", ".join(member.value for member in JobState)
        raise InvalidInput(f"unknown job state {state!r}; expected one of {valid}") from None


def _as_json(value: Any, *, what: str) -> Any:
    """Return ``value`` as it will read back from a JSON column, or raise InvalidInput."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"job {what} must be JSON-serialisable: {exc}") from exc
