"""The recognition gallery: subjects, their example faces, and an in-memory exact index.

:class:`Gallery` owns the store access for subjects and faces and keeps an exact
nearest-neighbour index of every stored embedding in memory, loaded at start by
:func:`load_gallery` and updated on every change made through it.

Concurrency: writers (create, rename, delete, add/delete face) take one lock, commit to
the database, then publish a new immutable :class:`_Snapshot`. Readers (``search``,
``stats``) never lock: they read the current snapshot once and work on it, so they see
the index before or after a change, never half of one. Appends write into spare rows of
a growing buffer that no published snapshot can see (each snapshot is a view of its
first ``n`` rows); deletions and renames copy the arrays they change.

Owners: every subject belongs to an owner (:attr:`faceport.principal.Principal.owner`).
Methods take ``owner``: a subject of another owner is ``NotFound`` exactly like a missing
one, and searches only see that owner's faces; ``owner=None`` means every owner (admins).
The index keeps each owner's rows as an index array, so a search over one owner's faces
costs in proportion to that owner's faces, not to the whole gallery.

Changes made by other processes sharing the database are seen after :meth:`Gallery.reload`;
:class:`GallerySync` calls it within about a second of a change on another node, through Redis pub/sub
(``FACEPORT_REDIS_URL``, :class:`~faceport.services.notices.ChangeNotices`), and
:attr:`Gallery.on_change` tells it about this process's own changes.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage, Faces
from faceport.errors import FaceportError, InvalidInput, NoFace
from faceport.principal import Principal
from faceport.store import Store
from faceport.store import gallery as repo
from faceport.store.gallery import FaceRecord, SubjectRecord

if TYPE_CHECKING:
    from faceport.services.notices import ChangeNotices

if TYPE_CHECKING:
    from faceport.engine.core import FaceEngine

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 128
EMBEDDING_MODEL = "dlib_resnet"
MAX_K = 1000
_MIN_CAPACITY = 1024
# Candidate rows per requested subject in the first pass of ``search``; more passes run
# only when the best rows belong to too few distinct subjects.
_CANDIDATES_PER_K = 4
_MIN_OWNER_CAPACITY = 16

Owner = str | None  # a principal's owner id; None: pre-owner rows (admins only)


@dataclass(frozen=True, slots=True)
class Match:
    """One subject found by :meth:`Gallery.search`, represented by its closest face.

    Attributes:
        subject_id: The subject.
        subject_name: Its name when the search ran.
        face_id: Its stored face closest to the query.
        distance: Euclidean distance between the L2-normalised embeddings, in [0, 2].
        similarity: ``1 - distance / 2``, in [0, 1].
    """

    subject_id: str
    subject_name: str
    face_id: str
    distance: float
    similarity: float


def owner_scope(principal: Principal, owner: str | None = None) -> str | None:
    """The ``owner`` argument for a caller's gallery calls.

    Args:
        principal: The authenticated caller.
        owner: An owner filter the caller asked for (``?owner=``).

    Returns:
        The caller's own owner id; for admins the requested owner, or ``None`` (every owner).

    Raises:
        FaceportError: AUTH_FORBIDDEN when a non-admin asks for another owner (refused
            whatever the owner, so it reveals nothing).
    """
    if principal.is_admin:
        return owner
    if owner is not None and owner != principal.owner:
        raise FaceportError("filtering by owner needs the admin role", code="AUTH_FORBIDDEN",
                            details={"field": "owner"})
    return principal.owner


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The index as readers see it; never mutated once published.

    ``vectors``, ``face_ids`` and ``row_subject`` are row-aligned (n rows); ``row_subject``
    holds an ordinal into ``subject_ids``/``subject_names``/``subject_owners``, which may
    hold ordinals no row refers to any more (deleted subjects). ``owner_rows`` maps each
    owner with faces to its rows, ascending.
    """

    vectors: NDArray[np.float32]  # (n, d), L2-normalised
    face_ids: NDArray[np.object_]  # (n,) str
    row_subject: NDArray[np.int64]  # (n,)
    subject_ids: NDArray[np.object_]  # (s,) str
    subject_names: NDArray[np.object_]  # (s,) str
    subject_owners: NDArray[np.object_]  # (s,) str | None
    owner_rows: Mapping[Owner, NDArray[np.intp]]
    subject_counts: Mapping[Owner, int]  # subjects of each owner, with or without faces
    subject_count: int  # subjects in the gallery, with or without faces


