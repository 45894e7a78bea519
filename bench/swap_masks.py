"""Swap masks (issue 16): identity transfer, seam and speed per mask option, over every ordered pair of identities.

Identity transfer: the share of ordered pairs (one photo per shared identity) whose swapped face's dlib
embedding (CenterFace box; the swap uses neither) is closer to the source than to the target, and the median
margin (distance to the target minus distance to the source). Seam: gradient energy in a band along the blend
boundary, swapped / original (tests/engine/test_swap.py's metric; 1.0 = no visible seam). Time: the median
swap time per pair, over ``--runs`` runs of the whole set.

Usage: python bench/swap_masks.py [--runs 3] [--only default,occlusion]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine import machine

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))

OPTIONS: dict[str, dict[str, object]] = {
    "default": {},  # box, lips/eyelids follow the target
    "no-expression": {"keep_expression": False},  # main before issue 16 (source lips and eyelids)
    "box+region": {"mask_types": ("box", "region")},
    "region eyes,nose,lips": {"mask_types": ("region",),
                              "mask_regions": ("left-eye", "right-eye", "nose", "upper-lip", "lower-lip")},
    "blur 0": {"mask_blur": 0.0},
    "blur 0.6": {"mask_blur": 0.6},
    "padding 10,0,10,0": {"mask_padding": (10.0, 0.0, 10.0, 0.0)},
    "box+occlusion": {"mask_types": ("box", "occlusion")},
    "mouth_mask": {"mouth_mask": True},
    "box+occlusion+mouth_mask": {"mask_types": ("box", "occlusion"), "mouth_mask": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated option names (default: all)")
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.engine.swap.mesh import SwapOptions
    from faceport.errors import NoFace
    from tests.engine.test_swap import one_photo_per_identity, seam_ratio

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    photos = one_photo_per_identity(json.loads((DATA / "manifest.json").read_text()), DATA)
    reference = {n: engine.embed_largest(im, detector="centerface").embedding[0] for n, im in photos.items()}
    faces = {n: engine.detect(im, landmarks=True).sorted_by_area()[:1] for n, im in photos.items()}
    pairs = list(itertools.permutations(photos, 2))
    names = [n for n in OPTIONS if not args.only or n in args.only.split(",")]
    print(f"machine: {machine()}")
    print(f"{len(pairs)} ordered pairs of {len(photos)} identities; median of {args.runs} runs for the time")
    print("| option | identity transfer | median margin | seam median (p90) | ms per swap |")
    print("|---|---|---|---|---|")
    for name in names:
        options = SwapOptions(**OPTIONS[name])  # type: ignore[arg-type]
        swappers = {n: build_swapper(engine, [im], options=options) for n, im in photos.items()}
        outputs = {}
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for source, target in pairs:
                outputs[(source, target)] = swappers[source].process(photos[target], faces[target])
            times.append((time.perf_counter() - start) * 1000 / len(pairs))
        closer, margins, seams = 0, [], []
        for (source, target), out in outputs.items():
            try:
                embedding = engine.embed_largest(out, detector="centerface").embedding[0]
            except NoFace:
                continue
            to_source = float(np.linalg.norm(embedding - reference[source]))
            to_target = float(np.linalg.norm(embedding - reference[target]))
            closer += to_source < to_target
            margins.append(to_target - to_source)
            seams.append(seam_ratio(photos[target], out, faces[target].landmarks[0]))
        print(f"| {name} | {closer}/{len(pairs)} = {closer / len(pairs):.1%} | {np.median(margins):.3f} | "
              f"{np.median(seams):.2f} ({np.percentile(seams, 90):.2f}) | {statistics.median(times):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
