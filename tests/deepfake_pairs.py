"""Real photos against swaps made by faceport's own mesh swapper, for the deepfake cues' ROC AUC.

Real: every photo under identity/, group/ and faces_misc/ of ../shared/data (per image: its
most suspicious face). Fake: each identity photo with its largest face swapped (faceport's
landmark mesh swap, default options) for the first photo of the next ``sources_per_target``
identities in name order, so source and target are always different people.

This is what faceport's own swapper leaves behind, not deepfakes from the wild. The optional
inswapper_128 path is measured only where a user has installed it (never in CI).

Shared by tests/engine/test_deepfake.py and bench/deepfake.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REAL_FOLDERS = ("identity", "group", "faces_misc")


@dataclass(frozen=True)
class Sample:
    name: str  # "identity/obama/fr_obama.jpg" or "swap:<source> -> <target>"
    fake: bool
    image: np.ndarray  # BGR
    swapper: str  # "" for real photos


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, np.uint8)


def real_photos(data_dir: Path, manifest: dict[str, Any]) -> list[str]:
    return sorted(e["path"] for e in manifest["files"] if e["path"].split("/")[0] in REAL_FOLDERS
                  and str(e.get("format", "")).lower() in ("jpeg", "png"))


def identity_photos(manifest: dict[str, Any]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for e in manifest["files"]:
        if e["path"].startswith("identity/"):
            by.setdefault(e["identity"], []).append(e["path"])
    return {k: sorted(v) for k, v in sorted(by.items())}


def build_samples(engine: Any, data_dir: Path, manifest: dict[str, Any], *, sources_per_target: int = 2,
                  swappers: Sequence[str] = ("mesh",)) -> list[Sample]:
    """Real photos and swaps (see the module docstring). ``swappers``: "mesh" and/or "inswapper_128"."""
    from faceport.engine.swap import build_swapper

    samples = [Sample(p, False, read(data_dir / p), "") for p in real_photos(data_dir, manifest)]
    ids = identity_photos(manifest)
    names = list(ids)
    for model in swappers:
        cache: dict[str, Any] = {}
        for i, target_id in enumerate(names):
            for k in range(1, sources_per_target + 1):
                source_path = ids[names[(i + k) % len(names)]][0]
                if source_path not in cache:
                    cache[source_path] = build_swapper(engine, [read(data_dir / source_path)], model=model)  # type: ignore[arg-type]
                for target_path in ids[target_id]:
                    target = read(data_dir / target_path)
                    faces = engine.detect(target, landmarks=True)
                    if len(faces) == 0:
                        continue
                    swapped = cache[source_path].process(target, faces.sorted_by_area()[:1])
                    samples.append(Sample(f"swap:{source_path} -> {target_path}", True, swapped, model))
    return samples


def roc_auc(real: Sequence[float], fake: Sequence[float]) -> float:
    """P(fake score > real score), ties counting half (the Mann-Whitney form of the ROC AUC)."""
    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if not len(r) or not len(f):
        return float("nan")
    greater = (f[:, None] > r[None, :]).sum() + 0.5 * (f[:, None] == r[None, :]).sum()
    return float(greater / (len(r) * len(f)))


@dataclass(frozen=True)
class Scored:
    sample: Sample
    score: float  # the image's score (its most suspicious face; 0 with no face)
    cues: dict[str, float]  # the cues of that face
    faces: int


def score_samples(engine: Any, samples: Sequence[Sample],
                  scorer: Callable[[np.ndarray, Any], list[Any]]) -> list[Scored]:
    """Each sample's image score with ``scorer(image, faces)`` -> per-face DeepfakeScore."""
    out = []
    for s in samples:
        faces = engine.detect(s.image, landmarks=True)
        scores = scorer(s.image, faces)
        worst = max(scores, key=lambda x: x.score) if scores else None
        out.append(Scored(s, worst.score if worst else 0.0, dict(worst.raw) if worst else {}, len(faces)))
    return out
