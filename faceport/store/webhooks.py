"""Webhook delivery repository: keyword-only functions over a session, returning detached records.

A delivery is ``pending`` until an attempt gets a 2xx answer (``delivered``) or it runs out of
attempts or is refused (``failed``). A sender claims a due delivery with one conditional
``UPDATE`` that moves its ``next_attempt_at`` past the attempt (a lease), so two processes
sharing the database never send the same attempt twice, and a sender that dies mid-attempt
leaves a delivery that becomes due again once the lease ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from faceport.errors import NotFound
from faceport.store.models import WebhookDelivery, utcnow

DeliveryState = Literal["pending", "delivered", "failed"]
HISTORY_KEPT = 20
MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A webhook delivery as read from the store; timestamps are timezone-aware UTC."""

    id: str
    job_id: str
    url: str
    payload: dict[str, Any]
    state: DeliveryState
    attempts: int
    last_status: int | None
    error: str | None
    history: list[dict[str, Any]]
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: WebhookDelivery) -> DeliveryRecord:
        return cls(id=row.id, job_id=row.job_id, url=row.url, payload=deepcopy(row.payload),
                   state=row.state,  # type: ignore[arg-type]
                   attempts=row.attempts, last_status=row.last_status, error=row.error,
                   history=deepcopy(row.history), next_attempt_at=row.next_attempt_at, created_at=row.created_at,
                   delivered_at=row.delivered_at)


def create_delivery(*, session: Session, job_id: str, url: str, payload: Mapping[str, Any]) -> DeliveryRecord:
    """Record a pending delivery of ``payload`` to ``url``, due now; one per job (a second call returns the first)."""
    existing = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one_or_none()
    if existing is not None:
        return DeliveryRecord.from_row(existing)
    now = utcnow()
    row = WebhookDelivery(id=uuid.uuid4().hex, job_id=job_id, url=url, payload=dict(payload), state="pending",
                          attempts=0, last_status=None, error=None, history=[], next_attempt_at=now,
                          created_at=now, updated_at=now, delivered_at=None)
    session.add(row)
    session.flush()
    return DeliveryRecord.from_row(row)


def get_delivery(*, session: Session, delivery_id: str) -> DeliveryRecord:
    """Raises: NotFound."""
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if row is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    return DeliveryRecord.from_row(row)


def delivery_for_job(*, session: Session, job_id: str) -> DeliveryRecord | None:
    row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                          .execution_options(populate_existing=True)).one_or_none()
    return None if row is None else DeliveryRecord.from_row(row)


def job_ids_with_deliveries(*, session: Session, job_ids: list[str]) -> set[str]:
    if not job_ids:
        return set()
    return set(session.scalars(select(WebhookDelivery.job_id).where(WebhookDelivery.job_id.in_(job_ids))))


def due_deliveries(*, session: Session, now: datetime | None = None, limit: int = 20) -> list[DeliveryRecord]:
    """Pending deliveries whose next attempt is due, oldest due first."""
    now = now or utcnow()
    query = (select(WebhookDelivery).where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
             .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit))
    return [DeliveryRecord.from_row(row) for row in session.scalars(query)]


def next_due_at(*, session: Session) -> datetime | None:
    """When the earliest pending delivery is due; ``None`` when nothing is pending."""
    return session.scalar(select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.state == "pending"))


def claim_delivery(*, session: Session, delivery: DeliveryRecord, lease: timedelta) -> bool:
    """Take a due delivery for one attempt; ``False`` when another sender took it first."""
    statement = (update(WebhookDelivery)
                 .where(WebhookDelivery.id == delivery.id, WebhookDelivery.state == "pending",
                        WebhookDelivery.next_attempt_at == delivery.next_attempt_at)
                 .values(next_attempt_at=utcnow() + lease, updated_at=utcnow()))
    claimed: int = session.execute(statement).rowcount  # type: ignore[attr-defined]
    return claimed == 1


def record_attempt(*, session: Session, delivery_id: str, status: int | None, error: str | None,
                   state: DeliveryState, retry_at: datetime | None = None) -> DeliveryRecord:
    """Record one attempt: its HTTP status (``None`` when no answer) or error, and the new state.

    Args:
        session: Open session.
        delivery_id: The delivery.
        status: The receiver's HTTP status, if it answered.
        error: Why the attempt failed (``None`` when delivered).
        state: ``delivered``, ``failed`` (gave up) or ``pending`` (retry at ``retry_at``).
        retry_at: When the next attempt is due (``pending`` only).

    Raises:
        NotFound: no such delivery.
    """
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if row is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    now = utcnow()
    error = None if error is None else error[:MAX_ERROR_LENGTH]
    row.attempts += 1
    row.last_status = status
    row.error = error
    row.history = [*row.history, {"at": now.isoformat(), "status": status, "error": error}][-HISTORY_KEPT:]
    row.state = state
    row.updated_at = now
    if state == "delivered":
        row.delivered_at = now
    if state == "pending":
        row.next_attempt_at = retry_at or now
    session.flush()
    return DeliveryRecord.from_row(row)
