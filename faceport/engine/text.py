"""Text in images: PP-OCRv4 detection (DB), recognition (CTC) and personal-data spotting.

The ONNX files come from ``rapidocr_onnxruntime==1.4.4`` (``ppocr_v4_det``, ``ppocr_v4_rec``,
``ppocr_cls``); pre- and post-processing are our own (no second OpenCV, no paddle). The
recognition alphabet is read from the rec model's metadata (key ``character``): CTC blank
is index 0, then the listed characters, then a space.

Personal data (:func:`find_pii`): regular expressions for e-mail addresses, phone numbers,
card numbers (Luhn-checked), dates of birth, ID-like numbers and street addresses, plus
spaCy NER (``PERSON``) over the recognised lines when a spaCy pipeline is given.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage

log = logging.getLogger(__name__)

__all__ = ["PII_KINDS", "PiiMatch", "TextLine", "TextReader", "find_pii", "luhn_ok"]

_MEAN: Final = np.array([0.485, 0.456, 0.406], np.float32)
_STD: Final = np.array([0.229, 0.224, 0.225], np.float32)
REC_HEIGHT: Final = 48
PII_KINDS: Final = ("name", "email", "phone", "card", "address", "id", "date")


@dataclass(frozen=True, slots=True)
class TextLine:
    """One detected text line.

    Attributes:
        quad: (4, 2) float32 corners in pixels, clockwise from top-left.
        score: Detection score (mean DB probability inside the box), 0..1.
        text: Recognised text ("" when recognition was not run).
        confidence: Mean recognition probability of the kept characters, 0..1.
    """

    quad: NDArray[np.float32]
    score: float
    text: str = ""
    confidence: float = 0.0

    @property
    def xyxy(self) -> NDArray[np.float32]:
        """Axis-aligned box ``[x1, y1, x2, y2]``."""
        return np.array([*self.quad.min(axis=0), *self.quad.max(axis=0)], np.float32)


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """Personal data inside a text: ``text[start:end]`` is of kind ``kind``."""

    kind: str
    start: int
    end: int
    value: str
    score: float = 1.0  # how sure the match is personal data (see find_pii), 0..1


def _unclip(box: NDArray[np.float32], ratio: float) -> NDArray[np.float32]:
    """Grow a quad by DB's rule: offset = area * ratio / perimeter (on all sides)."""
    area = cv2.contourArea(box)
    length = cv2.arcLength(box, True)
    if length <= 0:
        return box
    distance = area * ratio / length
    rect = cv2.minAreaRect(box)
    (cx, cy), (w, h), angle = rect
    return cv2.boxPoints(((cx, cy), (w + 2 * distance, h + 2 * distance), angle)).astype(np.float32)


def _order(quad: NDArray[np.float32]) -> NDArray[np.float32]:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], np.float32)