class Gallery:
    """Subjects and example faces in the store, plus an exact in-memory search index.

    Build one with :func:`load_gallery`. Every method is thread-safe. Methods that touch
    the database block: call them from a worker thread (``await ctx.run(...)``) in async code.

    Args:
        store: The migrated store holding ``subjects`` and ``subject_faces``.
        dim: Embedding length the index holds; faces of other lengths are ignored.
        model: Embedding model name the index holds; faces of other models are ignored.
    """

    def __init__(self, store: Store, *, dim: int = EMBEDDING_DIM, model: str = EMBEDDING_MODEL) -> None:
        self.store = store
        self.dim = dim
        self.model = model
        self._lock = threading.Lock()
        # Writer-side buffers (guarded by _lock); snapshots are views of their first rows.
        self._vectors = np.zeros((_MIN_CAPACITY, dim), np.float32)
        self._face_ids = np.empty(_MIN_CAPACITY, dtype=object)
        self._row_subject = np.zeros(_MIN_CAPACITY, np.int64)
        self._subject_ids = np.empty(_MIN_CAPACITY, dtype=object)
        self._subject_names = np.empty(_MIN_CAPACITY, dtype=object)
        self._subject_owners = np.empty(_MIN_CAPACITY, dtype=object)
        self._ordinal: dict[str, int] = {}  # subject id -> its slot in _subject_ids/_subject_names
        self._slots = 0  # slots used, including those of deleted subjects
        # Per owner: a growing buffer of its rows and how many are used (views are published).
        self._owner_buffers: dict[Owner, NDArray[np.intp]] = {}
        self._owner_lengths: dict[Owner, int] = {}
        self._snapshot = _Snapshot(self._vectors[:0], self._face_ids[:0], self._row_subject[:0],
                                   self._subject_ids[:0], self._subject_names[:0], self._subject_owners[:0],
                                   {}, {}, 0)
        self.on_change: Callable[[], None] | None = None  # called after each committed change (GallerySync)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # telling other nodes is best effort: the change itself is committed
                logger.warning("could not announce a gallery change", exc_info=True)

    # --- subjects ----------------------------------------------------------------------

    def create_subject(self, name: str, *, owner: str | None) -> SubjectRecord:
        """Add a subject with no faces, belonging to ``owner``.

        Raises:
            InvalidInput: The name is empty, too long, or taken by another subject of the
                same owner (``details["field"] == "name"``).
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.create_subject(session=session, name=name, owner=owner)
            snapshot = self._snapshot
            counts = dict(snapshot.subject_counts)
            counts[owner] = counts.get(owner, 0) + 1
            self._snapshot = replace(snapshot, subject_counts=counts, subject_count=snapshot.subject_count + 1)
        logger.info("created subject %s", record.id)
        self._changed()
        return record

    def get_subject(self, subject_id: str, *, owner: str | None = None) -> SubjectRecord:
        """One subject with its face count.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
        """
        with self.store.session() as session:
            return repo.get_subject(session=session, subject_id=subject_id, owner=owner)

    def list_subjects(self, page: int = 1, size: int = 20, *,
                      owner: str | None = None) -> tuple[list[SubjectRecord], int]:
        """One page of subjects (of ``owner`` when given) ordered by name, and their total.

        Raises:
            InvalidInput: ``page`` below 1 or ``size`` out of 1..1000.
        """
        with self.store.session() as session:
            return repo.list_subjects(session=session, page=page, size=size, owner=owner)

    def rename_subject(self, subject_id: str, name: str, *, owner: str | None = None) -> SubjectRecord:
        """Rename a subject; searches report the new name from now on.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
            InvalidInput: The name is invalid or another subject's of the same owner.
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.rename_subject(session=session, subject_id=subject_id, name=name, owner=owner)
            ordinal = self._ordinal.get(subject_id)
            if ordinal is not None:
                # Copy, so searches running on the previous snapshot keep a consistent view.
                self._subject_names = self._subject_names.copy()
                self._subject_names[ordinal] = record.name
                self._publish()
        logger.info("renamed subject %s", subject_id)
        self._changed()
        return record

    def delete_subject(self, subject_id: str, *, owner: str | None = None) -> SubjectRecord:
        """Delete a subject and its faces, from the store and the index.

        Returns:
            The subject as it was; ``face_count`` is the number of faces deleted.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.delete_subject(session=session, subject_id=subject_id, owner=owner)
            ordinal = self._ordinal.pop(subject_id, None)
            n = len(self._snapshot.face_ids)
            if ordinal is not None:
                self._keep_rows(self._row_subject[:n] != ordinal)
            snapshot = self._snapshot
            counts = dict(snapshot.subject_counts)
            counts[record.owner] = counts.get(record.owner, 1) - 1
            if counts[record.owner] <= 0:
                del counts[record.owner]
            self._snapshot = replace(snapshot, subject_counts=counts, subject_count=snapshot.subject_count - 1)
        logger.info("deleted subject %s with %d face(s)", subject_id, record.face_count)
        self._changed()
        return record

    # --- faces -------------------------------------------------------------------------

    def add_face(self, subject_id: str, image_sha256: str, faces: Faces, *, owner: str | None = None) -> FaceRecord:
        """Store the one face of an image as an example of a subject, and index it.

        Args:
            subject_id: An existing subject.
            image_sha256: Identifies the source image (see :func:`image_sha256`); the image is not kept.
            faces: Detection result with embeddings ((1, dim) float32); exactly one face.
            owner: When given, the subject must be this owner's.

        Returns:
            The stored face.

        Raises:
            NoFace: ``faces`` is empty.
            InvalidInput: Several faces, no embedding, or an embedding of another length.
            NotFound: No subject has this id (of ``owner`` when given).
        """
        if len(faces) == 0:
            raise NoFace("no face detected in the image", details={"field": "image"})
        if len(faces) > 1:
            raise InvalidInput("several faces; send an image with exactly one",
                               details={"field": "image", "validation": "single_face_required",
                                        "faces": len(faces)})
        if faces.embedding is None:
            raise InvalidInput("the face has no embedding; detect with embed=True")
        vector = self._normalised(faces.embedding[0], field="embedding")
        with self._lock:
            with self.store.session() as session:
                subject = repo.get_subject(session=session, subject_id=subject_id, owner=owner)
                record = repo.add_face(session=session, subject_id=subject_id, embedding=vector, model=self.model,
                                       bbox=faces.xyxy[0].tolist(), score=float(faces.score[0]),
                                       image_sha256=image_sha256)
            self._append(record.id, subject, vector)
        logger.info("added face %s to subject %s", record.id, subject_id)
        self._changed()
        return record

    def enrol_image(self, subject_id: str, image: BGRImage, engine: FaceEngine, *,
                    detector: str | None = None, owner: str | None = None) -> FaceRecord:
        """Detect the one face of an image, embed it and add it to a subject.

        Checks the subject first and embeds only when exactly one face is found, so a
        wrong id or a group photo costs no embedding.

        Args:
            subject_id: An existing subject.
            image: (H, W, 3) uint8 BGR.
            engine: The face engine; its default detector unless ``detector`` is given.
            detector: Detector name, e.g. ``"centerface"``.
            owner: When given, the subject must be this owner's.

        Returns:
            The stored face.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
            NoFace: No face in the image.
            InvalidInput: Several faces.
        """
        self.get_subject(subject_id, owner=owner)
        faces = engine.detect(image, detector=detector)
        if len(faces) == 1:
            faces = engine.embedder().embed(image, faces)
        return self.add_face(subject_id, image_sha256(image), faces, owner=owner)

    def list_faces(self, subject_id: str, *, owner: str | None = None) -> list[FaceRecord]:
        """A subject's faces, oldest first.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
        """
        with self.store.session() as session:
            return repo.list_faces(session=session, subject_id=subject_id, owner=owner)

    def delete_face(self, subject_id: str, face_id: str, *, owner: str | None = None) -> FaceRecord:
        """Delete one face of a subject, from the store and the index.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given), or the face is not one of its faces.
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.delete_face(session=session, subject_id=subject_id, face_id=face_id, owner=owner)
            n = len(self._snapshot.face_ids)
            keep = self._face_ids[:n] != face_id
            if not keep.all():
                self._keep_rows(keep)
        logger.info("deleted face %s of subject %s", face_id, subject_id)
        self._changed()
        return record

    def subject_embeddings(self, subject_id: str, *, owner: str | None = None) -> NDArray[np.float32]:
        """A subject's indexed embeddings, for 1:1 verification against a subject.

        Returns:
            (m, dim) float32, L2-normalised, read-only; m is 0 for a subject with no faces.

        Raises:
            NotFound: No subject has this id (of ``owner`` when given).
        """
        snapshot = self._snapshot
        ordinal = self._ordinal.get(subject_id)
        if ordinal is not None and ordinal < len(snapshot.subject_ids):
            subject_owner = snapshot.subject_owners[ordinal]
            if owner is None or subject_owner == owner:
                candidates = snapshot.owner_rows.get(subject_owner, np.zeros(0, np.intp))
                rows = candidates[snapshot.row_subject[candidates] == ordinal]
                if rows.size:
                    vectors = snapshot.vectors[rows]
                    vectors.flags.writeable = False
                    return vectors
        self.get_subject(subject_id, owner=owner)
        return np.zeros((0, self.dim), np.float32)

    # --- search ------------------------------------------------------------------------

    def search(self, embedding: NDArray[np.float32], k: int = 5, threshold: float | None = None, *,
               owner: str | None = None) -> list[Match]:
        """The ``k`` subjects closest to an embedding, each represented by its closest face.

        Exact: one matrix-vector product over the faces searched, then a partial sort
        (``np.argpartition``) of the best rows; a subject with several faces counts once.

        Args:
            embedding: (dim,) float32 query, normalised here.
            k: Subjects to return, 1 to 1000.
            threshold: Largest distance to report (e.g. ``EngineOptions.verify_threshold``
                = 0.42); ``None`` reports the ``k`` nearest whatever their distance.
            owner: Search only this owner's faces (the product then runs over those rows
                alone); ``None``: every owner's.

        Returns:
            Up to ``k`` matches, nearest first (ties by face id); fewer when the gallery
            holds fewer subjects with faces, or fewer lie within ``threshold``.

        Raises:
            InvalidInput: The embedding is not (dim,) finite, ``k`` or ``threshold`` out of range.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
            raise InvalidInput(f"k must be an integer between 1 and {MAX_K}, got {k!r}", details={"field": "k"})
        if threshold is not None and not 0.0 <= threshold <= 2.0:
            raise InvalidInput(f"threshold must be between 0 and 2, got {threshold}", details={"field": "threshold"})
        query = self._normalised(embedding, field="embedding")
        snapshot = self._snapshot
        n = len(snapshot.face_ids)
        vectors, face_ids, row_subject = snapshot.vectors, snapshot.face_ids, snapshot.row_subject
        if owner is not None:
            owned = snapshot.owner_rows.get(owner)
            if owned is None:
                return []
            if owned.shape[0] < n:  # one owner's rows only: the work follows their count, not the gallery's
                vectors, face_ids, row_subject = vectors[owned], face_ids[owned], row_subject[owned]
        if vectors.shape[0] == 0:
            return []
        scores = vectors @ query  # cosine similarity; distance**2 = 2 - 2 * score
        rows = _best_rows_per_subject(face_ids, row_subject, scores, k)
        distances = np.linalg.norm(vectors[rows] - query, axis=1)  # exact, not via 2 - 2 * score
        matches = []
        for row, distance in zip(rows.tolist(), distances.tolist(), strict=True):
            if threshold is not None and distance > threshold:
                continue
            subject = int(row_subject[row])
            matches.append(Match(subject_id=str(snapshot.subject_ids[subject]),
                                 subject_name=str(snapshot.subject_names[subject]),
                                 face_id=str(face_ids[row]), distance=float(distance),
                                 similarity=float(np.clip(1.0 - distance / 2.0, 0.0, 1.0))))
        return matches

    @property
    def size(self) -> int:
        """Faces in the index."""
        return len(self._snapshot.face_ids)

    def stats(self, *, owner: str | None = None) -> dict[str, int]:
        """``{"subjects": <subjects, with or without faces>, "faces": <indexed faces>}``, from one snapshot.

        Args:
            owner: Count only this owner's; ``None``: the whole gallery.
        """
        snapshot = self._snapshot
        if owner is None:
            return {"subjects": snapshot.subject_count, "faces": len(snapshot.face_ids)}
        rows = snapshot.owner_rows.get(owner)
        return {"subjects": snapshot.subject_counts.get(owner, 0), "faces": 0 if rows is None else len(rows)}

    def reload(self) -> None:
        """Rebuild the index from the store (after bulk imports or changes by other processes)."""
        started = time.perf_counter()
        with self._lock:
            with self.store.session() as session:
                subject_counts = repo.count_subjects_by_owner(session=session)
                stored_faces = repo.count_faces(session=session)
                chunks = list(repo.iter_all_embeddings(session=session, dim=self.dim, model=self.model))
                names = repo.subject_names(session=session)
            self._rebuild(chunks, names, subject_counts)
            subject_count = self._snapshot.subject_count
            faces = len(self._snapshot.face_ids)
        if stored_faces > faces:
            logger.warning("%d stored face(s) are not %s embeddings of length %d and are not searchable",
                           stored_faces - faces, self.model, self.dim)
        logger.info("gallery loaded: %d subject(s), %d face(s) in %.2f s", subject_count, faces,
                    time.perf_counter() - started)

    # --- internals: run under self._lock ---------------------------------------------------

    def _normalised(self, embedding: NDArray[np.float32], *, field: str) -> NDArray[np.float32]:
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise InvalidInput(f"{field} must have shape ({self.dim},), got {vector.shape}", details={"field": field})
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm < 1e-12:
            raise InvalidInput(f"{field} must be finite and non-zero", details={"field": field})
        return vector / np.float32(norm)

    def _publish(self, n: int | None = None, changed: Owner | None = None, *, all_owners: bool = False) -> None:
        """Publish views of the first ``n`` rows (default: as many as now) and of the owners' row lists.

        Only ``changed``'s row list is re-sliced unless ``all_owners``; the others are shared
        with the previous snapshot.
        """
        snapshot = self._snapshot
        n = len(snapshot.face_ids) if n is None else n
        if all_owners:
            owner_rows = {owner: buffer[: self._owner_lengths[owner]] for owner, buffer in self._owner_buffers.items()}
        else:
            owner_rows = dict(snapshot.owner_rows)
            if changed in self._owner_buffers:
                owner_rows[changed] = self._owner_buffers[changed][: self._owner_lengths[changed]]
        s = self._slots
        self._snapshot = _Snapshot(self._vectors[:n], self._face_ids[:n], self._row_subject[:n],
                                   self._subject_ids[:s], self._subject_names[:s], self._subject_owners[:s],
                                   owner_rows, snapshot.subject_counts, snapshot.subject_count)

    def _append(self, face_id: str, subject: SubjectRecord, vector: NDArray[np.float32]) -> None:
        """Add one row. Writes only rows beyond every published snapshot, then publishes."""
        n = len(self._snapshot.face_ids)
        ordinal = self._ordinal.get(subject.id)
        if ordinal is None:
            ordinal = self._slots
            if ordinal == self._subject_ids.shape[0]:
                self._subject_ids = _grown(self._subject_ids, ordinal)
                self._subject_names = _grown(self._subject_names, ordinal)
                self._subject_owners = _grown(self._subject_owners, ordinal)
            self._subject_ids[ordinal] = subject.id
            self._subject_names[ordinal] = subject.name
            self._subject_owners[ordinal] = subject.owner
            self._ordinal[subject.id] = ordinal
            self._slots = ordinal + 1
        if n == self._vectors.shape[0]:
            self._vectors = _grown(self._vectors, n)
            self._face_ids = _grown(self._face_ids, n)
            self._row_subject = _grown(self._row_subject, n)
        self._vectors[n] = vector
        self._face_ids[n] = face_id
        self._row_subject[n] = ordinal
        owner = self._subject_owners[ordinal]
        used = self._owner_lengths.get(owner, 0)
        buffer = self._owner_buffers.get(owner)
        if buffer is None or used == buffer.shape[0]:
            buffer = _into(buffer[:used] if buffer is not None else np.zeros(0, np.intp),
                           max(_MIN_OWNER_CAPACITY, 2 * used))
            self._owner_buffers[owner] = buffer
        buffer[used] = n
        self._owner_lengths[owner] = used + 1
        self._publish(n + 1, owner)

    def _keep_rows(self, keep: NDArray[np.bool_]) -> None:
        """Drop rows into fresh buffers (copy-on-write), then publish."""
        n_keep = int(keep.sum())
        capacity = _capacity_for(n_keep)
        n = keep.shape[0]
        self._vectors = _into(self._vectors[:n][keep], capacity)
        self._face_ids = _into(self._face_ids[:n][keep], capacity)
        self._row_subject = _into(self._row_subject[:n][keep], capacity)
        self._group_rows_by_owner(n_keep)
        self._publish(n_keep, all_owners=True)

    def _group_rows_by_owner(self, n: int) -> None:
        """Rebuild every owner's row list from the first ``n`` rows (fresh buffers, old views untouched)."""
        owners = self._subject_owners[: self._slots]
        keys = list(dict.fromkeys(owners.tolist()))
        code_of = {owner: i for i, owner in enumerate(keys)}
        subject_code = np.fromiter((code_of[owner] for owner in owners.tolist()), np.int64, len(owners))
        row_code = subject_code[self._row_subject[:n]] if n else np.zeros(0, np.int64)
        order = np.argsort(row_code, kind="stable").astype(np.intp)  # stable: each owner's rows stay ascending
        codes, starts, counts = np.unique(row_code[order], return_index=True, return_counts=True)
        self._owner_buffers, self._owner_lengths = {}, {}
        for code, start, count in zip(codes.tolist(), starts.tolist(), counts.tolist(), strict=True):
            owner = keys[code]
            self._owner_buffers[owner] = _into(order[start:start + count], max(_MIN_OWNER_CAPACITY, count + count // 8))
            self._owner_lengths[owner] = count

    def _rebuild(self, chunks: list[repo.EmbeddingChunk], names: dict[str, str],
                 subject_counts: dict[Owner, int]) -> None:
        face_ids = [face_id for chunk in chunks for face_id in chunk.face_ids]
        subject_ids = [subject_id for chunk in chunks for subject_id in chunk.subject_ids]
        owner_of = {subject_id: owner for chunk in chunks
                    for subject_id, owner in zip(chunk.subject_ids, chunk.owners, strict=True)}
        vectors = (np.concatenate([chunk.embeddings for chunk in chunks]) if chunks
                   else np.zeros((0, self.dim), np.float32))
        # A subject deleted between reading its faces and reading the names: drop its rows.
        known = np.fromiter((subject_id in names for subject_id in subject_ids), bool, len(subject_ids))
        ordinal: dict[str, int] = {}
        row_subject = np.fromiter((ordinal.setdefault(subject_id, len(ordinal)) for subject_id in subject_ids),
                                  np.int64, len(subject_ids))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        valid = known & np.isfinite(norms[:, 0]) & (norms[:, 0] > 1e-12)
        n = int(valid.sum())
        capacity = _capacity_for(n)
        self._vectors = _into((vectors[valid] / norms[valid]).astype(np.float32), capacity)
        self._face_ids = _into(np.array(face_ids, dtype=object)[valid] if face_ids
                               else np.empty(0, dtype=object), capacity)
        self._row_subject = _into(row_subject[valid], capacity)
        slots = len(ordinal)
        slot_capacity = _capacity_for(slots)
        self._subject_ids = _into(_objects(list(ordinal)), slot_capacity)
        self._subject_names = _into(_objects([names.get(s, "") for s in ordinal]), slot_capacity)
        self._subject_owners = _into(_objects([owner_of[s] for s in ordinal]), slot_capacity)
        self._ordinal = {subject_id: i for subject_id, i in ordinal.items() if subject_id in names}
        self._slots = slots
        self._group_rows_by_owner(n)
        self._snapshot = replace(self._snapshot, subject_counts=dict(subject_counts),
                                 subject_count=sum(subject_counts.values()))
        self._publish(n, all_owners=True)


def _best_rows_per_subject(face_ids: NDArray[np.object_], row_subject: NDArray[np.int64],
                           scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Rows of the ``k`` best subjects' best faces, best first (rows of the arrays given).

    In rows sorted by score, a subject's first row is its best face, and subjects
    appear in the order of their best faces; so the first ``k`` distinct subjects of a
    sorted top-``m`` prefix are the answer as soon as it holds ``k`` of them. Rows
    tied with the ``m``-th score are all kept, so ties never depend on row order.
    """
    n = scores.shape[0]
    m = min(n, k * _CANDIDATES_PER_K)
    while True:
        if m < n:
            kth = scores[np.argpartition(scores, n - m)[n - m]]
            candidates = np.flatnonzero(scores >= kth)
        else:
            candidates = np.arange(n)
        order = candidates[np.lexsort((face_ids[candidates].astype(str), -scores[candidates]))]
        _, first = np.unique(row_subject[order], return_index=True)
        if len(first) >= k or m >= n:
            return order[np.sort(first)[:k]]
        m = min(n, m * _CANDIDATES_PER_K)


def _objects(values: list[object]) -> NDArray[np.object_]:
    """A 1-D object array of ``values`` (``np.array`` would make strings of a list of str)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _capacity_for(rows: int) -> int:
    """Rows to allocate for ``rows`` rows: 1/8 spare, so appends rarely copy and memory stays near the data."""
    return max(_MIN_CAPACITY, rows + rows // 8)


def _grown(buffer: NDArray, used: int) -> NDArray:  # type: ignore[type-arg]
    """A buffer twice as large holding the first ``used`` rows; the old one stays untouched."""
    return _into(buffer[:used], max(_MIN_CAPACITY, buffer.shape[0] * 2))


def _into(rows: NDArray, capacity: int) -> NDArray:  # type: ignore[type-arg]
    """A new buffer of ``capacity`` rows starting with ``rows``."""
    shape = (capacity, *rows.shape[1:])
    buffer = np.empty(shape, dtype=rows.dtype) if rows.dtype == object else np.zeros(shape, dtype=rows.dtype)
    buffer[: rows.shape[0]] = rows
    return buffer


def image_sha256(image: BGRImage) -> str:
    """Hex sha256 of an image's decoded pixels ((H, W, 3) uint8 BGR, row-major).

    The same picture sent as a file or as base64 gives the same hash.
    """
    return hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()


class GallerySync:
    """Keeps this process's gallery index in step with other processes (:class:`ChangeNotices` topic ``gallery``).

    Each committed change here is announced; every other process reloads its index from the database
    (bursts coalesce into one reload; after a lost Redis connection it reloads once).
    """

    TOPIC = "gallery"

    def __init__(self, gallery: Gallery, notices: ChangeNotices) -> None:
        self.gallery = gallery
        self.notices = notices
        gallery.on_change = lambda: notices.announce(self.TOPIC)
        notices.watch(self.TOPIC, gallery.reload)

    @property
    def reloads(self) -> int:
        return self.notices.reloads.get(self.TOPIC, 0)


def load_gallery(store: Store, *, dim: int = EMBEDDING_DIM, model: str = EMBEDDING_MODEL) -> Gallery:
    """Build the gallery and load every stored embedding of ``model`` and ``dim`` into its index.

    Args:
        store: The migrated store.
        dim: Embedding length (128 for dlib's ResNet).
        model: Embedding model name whose faces are searchable.

    Returns:
        The loaded gallery.
    """
    gallery = Gallery(store, dim=dim, model=model)
    gallery.reload()
    return gallery
