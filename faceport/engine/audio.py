"""Speech: transcription with word timestamps, personal data found in it, and redaction by bleep or silence.

- ASR: faster-whisper with Whisper tiny.en (CTranslate2), loaded from the local model directory
  (``whisper_tiny_en``); the audio is read in ``chunk_seconds`` windows (Whisper's
  ``chunk_length``), words carry start/end times.
- PII: Presidio's analyzer over the transcript with the local spaCy model (no download;
  Presidio's e-mail and URL recognizers are left out because ``tldextract`` would fetch its
  suffix list from the internet) plus faceport's patterns (:func:`faceport.engine.text.find_pii`) and
  spoken-form rules ("my phone number is ...", "john dot smith at example dot com").
- Redaction: each PII word span (plus ``margin_s``) is replaced by a 1 kHz tone ("bleep") or
  silence; everything else is left as decoded; the output lasts as long as the input.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

import av
import av.error
import numpy as np
from numpy.typing import NDArray

from faceport.engine.text import find_pii
from faceport.errors import InvalidFormat, InvalidInput, ProcessingFailed

log = logging.getLogger(__name__)

__all__ = ["AUDIO_SUFFIXES", "Bleeper", "PiiDetector", "Redaction", "Transcriber", "Word",
           "redact_audio_file", "redact_words", "transcript_text"]

RedactMode = Literal["bleep", "silence"]
TONE_HZ: Final = 1000.0
TONE_LEVEL: Final = 0.25
AUDIO_SUFFIXES: Final[dict[str, tuple[str, str]]] = {
    ".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac"), ".m4a": ("mp4", "aac"), ".aac": ("adts", "aac"),
    ".mp3": ("mp3", "libmp3lame"), ".ogg": ("ogg", "libvorbis"),
}

# Spoken-form triggers: the words after them, up to the end of the sentence, are personal data.
_TRIGGERS: Final = [
    (re.compile(r"\bmy name is\b", re.I), "name"),
    (re.compile(r"\bi(?:'m| am) called\b", re.I), "name"),
    (re.compile(r"\b(?:phone|mobile|telephone|cell)(?: number)? is\b", re.I), "phone"),
    (re.compile(r"\be-?mail(?: address)? is\b", re.I), "email"),
    (re.compile(r"\b(?:i live at|my address is|i live in)\b", re.I), "address"),
    (re.compile(r"\b(?:card|account|social security|passport|licen[cs]e)(?: number)? is\b", re.I), "card"),
    (re.compile(r"\b(?:born on|date of birth is|birthday is)\b", re.I), "date"),
]
_SPOKEN_EMAIL: Final = re.compile(r"\b\w+(?:\s+dot\s+\w+)*\s+at\s+\w+(?:\s+dot\s+\w+)+\b", re.I)
_SENTENCE_END: Final = re.compile(r"[.!?](?:\s|$)|,\s+and\b")


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word: text (with its leading space and punctuation), start and end in seconds."""

    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class Redaction:
    """A redacted span of the transcript.

    Attributes:
        kind: PII kind ("name", "phone", "email", "address", "card", "date", "id", ...).
        start: Start time in seconds.
        end: End time in seconds.
        text: The words that were redacted.
        first_word: Index of the first redacted word.
        last_word: Index of the last redacted word (inclusive).
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


class Transcriber:
    """faster-whisper over a local CTranslate2 model directory (never contacts a hub).

    Args:
        model_dir: Directory with ``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``.
        threads: CPU threads.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, threads: int = 2) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a directory never needs the hub
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)
        self.lock = threading.Lock()

    def transcribe(self, source: str | os.PathLike[str] | NDArray[np.float32], *, chunk_seconds: int = 30,
                   language: str = "en") -> tuple[list[Word], float]:
        """Words with timestamps of an audio/video file or 16 kHz mono float32 samples.

        The audio is transcribed in ``chunk_seconds`` windows, one after the other (the words of
        a window are final once it is done, as a stream would need). Each window is decoded
        together with up to ``30 - chunk_seconds`` seconds of the audio before it and one
        second after it, and keeps the words that start inside it: tiny.en given bare 5 s
        windows dropped whole sentences (4 of 6 PII items found on the test recording).

        Args:
            source: A media path, or samples at 16 kHz.
            chunk_seconds: Seed E's window length, 1-30 s.
            language: Spoken language (tiny.en knows English only).

        Returns:
            The words and the audio duration in seconds.
        """
        if not 1 <= chunk_seconds <= 30:
            raise InvalidInput(f"chunk_seconds must be 1-30, got {chunk_seconds}", details={"field": "chunk_seconds"})
        if isinstance(source, (str, os.PathLike)):
            from faster_whisper import decode_audio

            samples = np.asarray(decode_audio(str(source), sampling_rate=_RATE), np.float32)
        else:
            samples = np.asarray(source, np.float32)
        duration = len(samples) / _RATE
        context, lookahead = 30 - chunk_seconds, 1.0
        words: list[Word] = []
        with self.lock:
            start = 0.0
            while start < duration:
                end = min(duration, start + chunk_seconds)
                lo = max(0.0, start - context)
                hi = min(duration, end + lookahead)
                piece = samples[int(lo * _RATE):int(hi * _RATE)]
                segments, _ = self.model.transcribe(piece, language=language, beam_size=1, word_timestamps=True,
                                                    condition_on_previous_text=False, vad_filter=False)
                for segment in segments:
                    for w in segment.words or []:
                        at = float(w.start) + lo
                        if start <= at < end or (end >= duration and at >= start):
                            words.append(Word(w.word, at, float(w.end) + lo, float(w.probability)))
                start = end
        return words, duration