class TextReader:
    """PP-OCRv4 text detection and recognition over BGR images.

    Args:
        det: The detection session (input ``(1, 3, H, W)`` float32, output ``(1, 1, H, W)`` probabilities).
        rec: The recognition session (input ``(n, 3, 48, W)``, output ``(n, T, len(alphabet))`` softmax), or None.
        alphabet: Recognition characters (without blank and space); required with ``rec``.
        cls: Optional orientation session (180° flip classifier), input ``(n, 3, 48, 192)``.
        max_side: Longer side of the detector input (rounded to multiples of 32).
        det_threshold: Pixel probability threshold of the DB map.
        box_threshold: Least mean probability inside a kept box.
        unclip_ratio: DB box growth.
    """

    def __init__(self, det: Session, rec: Session | None = None, alphabet: Sequence[str] = (), *,
                 cls: Session | None = None, max_side: int = 960, det_threshold: float = 0.3,
                 box_threshold: float = 0.5, unclip_ratio: float = 1.6) -> None:
        self.det = det
        self.rec = rec
        self.cls = cls
        self.alphabet = ["", *alphabet, " "]
        self.max_side = max_side
        self.det_threshold = det_threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio

    # ---- detection ------------------------------------------------------------------------------
    def detect(self, image: BGRImage, *, max_side: int | None = None) -> list[TextLine]:
        """Find text lines.

        Args:
            image: (H, W, 3) uint8 BGR.
            max_side: Overrides the detector input size for this call.

        Returns:
            Lines, top to bottom; empty when there is no text.
        """
        h, w = image.shape[:2]
        side = max_side or self.max_side
        scale = min(1.0, side / max(h, w)) if max(h, w) > side else max(1.0, 320 / max(h, w))
        nw = max(32, round(w * scale / 32) * 32)
        nh = max(32, round(h * scale / 32) * 32)
        resized = cv2.resize(image, (nw, nh))
        rgb = resized[:, :, ::-1].astype(np.float32) / 255.0
        blob = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)[None].astype(np.float32)
        prob = self.det.run({self.det.inputs[0].name: blob})[0][0, 0]
        mask = (prob > self.det_threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = w / nw, h / nh
        lines: list[TextLine] = []
        for contour in contours[:1000]:
            if len(contour) < 3:
                continue
            rect = cv2.minAreaRect(contour)
            if min(rect[1]) < 3:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            region = np.zeros((bh, bw), np.uint8)
            cv2.fillPoly(region, [contour.reshape(-1, 2) - [x, y]], 1)
            score = float(cv2.mean(prob[y:y + bh, x:x + bw], region)[0])
            if score < self.box_threshold:
                continue
            quad = _unclip(cv2.boxPoints(rect).astype(np.float32), self.unclip_ratio)
            if min(cv2.minAreaRect(quad)[1]) < 5:
                continue
            quad[:, 0] = np.clip(quad[:, 0] * sx, 0, w - 1)
            quad[:, 1] = np.clip(quad[:, 1] * sy, 0, h - 1)
            lines.append(TextLine(_order(quad), score))
        lines.sort(key=lambda line: (float(line.quad[0, 1]), float(line.quad[0, 0])))
        return lines

    # ---- recognition ----------------------------------------------------------------------------
    @staticmethod
    def crop(image: BGRImage, quad: NDArray[np.float32]) -> BGRImage:
        """Perspective-rectified crop of a quad; tall crops are turned upright."""
        tl, tr, br, bl = quad
        width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
        height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
        width, height = max(width, 1), max(height, 1)
        dst = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
        out = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE,
                                  flags=cv2.INTER_CUBIC)
        if height / width >= 1.5:
            out = np.rot90(out)
        return np.ascontiguousarray(out)

    def _upright(self, crops: list[BGRImage]) -> list[BGRImage]:
        if self.cls is None or not crops:
            return crops
        batch = np.stack([self._norm(c, 48, 192) for c in crops])
        probs = self.cls.run({self.cls.inputs[0].name: batch})[0]
        return [np.ascontiguousarray(c[::-1, ::-1]) if p[1] > 0.9 else c for c, p in zip(crops, probs, strict=True)]

    @staticmethod
    def _norm(crop: BGRImage, height: int, width: int) -> NDArray[np.float32]:
        h, w = crop.shape[:2]
        new_w = min(width, max(1, int(np.ceil(height * w / h))))
        resized = cv2.resize(crop, (new_w, height)).astype(np.float32)
        out = np.zeros((3, height, width), np.float32)
        out[:, :, :new_w] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
        return out

    def recognize_crops(self, crops: Sequence[BGRImage], *, batch: int = 8) -> list[tuple[str, float]]:
        """Recognise text crops (BGR, one line each).

        Returns:
            ``(text, confidence)`` per crop, in order.

        Raises:
            ValueError: the reader has no recognition model.
        """
        if self.rec is None:
            raise ValueError("this TextReader has no recognition model")
        items = self._upright(list(crops))
        order = np.argsort([c.shape[1] / max(1, c.shape[0]) for c in items])
        results: list[tuple[str, float]] = [("", 0.0)] * len(items)
        for start in range(0, len(items), batch):
            idx = order[start:start + batch]
            ratio = max(items[i].shape[1] / max(1, items[i].shape[0]) for i in idx)
            width = max(320, int(np.ceil(REC_HEIGHT * ratio / 8)) * 8)
            blob = np.stack([self._norm(items[i], REC_HEIGHT, width) for i in idx])
            probs = self.rec.run({self.rec.inputs[0].name: blob})[0]
            for row, i in enumerate(idx):
                results[int(i)] = self._ctc(probs[row])
        return results

    def _ctc(self, probs: NDArray[np.float32]) -> tuple[str, float]:
        best = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]
        chars = [self.alphabet[int(k)] if int(k) < len(self.alphabet) else "" for k in best[keep]]
        return "".join(chars).strip(), float(conf[keep].mean()) if keep.any() else 0.0

    def read(self, image: BGRImage, *, max_side: int | None = None) -> list[TextLine]:
        """Detect and recognise every text line of an image."""
        lines = self.detect(image, max_side=max_side)
        if not lines or self.rec is None:
            return lines
        texts = self.recognize_crops([self.crop(image, line.quad) for line in lines])
        return [TextLine(line.quad, line.score, text, conf) for line, (text, conf) in zip(lines, texts, strict=True)]


