"""Live speech redaction: personal data bleeped in a running audio stream, with a small fixed delay.

The offline path (:mod:`faceport.engine.audio`) hears a whole file before it decides; a live
stream cannot wait for its end. :class:`LiveSpeechRedactor` keeps the last ``window_s`` seconds of
the stream (16 kHz mono), and a worker calls :meth:`LiveSpeechRedactor.analyse` over and over: each
pass transcribes the window with word times (the same Whisper tiny.en and the same PII rules and
named-entity model as files), and every personal item found is added to the bleep spans, padded and
grown to whole words as in files. Spans are only ever added (an item seen whole in one pass stays
bleeped even if a later window cuts its trigger phrase off).

The output is the input delayed by ``delay_s``. Audio is released only once a pass has covered it
with ``settle_s`` of speech after it (a word at the window's edge may still be cut): audio no pass
has cleared by the time it is due is *muted*, never released unchecked (fail closed), and counted.
So the delay must exceed one pass's time plus the time between passes plus ``settle_s``; the
stream's ``processing_update`` reports each pass's time and the muted milliseconds.

Stream time is counted in samples received (a gap in the network does not move the bleeps).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from faceport.engine.audio import TONE_HZ, TONE_LEVEL, PiiDetector, Transcriber, redact_words
from faceport.errors import InvalidInput

__all__ = ["Heard", "LiveAudioDecision", "LiveMode", "LiveSpeechOptions", "LiveSpeechRedactor", "to_mono_16k",
           "warm_up"]

RATE: Final = 16_000
LiveMode = Literal["bleep", "mute"]


@dataclass(frozen=True, slots=True)
class LiveSpeechOptions:
    """How a live stream's speech is redacted.

    Attributes:
        mode: "bleep" (personal data replaced by a 1 kHz tone, everything else heard) or "mute"
            (all audio silenced; no ASR runs).
        delay_s: Fixed delay of the output behind the input.
        window_s: Seconds of audio each pass transcribes (context for trigger phrases).
        settle_s: Speech a pass must have heard after a sample before the sample is released.
        pad_before_s: Added before each item (then grown to whole words). Wider than the file path's
            0.15 s: in a live window tiny.en timed "John" up to ~0.3 s late, and over WebRTC the first
            0.14 s of the name sounded before the tone in two runs out of two with 0.15 s.
        pad_after_s: Added after each item.
    """

    mode: LiveMode = "bleep"
    delay_s: float = 5.0
    window_s: float = 10.0
    settle_s: float = 0.6
    pad_before_s: float = 0.35
    pad_after_s: float = 0.10

    def __post_init__(self) -> None:
        if self.mode not in ("bleep", "mute"):
            raise InvalidInput(f"live audio mode must be bleep or mute, got {self.mode!r}",
                               details={"field": "audio_mode"})
        if not 0.5 <= self.delay_s <= 30.0:
            raise InvalidInput(f"live audio delay must be 0.5-30 s, got {self.delay_s}",
                               details={"field": "audio_delay_s"})
        if not self.settle_s < self.delay_s or not 2.0 <= self.window_s <= 30.0:
            raise InvalidInput("live audio: settle_s must be below delay_s and window_s 2-30 s",
                               details={"field": "audio"})


@dataclass(frozen=True, slots=True)
class LiveAudioDecision:
    """What happened to one output chunk: samples (channels, n) float32 and how much was changed."""

    samples: NDArray[np.float32]
    bleeped_s: float
    unchecked_s: float


@dataclass(frozen=True, slots=True)
class Heard:
    """A pass's window (16 kHz mono, stream times) and, once heard, its spans and cost."""

    samples: NDArray[np.float32]
    start_s: float
    end_s: float
    spans: list[tuple[float, float, str]] = field(default_factory=list)
    ms: float | None = None
    clear_s: float | None = None  # what the pass may clear up to (None: end_s - settle)
    decided_s: float = 0.0  # audio before this was already cleared or released when the pass began


MAX_WINDOW_S: Final = 24.0  # the longest window (an item going on is heard from its start)
TRIGGER_CONTEXT_S: Final = 2.5  # heard before an item going on: its trigger phrase
QUIET: Final = 0.1  # a 20 ms frame below this share of the window's loud level (90th percentile) is a pause
WORD_SLACK_S: Final = 0.25  # Whisper's word times are often this much early or late
MISSED_RUN_S: Final = 0.5  # sound this long in no word's time is a word the transcript missed


