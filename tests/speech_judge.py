"""An independent judge of speech redaction: can any part of a personal item still be heard?

Two checks the filter does not use for its own decision:

1. Re-transcription: the output's audio track is transcribed by Whisper base (multilingual,
   beam search 5) while the filter transcribes English with tiny.en (greedy). An item leaks
   when a word heard in the output, inside the item's time window (found by the same judge in
   the input) give or take ``SLACK_S``, matches one of the item's words (fuzzy, so "Smith." and
   "smith" match) or carries digits of the item ("5." is part of "555 0134"). For German the
   filter's model is Whisper base too, so check 2 carries the weight there.
2. Timing: where the 1 kHz bleep tone sounds in the output, measured every 10 ms by a
   Goertzel filter, compared with the input words' times: ``tone_coverage`` is the share of each
   item's window that is bleeped. A bleep that lands early or late (the MP4 bug) shows here.

The items spoken in each recording (manifest.json names the recordings and their transcripts)
are written down in ``ITEMS``. Used by tests/engine/test_speech.py and bench/speech.py.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

RATE = 16_000
SLACK_S = 0.3
CUT_S = 1.0  # each item is also heard alone: its window plus this much on either side
TONE_HZ = 1000.0
_NUMBER_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "null": "0", "eins": "1", "zwei": "2", "drei": "3", "vier": "4",
    "fünf": "5", "sechs": "6", "sieben": "7", "acht": "8", "neun": "9",
}


@dataclass(frozen=True)
class Item:
    """One personal item as spoken: its kind, its words (lower case) and its digits."""

    kind: str
    words: tuple[str, ...] = ()
    digits: str = ""


ITEMS: dict[str, tuple[str, list[Item]]] = {
    "tts_personal_data_en": ("en", [
        Item("name", ("john", "smith")),
        Item("date", ("march", "fourteenth", "nineteen", "eighty"), "141985"),
        Item("phone", (), "5550134"),
        Item("email", ("john", "smith", "example"), ""),
        Item("address", ("evergreen", "terrace", "springfield"), "742"),
        Item("card", (), "4111111111111111"),
    ]),
    "tts_personal_data_de": ("de", [
        Item("name", ("erika", "mustermann")),
        Item("phone", (), "030123456 78".replace(" ", "")),
        Item("address", ("heidestraße", "köln"), "17"),
    ]),
}


@dataclass(frozen=True)
class HeardWord:
    text: str
    start: float
    end: float

    @property
    def norm(self) -> str:
        return re.sub(r"[^\w]", "", self.text.lower())

    @property
    def digits(self) -> str:
        d = re.sub(r"\D", "", self.text)
        return d or _NUMBER_WORDS.get(self.norm, "")


def _matches(word: HeardWord, item: Item) -> bool:
    norm = word.norm
    if not norm:
        return False
    if word.digits and item.digits and (word.digits in item.digits or (
            len(word.digits) >= 4 and difflib.SequenceMatcher(None, word.digits, item.digits).ratio() >= 0.6)):
        return True
    for target in item.words:
        if norm == target or (len(norm) >= 4 and difflib.SequenceMatcher(None, norm, target).ratio() >= 0.75):
            return True
    return False


def read_track(path: Path) -> tuple[NDArray[np.float32], float]:
    """The first audio stream at 16 kHz mono and the file time of its first sample (the first
    frame's timestamp), read with PyAV directly rather than through faceport."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        placed: list[tuple[float, NDArray[np.float32]]] = []
        for frame in container.decode(stream):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else None
            for chunk in resampler.resample(frame):
                data = chunk.to_ndarray().reshape(-1).astype(np.float32)
                placed.append((t if t is not None and not placed else -1.0, data))
    origin = max(0.0, placed[0][0]) if placed else 0.0
    return np.concatenate([d for _, d in placed]) if placed else np.zeros(0, np.float32), origin


class Judge:
    """Whisper base (beam 5) from the local model store."""

    def __init__(self, model_dir: Path) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2,
                                  local_files_only=True)

    def words(self, path: Path, language: str, window: tuple[float, float] | None = None) -> list[HeardWord]:
        """Words heard in the file, or only in ``window`` (file time, cut out and heard on its own)."""
        samples, origin = read_track(path)
        if window is not None:
            i0 = max(0, int((window[0] - origin) * RATE))
            samples, origin = samples[i0:max(i0, int((window[1] - origin) * RATE))], origin + i0 / RATE
            return self._heard(samples, origin, language)
        # the whole file in 12 s pieces, 10 s apart (each keeps the words that start in its first 10 s):
        # heard in one go, a long bleep tone can make Whisper stop listening for the rest of the file
        words: list[HeardWord] = []
        step, piece = 10 * RATE, 12 * RATE
        for i0 in range(0, max(1, len(samples)), step):
            start = origin + i0 / RATE
            last = i0 + piece >= len(samples)
            words += [w for w in self._heard(samples[i0:i0 + piece], start, language)
                      if last or w.start < start + step / RATE]
            if last:
                break
        return words

    def still_heard(self, output: Path, language: str, word: HeardWord, margin_s: float = CUT_S) -> bool:
        """Is ``word`` (heard in the input) heard in the output's cut around its time, on its own?

        Whole-file hearing can turn the words between two bleep tones into "a a a" (Whisper base
        after a tone); a short cut around the word is what a listener attends to."""
        cut = self.words(output, language, (word.start - margin_s, word.end + margin_s))
        return any(o.norm == word.norm for o in cut)

    def _heard(self, samples: NDArray[np.float32], origin: float, language: str) -> list[HeardWord]:
        segments, _ = self.model.transcribe(samples, language=language, beam_size=5, word_timestamps=True,
                                            condition_on_previous_text=False)
        return [HeardWord(w.word, float(w.start) + origin, float(w.end) + origin)
                for s in segments for w in (s.words or [])]


