"""Gallery repository: subjects (people) and their example faces, stored as embeddings.

Keyword-only functions over a session, returning frozen records detached from it, in
the style of :mod:`faceport.store.jobs`. Images are never stored: a face is its
embedding (little-endian float32 bytes), its box, detector score, the embedding model's
name and the sha256 of the image it came from.

Subject names are trimmed, 1 to 255 characters, without control characters, and
unique per owner (case-sensitive, as on both backends' default collations).

Owners: every subject has an ``owner`` (a principal id, see
:attr:`faceport.principal.Principal.owner`). Functions that read or change one subject
take ``owner``: given, a subject of another owner is ``NotFound`` exactly like a missing one
(no existence oracle); ``None`` means every owner (admins).
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ScalarSelect, Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceport.errors import InvalidInput, NotFound, ProcessingFailed
from faceport.store.models import Subject, SubjectFace, utcnow

logger = logging.getLogger(__name__)

_Query = TypeVar("_Query", bound=Select[Any])

MAX_NAME_LENGTH = 255
MAX_OWNER_LENGTH = 64
MAX_MODEL_LENGTH = 64
MAX_PAGE_SIZE = 1000
MAX_EMBEDDING_DIM = 4096
DEFAULT_CHUNK_SIZE = 10_000
# Embeddings are stored little-endian whatever the machine, so a database moves between hosts.
_EMBEDDING_DTYPE = np.dtype("<f4")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """A subject as read from the store, detached from any session.

    Attributes:
        id: 32 hex characters.
        name: Display name, unique per owner.
        face_count: Example faces stored for the subject.
        created_at: Timezone-aware UTC.
        updated_at: Timezone-aware UTC; changes on rename.
        owner: The principal it belongs to; ``None`` for a pre-owner row no admin existed for.
    """

    id: str
    name: str
    face_count: int
    created_at: datetime
    updated_at: datetime
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """One example face of a subject, detached from any session.

    Attributes:
        id: 32 hex characters.
        subject_id: The subject it belongs to.
        embedding: (dim,) float32, as stored (normalised by the caller).
        model: Name of the embedding model, e.g. ``"dlib_resnet"``.
        bbox: (x1, y1, x2, y2) pixels in the enrolled image.
        score: Detector confidence in [0, 1].
        image_sha256: Hex sha256 identifying the enrolled image (the image is not kept).
        created_at: Timezone-aware UTC.
    """

    id: str
    subject_id: str
    embedding: NDArray[np.float32]
    model: str
    bbox: tuple[float, float, float, float]
    score: float
    image_sha256: str
    created_at: datetime

    @property
    def dim(self) -> int:
        """Length of the embedding."""
        return int(self.embedding.shape[0])

    @classmethod
    def from_row(cls, face: SubjectFace) -> FaceRecord:
        """Copy an ORM ``SubjectFace`` into a record that is safe to use after the session closes."""
        x1, y1, x2, y2 = (float(v) for v in face.bbox)
        return cls(
            id=face.id,
            subject_id=face.subject_id,
            embedding=_decode_embedding(face.embedding, face.dim),
            model=face.model,
            bbox=(x1, y1, x2, y2),
            score=float(face.score),
            image_sha256=face.image_sha256,
            created_at=face.created_at,
        )


@dataclass(frozen=True, slots=True)
class EmbeddingChunk:
    """Consecutive stored faces of one model and dimension, row-aligned.

    Attributes:
        face_ids: (m,) face ids.
        subject_ids: (m,) the subject of each face.
        embeddings: (m, dim) float32, read-only, native byte order.
        owners: (m,) the owner of each face's subject.
    """

    face_ids: list[str]
    subject_ids: list[str]
    embeddings: NDArray[np.float32]
    owners: list[str | None]

    def __len__(self) -> int:
        return len(self.face_ids)


# --- subjects --------------------------------------------------------------------------


def create_subject(*, session: Session, name: str, owner: str | None) -> SubjectRecord:
    """Add a subject with no faces yet.

    Args:
        session: Open session; the subject is committed with it.
        name: Display name; surrounding whitespace is trimmed.
        owner: The principal it belongs to (``None``: admins only, as pre-owner rows).

    Returns:
        The new subject, ``face_count`` 0.

    Raises:
        InvalidInput: The name is empty, too long, has control characters, or is taken by
            another subject of the same owner (``details["field"] == "name"``), or ``owner``
            is not 1 to 64 characters.
    """
    clean = _clean_name(name)
    if owner is not None and (not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER_LENGTH):
        raise InvalidInput(f"owner must be 1 to {MAX_OWNER_LENGTH} characters", details={"field": "owner"})
    _refuse_taken_name(session, clean, owner)
    now = utcnow()
    subject = Subject(id=uuid.uuid4().hex, owner=owner, name=clean, created_at=now, updated_at=now)
    session.add(subject)
    _flush_unique_name(session, clean)
    logger.debug("created subject %s", subject.id)
    return _subject_record(subject, 0)


def get_subject(*, session: Session, subject_id: str, owner: str | None = None) -> SubjectRecord:
    """Read one subject with its face count.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given).
    """
    query = _owned(select(Subject, _face_count()).where(Subject.id == subject_id), owner)
    row = session.execute(query).one_or_none()
    if row is None:
        raise _subject_not_found(subject_id)
    return _subject_record(row[0], row[1])


def get_subject_by_name(*, session: Session, name: str, owner: str | None = None) -> SubjectRecord:
    """Read one subject by its name (trimmed first), as CompreFace addresses subjects.

    Names are unique per owner; with ``owner=None`` the oldest subject of that name is returned.

    Raises:
        NotFound: No subject (of this ``owner`` when given) has this name.
    """
    clean = name.strip() if isinstance(name, str) else name
    query = _owned(select(Subject, _face_count()).where(Subject.name == clean), owner)
    row = session.execute(query.order_by(Subject.created_at, Subject.id).limit(1)).one_or_none()
    if row is None:
        raise NotFound(f"subject named {clean!r} not found", details={"name": clean})
    return _subject_record(row[0], row[1])


def list_subjects(*, session: Session, page: int = 1, size: int = 20,
                  owner: str | None = None) -> tuple[list[SubjectRecord], int]:
    """One page of subjects ordered by name, with their face counts.

    Args:
        session: Open session.
        page: 1-based page number.
        size: Subjects per page, 1 to 1000.
        owner: Only this owner's subjects; ``None``: every owner's.

    Returns:
        The page's subjects and the total number of (this owner's) subjects.

    Raises:
        InvalidInput: ``page`` below 1 or ``size`` out of range.
    """
    if page < 1:
        raise InvalidInput(f"page must be at least 1, got {page}", details={"field": "page"})
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"size must be between 1 and {MAX_PAGE_SIZE}, got {size}", details={"field": "size"})
    total = session.scalar(_owned(select(func.count()).select_from(Subject), owner)) or 0
    query = (
        _owned(select(Subject, _face_count()), owner)
        .order_by(Subject.name, Subject.id)
        .limit(size)
        .offset((page - 1) * size)
    )
    return [_subject_record(subject, count) for subject, count in session.execute(query)], int(total)


def count_subjects(*, session: Session, owner: str | None = None) -> int:
    """Number of subjects (of ``owner`` when given), with or without faces."""
    return int(session.scalar(_owned(select(func.count()).select_from(Subject), owner)) or 0)


def count_subjects_by_owner(*, session: Session) -> dict[str | None, int]:
    """Number of subjects of each owner (``None``: the pre-owner rows no admin existed for)."""
    query = select(Subject.owner, func.count()).group_by(Subject.owner)
    return {owner: int(count) for owner, count in session.execute(query)}


def rename_subject(*, session: Session, subject_id: str, name: str, owner: str | None = None) -> SubjectRecord:
    """Give a subject a new name; renaming to its current name changes nothing but ``updated_at``.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given).
        InvalidInput: The name is invalid or belongs to another subject of the subject's owner
            (``details["field"] == "name"``).
    """
    clean = _clean_name(name)
    subject = _load_subject(session, subject_id, owner)
    if subject.name != clean:
        _refuse_taken_name(session, clean, subject.owner)
    subject.name = clean
    subject.updated_at = utcnow()
    _flush_unique_name(session, clean)
    return get_subject(session=session, subject_id=subject_id)


def delete_subject(*, session: Session, subject_id: str, owner: str | None = None) -> SubjectRecord:
    """Delete a subject and all its faces.

    The faces are deleted explicitly rather than left to ``ON DELETE CASCADE``, so the
    outcome does not depend on SQLite's per-connection ``foreign_keys`` pragma.

    Returns:
        The subject as it was, ``face_count`` being the number of faces deleted.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given).
    """
    record = get_subject(session=session, subject_id=subject_id, owner=owner)
    session.execute(delete(SubjectFace).where(SubjectFace.subject_id == subject_id))
    session.execute(delete(Subject).where(Subject.id == subject_id))
    logger.debug("deleted subject %s and %d face(s)", subject_id, record.face_count)
    return record


# --- faces -----------------------------------------------------------------------------


def add_face(
    *,
    session: Session,
    subject_id: str,
    embedding: NDArray[np.float32],
    model: str,
    bbox: Sequence[float],
    score: float,
    image_sha256: str,
    owner: str | None = None,
) -> FaceRecord:
    """Store one example face of a subject.

    Args:
        session: Open session; the face is committed with it.
        subject_id: An existing subject.
        embedding: (dim,) finite floats, 1 <= dim <= 4096; stored as float32.
        model: Embedding model name, 1 to 64 characters.
        bbox: (x1, y1, x2, y2) finite pixel coordinates.
        score: Finite detector confidence.
        image_sha256: 64 lowercase hex characters.
        owner: When given, the subject must be this owner's.

    Returns:
        The stored face.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given).
        InvalidInput: An argument is malformed (``details["field"]`` names it).
    """
    vector = _as_embedding(embedding)
    if not isinstance(model, str) or not 1 <= len(model) <= MAX_MODEL_LENGTH:
        raise InvalidInput(f"model must be 1 to {MAX_MODEL_LENGTH} characters", details={"field": "model"})
    box = _as_bbox(bbox)
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise InvalidInput(f"score must be a finite number, got {score!r}", details={"field": "score"})
    if not isinstance(image_sha256, str) or not _SHA256_RE.match(image_sha256):
        raise InvalidInput("image_sha256 must be 64 lowercase hex characters", details={"field": "image_sha256"})
    _load_subject(session, subject_id, owner)
    face = SubjectFace(
        id=uuid.uuid4().hex,
        subject_id=subject_id,
        embedding=vector.tobytes(),
        dim=int(vector.shape[0]),
        model=model,
        bbox=list(box),
        score=float(score),
        image_sha256=image_sha256,
        created_at=utcnow(),
    )
    session.add(face)
    session.flush()
    return FaceRecord.from_row(face)


def list_faces(*, session: Session, subject_id: str, owner: str | None = None) -> list[FaceRecord]:
    """A subject's faces, oldest first.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given).
    """
    _load_subject(session, subject_id, owner)
    query = (
        select(SubjectFace)
        .where(SubjectFace.subject_id == subject_id)
        .order_by(SubjectFace.created_at, SubjectFace.id)
    )
    return [FaceRecord.from_row(face) for face in session.scalars(query)]


def delete_face(*, session: Session, subject_id: str, face_id: str, owner: str | None = None) -> FaceRecord:
    """Delete one face of a subject.

    Returns:
        The face as it was.

    Raises:
        NotFound: No subject has this id (of this ``owner`` when given), or it has no face with this id.
    """
    _load_subject(session, subject_id, owner)
    face = session.scalars(
        select(SubjectFace).where(SubjectFace.id == face_id, SubjectFace.subject_id == subject_id)
    ).one_or_none()
    if face is None:
        raise NotFound(f"face {face_id!r} of subject {subject_id!r} not found",
                       details={"subject_id": subject_id, "face_id": face_id})
    record = FaceRecord.from_row(face)
    session.delete(face)
    session.flush()
    return record


def count_faces(*, session: Session) -> int:
    """Number of stored faces, of every model."""
    return int(session.scalar(select(func.count()).select_from(SubjectFace)) or 0)


def iter_all_embeddings(
    *,
    session: Session,
    dim: int,
    model: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[EmbeddingChunk]:
    """Stream every stored embedding of one dimension (and model), in chunks.

    Rows are fetched ``chunk_size`` at a time (a server-side cursor on PostgreSQL) and
    decoded with one ``np.frombuffer`` per chunk, so 100 000 faces load in well under a
    second and memory holds one chunk of rows at a time. Rows whose blob length does
    not match ``dim`` are skipped with a warning.

    Args:
        session: Open session; keep it open while iterating.
        dim: Embedding length to load; faces of other lengths are left out.
        model: Only faces of this embedding model, or every model when ``None``.
        chunk_size: Rows per chunk, at least 1.

    Yields:
        Chunks of at most ``chunk_size`` faces, in no particular order, with each face's owner.

    Raises:
        InvalidInput: ``dim`` or ``chunk_size`` out of range.
    """
    if not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise InvalidInput(f"dim must be between 1 and {MAX_EMBEDDING_DIM}, got {dim}")
    if chunk_size < 1:
        raise InvalidInput(f"chunk_size must be at least 1, got {chunk_size}")
    query = (
        select(SubjectFace.id, SubjectFace.subject_id, SubjectFace.embedding, Subject.owner)
        .join(Subject, Subject.id == SubjectFace.subject_id)
        .where(SubjectFace.dim == dim)
    )
    if model is not None:
        query = query.where(SubjectFace.model == model)
    # Core execution on the session's connection: the ORM's per-row loading would double the time.
    result = session.connection().execute(query.execution_options(yield_per=chunk_size))
    row_bytes = dim * _EMBEDDING_DTYPE.itemsize
    for rows in result.partitions():
        face_ids = [row[0] for row in rows]
        subject_ids = [row[1] for row in rows]
        blobs = [bytes(row[2]) for row in rows]  # psycopg hands back memoryview
        owners = [row[3] for row in rows]
        if any(len(blob) != row_bytes for blob in blobs):
            keep = [i for i, blob in enumerate(blobs) if len(blob) == row_bytes]
            logger.warning("skipping %d stored face(s) whose embedding is not %d float32 values",
                           len(blobs) - len(keep), dim)
            face_ids = [face_ids[i] for i in keep]
            subject_ids = [subject_ids[i] for i in keep]
            blobs = [blobs[i] for i in keep]
            owners = [owners[i] for i in keep]
        if not blobs:
            continue
        matrix = np.frombuffer(b"".join(blobs), dtype=_EMBEDDING_DTYPE).reshape(len(blobs), dim)
        yield EmbeddingChunk(face_ids, subject_ids, matrix.astype(np.float32, copy=False), owners)


def subject_names(*, session: Session, subject_ids: Sequence[str] | None = None) -> dict[str, str]:
    """Map subject ids to names, for all subjects or the given ones (unknown ids are left out)."""
    query = select(Subject.id, Subject.name)
    if subject_ids is not None:
        wanted = list(dict.fromkeys(subject_ids))
        names: dict[str, str] = {}
        # Bounded IN lists: SQLite limits bound parameters per statement.
        for start in range(0, len(wanted), 500):
            batch = wanted[start:start + 500]
            names.update({row[0]: row[1] for row in session.execute(query.where(Subject.id.in_(batch)))})
        return names
    return {subject_id: name for subject_id, name in session.connection().execute(query)}


# --- helpers ---------------------------------------------------------------------------


def _face_count() -> ScalarSelect[int]:
    # Correlated count per subject: portable, and uses ix_subject_faces_subject_id.
    return (
        select(func.count(SubjectFace.id))
        .where(SubjectFace.subject_id == Subject.id)
        .correlate(Subject)
        .scalar_subquery()
    )


def _subject_record(subject: Subject, face_count: int | None) -> SubjectRecord:
    return SubjectRecord(subject.id, subject.name, int(face_count or 0), subject.created_at, subject.updated_at,
                         subject.owner)


def _owned(query: _Query, owner: str | None) -> _Query:
    """Restrict a query over ``subjects`` to one owner's rows; ``None`` leaves it whole."""
    return query if owner is None else query.where(Subject.owner == owner)


