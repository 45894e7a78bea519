"""Measured figures of the privacy filter's models, as ``GET /api/v1/models`` reports them.

The benches write them (never a hand-typed number): each bench owns one section of
``privacy_figures.json`` (shipped in the package next to this module) and replaces only that
section, so the face, plate, text and speech benches can write in any order::

    {"format": 1,
     "sections": {
       "faces": {                                  # one section per bench
         "bench": "bench/privacy.py --clips ...",  # the command that measured it
         "date": "2025-01-15T10:30:00Z",           # when (UTC)
         "machine": "AMD EPYC ..., 2 cores, ...",  # where
         "load_average": [3.1, 2.9, 2.5],          # how busy the machine was (1, 5, 15 min)
         "clips": ["pf_single_face.mp4", ...],     # the inputs measured
         "method": "independent judge: ...",       # how it was measured
         "figures": {                              # by model key of GET /api/v1/models
           "face_detection": {"coverage": 97.3, "faces_judged": 270, ...}},
         "details": {...}}}}                       # free form: per-clip rows, flagged frames

A model's figure that no section measured is reported as ``null`` with
``"<name>_note": "not measured"``. Where two sections give the same figure, the newer wins.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FIGURES_FILE = Path(__file__).with_name("privacy_figures.json")
FORMAT = 1
NOT_MEASURED = "not measured"


def read_figures(path: Path = FIGURES_FILE) -> dict[str, Any]:
    """The figures file as ``{"format": 1, "sections": {...}}``; no sections when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"format": FORMAT, "sections": {}}
    except (OSError, ValueError) as exc:
        log.warning("privacy figures %s unreadable (%s): every figure reads as not measured", path.name, exc)
        return {"format": FORMAT, "sections": {}}
    sections = data.get("sections") if isinstance(data, dict) else None
    if not isinstance(sections, dict):
        return {"format": FORMAT, "sections": {}}
    return {"format": data.get("format", FORMAT),
            "sections": {k: v for k, v in sections.items() if isinstance(v, dict)}}


def write_section(name: str, section: dict[str, Any], path: Path = FIGURES_FILE) -> None:
    """Replace one bench's section, keeping every other section (atomic write).

    ``section`` should hold ``bench``, ``clips``, ``method`` and ``figures``; ``date``,
    ``machine`` and ``load_average`` are filled in when missing.
    """
    import platform

    data = read_figures(path)
    entry = dict(section)
    entry.setdefault("date", datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    entry.setdefault("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"Python {platform.python_version()}, {platform.system()}")
    if hasattr(os, "getloadavg"):
        entry.setdefault("load_average", [round(v, 2) for v in os.getloadavg()])
    data["sections"][name] = entry
    data["format"] = FORMAT
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def with_figures(models: dict[str, dict[str, Any]], expected: dict[str, tuple[str, ...]],
                 figures: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``models`` with each model's measured figures and where they come from.

    Args:
        models: Model key -> its description (name, version, ...), no figures.
        expected: Model key -> figure names always reported (``null`` + note when unmeasured),
            e.g. the seed's ``accuracy``.
        figures: :func:`read_figures`' result (read from the package file when None).

    Returns:
        Model key -> description + figures + ``measured`` (per section: bench, date, machine,
        load, clips, method) or ``measured: null`` with ``measured_note: "not measured"``.
    """
    data = read_figures() if figures is None else figures
    sections = sorted(data.get("sections", {}).items(), key=lambda kv: str(kv[1].get("date", "")))
    out: dict[str, dict[str, Any]] = {}
    for key, info in models.items():
        entry = dict(info)
        for name in expected.get(key, ()):
            entry[name] = None
            entry[f"{name}_note"] = NOT_MEASURED
        measured: dict[str, Any] = {}
        for section_name, section in sections:  # oldest first: a newer section overrides
            values = (section.get("figures") or {}).get(key)
            if not isinstance(values, dict) or not values:
                continue
            for name, value in values.items():
                entry[name] = value
                entry.pop(f"{name}_note", None)
            measured[section_name] = {k: section.get(k) for k in ("bench", "date", "machine", "load_average",
                                                                  "clips", "method")}
        entry["measured"] = measured or None
        if not measured:
            entry["measured_note"] = NOT_MEASURED
        out[key] = entry
    return out