def item_windows(words: list[HeardWord], items: list[Item]) -> list[tuple[float, float] | None]:
    """Each item's time window in the input, in order: from its first matching word to its last."""
    out: list[tuple[float, float] | None] = []
    cursor = 0
    for item in items:
        hits = [i for i in range(cursor, len(words)) if _matches(words[i], item)]
        if not hits:
            out.append(None)
            continue
        first = last = hits[0]
        for i in hits[1:]:  # grow through hits at most 3 words apart
            if i > last + 3:
                break
            last = i
        out.append((words[first].start, words[last].end))
        cursor = last + 1
    return out


def tone_mask(path: Path, hop_s: float = 0.01) -> tuple[NDArray[np.bool_], float]:
    """Per ``hop_s`` step of the output track: is the 1 kHz bleep sounding? And the origin."""
    samples, origin = read_track(path)
    hop = int(RATE * hop_s)
    n = len(samples) // hop
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    t = np.arange(hop) / RATE
    ref = np.exp(-2j * np.pi * TONE_HZ * t)
    tone = np.abs(frames @ ref) ** 2 * 2 / hop
    energy = (frames ** 2).sum(axis=1)
    return (tone > 0.6 * energy) & (energy > 1e-4 * hop), origin


@dataclass
class SpeechVerdict:
    """Per recording and container: items, those recoverable, and how much of each was bleeped."""

    items: int = 0
    leaked: list[str] = field(default_factory=list)
    leaked_words: list[str] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    missing_windows: list[str] = field(default_factory=list)
    cut_unheard: list[str] = field(default_factory=list)  # items the judge did not hear in the input's cut
    other_words: int = 0  # input words outside every item window
    other_kept: int = 0  # ... of which the judge hears the same word in the output, at the same time
    other_bleeped: int = 0  # ... of which the bleep covers the middle (over-redaction, judge-loop free)
    heard_in: list[HeardWord] = field(default_factory=list)
    heard_out: list[HeardWord] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.items} items ({len(self.missing_windows)} not found in the input "
                f"{self.missing_windows or ''}, {len(self.cut_unheard)} not heard in the input's cut "
                f"{self.cut_unheard or ''}), {len(self.leaked)} recoverable {self.leaked or ''} "
                f"{self.leaked_words or ''}, least bleep coverage {min(self.coverage, default=0):.2f}, "
                f"other words kept {self.other_kept} of {self.other_words}")