class PiiDetector:
    """Personal data in a transcript: Presidio + spaCy, faceport's patterns and spoken-form rules.

    Args:
        nlp: A loaded spaCy pipeline (``en_core_web_sm`` from the local model directory).
        score_threshold: Least Presidio score kept.
    """

    ENTITY_KINDS: Final[dict[str, str]] = {"PERSON": "name", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card",
                                           "US_SSN": "id",
                           "EMAIL_ADDRESS": "email", "DATE_TIME": "date", "LOCATION": "address",
                           "IBAN_CODE": "id", "US_PASSPORT": "id", "US_DRIVER_LICENSE": "id", "IP_ADDRESS": "id",
                           "US_BANK_NUMBER": "id"}

    def __init__(self, nlp: Any, *, score_threshold: float = 0.35) -> None:
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "en_core_web_sm"}])
        engine.nlp = {"en": nlp}  # type: ignore[assignment]  # already loaded from the local directory: Presidio must not download it
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
        for name in ("EmailRecognizer", "UrlRecognizer"):  # tldextract would fetch its suffix list online
            registry.remove_recognizer(name)
        from presidio_analyzer import Pattern

        registry.add_recognizer(PatternRecognizer(
            supported_entity="EMAIL_ADDRESS", name="OfflineEmailRecognizer",
            patterns=[Pattern("email", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0.8)]))
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        self.score_threshold = score_threshold
        self.ner = nlp

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Character spans ``(start, end, kind)`` of personal data in ``text`` (may overlap)."""
        found: list[tuple[int, int, str]] = []  # the most specific sources first: their kind wins
        for pattern, trigger_kind in _TRIGGERS:
            for m in pattern.finditer(text):
                end = _SENTENCE_END.search(text, m.end())
                stop = end.start() if end else len(text)
                if stop > m.end():
                    found.append((m.end(), stop, trigger_kind))
        found.extend((m.start, m.end, m.kind) for m in find_pii(text))
        found.extend((m.start(), m.end(), "email") for m in _SPOKEN_EMAIL.finditer(text))
        for result in self.analyzer.analyze(text=text, language="en", score_threshold=self.score_threshold):
            entity = self.ENTITY_KINDS.get(result.entity_type)
            if entity is not None:
                found.append((result.start, result.end, entity))
        return found


def redact_words(words: Sequence[Word], detector: PiiDetector) -> list[Redaction]:
    """The redacted spans of a transcript: every word that overlaps a PII span, grouped per run."""
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
        out.append(Redaction(kind, span[0].start, max(w.end for w in span), "".join(w.text for w in span).strip(),
                             i, j))
        i = j + 1
    return out


class Bleeper:
    """An audio filter (``VideoOptions.audio_filter``) replacing time spans by a tone or silence.

    Args:
        spans: (start, end) seconds.
        mode: "bleep" (1 kHz tone) or "silence".
        margin_s: Added before and after each span.
    """

    def __init__(self, spans: Sequence[tuple[float, float]], *, mode: RedactMode = "bleep",
                 margin_s: float = 0.05) -> None:
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
            if not inp.streams.audio:
                raise InvalidFormat(f"{source.name} has no audio stream")
            stream: Any = inp.streams.audio[0]
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
                for frame in _decoded(inp, stream, source.name):
                    for chunk in resampler.resample(frame):
                        samples_done = _write(out, ostream, to_out, chunk, bleeper, samples_done, rate, layout)
                for chunk in resampler.resample(None):
                    samples_done = _write(out, ostream, to_out, chunk, bleeper, samples_done, rate, layout)
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
           layout: str) -> int:
    samples = chunk.to_ndarray().astype(np.float32)
    edited = bleeper(samples, done / rate, rate)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(edited), format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.pts = done
    frame.time_base = Fraction(1, rate)
    for converted in to_out.resample(frame):
        out.mux(ostream.encode(converted))
    return done + int(samples.shape[-1])
