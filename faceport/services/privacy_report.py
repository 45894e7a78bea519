"""The audit report of a privacy job (seed E, ``"report": true``): what was hidden, where and why.

Written beside the output as ``<output>.report.json``::

    {"format": "faceport.privacy.report/1", "media": "video", "source": "clip.mp4", "output": "clip_out.mp4",
     "created": "2025-01-15T10:30:00Z", "width": 640, "height": 360, "fps": 30.0,
     "config": {...the config the job ran with...}, "text_included": false,
     "audio": {"mode": "bleep", "spans": [{"entity": "PHONE_NUMBER", "start": 9.05, "end": 11.2,
                                            "words": [9.1, 11.15]}, ...]},
     "frames": [{"frame": 0, "time": 0.0, "regions": [
         {"kind": "face", "why": "detected", "detector": "centerface", "score": 0.91, "box": [201, 40, 330, 197]},
         {"kind": "plate", "why": "plate", "detector": "plate_cascades+ppocr_v4", "box": [...]},
         {"kind": "text", "why": "phone", "detector": "ppocr_v4", "box": [...]},
         {"kind": "mouth", "why": "speech", "box": [...]}]}, ...],
     "summary": {"frames": 72, "regions": 80, "by_kind": {"face": 80}, "by_why": {...}, "audio_spans": 0}}

``box`` is exactly the pixel rectangle that was replaced in that output frame (x1, y1, x2, y2;
x2 and y2 exclusive; padding included, clipped to the frame). A video has one entry per output
frame (a frame the rate conversion repeats is listed again). ``audio.spans`` are the spans
bleeped or silenced (``start``/``end``, margins included) with the entity and the times of the
words it covered. Raw personal text (plate numbers, OCR'd values, spoken words) is left out
unless the request sets ``"report_text": true``.

The file is streamed to a hidden partial file next to the output (memory stays flat on long
videos) and renamed over ``<output>.report.json`` when the job succeeds; a failed job leaves none.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from faceport.engine.redact import Detections, pixel_rects

FORMAT = "faceport.privacy.report/1"
SUFFIX = ".report.json"


def report_path(output: Path) -> Path:
    """``<output>.report.json``, beside the output."""
    return output.with_name(output.name + SUFFIX)


def partial_report_path(output: Path) -> Path:
    """The hidden file a report is streamed to before it is renamed over :func:`report_path`."""
    return output.with_name(f".{output.name}.report.partial.json")


@dataclass(frozen=True, slots=True)
class AudioSpan:
    """One redacted stretch of speech."""

    entity: str
    start: float  # bleeped or silenced from here (margins included)
    end: float
    words_start: float  # the words of the entity
    words_end: float
    text: str | None = None


def audio_spans(redactions: Sequence[Any], bleeped: Sequence[tuple[float, float]]) -> list[AudioSpan]:
    """Report spans for the engine's redactions (``kind``, ``start``, ``end``, ``text``).

    ``bleeped`` are the spans the audio filter really replaced (``Bleeper.spans``, padded and
    sorted); each redaction is reported with the one that covers it (its own times when none does).
    """
    out: list[AudioSpan] = []
    for r in redactions:
        start, end = float(r.start), float(r.end)
        covering = [(a, b) for a, b in bleeped if a <= start + 1e-6 and b >= end - 1e-6]
        a, b = min(covering, key=lambda s: s[1] - s[0]) if covering else (start, end)
        out.append(AudioSpan(str(r.kind), a, b, start, end, getattr(r, "text", None)))
    return out


class ReportWriter:
    """Streams one job's report; call :meth:`frame` then :meth:`written` per frame, then :meth:`close`.

    Args:
        output: The job's output file (the report goes to :func:`report_path` of it).
        media: "image", "video" or "audio".
        source_name: The input's file name (no folder: reports never hold server paths).
        config: The config the job ran with (a JSON object).
        padding: ``video.blur.padding``: boxes are reported as the pixels really replaced.
        fps: Output frame rate (frame times); 0 for images and audio.
        include_text: Put raw text (plates, OCR values, spoken words) in the report.
    """

    def __init__(self, output: Path, *, media: str, source_name: str, config: dict[str, Any], padding: int,
                 fps: float = 0.0, include_text: bool = False) -> None:
        self.target = report_path(output)
        self.partial = partial_report_path(output)
        self.padding = padding
        self.fps = fps
        self.include_text = include_text
        self.header: dict[str, Any] = {"format": FORMAT, "media": media, "source": source_name,
                                       "output": output.name, "created": datetime.now(UTC).isoformat(
                                           timespec="seconds").replace("+00:00", "Z"),
                                       "width": None, "height": None, "fps": round(fps, 3) if fps else None,
                                       "config": config, "text_included": include_text,
                                       "audio": None}
        self._file: IO[str] | None = None
        self._pending: tuple[Detections, tuple[int, ...]] | None = None
        self._frames = 0
        self._kinds: Counter[str] = Counter()
        self._whys: Counter[str] = Counter()
        self._spans = 0

    def audio(self, mode: str, spans: Sequence[AudioSpan]) -> None:
        """Record the audio redactions (before the first frame)."""
        rows = []
        for s in spans:
            row: dict[str, Any] = {"entity": s.entity, "start": round(s.start, 3), "end": round(s.end, 3),
                                   "words": [round(s.words_start, 3), round(s.words_end, 3)]}
            if self.include_text and s.text:
                row["text"] = s.text
            rows.append(row)
        self.header["audio"] = {"mode": mode, "spans": rows}
        self._spans = len(rows)

    def frame(self, found: Detections, shape: tuple[int, ...]) -> None:
        """What the frame function hid in the frame it was just given (its output shape ``(H, W, ...)``)."""
        self._pending = (found, shape)

    def written(self, first: int, repeats: int) -> None:
        """The last frame's result filled output frames ``first .. first + repeats - 1``."""
        if self._pending is None:
            return
        found, shape = self._pending
        self._pending = None
        regions = self._regions(found, shape)
        out = self._open(shape)
        for n in range(first, first + repeats):
            entry = {"frame": n, "time": round(n / self.fps, 4) if self.fps else 0.0, "regions": regions}
            out.write(("," if self._frames else "") + "\n" + json.dumps(entry, separators=(",", ":")))
            self._frames += 1
            for region in regions:
                self._kinds[region["kind"]] += 1
                self._whys[f"{region['kind']}:{region['why']}"] += 1

    def _regions(self, found: Detections, shape: tuple[int, ...]) -> list[dict[str, Any]]:
        rects = pixel_rects(found.all_boxes(), shape, self.padding).tolist()
        regions: list[dict[str, Any]] = []
        for (x1, y1, x2, y2), reason in zip(rects, found.explain(), strict=True):
            if x2 <= x1 or y2 <= y1:  # outside the frame: nothing was replaced
                continue
            region: dict[str, Any] = {"kind": reason.kind, "why": reason.why}
            if reason.detector:
                region["detector"] = reason.detector
            if reason.score is not None:
                region["score"] = round(float(reason.score), 3)
            if reason.held:
                region["held"] = reason.held
            if self.include_text and reason.text:
                region["text"] = reason.text
            region["box"] = [x1, y1, x2, y2]
            regions.append(region)
        return regions

    def _open(self, shape: tuple[int, ...] | None) -> IO[str]:
        if self._file is None:
            if shape is not None:
                self.header["height"], self.header["width"] = int(shape[0]), int(shape[1])
            self._file = self.partial.open("w", encoding="utf-8")
            head = json.dumps(self.header, separators=(",", ":"))
            self._file.write(head[:-1] + ',"frames":[')
        return self._file

    def close(self) -> Path:
        """Finish the file and rename it over ``<output>.report.json``; returns that path."""
        out = self._open(None)
        summary = {"frames": self._frames, "regions": sum(self._kinds.values()), "by_kind": dict(self._kinds),
                   "by_why": dict(self._whys), "audio_spans": self._spans}
        out.write('\n],"summary":' + json.dumps(summary, separators=(",", ":")) + "}\n")
        out.close()
        self._file = None
        os.replace(self.partial, self.target)
        return self.target

    def abort(self) -> None:
        """Drop the partial file (the job failed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)