def _heard_until(window: Heard, words: list[tuple[float, float]], limit: float) -> float:
    """The latest time ≤ ``limit`` up to which every sounding 20 ms frame of ``window`` lies in (or near)
    a recognised word: speech the transcript missed stops the clearing."""
    hop = RATE // 50
    n = len(window.samples) // hop
    if n == 0:
        return window.start_s
    rms = np.sqrt((window.samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    loud = max(float(np.percentile(rms, 90)), 1e-4)
    times = window.start_s + (np.arange(n) + 0.5) * hop / RATE
    sounding = rms > max(QUIET * loud, 0.003)
    covered = np.zeros(n, bool)
    for a, b in words:
        covered |= (times >= a - WORD_SLACK_S) & (times <= b + WORD_SLACK_S)
    missed = sounding & ~covered & (times > window.decided_s) & (times <= limit)
    run = int(MISSED_RUN_S * RATE / hop)
    if missed.sum() < run:
        return limit
    # the first run of ``run`` missed frames (pauses inside it allowed for 100 ms)
    filled = np.convolve(missed.astype(np.float32), np.ones(5), mode="same") > 0
    count = 0
    for i, flag in enumerate(filled & (times <= limit)):
        count = count + 1 if flag else 0
        if count >= run and missed[i - count + 1:i + 1].sum() >= run // 2:
            return float(min(limit, times[i - count + 1] - hop / RATE / 2))
    return limit


def warm_up(models: Callable[[], tuple[Transcriber, PiiDetector]]) -> None:
    """Load the models and run each once, so a stream's first pass is not the slow one."""
    transcriber, detector = models()
    transcriber.transcribe(np.zeros(RATE, np.float32), language="en")
    detector.spans("My name is John Smith and my phone number is 555 0134.")


def to_mono_16k(samples: NDArray[np.float32], rate: int) -> NDArray[np.float32]:
    """(channels, n) float32 at ``rate`` → mono 16 kHz (box low-pass + decimation for 48/32 kHz;
    linear interpolation otherwise). Good enough for Whisper, which hears up to 8 kHz."""
    data = np.asarray(samples, np.float32)
    mono: NDArray[np.float32] = data.mean(axis=0, dtype=np.float32) if data.ndim == 2 else data
    if rate == RATE:
        return mono
    out: NDArray[np.float32]
    if rate % RATE == 0:
        k = rate // RATE
        n = len(mono) // k * k
        out = mono[:n].reshape(-1, k).mean(axis=1, dtype=np.float32)
        return out
    n_out = int(len(mono) * RATE / rate)
    out = np.interp(np.arange(n_out) * rate / RATE, np.arange(len(mono)), mono).astype(np.float32)
    return out


class LiveSpeechRedactor:
    """One live stream's speech redaction. :meth:`feed` and :meth:`release` are called by the media
    track (event loop), :meth:`analyse` by a worker thread; they share state under a lock.

    Args:
        models: Loads (transcriber, PII detector) on first use — the file path's English models.
        options: Delay, window, padding, mode.
    """

    def __init__(self, models: Callable[[], tuple[Transcriber, PiiDetector]],
                 options: LiveSpeechOptions | None = None) -> None:
        self.options = options or LiveSpeechOptions()
        self._models = models
        self._lock = threading.Lock()
        self._buffer = np.zeros(0, np.float32)  # the last MAX_WINDOW_S seconds at 16 kHz
        self._open: float | None = None  # start of an item the newest pass heard still going on
        self._received = 0  # samples received in all (16 kHz)
        self._checked_until = 0.0  # stream seconds cleared by a pass
        self._released_until = 0.0  # stream seconds handed out by release()
        self.spans: list[tuple[float, float, str]] = []
        self.passes = 0
        self.last_pass_ms: float | None = None
        self.bleeped_s = 0.0
        self.unchecked_s = 0.0

    # ---- input ---------------------------------------------------------------------------------
    @property
    def received_s(self) -> float:
        return self._received / RATE

    @property
    def checked_until(self) -> float:
        return self._checked_until

    def feed(self, samples: NDArray[np.float32], rate: int) -> None:
        """Append the next chunk of the stream ((channels, n) or (n,) float32 in -1..1)."""
        mono = to_mono_16k(samples, rate)
        keep = int(MAX_WINDOW_S * RATE)
        with self._lock:
            self._buffer = np.concatenate([self._buffer, mono])[-keep:]
            self._received += len(mono)

    # ---- worker --------------------------------------------------------------------------------
    def pending_s(self) -> float:
        """Stream seconds received that no pass has heard yet."""
        with self._lock:
            return self.received_s - (self._checked_until + self.options.settle_s)

    def analyse(self) -> int:
        """One pass over the current window (:meth:`window`, :meth:`hear`, :meth:`commit`): returns how
        many new spans it added. Everything up to ``window end - settle_s`` is cleared (or bleeped) after it."""
        if self.options.mode == "mute":
            return 0
        window = self.window()
        if window is None:
            return 0
        return self.commit(self.hear(window))

    def window(self) -> Heard | None:
        """The audio a pass hears now, or None when there is too little.

        The window starts in the quietest 100 ms of its first two seconds (Whisper cut into the middle
        of a word or sentence tends to return nothing at all), but never after audio still undecided."""
        if self.options.mode == "mute":
            return None
        with self._lock:
            end_s = self.received_s
            decided = max(self._checked_until, self._released_until)
            # an item still going on is heard from its trigger phrase on, or a later window would miss
            # what makes it personal ("my card number is" ... digits for 8 s)
            start_s = end_s - self.options.window_s
            if self._open is not None:
                start_s = min(start_s, self._open - TRIGGER_CONTEXT_S)
            samples = self._buffer[max(0, len(self._buffer) - int((end_s - start_s) * RATE)):].copy()
        if len(samples) < RATE // 4:
            return None
        start_s = end_s - len(samples) / RATE
        hop = RATE // 10
        limit = min(decided - start_s, 2.0 if self._open is None else 0.0)
        head = samples[: max(0, min(len(samples) - RATE // 4, int(limit * RATE)))]
        if len(head) >= 2 * hop:
            levels = np.sqrt(np.convolve(head ** 2, np.ones(hop) / hop, mode="valid")[::RATE // 100])
            cut = int(np.argmin(levels)) * (RATE // 100)
            samples = samples[cut:]
        return Heard(samples, end_s - len(samples) / RATE, end_s, decided_s=decided)

    def hear(self, window: Heard) -> Heard:
        """Transcribe ``window`` and find its personal items (the slow part; no shared state touched).

        What it may clear ends at ``end - settle_s``, and earlier where speech sounds that no word
        was heard in (an empty or partial transcript must not clear the speech it missed)."""
        transcriber, detector = self._models()
        started = time.perf_counter()
        words, _ = transcriber.transcribe(window.samples, language="en", origin=window.start_s)
        found = redact_words(words, detector, pad_before_s=self.options.pad_before_s,
                             pad_after_s=self.options.pad_after_s, end_s=window.end_s)
        # speech inside an item is bleeped whatever was heard in it: it counts as heard
        heard = [(w.start, w.end) for w in words] + [(r.start, r.end) for r in found]
        clear = _heard_until(window, heard, window.end_s - self.options.settle_s)
        return Heard(window.samples, window.start_s, window.end_s, [(r.start, r.end, r.kind) for r in found],
                     (time.perf_counter() - started) * 1000.0, clear, window.decided_s)

    def commit(self, heard: Heard) -> int:
        """Make a pass's result count: its spans are added, its window cleared up to ``end - settle_s``."""
        added = 0
        with self._lock:
            going_on = [a for a, b, _ in heard.spans if b >= heard.end_s - self.options.settle_s]
            self._open = min(going_on) if going_on else None
            for a, b, kind in heard.spans:
                if not any(x <= a and b <= y for x, y, _ in self.spans):
                    self.spans.append((a, b, kind))
                    added += 1
            limit = heard.end_s - self.options.settle_s if heard.clear_s is None else heard.clear_s
            if heard.start_s <= max(self._checked_until, self._released_until) + 0.05:
                self._checked_until = max(self._checked_until, limit)
            # else: audio between what is cleared and this window was never heard; it goes out muted,
            # and passes clear again once it has gone
            self.passes += 1
            self.last_pass_ms = heard.ms
        return added

    # ---- output --------------------------------------------------------------------------------
    def release(self, samples: NDArray[np.float32], start_s: float, rate: int) -> LiveAudioDecision:
        """The delayed chunk ``samples`` ((channels, n) float32) that began at stream time ``start_s``,
        as it may go out: personal data bleeped, anything no pass has cleared muted."""
        n = samples.shape[-1]
        out = samples.copy()
        if self.options.mode == "mute":
            out[...] = 0.0
            return LiveAudioDecision(out, 0.0, 0.0)
        with self._lock:
            spans = [(a, b) for a, b, _ in self.spans]
            checked = self._checked_until
        tone = np.zeros(n, bool)
        for a, b in spans:
            i0 = max(0, math.floor((a - start_s) * rate))
            i1 = min(n, math.ceil((b - start_s) * rate))
            if i1 > i0:
                tone[i0:i1] = True
        bleeped = int(tone.sum())
        if bleeped:
            t = np.flatnonzero(tone) / rate + start_s
            out[..., tone] = (TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        cleared = max(0, min(n, math.floor((checked - start_s) * rate)))
        unchecked = n - cleared
        if unchecked:
            out[..., cleared:] = 0.0  # fail closed: not heard by any pass yet
        with self._lock:
            self._released_until = max(self._released_until, start_s + n / rate)
            self.bleeped_s += bleeped / rate
            self.unchecked_s += unchecked / rate
        return LiveAudioDecision(out, bleeped / rate, unchecked / rate)

    def snapshot(self) -> dict[str, object]:
        """Figures for ``processing_update``."""
        with self._lock:
            return {"mode": self.options.mode, "delayMs": round(self.options.delay_s * 1000),
                    "items": len(self.spans), "bleepedMs": round(self.bleeped_s * 1000),
                    "mutedUncheckedMs": round(self.unchecked_s * 1000), "passes": self.passes,
                    "passMs": None if self.last_pass_ms is None else round(self.last_pass_ms, 1),
                    "behindMs": round(max(0.0, self.received_s - self._checked_until) * 1000)}
