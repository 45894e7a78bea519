"""Batch repository: the ``batches`` row of a batch job and its per-image ``batch_items``.

A batch shares its id with the job that runs it (``jobs.id``); the job holds the state and
progress, these tables hold the owner and each image's outcome, so results can be paged and a
cancelled batch keeps what it finished. Item writes are idempotent: saving an item that is
already stored is a no-op, so a job that runs again after a restart (or a redelivered worker
task) never stores an image twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session

from faceport.errors import InvalidInput, NotFound
from faceport.store.jobs import MAX_LIST_LIMIT, JobRecord
from faceport.store.models import Batch, BatchItem, Job, JobState, utcnow

ITEM_STATUSES = ("ok", "error")


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch with its job and item counts, detached from any session."""

    id: str
    owner: str
    operation: str
    total: int
    created_at: datetime
    expires_at: datetime | None
    job: JobRecord
    succeeded: int
    failed: int

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class BatchItemRecord:
    index: int
    name: str
    status: str
    result: Any | None
    error: dict[str, Any] | None
    elapsed_ms: float


def create_batch(*, session: Session, batch_id: str, owner: str, operation: str, total: int) -> None:
    """Record the batch of job ``batch_id`` (the job row must exist).

    Raises:
        InvalidInput: ``owner`` or ``operation`` empty, ``total`` below 1.
    """
    if not owner or not operation or total < 1:
        raise InvalidInput("a batch needs an owner, an operation and at least one item")
    session.add(Batch(id=batch_id, owner=owner[:64], operation=operation, total=total, created_at=utcnow()))
    session.flush()


def _counts(session: Session, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {bid: {"ok": 0, "error": 0} for bid in batch_ids}
    if not batch_ids:
        return counts
    query = (select(BatchItem.batch_id, BatchItem.status, func.count())
             .where(BatchItem.batch_id.in_(batch_ids)).group_by(BatchItem.batch_id, BatchItem.status))
    for batch_id, status, count in session.execute(query):
        counts[batch_id][str(status)] = int(count)
    return counts


def _record(batch: Batch, job: Job, counts: dict[str, int]) -> BatchRecord:
    return BatchRecord(id=batch.id, owner=batch.owner, operation=batch.operation, total=batch.total,
                       created_at=batch.created_at, expires_at=batch.expires_at, job=JobRecord.from_row(job),
                       succeeded=counts.get("ok", 0), failed=counts.get("error", 0))


def get_batch(*, session: Session, batch_id: str, owner: str | None = None) -> BatchRecord:
    """One batch with its job and counts.

    Args:
        owner: when given, a batch of another owner is not found (it reveals nothing).

    Raises:
        NotFound: no such batch (of ``owner``).
    """
    row = session.execute(select(Batch, Job).join(Job, Job.id == Batch.id).where(Batch.id == batch_id)
                          .execution_options(populate_existing=True)).one_or_none()
    if row is None or (owner is not None and row[0].owner != owner):
        raise NotFound(f"batch {batch_id!r} not found", details={"batch_id": batch_id})
    batch, job = row
    return _record(batch, job, _counts(session, [batch.id])[batch.id])


def list_batches(*, session: Session, owner: str | None, state: str | None = None, limit: int = 50,
                 offset: int = 0) -> tuple[list[BatchRecord], int]:
    """Batches newest first (of ``owner``, or every owner when ``None``) and how many there are in all.

    Raises:
        InvalidInput: unknown state, ``limit``/``offset`` out of range.
    """
    if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
        raise InvalidInput(f"limit must be 1..{MAX_LIST_LIMIT} and offset at least 0")
    conditions = []
    if owner is not None:
        conditions.append(Batch.owner == owner)
    if state is not None:
        try:
            conditions.append(Job.state == JobState(state).value)
        except ValueError:
            raise InvalidInput(f"unknown state {state!r}; expected one of "
                               f"{', '.join(s.value for s in JobState)}", details={"field": "state"}) from None
    where = and_(True, *conditions)
    total = int(session.scalar(select(func.count()).select_from(Batch).join(Job, Job.id == Batch.id)
                               .where(where)) or 0)
    rows = session.execute(select(Batch, Job).join(Job, Job.id == Batch.id).where(where)
                           .order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit).offset(offset)
                           .execution_options(populate_existing=True)).all()
    counts = _counts(session, [batch.id for batch, _ in rows])
    return [_record(batch, job, counts[batch.id]) for batch, job in rows], total


