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

Changes made by other processes sharing the database are not seen until :meth:`Gallery.reload`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput, NoFace
from faceport.store import Store
from faceport.store import gallery as repo
from faceport.store.gallery import FaceRecord, SubjectRecord

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


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The index as readers see it; never mutated once published.

    ``vectors``, ``face_ids`` and ``owners`` are row-aligned (n rows); ``owners`` holds
    an ordinal into ``subject_ids``/``subject_names``, which may hold ordinals no row
    refers to any more (deleted subjects).
    """

    vectors: NDArray[np.float32]  # (n, d), L2-normalised
    face_ids: NDArray[np.object_]  # (n,) str
    owners: NDArray[np.int64]  # (n,)
    subject_ids: NDArray[np.object_]  # (s,) str
    subject_names: NDArray[np.object_]  # (s,) str
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
        self._owners = np.zeros(_MIN_CAPACITY, np.int64)
        self._subject_ids = np.empty(_MIN_CAPACITY, dtype=object)
        self._subject_names = np.empty(_MIN_CAPACITY, dtype=object)
        self._ordinal: dict[str, int] = {}  # subject id -> its slot in _subject_ids/_subject_names
        self._slots = 0  # slots used, including those of deleted subjects
        self._snapshot = self._view(0, 0, 0)

    # --- subjects ----------------------------------------------------------------------

    def create_subject(self, name: str) -> SubjectRecord:
        """Add a subject with no faces.

        Raises:
            InvalidInput: The name is empty, too long, or taken (``details["field"] == "name"``).
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.create_subject(session=session, name=name)
            snapshot = self._snapshot
            self._snapshot = replace(snapshot, subject_count=snapshot.subject_count + 1)
        logger.info("created subject %s", record.id)
        return record

    def get_subject(self, subject_id: str) -> SubjectRecord:
        """One subject with its face count.

        Raises:
            NotFound: No subject has this id.
        """
        with self.store.session() as session:
            return repo.get_subject(session=session, subject_id=subject_id)

    def list_subjects(self, page: int = 1, size: int = 20) -> tuple[list[SubjectRecord], int]:
        """One page of subjects ordered by name, and the total number of subjects.

        Raises:
            InvalidInput: ``page`` below 1 or ``size`` out of 1..1000.
        """
        with self.store.session() as session:
            return repo.list_subjects(session=session, page=page, size=size)

    def rename_subject(self, subject_id: str, name: str) -> SubjectRecord:
        """Rename a subject; searches report the new name from now on.

        Raises:
            NotFound: No subject has this id.
            InvalidInput: The name is invalid or another subject's.
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.rename_subject(session=session, subject_id=subject_id, name=name)
            ordinal = self._ordinal.get(subject_id)
            if ordinal is not None:
                # Copy, so searches running on the previous snapshot keep a consistent view.
                self._subject_names = self._subject_names.copy()
                self._subject_names[ordinal] = record.name
                self._publish()
        logger.info("renamed subject %s", subject_id)
        return record

    def delete_subject(self, subject_id: str) -> SubjectRecord:
        """Delete a subject and its faces, from the store and the index.

        Returns:
            The subject as it was; ``face_count`` is the number of faces deleted.

        Raises:
            NotFound: No subject has this id.
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.delete_subject(session=session, subject_id=subject_id)
            ordinal = self._ordinal.pop(subject_id, None)
            n = len(self._snapshot.face_ids)
            if ordinal is not None:
                self._keep_rows(self._owners[:n] != ordinal)
            self._snapshot = replace(self._snapshot, subject_count=self._snapshot.subject_count - 1)
        logger.info("deleted subject %s with %d face(s)", subject_id, record.face_count)
        return record

    # --- faces -------------------------------------------------------------------------

    def add_face(self, subject_id: str, image_sha256: str, faces: Faces) -> FaceRecord:
        """Store the one face of an image as an example of a subject, and index it.

        Args:
            subject_id: An existing subject.
            image_sha256: Identifies the source image (see :func:`image_sha256`); the image is not kept.
            faces: Detection result with embeddings ((1, dim) float32); exactly one face.

        Returns:
            The stored face.

        Raises:
            NoFace: ``faces`` is empty.
            InvalidInput: Several faces, no embedding, or an embedding of another length.
            NotFound: No subject has this id.
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
                subject = repo.get_subject(session=session, subject_id=subject_id)
                record = repo.add_face(session=session, subject_id=subject_id, embedding=vector, model=self.model,
                                       bbox=faces.xyxy[0].tolist(), score=float(faces.score[0]),
                                       image_sha256=image_sha256)
            self._append(record.id, subject_id, subject.name, vector)
        logger.info("added face %s to subject %s", record.id, subject_id)
        return record

    def enrol_image(self, subject_id: str, image: BGRImage, engine: FaceEngine, *,
                    detector: str | None = None) -> FaceRecord:
        """Detect the one face of an image, embed it and add it to a subject.

        Checks the subject first and embeds only when exactly one face is found, so a
        wrong id or a group photo costs no embedding.

        Args:
            subject_id: An existing subject.
            image: (H, W, 3) uint8 BGR.
            engine: The face engine; its default detector unless ``detector`` is given.
            detector: Detector name, e.g. ``"centerface"``.

        Returns:
            The stored face.

        Raises:
            NotFound: No subject has this id.
            NoFace: No face in the image.
            InvalidInput: Several faces.
        """
        self.get_subject(subject_id)
        faces = engine.detect(image, detector=detector)
        if len(faces) == 1:
            faces = engine.embedder().embed(image, faces)
        return self.add_face(subject_id, image_sha256(image), faces)

    def list_faces(self, subject_id: str) -> list[FaceRecord]:
        """A subject's faces, oldest first.

        Raises:
            NotFound: No subject has this id.
        """
        with self.store.session() as session:
            return repo.list_faces(session=session, subject_id=subject_id)

    def delete_face(self, subject_id: str, face_id: str) -> FaceRecord:
        """Delete one face of a subject, from the store and the index.

        Raises:
            NotFound: No subject has this id, or the face is not one of its faces.
        """
        with self._lock:
            with self.store.session() as session:
                record = repo.delete_face(session=session, subject_id=subject_id, face_id=face_id)
            n = len(self._snapshot.face_ids)
            keep = self._face_ids[:n] != face_id
            if not keep.all():
                self._keep_rows(keep)
        logger.info("deleted face %s of subject %s", face_id, subject_id)
        return record

    def subject_embeddings(self, subject_id: str) -> NDArray[np.float32]:
        """A subject's indexed embeddings, for 1:1 verification against a subject.

        Returns:
            (m, dim) float32, L2-normalised, read-only; m is 0 for a subject with no faces.

        Raises:
            NotFound: No subject has this id.
        """
        snapshot = self._snapshot
        ordinal = self._ordinal.get(subject_id)
        if ordinal is not None and ordinal < len(snapshot.subject_ids):
            rows = np.flatnonzero(snapshot.owners == ordinal)
            if rows.size:
                vectors = snapshot.vectors[rows]
                vectors.flags.writeable = False
                return vectors
        self.get_subject(subject_id)
        return np.zeros((0, self.dim), np.float32)

    # --- search ------------------------------------------------------------------------

    def search(self, embedding: NDArray[np.float32], k: int = 5, threshold: float | None = None) -> list[Match]:
        """The ``k`` subjects closest to an embedding, each represented by its closest face.

        Exact: one matrix-vector product over every indexed face, then a partial sort
        (``np.argpartition``) of the best rows; a subject with several faces counts once.

        Args:
            embedding: (dim,) float32 query, normalised here.
            k: Subjects to return, 1 to 1000.
            threshold: Largest distance to report (e.g. ``EngineOptions.verify_threshold``
                = 0.42); ``None`` reports the ``k`` nearest whatever their distance.

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
        if n == 0:
            return []
        scores = snapshot.vectors @ query  # cosine similarity; distance**2 = 2 - 2 * score
        rows = self._best_rows_per_subject(snapshot, scores, k)
        distances = np.linalg.norm(snapshot.vectors[rows] - query, axis=1)  # exact, not via 2 - 2 * score
        matches = []
        for row, distance in zip(rows.tolist(), distances.tolist(), strict=True):
            if threshold is not None and distance > threshold:
                continue
            owner = int(snapshot.owners[row])
            matches.append(Match(subject_id=str(snapshot.subject_ids[owner]),
                                 subject_name=str(snapshot.subject_names[owner]),
                                 face_id=str(snapshot.face_ids[row]), distance=float(distance),
                                 similarity=float(np.clip(1.0 - distance / 2.0, 0.0, 1.0))))
        return matches

    @property
    def size(self) -> int:
        """Faces in the index."""
        return len(self._snapshot.face_ids)

    def stats(self) -> dict[str, int]:
        """``{"subjects": <subjects, with or without faces>, "faces": <indexed faces>}``, from one snapshot."""
        snapshot = self._snapshot
        return {"subjects": snapshot.subject_count, "faces": len(snapshot.face_ids)}

    def reload(self) -> None:
        """Rebuild the index from the store (after bulk imports or changes by other processes)."""
        started = time.perf_counter()
        with self._lock:
            with self.store.session() as session:
                subject_count = repo.count_subjects(session=session)
                stored_faces = repo.count_faces(session=session)
                chunks = list(repo.iter_all_embeddings(session=session, dim=self.dim, model=self.model))
                names = repo.subject_names(session=session)
            self._rebuild(chunks, names, subject_count)
            faces = len(self._snapshot.face_ids)
        if stored_faces > faces:
            logger.warning("%d stored face(s) are not %s embeddings of length %d and are not searchable",
                           stored_faces - faces, self.model, self.dim)
        logger.info("gallery loaded: %d subject(s), %d face(s) in %.2f s", subject_count, faces,
                    time.perf_counter() - started)

    # --- internals: the readers' helper reads only its snapshot; the rest run under self._lock

    @staticmethod
    def _best_rows_per_subject(snapshot: _Snapshot, scores: NDArray[np.float32], k: int) -> NDArray[np.intp]:
        """Rows of the ``k`` best subjects' best faces, best first.

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
            face_ids = snapshot.face_ids[candidates]
            order = candidates[np.lexsort((face_ids.astype(str), -scores[candidates]))]
            _, first = np.unique(snapshot.owners[order], return_index=True)
            if len(first) >= k or m >= n:
                return order[np.sort(first)[:k]]
            m = min(n, m * _CANDIDATES_PER_K)

    def _normalised(self, embedding: NDArray[np.float32], *, field: str) -> NDArray[np.float32]:
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise InvalidInput(f"{field} must have shape ({self.dim},), got {vector.shape}", details={"field": field})
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm < 1e-12:
            raise InvalidInput(f"{field} must be finite and non-zero", details={"field": field})
        return vector / np.float32(norm)

    def _view(self, n: int, s: int, subject_count: int) -> _Snapshot:
        return _Snapshot(self._vectors[:n], self._face_ids[:n], self._owners[:n], self._subject_ids[:s],
                         self._subject_names[:s], subject_count)

    def _publish(self) -> None:
        snapshot = self._snapshot
        self._snapshot = self._view(len(snapshot.face_ids), self._slots, snapshot.subject_count)

    def _append(self, face_id: str, subject_id: str, subject_name: str, vector: NDArray[np.float32]) -> None:
        """Add one row. Writes only rows beyond every published snapshot, then publishes."""
        n = len(self._snapshot.face_ids)
        ordinal = self._ordinal.get(subject_id)
        if ordinal is None:
            ordinal = self._slots
            if ordinal == self._subject_ids.shape[0]:
                self._subject_ids = _grown(self._subject_ids, ordinal)
                self._subject_names = _grown(self._subject_names, ordinal)
            self._subject_ids[ordinal] = subject_id
            self._subject_names[ordinal] = subject_name
            self._ordinal[subject_id] = ordinal
            self._slots = ordinal + 1
        if n == self._vectors.shape[0]:
            self._vectors = _grown(self._vectors, n)
            self._face_ids = _grown(self._face_ids, n)
            self._owners = _grown(self._owners, n)
        self._vectors[n] = vector
        self._face_ids[n] = face_id
        self._owners[n] = ordinal
        self._snapshot = self._view(n + 1, self._slots, self._snapshot.subject_count)

    def _keep_rows(self, keep: NDArray[np.bool_]) -> None:
        """Drop rows into fresh buffers (copy-on-write), then publish."""
        n_keep = int(keep.sum())
        capacity = _capacity_for(n_keep)
        n = keep.shape[0]
        self._vectors = _into(self._vectors[:n][keep], capacity)
        self._face_ids = _into(self._face_ids[:n][keep], capacity)
        self._owners = _into(self._owners[:n][keep], capacity)
        self._snapshot = self._view(n_keep, self._slots, self._snapshot.subject_count)

    def _rebuild(self, chunks: list[repo.EmbeddingChunk], names: dict[str, str], subject_count: int) -> None:
        face_ids = [face_id for chunk in chunks for face_id in chunk.face_ids]
        subject_ids = [subject_id for chunk in chunks for subject_id in chunk.subject_ids]
        vectors = (np.concatenate([chunk.embeddings for chunk in chunks]) if chunks
                   else np.zeros((0, self.dim), np.float32))
        # A subject deleted between reading its faces and reading the names: drop its rows.
        known = np.fromiter((subject_id in names for subject_id in subject_ids), bool, len(subject_ids))
        ordinal: dict[str, int] = {}
        owners = np.fromiter((ordinal.setdefault(subject_id, len(ordinal)) for subject_id in subject_ids),
                             np.int64, len(subject_ids))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        valid = known & np.isfinite(norms[:, 0]) & (norms[:, 0] > 1e-12)
        n = int(valid.sum())
        capacity = _capacity_for(n)
        self._vectors = _into((vectors[valid] / norms[valid]).astype(np.float32), capacity)
        self._face_ids = _into(np.array(face_ids, dtype=object)[valid] if face_ids
                               else np.empty(0, dtype=object), capacity)
        self._owners = _into(owners[valid], capacity)
        slots = len(ordinal)
        slot_capacity = _capacity_for(slots)
        self._subject_ids = _into(np.array(list(ordinal), dtype=object) if slots else np.empty(0, dtype=object),
                                  slot_capacity)
        self._subject_names = _into(np.array([names.get(s, "") for s in ordinal], dtype=object) if slots
                                    else np.empty(0, dtype=object), slot_capacity)
        self._ordinal = {subject_id: i for subject_id, i in ordinal.items() if subject_id in names}
        self._slots = slots
        self._snapshot = self._view(n, slots, subject_count)


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