def _subject_not_found(subject_id: str) -> NotFound:
    return NotFound(f"subject {subject_id!r} not found", details={"subject_id": subject_id})


def _load_subject(session: Session, subject_id: str, owner: str | None = None) -> Subject:
    subject = session.get(Subject, subject_id, populate_existing=True)
    # Someone else's subject reads exactly like a missing one: ids are not an existence oracle.
    if subject is None or (owner is not None and subject.owner != owner):
        raise _subject_not_found(subject_id)
    return subject


def _clean_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidInput(f"name must be a string, got {type(name).__name__}", details={"field": "name"})
    clean = name.strip()
    if not 1 <= len(clean) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"name must be 1 to {MAX_NAME_LENGTH} characters after trimming, got {len(clean)}",
                           details={"field": "name"})
    # PostgreSQL refuses NUL in text, and control characters only ever come from bugs.
    if any(unicodedata.category(char) == "Cc" for char in clean):
        raise InvalidInput("name must not contain control characters", details={"field": "name"})
    return clean


def _duplicate_name(name: str) -> InvalidInput:
    return InvalidInput(f"a subject named {name!r} already exists for this owner",
                        details={"field": "name", "validation": "unique", "name": name})


def _refuse_taken_name(session: Session, name: str, owner: str | None) -> None:
    same_owner = Subject.owner.is_(None) if owner is None else Subject.owner == owner
    if session.scalar(select(Subject.id).where(Subject.name == name, same_owner)) is not None:
        raise _duplicate_name(name)