def alphabet_from_session(session: Any) -> list[str]:
    """The recognition characters stored in a PP-OCR ONNX model's metadata (key ``character``).

    Raises:
        ValueError: the model carries no character list.
    """
    native = getattr(session, "native", session)
    meta = native.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ValueError("the recognition model has no 'character' metadata")
    return str(meta["character"]).splitlines()


# ---- personal data ---------------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn check (card numbers)."""
    nums = [int(c) for c in digits if c.isdigit()]
    if len(nums) < 12:
        return False
    total = 0
    for i, n in enumerate(reversed(nums)):
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


_PATTERNS: Final[list[tuple[str, re.Pattern[str]]]] = [
    ("email", re.compile(r"[\w.+-]+\s?@\s?[\w-]+(?:\.[\w-]+)+", re.I)),
    ("card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    ("phone", re.compile(r"(?:\+\d{1,3}[\s.-]?)?(?:\(?\d{2,4}\)?[\s.-]?)?\d{3}[\s.-]?\d{3,4}\b")),
    ("date", re.compile(r"\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b")),
    ("address", re.compile(r"\b\d{1,5}\s*(?:[A-Za-z]+\s*){1,3}(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Lane|Ln|"
                           r"Drive|Way|Terrace|Court|Ct|Place)\b\.?(?:,\s*[A-Za-z ]+)?", re.I)),
    ("id", re.compile(r"\b(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]{2,}[-]?[A-Z0-9]{3,}\b")),
    ("id", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
]
_LABELS: Final = re.compile(r"^\s*(name|surname|given names?|full name|holder)\s*[:.]?\s*", re.I)

# Form field labels (spaces removed, lower case) -> the kind of the value printed next to or below them.
FIELD_LABELS: Final[dict[str, str]] = {
    "name": "name", "surname": "name", "givenname": "name", "givennames": "name", "fullname": "name",
    "firstname": "name", "lastname": "name", "holder": "name", "nom": "name", "vorname": "name",
    "email": "email", "e-mail": "email", "emailaddress": "email", "phone": "phone", "telephone": "phone",
    "tel": "phone", "mobile": "phone", "phonenumber": "phone", "address": "address", "homeaddress": "address",
    "dateofbirth": "date", "birthdate": "date", "dob": "date", "idnumber": "id", "idno": "id",
    "documentnumber": "id", "passportno": "id", "passportnumber": "id", "ssn": "id", "cardnumber": "card",
}


def field_label(text: str) -> str | None:
    """The PII kind whose value follows a form label such as "Surname" or "Date of birth", else None."""
    key = re.sub(r"[\s:.]", "", text).lower()
    return FIELD_LABELS.get(key)

NerFn = Callable[[str], list[tuple[int, int, str]]]
"""Named entities of a text: ``(start, end, label)`` with spaCy labels (``PERSON``, ``GPE``, ...)."""


def spacy_ner(nlp: Any) -> NerFn:
    """A :data:`NerFn` over a loaded spaCy pipeline."""

    def run(text: str) -> list[tuple[int, int, str]]:
        return [(ent.start_char, ent.end_char, ent.label_) for ent in nlp(text).ents]

    return run


# Scores of pattern matches: validated or unambiguous formats score high, loose shapes low (an
# "ID-like" token is as often a product code). A single-word PERSON from spaCy's small model is
# weak evidence (it tags most unknown capitalised words, OCR garbage included); two or more
# name-like words are strong.
PATTERN_SCORES: Final[dict[str, float]] = {"email": 1.0, "card": 1.0, "phone": 0.75, "date": 0.6, "address": 0.7,
                                           "id": 0.5}
SSN_SCORE: Final = 0.85
LABELLED_SCORE: Final = 0.95
PERSON_SCORE: Final = 0.85
LONE_WORD_PERSON_SCORE: Final = 0.45
_STREET_WORDS: Final = frozenset({"st", "st.", "street", "ave", "avenue", "rd", "road", "blvd", "lane", "ln", "drive",
                                  "way", "terrace", "court", "ct", "place", "square", "sq"})
_NAME_WORD: Final = re.compile(r"^(?:[A-Z][a-z'-]+|[A-Z]{2,}|[A-Z]\.)$")


def person_score(value: str, text: str = "") -> float:
    """How sure a spaCy PERSON span ``value`` of ``text`` is a person's name.

    Strong (``PERSON_SCORE``) for two or more name-like words making up most of the text (a
    caption, a name tag, a form value: "James L. Johnson"); weak (``LONE_WORD_PERSON_SCORE``) for
    one word, or a name inside a longer headline or sentence, where spaCy's small model tags
    ordinary capitalised words ("2005 Gartner Hype Cycle"); 0 for a street name ("Enrichment St").
    """
    words = value.replace(".", ". ").split()
    if any(w.lower() in _STREET_WORDS for w in words[1:]):
        return 0.0
    name_words = [w for w in words if _NAME_WORD.match(w)]
    full_words = [w for w in name_words if not w.endswith(".")]
    most_of_it = 2 * len(value.split()) > len((text or value).split())
    return PERSON_SCORE if len(name_words) >= 2 and full_words and most_of_it else LONE_WORD_PERSON_SCORE


def find_pii(text: str, *, ner: NerFn | None = None,
             kinds: Sequence[str] = PII_KINDS) -> list[PiiMatch]:
    """Personal data in one text (an OCR line or a transcript).

    Args:
        text: Any text.
        ner: Named-entity function (spaCy); PERSON entities become ``name``.
        kinds: Which kinds to report.

    Returns:
        Non-overlapping matches, in text order, each with a score (``PATTERN_SCORES``,
        :func:`person_score`); callers that filter by score decide the threshold.
    """
    found: list[PiiMatch] = []
    for index, (kind, pattern) in enumerate(_PATTERNS):
        for m in pattern.finditer(text):
            value = m.group(0).strip()
            digits = sum(c.isdigit() for c in value)
            if kind == "card" and not luhn_ok(value):
                continue
            if kind == "phone" and digits < 7:
                continue
            score = SSN_SCORE if kind == "id" and index == len(_PATTERNS) - 1 else PATTERN_SCORES[kind]
            found.append(PiiMatch(kind, m.start(), m.start() + len(m.group(0).rstrip()), value, score))
    label = _LABELS.match(text)
    if label and len(text) > label.end():
        found.append(PiiMatch("name", label.end(), len(text), text[label.end():], LABELLED_SCORE))
    if ner is not None and field_label(text) is None:
        for start, end, ent in ner(text):
            score = person_score(text[start:end], text) if ent == "PERSON" else 0.0
            if score > 0:
                found.append(PiiMatch("name", start, end, text[start:end], score))
    wanted = [p for p in found if p.kind in kinds]
    wanted.sort(key=lambda p: (p.start, -(p.end - p.start)))
    merged: list[PiiMatch] = []
    for p in wanted:
        if merged and p.start < merged[-1].end:
            continue
        merged.append(p)
    return merged


TextMode = Literal["all", "pii"]


@functools.lru_cache(maxsize=2)
def load_spacy(path: str | os.PathLike[str]) -> Any:
    """Load a spaCy pipeline from a local model directory (never downloads); one per path per process."""
    import spacy

    return spacy.load(str(path))