def judge_speech(judge: Judge, source: Path, output: Path, recording: str,
                 heard_in: list[HeardWord] | None = None) -> SpeechVerdict:
    language, items = ITEMS[recording]
    heard_in = heard_in if heard_in is not None else judge.words(source, language)
    heard_out = judge.words(output, language)
    windows = item_windows(heard_in, items)
    mask, origin = tone_mask(output)
    verdict = SpeechVerdict(items=len(items), heard_in=heard_in, heard_out=heard_out)
    for item, window in zip(items, windows, strict=True):
        if window is None:
            verdict.missing_windows.append(item.kind)
            continue
        a, b = window
        near = [w for w in heard_out if w.end > a - SLACK_S and w.start < b + SLACK_S and _matches(w, item)]
        # Heard on its own, the item's stretch of the output (a long tone can send Whisper into a
        # loop that hides what follows); the same stretch of the input must show the item.
        cut = (a - CUT_S, b + CUT_S)
        if not any(_matches(w, item) for w in judge.words(source, language, cut)):
            verdict.cut_unheard.append(item.kind)  # this check is blind for the item; the others still hold
        near += [w for w in judge.words(output, language, cut)
                 if w.end > a - SLACK_S and w.start < b + SLACK_S and _matches(w, item)]
        if near:
            verdict.leaked.append(item.kind)
            verdict.leaked_words.extend(f"{w.text.strip()}@{w.start:.2f}" for w in near)
        i0, i1 = int((a - origin) / 0.01), int(np.ceil((b - origin) / 0.01))
        span = mask[max(0, i0):max(0, i1)]
        verdict.coverage.append(float(span.mean()) if len(span) else 0.0)
    for w in heard_in:
        if not w.norm or any(win and win[0] - SLACK_S < w.start < win[1] + SLACK_S for win in windows):
            continue
        verdict.other_words += 1
        verdict.other_kept += any(o.norm == w.norm and abs(o.start - w.start) < 0.5 for o in heard_out)
        middle = int(((w.start + w.end) / 2 - origin) / 0.01)
        verdict.other_bleeped += bool(0 <= middle < len(mask) and mask[middle])
    return verdict


# ---- test clips: the same speech in each container -----------------------------------------------
def make_clip(wav: Path, out: Path, *, audio_codec: str, offset_s: float = 0.0, fps: int = 5) -> Path:
    """A small video (plain grey frames) with ``wav``'s speech, its audio starting at ``offset_s``.

    ``.mp4`` with ``aac`` has encoder priming; ``offset_s`` > 0 makes an audio track that starts
    after the video, as camera files and edited clips have.
    """
    with av.open(str(wav)) as a:
        frames = list(a.decode(a.streams.audio[0]))
        rate = a.streams.audio[0].rate
    duration = sum(f.samples for f in frames) / rate
    fmt = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[out.suffix]
    with av.open(str(out), "w", format=fmt) as o:
        vs: Any = o.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        out_rate = 48_000 if audio_codec == "libopus" else rate
        aos: Any = o.add_stream(audio_codec, rate=out_rate)
        aos.layout = "mono"
        fmt_name = aos.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt_name, layout="mono", rate=out_rate,
                                      frame_size=aos.codec_context.frame_size or None)
        for i in range(int((duration + offset_s) * fps) + 1):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), (i * 7) % 255, np.uint8), format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                o.mux(p)
        for p in vs.encode(None):
            o.mux(p)
        next_pts = int(offset_s * out_rate)
        for f in [*frames, None]:
            if f is not None:
                f.pts = None
            for chunk in resampler.resample(f):
                chunk.pts, chunk.time_base = next_pts, Fraction(1, out_rate)
                next_pts += chunk.samples
                for p in aos.encode(chunk):
                    o.mux(p)
        for p in aos.encode(None):
            o.mux(p)
    return out
