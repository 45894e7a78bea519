"""Speech: spoken language, transcription with word timestamps, personal data in it, bleep or silence.

- Language: Whisper base (multilingual, CTranslate2) listens to the speech (Silero VAD first)
  and names the language, unless the caller names it. English is transcribed by Whisper
  tiny.en; other languages by Whisper base.
- Time: the track is read with PyAV, every word's time is file time (the first audio frame's
  timestamp plus the samples before it), which is also the time the bleeper is handed while the
  output is written: an audio stream that starts after 0 s (an offset MP4 track, an MPEG-TS
  start) is redacted where the words are, not ``start`` seconds early.
- Transcription covers the whole track in Whisper's own 30 s windows; ``chunk_seconds`` (seed E)
  is accepted for compatibility and does not change the result.
- PII: for English, Presidio's analyzer with the local spaCy model (Presidio's e-mail and URL
  recognizers are left out: ``tldextract`` would fetch its suffix list online) plus faceport's
  patterns (:func:`faceport.engine.text.find_pii`) and spoken-form rules ("my phone number is
  ..."). Weak patterns (street-address shapes, dates, places, ID-like tokens) count only with a
  context word nearby ("live", "born", "number", ...): song lyrics are not an address.
  Languages without an offline named-entity model (German, ...) get the language-neutral
  patterns and their own trigger phrases only, and only when the caller allows it
  (``unsupported_language="process"``), with a warning.
- Redaction: each span is padded (``pad_before_s``, ``pad_after_s``) and then grown to whole
  words, so a word the padding touches is bleeped entirely; everything else is left as decoded.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import av
import av.error
import numpy as np
from numpy.typing import NDArray

from faceport.engine.text import find_pii
from faceport.engine.video import pick_audio_stream
from faceport.errors import InvalidFormat, InvalidInput, ProcessingFailed, UnsupportedLanguage

log = logging.getLogger(__name__)

__all__ = ["AUDIO_SUFFIXES", "NER_LANGUAGES", "RULE_LANGUAGES", "Bleeper", "LanguagePolicy", "PiiDetector",
           "Redaction", "SpeechAnalyzer", "SpeechOptions", "SpeechResult", "Transcriber", "UnsupportedLanguage",
           "Voicing", "Word", "read_speech", "redact_audio_file", "redact_words", "transcript_text"]

RedactMode = Literal["bleep", "silence"]
LanguagePolicy = Literal["fail", "skip", "process"]
TONE_HZ: Final = 1000.0
TONE_LEVEL: Final = 0.25
AUDIO_SUFFIXES: Final[dict[str, tuple[str, str]]] = {
    ".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac"), ".m4a": ("mp4", "aac"), ".aac": ("adts", "aac"),
    ".mp3": ("mp3", "libmp3lame"), ".ogg": ("ogg", "libvorbis"),
}


# Spoken-form triggers per language: the words after them, up to the end of the sentence, are personal data.
_TRIGGERS: Final[dict[str, list[tuple[re.Pattern[str], str]]]] = {
    "en": [
        (re.compile(r"\bmy (?:full |first |last )?name is\b", re.I), "name"),
        (re.compile(r"\bi(?:'m| am) called\b", re.I), "name"),
        (re.compile(r"\b(?:phone|mobile|telephone|cell)(?: number)? is\b", re.I), "phone"),
        (re.compile(r"\be-?mail(?: address)? is\b", re.I), "email"),
        (re.compile(r"\b(?:i live at|my address is|i live in|i live on)\b", re.I), "address"),
        (re.compile(r"\b(?:card|account|social security|passport|licen[cs]e)(?: number)? is\b", re.I), "card"),
        (re.compile(r"\b(?:born on|born in|date of birth is|birthday is)\b", re.I), "date"),
    ],
    "de": [
        (re.compile(r"\b(?:ich hei(?:ß|ss)e|mein (?:vor|nach)?name ist|mein (?:vor|nach)?name lautet)\b", re.I),
         "name"),
        (re.compile(r"\b(?:telefon|telefonnummer|handy|handynummer|mobilnummer|rufnummer|nummer)"
                    r" (?:ist|lautet)\b", re.I), "phone"),
        (re.compile(r"\be-?mail(?:-adresse| adresse)? (?:ist|lautet)\b", re.I), "email"),
        (re.compile(r"\b(?:ich wohne|wohne ich|ich lebe|meine adresse (?:ist|lautet)|meine anschrift"
                    r" (?:ist|lautet))\b", re.I), "address"),
        (re.compile(r"\b(?:kartennummer|kontonummer|iban|ausweisnummer|steuernummer|passnummer)"
                    r" (?:ist|lautet)\b", re.I), "card"),
        (re.compile(r"\b(?:geboren am|geboren in|geburtstag ist|geburtsdatum ist)\b", re.I), "date"),
    ],
}
# Languages redacted without a warning: an offline ASR and named-entity model exist for them.
NER_LANGUAGES: Final = frozenset({"en"})
# Languages with trigger phrases but no named-entity model: names are found only after a trigger.
RULE_LANGUAGES: Final = frozenset(_TRIGGERS) - NER_LANGUAGES
_SPOKEN_EMAIL: Final = re.compile(r"\b\w+(?:\s+(?:dot|punkt)\s+\w+)*\s+(?:at|ät)\s+\w+(?:\s+(?:dot|punkt)\s+\w+)+\b",
                                  re.I)
_SENTENCE_END: Final = re.compile(r"[.!?](?:\s|$)|,\s+(?:and|und)\b|\s+(?:and|und)\s+(?=(?:my|mein|meine|i|ich)\b)",
                                  re.I)
# A "sentence" after a one-word address fragment that starts like this is a new statement, not the address.
_STATEMENT_START: Final = frozenset({"my", "i", "we", "our", "the", "and", "mein", "meine", "ich", "wir", "und"})
# After a trigger, digits that run on across a full stop ("4,111,111. 111, 111") are still the item.
_NUMBER_RUN: Final = re.compile(r"[.!?]?\s*[\d][\d\s,.\-]*")
_MIN_ADDRESS_WORDS: Final = 3  # "I live at 742am. Green terrace, spring field": one word is not an address
# Weak kinds count only with one of these words in the span or the CONTEXT_WORDS words before it.
_CONTEXT: Final[dict[str, frozenset[str]]] = {
    "address": frozenset({"live", "lives", "living", "lived", "address", "street", "road", "avenue", "reside",
                          "resides", "located", "home", "apartment", "flat", "zip", "postcode", "moved",
                          "wohne", "wohnt", "adresse", "anschrift", "straße", "strasse"}),
    "date": frozenset({"born", "birth", "birthday", "birthdate", "dob", "geboren", "geburtstag", "geburtsdatum"}),
    "id": frozenset({"number", "id", "passport", "licence", "license", "account", "ssn", "social", "member",
                     "customer", "reference", "policy", "nummer", "ausweis"}),
}
CONTEXT_WORDS: Final = 8
GAP_FILL_S: Final = 2.0  # a pause after an item is bleeped up to the next word, at most this long
_WORD: Final = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word: text (with its leading space and punctuation), start and end in seconds (file time)."""

    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Redaction:
    """A redacted span of the transcript.

    Attributes:
        kind: PII kind ("name", "phone", "email", "address", "card", "date", "id", ...).
        start: Start of what is bleeped, in seconds (file time): the item's first word, padded and
            grown to whole words.
        end: End of what is bleeped (likewise).
        text: The words of the item.
        first_word: Index of the item's first word.
        last_word: Index of the item's last word (inclusive).
    """

    kind: str
    start: float
    end: float
    text: str
    first_word: int
    last_word: int


