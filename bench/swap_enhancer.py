"""The classical face_enhancer after a swap: seam, identity and texture by strength (face_enhancer_blend).

Usage: python bench/swap_enhancer.py [--blends 0,20,40,60,80,100] [--variants current,nodenoise]

Every ordered pair of the shared identities (first photo each) is swapped once (mesh swap,
default options); the classical enhancer is then applied at each blend, and each result is
judged like tests/engine/test_swap.py does: the dlib ResNet embedding (CenterFace box) closer
to the source than to the target (identity transfer), its distance to the source, the seam
ratio along the blend boundary, and the skin texture ratio (fine Laplacian energy on the
cheeks, enhanced / not enhanced: under 1 = texture wiped, the painted look).
Prints the median per blend and variant.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine  # noqa: E402

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))
VARIANTS = {  # each with this branch's mask (the swap's face region, 3 % inside)
    "default": {},  # this branch's defaults: unsharp mask only
    "main": {"clahe_clip": 1.5, "sharpen": 0.6, "denoise": 12.0},  # main's filters: bilateral + CLAHE + unsharp
    "nodenoise": {"clahe_clip": 1.5, "sharpen": 0.6, "denoise": 0.0},
    "sharpen0.5": {"sharpen": 0.5},
    "sharpen0.3": {"sharpen": 0.3},
}


def cheek_texture(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean |Laplacian| of the grey image in discs on both cheeks (fine skin texture)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    mask = np.zeros(grey.shape, np.uint8)
    r = max(3, round(0.07 * float(np.ptp(landmarks[:468, 0]))))
    for i in (205, 425):
        cv2.circle(mask, (round(float(landmarks[i, 0])), round(float(landmarks[i, 1]))), r, 255, -1)
    return float(lap[mask > 0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blends", default="0,20,40,60,80,100")
    parser.add_argument("--variants", default="default,main")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    blends = [int(b) for b in args.blends.split(",")]
    variants = args.variants.split(",")

    from faceport.engine.core import FaceEngine
    from faceport.engine.enhance import ClassicalEnhancer
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.errors import NoFace
    from tests.engine.test_swap import one_photo_per_identity, seam_ratio

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    photos = one_photo_per_identity(json.loads((DATA / "manifest.json").read_text()), DATA)
    reference = {n: engine.embed_largest(img, detector="centerface").embedding[0] for n, img in photos.items()}
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for source, target in itertools.permutations(photos, 2):
        swapper = build_swapper(engine, [photos[source]])
        faces = engine.detect(photos[target], landmarks=True).sorted_by_area()[:1]
        swapped = swapper.process(photos[target], faces)
        base_texture = cheek_texture(swapped, faces.landmarks[0])
        for variant, blend in itertools.product(variants, blends):
            if blend == 0 and variant != variants[0]:
                continue
            out = ClassicalEnhancer(blend / 100.0, **VARIANTS[variant]).process(swapped, faces)
            row = rows.setdefault((variant if blend else "none", blend),
                                  {"closer": [], "dist": [], "seam": [], "texture": []})
            try:
                emb = engine.embed_largest(out, detector="centerface").embedding[0]
            except NoFace:
                row["closer"].append(0.0)
                continue
            d_src, d_tgt = np.linalg.norm(emb - reference[source]), np.linalg.norm(emb - reference[target])
            row["closer"].append(float(d_src < d_tgt))
            row["dist"].append(float(d_src))
            row["seam"].append(seam_ratio(photos[target], out, faces.landmarks[0]))
            row["texture"].append(cheek_texture(out, faces.landmarks[0]) / max(base_texture, 1e-6))
    summary = {f"{v} {b}": {"identity transfer": round(float(np.mean(r["closer"])), 3),
                            "dist to source median": round(statistics.median(r["dist"]), 4),
                            "seam median": round(statistics.median(r["seam"]), 3),
                            "seam p90": round(float(np.percentile(r["seam"], 90)), 3),
                            "texture ratio median": round(statistics.median(r["texture"]), 3),
                            "pairs": len(r["closer"])}
               for (v, b), r in rows.items()}
    if args.json:
        print(json.dumps({"machine": machine(), "results": summary}))
        return
    print(f"machine: {machine()}")
    print(f"{len(photos)} identities, {len(photos) * (len(photos) - 1)} ordered pairs; classical enhancer after "
          "the mesh swap")
    for name, figures in summary.items():
        print(f"{name:14s} " + "; ".join(f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