def _flush_unique_name(session: Session, name: str) -> None:
    """Flush, turning a lost race on the unique name into the same error as the pre-check."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise _duplicate_name(name) from exc


def _as_embedding(embedding: object) -> NDArray[np.float32]:
    try:
        vector = np.asarray(embedding, dtype=_EMBEDDING_DTYPE)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"embedding must be numeric: {exc}", details={"field": "embedding"}) from exc
    if vector.ndim != 1 or not 1 <= vector.shape[0] <= MAX_EMBEDDING_DIM:
        raise InvalidInput(f"embedding must have shape (d,) with 1 <= d <= {MAX_EMBEDDING_DIM}, got {vector.shape}",
                           details={"field": "embedding"})
    if not np.isfinite(vector).all():
        raise InvalidInput("embedding must be finite", details={"field": "embedding"})
    return np.ascontiguousarray(vector)


def _as_bbox(bbox: object) -> tuple[float, float, float, float]:
    try:
        values = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bbox must be 4 numbers: {exc}", details={"field": "bbox"}) from exc
    if values.shape != (4,) or not np.isfinite(values).all():
        raise InvalidInput(f"bbox must be 4 finite numbers (x1, y1, x2, y2), got shape {values.shape}",
                           details={"field": "bbox"})
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _decode_embedding(blob: bytes, dim: int) -> NDArray[np.float32]:
    data = bytes(blob)
    if len(data) != dim * _EMBEDDING_DTYPE.itemsize:
        raise ProcessingFailed(f"stored embedding has {len(data)} bytes, expected {dim} float32 values")
    vector = np.frombuffer(data, dtype=_EMBEDDING_DTYPE).astype(np.float32)
    vector.flags.writeable = False
    return vector
