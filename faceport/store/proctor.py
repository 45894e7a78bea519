"""Proctoring repository (seed C): clients, their reference face embeddings, evidence frames.

Keyword-only functions over a session returning frozen records detached from it. Reference
faces are embeddings (little-endian float32 bytes); the enrolled images are not kept.
Evidence rows hold the JPEG of a frame that triggered an action, its decision and scores.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from faceport.errors import InvalidInput, NotFound
from faceport.store.models import ProctorClient, ProctorEvidence, ProctorFace, utcnow

logger = logging.getLogger(__name__)

CLIENT_STATES = ("active", "paused", "blocked")
_DTYPE = np.dtype("<f4")
# user_name: a safe charset and length, so that a name is never a path, markup or a megabyte echoed back
USER_NAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
USER_NAME_RULE = "user_name must be 1 to 64 characters from A-Z a-z 0-9 . _ @ -"


def valid_user_name(name: object) -> bool:
    return isinstance(name, str) and USER_NAME_PATTERN.fullmatch(name) is not None


def shown_name(name: object) -> str:
    """``name`` for a message: itself when valid, else a placeholder (an invalid value is never echoed)."""
    return repr(name) if valid_user_name(name) else "(invalid user_name)"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A proctoring client; ``embeddings`` is (n, d) float32 (n may be 0)."""

    id: str
    user_name: str
    state: str
    violations: int
    embeddings: NDArray[np.float32]
    created_at: datetime
    updated_at: datetime
    token_hash: str | None = None  # SHA-256 hex of the client's token; None: the client has none


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One evidence frame; ``image`` (JPEG bytes) is loaded only when asked for."""

    id: str
    user_name: str
    action: str
    reason: str
    actual_username: str
    details: dict[str, Any]
    created_at: datetime
    image: bytes | None = None


def _client_record(session: Session, row: ProctorClient) -> ClientRecord:
    faces = session.scalars(select(ProctorFace).where(ProctorFace.client_id == row.id)
                            .order_by(ProctorFace.created_at)).all()
    emb = (np.stack([np.frombuffer(f.embedding, _DTYPE).astype(np.float32) for f in faces])
           if faces else np.zeros((0, 128), np.float32))
    return ClientRecord(row.id, row.user_name, row.state, row.violations, emb, row.created_at, row.updated_at,
                        row.token_hash)


def _get_row(session: Session, user_name: str) -> ProctorClient:
    row = None
    if valid_user_name(user_name):
        row = session.scalar(select(ProctorClient).where(ProctorClient.user_name == user_name))
    if row is None:
        raise NotFound(f"proctoring client {shown_name(user_name)} not found",
                       details={"user_name": user_name if valid_user_name(user_name) else None})
    return row


def create_client(*, session: Session, user_name: str) -> ClientRecord:
    """Raises: InvalidInput when the name is taken or outside ``USER_NAME_PATTERN`` (the name is not echoed)."""
    name = user_name.strip() if isinstance(user_name, str) else user_name
    if not valid_user_name(name):
        raise InvalidInput(USER_NAME_RULE, details={"field": "user_name", "pattern": USER_NAME_PATTERN.pattern})
    if session.scalar(select(ProctorClient.id).where(ProctorClient.user_name == name)) is not None:
        raise InvalidInput(f"proctoring client {name!r} already exists", details={"user_name": name})
    row = ProctorClient(id=uuid.uuid4().hex, user_name=name, state="active", violations=0,
                        created_at=utcnow(), updated_at=utcnow())
    session.add(row)
    session.flush()
    return _client_record(session, row)


def get_client(*, session: Session, user_name: str) -> ClientRecord:
    """Raises: NotFound."""
    return _client_record(session, _get_row(session, user_name))


def list_clients(*, session: Session) -> list[ClientRecord]:
    rows = session.scalars(select(ProctorClient).order_by(ProctorClient.user_name)).all()
    return [_client_record(session, r) for r in rows]


def delete_client(*, session: Session, user_name: str) -> None:
    """Raises: NotFound."""
    row = _get_row(session, user_name)
    session.execute(delete(ProctorFace).where(ProctorFace.client_id == row.id))
    session.delete(row)


def add_face(*, session: Session, user_name: str, embedding: NDArray[np.float32]) -> ClientRecord:
    """Store one reference embedding (d,) float32. Raises: NotFound."""
    row = _get_row(session, user_name)
    vector = np.asarray(embedding, _DTYPE).ravel()
    session.add(ProctorFace(id=uuid.uuid4().hex, client_id=row.id, embedding=vector.tobytes(), dim=int(vector.size),
                            created_at=utcnow()))
    row.updated_at = utcnow()
    session.flush()
    return _client_record(session, row)


def set_state(*, session: Session, user_name: str, state: str, reset_violations: bool = False) -> ClientRecord:
    """Raises: NotFound; InvalidInput for a state outside ``CLIENT_STATES``."""
    if state not in CLIENT_STATES:
        raise InvalidInput(f"unknown state {state!r}", details={"allowed": list(CLIENT_STATES)})
    row = _get_row(session, user_name)
    row.state = state
    if reset_violations:
        row.violations = 0
    row.updated_at = utcnow()
    session.flush()
    return _client_record(session, row)


def set_token(*, session: Session, user_name: str, token_hash: str | None) -> ClientRecord:
    """Set (or with ``None`` remove) the SHA-256 hex digest of a client's token. Raises: NotFound."""
    row = _get_row(session, user_name)
    row.token_hash = token_hash
    row.updated_at = utcnow()
    session.flush()
    return _client_record(session, row)