def transcript_text(words: Sequence[Word]) -> tuple[str, list[tuple[int, int]]]:
    """The transcript as one string and each word's (start, end) character offsets in it."""
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    for word in words:
        text = word.text if parts else word.text.lstrip()
        lead = len(text) - len(text.lstrip())
        offsets.append((pos + lead, pos + len(text)))
        parts.append(text)
        pos += len(text)
    return "".join(parts), offsets


_RATE = 16_000  # Whisper reads 16 kHz mono


def read_speech(source: str | os.PathLike[str]) -> tuple[NDArray[np.float32], float]:
    """The audio track the output keeps, as 16 kHz mono float32, and the file time of its first sample.

    The stream is the one :func:`faceport.engine.video.pick_audio_stream` picks (the one a video
    output keeps); the origin is its first frame's timestamp (not below 0), as the writers use it.

    Raises:
        InvalidFormat: no readable audio stream.
    """
    name = Path(source).name
    try:
        with av.open(str(source)) as container:
            stream = pick_audio_stream(container)
            if stream is None:
                raise InvalidFormat(f"{name} has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=_RATE)
            chunks: list[NDArray[np.float32]] = []
            origin: float | None = None
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    log.warning("%s: skipping a corrupt audio packet: %s", name, exc)
                    continue
                for frame in frames:
                    if origin is None:
                        origin = max(0.0, float(frame.time or 0.0))
                    chunks.extend(np.asarray(c.to_ndarray(), np.float32).reshape(-1) for c in resampler.resample(frame))
            chunks.extend(np.asarray(c.to_ndarray(), np.float32).reshape(-1) for c in resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise InvalidFormat(f"{name} is not a readable audio file: {exc.strerror or exc}") from exc
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, origin or 0.0


class Transcriber:
    """faster-whisper over a local CTranslate2 model directory (never contacts a hub).

    Args:
        model_dir: Directory with ``model.bin``, ``config.json``, ``tokenizer.json`` and a vocabulary.
        threads: CPU threads.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, threads: int = 2) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a directory never needs the hub
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)
        self.multilingual = bool(self.model.model.is_multilingual)
        self.lock = threading.Lock()

    def transcribe(self, source: str | os.PathLike[str] | NDArray[np.float32], *, chunk_seconds: int = 30,
                   language: str = "en", origin: float = 0.0) -> tuple[list[Word], float]:
        """Words with file-time timestamps of an audio/video file or 16 kHz mono float32 samples.

        The whole track is transcribed in Whisper's own 30 s windows (seeking on its timestamps),
        so the words do not depend on ``chunk_seconds``: 5 s windows decoded on their own
        dropped or doubled words at the cuts and moved the bleeps with the window length.

        Args:
            source: A media path (read with :func:`read_speech`), or samples at 16 kHz.
            chunk_seconds: Seed E's window length, 1-30 s; validated, kept for compatibility.
            language: Spoken language (ISO 639-1).
            origin: File time of the first sample when ``source`` is samples.

        Returns:
            The words and the audio duration in seconds.
        """
        if not 1 <= chunk_seconds <= 30:
            raise InvalidInput(f"chunk_seconds must be 1-30, got {chunk_seconds}", details={"field": "chunk_seconds"})
        if isinstance(source, (str, os.PathLike)):
            samples, origin = read_speech(source)
        else:
            samples = np.asarray(source, np.float32)
        if not self.multilingual and language != "en":
            raise InvalidInput(f"this Whisper model knows English only, not {language!r}",
                               details={"field": "language"})
        words: list[Word] = []
        with self.lock:
            segments, _ = self.model.transcribe(samples, language=language, beam_size=1, word_timestamps=True,
                                                condition_on_previous_text=False, vad_filter=False)
            for segment in segments:
                for w in segment.words or []:
                    words.append(Word(w.word, float(w.start) + origin, float(w.end) + origin, float(w.probability)))
        return words, len(samples) / _RATE

    def detect_language(self, samples: NDArray[np.float32]) -> tuple[str, float]:
        """The spoken language (ISO 639-1) of 16 kHz samples and its probability (speech only, via VAD).

        Raises:
            InvalidInput: an English-only model.
        """
        if not self.multilingual:
            raise InvalidInput("language detection needs a multilingual Whisper model", details={"field": "language"})
        with self.lock:
            language, probability, _ = self.model.detect_language(np.asarray(samples, np.float32), vad_filter=True)
        return str(language), float(probability)


class PiiDetector:
    """Personal data in a transcript: spoken-form rules, faceport's patterns and (English) Presidio + spaCy.

    Args:
        nlp: A loaded spaCy pipeline (``en_core_web_sm`` from the local model directory), or None for
            a language without a named-entity model (rules and patterns only).
        score_threshold: Least Presidio score kept.
        language: ISO 639-1 code choosing the trigger phrases.
    """

    ENTITY_KINDS: Final[dict[str, str]] = {"PERSON": "name", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card",
                                           "US_SSN": "id",
                           "EMAIL_ADDRESS": "email", "DATE_TIME": "date", "LOCATION": "address",
                           "IBAN_CODE": "id", "US_PASSPORT": "id", "US_DRIVER_LICENSE": "id", "IP_ADDRESS": "id",
                           "US_BANK_NUMBER": "id"}
    # Entities and pattern kinds that need a context word (see _CONTEXT): alone they hit lyrics and headlines.
    WEAK_ENTITIES: Final = frozenset({"DATE_TIME", "LOCATION", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER"})
    WEAK_PATTERNS: Final = frozenset({"address", "date", "id"})

    def __init__(self, nlp: Any | None, *, score_threshold: float = 0.35, language: str = "en") -> None:
        self.language = language
        self.score_threshold = score_threshold
        self.ner = nlp
        self.analyzer: Any = None
        if nlp is None:
            return
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": "en_core_web_sm"}])
        engine.nlp = {language: nlp}  # type: ignore[assignment]  # already loaded from the local directory
        registry = RecognizerRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language], nlp_engine=engine)
        for name in ("EmailRecognizer", "UrlRecognizer"):  # tldextract would fetch its suffix list online
            registry.remove_recognizer(name)
        registry.add_recognizer(PatternRecognizer(
            supported_entity="EMAIL_ADDRESS", name="OfflineEmailRecognizer", supported_language=language,
            patterns=[Pattern("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0.8)]))
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=[language])

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Character spans ``(start, end, kind)`` of personal data in ``text`` (may overlap)."""
        found: list[tuple[int, int, str]] = []  # the most specific sources first: their kind wins
        triggers = [(m, kind) for pattern, kind in _TRIGGERS.get(self.language, []) for m in pattern.finditer(text)]
        starts = sorted(m.start() for m, _ in triggers)
        for m, trigger_kind in triggers:
            following = next((a for a in starts if a >= m.end()), len(text))  # the next trigger starts a new item
            stop = min(_trigger_end(text, m.end(), trigger_kind), following)
            if stop > m.end():
                found.append((m.end(), stop, trigger_kind))
        for p in find_pii(text):
            if p.kind not in self.WEAK_PATTERNS or _has_context(text, p.start, p.end, p.kind):
                found.append((p.start, p.end, p.kind))
        found.extend((m.start(), m.end(), "email") for m in _SPOKEN_EMAIL.finditer(text))
        if self.analyzer is not None:
            for result in self.analyzer.analyze(text=text, language=self.language,
                                                score_threshold=self.score_threshold):
                entity = self.ENTITY_KINDS.get(result.entity_type)
                if entity is None:
                    continue
                if result.entity_type in self.WEAK_ENTITIES and not _has_context(
                        text, result.start, result.end, "id" if entity == "id" else entity):
                    continue
                found.append((result.start, result.end, entity))
        return found


def _trigger_end(text: str, begin: int, kind: str) -> int:
    """Where the item after a trigger ends: the sentence end, past runs of digits, and past a
    one-word "sentence" for an address (ASR put a full stop inside it)."""
    stop = begin
    while True:
        end = _SENTENCE_END.search(text, stop)
        stop = end.start() if end else len(text)
        run = _NUMBER_RUN.match(text, stop)
        if end is not None and run is not None and run.end() > stop + 1 and any(c.isdigit() for c in run.group()):
            stop = run.end()
            continue
        if (end is not None and kind == "address" and len(_WORD.findall(text[begin:stop])) < _MIN_ADDRESS_WORDS
                and stop < len(text)):
            following = _WORD.findall(text[stop:stop + 40])
            if following and following[0].lower() not in _STATEMENT_START:
                stop += 1
                continue
        return stop


def _has_context(text: str, start: int, end: int, kind: str) -> bool:
    words = {w.lower() for w in _WORD.findall(text[start:end])}
    words.update(w.lower() for w in _WORD.findall(text[:start])[-CONTEXT_WORDS:])
    return bool(words & _CONTEXT.get(kind, frozenset()))


@dataclass(frozen=True, slots=True)
class Voicing:
    """Where sound is, per 10 ms step of a track: what a pause is when ASR word times are not exact.

    A step is voiced when its level is within ``RANGE_DB`` of the track's loud speech (95th
    percentile) and above ``FLOOR_DB`` dBFS, so a noisy room's floor does not count as voice.
    """

    voiced: NDArray[np.bool_]  # (n,) per step
    origin: float  # file time of step 0
    HOP_S: ClassVar[float] = 0.01
    RANGE_DB: ClassVar[float] = 35.0
    FLOOR_DB: ClassVar[float] = -55.0
    MIN_PAUSE_S: ClassVar[float] = 0.06

    @classmethod
    def of(cls, samples: NDArray[np.float32], origin: float, rate: int = 16_000) -> Voicing:
        hop = int(rate * cls.HOP_S)
        n = len(samples) // hop
        if n == 0:
            return cls(np.zeros(0, np.bool_), origin)
        level = 10 * np.log10(np.mean(samples[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
        loud = float(np.percentile(level, 95))
        return cls(level > max(cls.FLOOR_DB, loud - cls.RANGE_DB), origin)

    def onset_before(self, earliest: float, t: float) -> float | None:
        """Start of the sound that runs without a pause into ``t``, if a pause (>= ``MIN_PAUSE_S``)
        lies between ``earliest`` and it; None when there is no such pause (sound all along, or none)."""
        i0 = max(0, math.ceil((earliest - self.origin) / self.HOP_S))
        i1 = min(len(self.voiced), int((t - self.origin) / self.HOP_S))
        if i1 - i0 < 2:
            return None
        stretch = self.voiced[i0:i1]
        quiet = np.flatnonzero(~stretch)
        if len(quiet) == 0:
            return None
        last_quiet = int(quiet[-1])  # the pause's last step; voice runs from the next step into t
        run = 1
        while last_quiet - run >= 0 and not stretch[last_quiet - run]:
            run += 1
        if run * self.HOP_S < self.MIN_PAUSE_S:
            return None
        return self.origin + (i0 + last_quiet + 1) * self.HOP_S


def redact_words(words: Sequence[Word], detector: PiiDetector, *, pad_before_s: float = 0.15,
                 pad_after_s: float = 0.10, end_s: float | None = None,
                 voicing: Voicing | None = None) -> list[Redaction]:
    """The redacted spans of a transcript: every word that overlaps a PII span, grouped per run.

    Each run is padded by ``pad_before_s`` / ``pad_after_s`` and then grown to whole words: a
    word the padded span reaches into is covered from its start to its end (Whisper's word
    times are often 0.1-0.3 s late or early, so the neighbouring word goes too). Then the span
    runs on through a pause after it, up to the next recognised word (at most ``GAP_FILL_S``; to
    ``end_s`` after the last word): speech the ASR skipped ("742 ... Springfield" heard as
    "742am.") is most likely the rest of the item. With ``voicing`` (the track's sound), that run
    stops at the last pause before the next word: the sound running into the next word without a
    pause is that word, started before its (often 0.1-0.3 s late) timestamp ("My phone" clipped
    by a date's bleep).
    """
    if pad_before_s < 0 or pad_after_s < 0:
        raise InvalidInput("padding must be >= 0", details={"field": "pad_before_ms"})
    text, offsets = transcript_text(words)
    kinds: list[str | None] = [None] * len(words)
    for start, end, span_kind in detector.spans(text):
        for i, (ws, we) in enumerate(offsets):
            if ws < end and we > start and any(c.isalnum() for c in text[ws:we]) and kinds[i] is None:
                kinds[i] = span_kind  # the first (most specific) source names the kind
    out: list[Redaction] = []
    i = 0
    while i < len(words):
        kind = kinds[i]
        if kind is None:  # not personal data
            i += 1
            continue
        j = i
        while j + 1 < len(words) and kinds[j + 1] is not None:
            j += 1
        span = words[i:j + 1]
        a = min(w.start for w in span) - pad_before_s
        b = max(w.end for w in span) + pad_after_s
        for w in words:  # whole words: one pass is enough, words do not overlap
            if w.start < b and w.end > a and w.end > w.start:
                a, b = min(a, w.start), max(b, w.end)
        next_word = next((w for w in words[j + 1:] if w.start >= b), None)
        following = _spoken_start(next_word) if next_word is not None else end_s
        item_end = b
        if following is not None and following - b <= GAP_FILL_S:
            b = max(b, following)
        elif following is not None:
            b += GAP_FILL_S
        if voicing is not None and next_word is not None and b > item_end:
            onset = voicing.onset_before(item_end, min(b, next_word.end))
            if onset is not None:
                b = max(item_end, min(b, onset - Voicing.HOP_S))
        out.append(Redaction(kind, max(0.0, a), b, "".join(w.text for w in span).strip(), i, j))
        i = j + 1
    return out


def _spoken_start(word: Word) -> float:
    """When a word most likely began: Whisper stretches a word over a pause before it ("My" timed
    21.44-22.54 s after an unrecognised "Springfield"), so a word longer than it could be spoken
    is taken to start that long before its end."""
    letters = sum(c.isalnum() for c in word.text)
    longest = 0.15 + 0.12 * max(1, letters)
    return max(word.start, word.end - longest)


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """How speech is redacted.

    Attributes:
        language: "auto" (detected) or an ISO 639-1 code.
        unsupported_language: For speech in a language without an offline named-entity model:
            "fail" (the job fails with ``UNSUPPORTED_LANGUAGE``), "skip" (audio left as it is, with a
            warning) or "process" (redacted with trigger phrases and patterns only, with a warning).
        pad_before_s: Added before each item.
        pad_after_s: Added after each item.
        chunk_seconds: Seed E's window; validated, does not change the result.
    """

    language: str = "auto"
    unsupported_language: LanguagePolicy = "fail"
    pad_before_s: float = 0.15
    pad_after_s: float = 0.10
    chunk_seconds: int = 5


@dataclass(frozen=True)
class SpeechResult:
    """What was heard and what is to be bleeped.

    Attributes:
        words: The transcript (empty when skipped).
        redactions: The spans to bleep (empty when skipped).
        language: The language used (detected or given).
        language_probability: The detector's probability, None when the caller named the language.
        action: "redacted" (full support), "rules_only" (no named-entity model; triggers and
            patterns only), "skipped" (left as it is).
        warnings: Plain sentences for the job result.
    """

    words: list[Word]
    redactions: list[Redaction]
    language: str
    language_probability: float | None
    action: Literal["redacted", "rules_only", "skipped"]
    warnings: list[str] = field(default_factory=list)


class SpeechAnalyzer:
    """Language, transcript and redactions of a file's speech; the models load on first use.

    Args:
        english: Loads the English transcriber (tiny.en).
        multilingual: Loads the multilingual transcriber (language detection, other languages).
        english_ner: Loads the English PII detector (spaCy + Presidio).
    """

    def __init__(self, *, english: Callable[[], Transcriber], multilingual: Callable[[], Transcriber],
                 english_ner: Callable[[], PiiDetector]) -> None:
        self._loaders: dict[str, Callable[[], Any]] = {"english": english, "multilingual": multilingual,
                                                       "english_ner": english_ner}
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, name: str) -> Any:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._loaders[name]()
            return self._loaded[name]

    def english_models(self) -> tuple[Transcriber, PiiDetector]:
        """The English transcriber and PII detector (loaded on first use), for live streams."""
        return self._get("english"), self._get("english_ner")

    def analyse(self, source: str | os.PathLike[str], options: SpeechOptions) -> SpeechResult:
        """Transcribe and find what to bleep.

        Raises:
            UnsupportedLanguage: the language has no offline named-entity model and the policy is "fail".
            InvalidFormat: no readable audio stream.
            ModelUnavailable: a needed model is not installed.
        """
        samples, origin = read_speech(source)
        probability: float | None = None
        language = options.language.lower()
        if language == "auto":
            if len(samples) < _RATE // 2:  # under half a second: nothing to detect, nothing to redact
                return SpeechResult([], [], "en", None, "redacted")
            language, probability = self._get("multilingual").detect_language(samples)
        if language in NER_LANGUAGES:
            words, duration = self._get("english").transcribe(samples, language=language, origin=origin,
                                                              chunk_seconds=options.chunk_seconds)
            detector = self._get("english_ner")
            redactions = redact_words(words, detector, pad_before_s=options.pad_before_s,
                                      pad_after_s=options.pad_after_s, end_s=origin + duration,
                                      voicing=Voicing.of(samples, origin))
            return SpeechResult(words, redactions, language, probability, "redacted")
        heard = f"speech in language {language!r}" + (f" (p={probability:.2f})" if probability is not None else "")
        missing = "no named-entity model for it is installed offline"
        if options.unsupported_language == "fail":
            raise UnsupportedLanguage(
                f"{heard}: {missing}, so names and places could not be found; set audio.unsupported_language "
                "to \"process\" (trigger phrases and number patterns only) or \"skip\" (audio left unredacted)",
                details={"language": language, "field": "audio.unsupported_language"})
        if options.unsupported_language == "skip":
            return SpeechResult([], [], language, probability, "skipped",
                                [f"{heard}: {missing}; the audio was NOT redacted (audio.unsupported_language=skip)"])
        words, duration = self._get("multilingual").transcribe(samples, language=language, origin=origin,
                                                               chunk_seconds=options.chunk_seconds)
        redactions = redact_words(words, PiiDetector(None, language=language), pad_before_s=options.pad_before_s,
                                  pad_after_s=options.pad_after_s, end_s=origin + duration,
                                  voicing=Voicing.of(samples, origin))
        rules = "its trigger phrases" if language in RULE_LANGUAGES else "no trigger phrases (none known for it)"
        return SpeechResult(words, redactions, language, probability, "rules_only",
                            [f"{heard}: {missing}; only {rules} and number/e-mail patterns were redacted, "
                             "names or places said without a trigger phrase may remain"])


class Bleeper:
    """An audio filter (``VideoOptions.audio_filter``) replacing time spans by a tone or silence.

    Args:
        spans: (start, end) seconds.
        mode: "bleep" (1 kHz tone) or "silence".
        margin_s: Added before and after each span (the redactions of :func:`redact_words` are
            already padded and grown to whole words).
    """

    def __init__(self, spans: Sequence[tuple[float, float]], *, mode: RedactMode = "bleep",
                 margin_s: float = 0.0) -> None:
        if mode not in ("bleep", "silence"):
            raise InvalidInput(f"audio redaction must be bleep or silence, got {mode!r}",
                               details={"field": "redaction"})
        self.spans = sorted((max(0.0, a - margin_s), b + margin_s) for a, b in spans)
        self.mode = mode

    def __call__(self, samples: NDArray[np.float32], start_s: float, rate: int) -> NDArray[np.float32]:
        """Return ``samples`` (channels, n) with the spans inside ``[start_s, start_s + n / rate)`` replaced."""
        n = samples.shape[-1]
        end_s = start_s + n / rate
        out: NDArray[np.float32] | None = None
        for a, b in self.spans:
            if b <= start_s or a >= end_s:
                continue
            if out is None:
                out = samples.copy()
            i0 = max(0, math.floor((a - start_s) * rate))
            i1 = min(n, math.ceil((b - start_s) * rate))
            if self.mode == "silence":
                out[..., i0:i1] = 0.0
            else:
                t = (np.arange(i0, i1) / rate + start_s).astype(np.float64)
                out[..., i0:i1] = (TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        return samples if out is None else out


def redact_audio_file(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str],
                      bleeper: Bleeper) -> float:
    """Write an audio file with ``bleeper`` applied; same rate and channels, same duration.

    Args:
        input_path: Any audio FFmpeg reads (its first audio stream).
        output_path: .wav, .flac, .m4a, .aac, .mp3 or .ogg.
        bleeper: The spans to replace.

    Returns:
        Output duration in seconds.

    Raises:
        InvalidInput: Unsupported output suffix or missing input.
        InvalidFormat: No readable audio stream.
        ProcessingFailed: Encoding failed.
    """
    source, target = Path(input_path), Path(output_path)
    if target.suffix.lower() not in AUDIO_SUFFIXES:
        raise InvalidInput(f"unsupported audio output type {target.suffix}; use one of {', '.join(AUDIO_SUFFIXES)}",
                           details={"field": "output_path"})
    if not source.is_file():
        raise InvalidInput(f"no such audio file: {source.name}")
    fmt, codec = AUDIO_SUFFIXES[target.suffix.lower()]
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    samples_done = 0
    try:
        with av.open(str(source)) as inp:
            stream: Any = pick_audio_stream(inp)
            if stream is None:
                raise InvalidFormat(f"{source.name} has no audio stream")
            rate = stream.codec_context.sample_rate
            layout = stream.codec_context.layout.name
            if "channels" in layout:
                layout = "mono" if stream.codec_context.channels == 1 else "stereo"
            with av.open(str(partial), mode="w", format=fmt) as out:
                ostream: Any = out.add_stream(codec, rate=rate)
                ostream.codec_context.layout = layout
                sample_fmt = "s16" if codec == "pcm_s16le" else ostream.codec_context.codec.audio_formats[0].name
                ostream.codec_context.format = sample_fmt
                frame_size = ostream.codec_context.frame_size or None
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=frame_size)
                to_out = av.AudioResampler(format=sample_fmt, layout=layout, rate=rate)
                origin: float | None = None  # file time of the first sample, as read_speech gives words
                for frame in _decoded(inp, stream, source.name):
                    if origin is None:
                        origin = max(0.0, float(frame.time or 0.0))
                    for chunk in resampler.resample(frame):
                        samples_done = _write(out, ostream, to_out, chunk, bleeper, samples_done, rate, layout,
                                              origin)
                for chunk in resampler.resample(None):
                    samples_done = _write(out, ostream, to_out, chunk, bleeper, samples_done, rate, layout,
                                          origin or 0.0)
                for chunk in to_out.resample(None):
                    out.mux(ostream.encode(chunk))
                out.mux(ostream.encode(None))
        os.replace(partial, target)
    except av.error.FFmpegError as exc:
        partial.unlink(missing_ok=True)
        raise ProcessingFailed(f"{source.name}: audio processing failed: {exc.strerror or exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return samples_done / rate if rate else 0.0


def _decoded(inp: Any, stream: Any, name: str) -> Any:
    for packet in inp.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError as exc:
            log.warning("%s: skipping a corrupt audio packet: %s", name, exc)


def _write(out: Any, ostream: Any, to_out: Any, chunk: Any, bleeper: Bleeper, done: int, rate: int,
           layout: str, origin: float) -> int:
    samples = chunk.to_ndarray().astype(np.float32)
    edited = bleeper(samples, origin + done / rate, rate)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(edited), format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.pts = done
    frame.time_base = Fraction(1, rate)
    for converted in to_out.resample(frame):
        out.mux(ostream.encode(converted))
    return done + int(samples.shape[-1])