def done_indexes(*, session: Session, batch_id: str) -> set[int]:
    """Indexes of the items already stored (a job running again skips them)."""
    return set(session.scalars(select(BatchItem.index).where(BatchItem.batch_id == batch_id)))


def save_item(*, session: Session, batch_id: str, index: int, name: str, status: str, result: Any | None = None,
              error: dict[str, Any] | None = None, elapsed_ms: float = 0.0) -> bool:
    """Store one image's outcome unless it is stored already; returns whether it was written.

    Raises:
        InvalidInput: unknown status, or a result that is not JSON-serialisable.
    """
    if status not in ITEM_STATUSES:
        raise InvalidInput(f"item status must be one of {ITEM_STATUSES}, got {status!r}")
    if session.get(BatchItem, (batch_id, index)) is not None:
        return False
    try:
        result = json.loads(json.dumps(result, allow_nan=False)) if result is not None else None
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"item result must be JSON-serialisable: {exc}") from exc
    session.add(BatchItem(batch_id=batch_id, index=index, name=name[:255], status=status, result=result,
                          error=error, elapsed_ms=float(elapsed_ms), created_at=utcnow()))
    session.flush()
    return True


def list_items(*, session: Session, batch_id: str, status: str | None = None, limit: int = 50,
               offset: int = 0) -> tuple[list[BatchItemRecord], int]:
    """Stored items in image order and how many match in all.

    Raises:
        InvalidInput: unknown status, ``limit``/``offset`` out of range.
    """
    if not 1 <= limit <= MAX_LIST_LIMIT or offset < 0:
        raise InvalidInput(f"limit must be 1..{MAX_LIST_LIMIT} and offset at least 0")
    where = [BatchItem.batch_id == batch_id]
    if status is not None:
        if status not in ITEM_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(ITEM_STATUSES)}", details={"field": "status"})
        where.append(BatchItem.status == status)
    total = int(session.scalar(select(func.count()).select_from(BatchItem).where(*where)) or 0)
    rows = session.scalars(select(BatchItem).where(*where).order_by(BatchItem.index).limit(limit).offset(offset))
    return [BatchItemRecord(index=r.index, name=r.name, status=r.status, result=r.result, error=r.error,
                            elapsed_ms=r.elapsed_ms) for r in rows], total


def set_expiry(*, session: Session, batch_id: str, expires_at: datetime) -> None:
    """Set when a finished batch is purged."""
    batch = session.get(Batch, batch_id)
    if batch is not None:
        batch.expires_at = expires_at
        session.flush()


def expired_batches(*, session: Session, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Ids of batches past their expiry."""
    moment = now or utcnow()
    return list(session.scalars(select(Batch.id).where(Batch.expires_at.is_not(None), Batch.expires_at <= moment)
                                .order_by(Batch.expires_at).limit(limit)))


def delete_batches(*, session: Session, batch_ids: list[str]) -> int:
    """Delete batches, their items and their jobs; returns how many batches went."""
    if not batch_ids:
        return 0
    session.execute(delete(BatchItem).where(BatchItem.batch_id.in_(batch_ids)))
    count = session.execute(delete(Batch).where(Batch.id.in_(batch_ids))).rowcount or 0
    session.execute(delete(Job).where(Job.id.in_(batch_ids)))
    return int(count)


def job_state(*, session: Session, job_id: str) -> str | None:
    """The job's state as stored now (``None`` when it is gone)."""
    return session.scalar(select(Job.state).where(Job.id == job_id).execution_options(populate_existing=True))