def add_violation(*, session: Session, user_name: str) -> int:
    """Count one violation; returns the new count (0 when the client is gone)."""
    row = session.scalar(select(ProctorClient).where(ProctorClient.user_name == user_name))
    if row is None:
        return 0
    row.violations += 1
    session.flush()
    return row.violations


def add_evidence(*, session: Session, user_name: str, action: str, reason: str, actual_username: str,
                 details: dict[str, Any], image: bytes) -> EvidenceRecord:
    row = ProctorEvidence(id=uuid.uuid4().hex, user_name=user_name, action=action, reason=reason,
                          actual_username=actual_username, details=details, image=image, created_at=utcnow())
    session.add(row)
    session.flush()
    return EvidenceRecord(row.id, user_name, action, reason, actual_username, details, row.created_at)


def _evidence_record(row: ProctorEvidence, *, with_image: bool) -> EvidenceRecord:
    return EvidenceRecord(row.id, row.user_name, row.action, row.reason, row.actual_username, dict(row.details),
                          row.created_at, row.image if with_image else None)


def list_evidence(*, session: Session, user_name: str | None = None, limit: int = 100,
                  offset: int = 0) -> tuple[list[EvidenceRecord], int]:
    """Newest first; returns the page and the total count."""
    query = select(ProctorEvidence)
    count = select(func.count()).select_from(ProctorEvidence)
    if user_name is not None:
        query = query.where(ProctorEvidence.user_name == user_name)
        count = count.where(ProctorEvidence.user_name == user_name)
    rows = session.scalars(query.order_by(ProctorEvidence.created_at.desc()).limit(limit).offset(offset)).all()
    return [_evidence_record(r, with_image=False) for r in rows], int(session.scalar(count) or 0)


def get_evidence(*, session: Session, evidence_id: str) -> EvidenceRecord:
    """Raises: NotFound."""
    row = session.get(ProctorEvidence, evidence_id)
    if row is None:
        raise NotFound(f"evidence {evidence_id!r} not found", details={"evidence_id": evidence_id})
    return _evidence_record(row, with_image=True)


def delete_evidence(*, session: Session, evidence_id: str) -> None:
    """Raises: NotFound."""
    row = session.get(ProctorEvidence, evidence_id)
    if row is None:
        raise NotFound(f"evidence {evidence_id!r} not found", details={"evidence_id": evidence_id})
    session.delete(row)


def purge_evidence(*, session: Session, older_than: datetime) -> int:
    """Delete evidence created before ``older_than``; returns how many rows went."""
    result = session.execute(delete(ProctorEvidence).where(ProctorEvidence.created_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)
