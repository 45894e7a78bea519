"""Gender and approximate age of the identity photos (tests/fixtures/identity_demographics.json) and the
demographics models' error on them.

Shared by tests/engine/test_demographics.py and bench/demographics.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

LABELS = Path(__file__).resolve().parent / "fixtures" / "identity_demographics.json"


@dataclass(frozen=True)
class Expected:
    identity: str
    gender: str
    age: float  # middle of the likely photo years minus the birth year
    uncertainty: float  # half the range of photo years, plus one year for the birthday


@dataclass(frozen=True)
class Measured:
    path: str
    expected: Expected
    gender: str
    gender_score: float
    age: float
    emotion: str

    @property
    def age_error(self) -> float:
        return abs(self.age - self.expected.age)


def expected_for(manifest: dict[str, Any]) -> dict[str, Expected]:
    """Every identity photo of the shared data's manifest -> its expected gender and age."""
    identities = json.loads(LABELS.read_text())["identities"]
    out = {}
    for entry in manifest["files"]:
        if "identity" not in entry.get("categories", ()):
            continue
        label = identities[entry["identity"]]
        first, last = label.get("files", {}).get(Path(entry["path"]).name, label["photo_years"])
        out[entry["path"]] = Expected(entry["identity"], label["gender"], (first + last) / 2 - label["birth_year"],
                                      (last - first) / 2 + 1)
    return out


def measure(engine: Any, data_dir: Path, manifest: dict[str, Any]) -> list[Measured]:
    """The largest face of each identity photo through the default detector and the demographics models."""
    analyzer = engine.demographics()
    out = []
    for path, expected in sorted(expected_for(manifest).items()):
        image = cv2.imread(str(data_dir / path), cv2.IMREAD_COLOR)
        faces = engine.detect(image)
        if not len(faces):
            raise AssertionError(f"no face found in {path}")
        d = analyzer.analyze(image, faces.sorted_by_area()[:1])
        out.append(Measured(path, expected, d.gender_label(0), float(d.gender[0].max()), float(d.age[0]),
                            d.emotion_label(0)))
    return out


def summary(results: list[Measured]) -> dict[str, Any]:
    """Gender accuracy, age MAE (overall and per identity) and how many ages fall within the label's uncertainty."""
    per: dict[str, list[Measured]] = {}
    for r in results:
        per.setdefault(r.expected.identity, []).append(r)
    return {
        "photos": len(results),
        "gender_correct": sum(r.gender == r.expected.gender for r in results),
        "age_mae": sum(r.age_error for r in results) / len(results),
        "age_within_uncertainty": sum(r.age_error <= r.expected.uncertainty for r in results),
        "per_identity": {
            name: {"photos": len(rs), "gender": rs[0].expected.gender,
                   "gender_correct": sum(r.gender == r.expected.gender for r in rs),
                   "expected_age": round(sum(r.expected.age for r in rs) / len(rs), 1),
                   "mean_estimate": round(sum(r.age for r in rs) / len(rs), 1),
                   "age_mae": round(sum(r.age_error for r in rs) / len(rs), 1)}
            for name, rs in sorted(per.items())},
    }
