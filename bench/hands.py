"""Hands over the face (issue 16): what the hand search finds in the Pexels clip and what it costs per frame.

The clip (640x360, 472 frames) shows one woman whose own hand covers her mouth, nose, cheek or chin in about
frames 56-240 and is out of the frame elsewhere. Per sampled frame: the hand search around her face
(``HandLandmarker.detect`` on a square three faces wide, as the swap's occlusion mask runs it), and the
whole box+occlusion swap (Obama's face in) with and without the hand search, A/B interleaved; CPU time
(``time.process_time``, the machine is shared).

Usage: python bench/hands.py [--step 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine import machine

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))
HAND_FRAMES = range(56, 241)  # her hand over her face or chin (checked on a contact sheet of the clip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--step", type=int, default=4)
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.engine.swap.mesh import HAND_PALM_SCORE, HAND_SEARCH, MeshSwapper, SwapOptions

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    hands = engine.hands()
    source = cv2.imread(str(DATA / "identity/obama/fr_obama.jpg"))
    options = SwapOptions(mask_types=("box", "occlusion"))
    with_hands = build_swapper(engine, [source], options=options)
    assert isinstance(with_hands, MeshSwapper) and with_hands.hands is not None
    without = MeshSwapper(with_hands.sources, options, None)
    cap = cv2.VideoCapture(str(DATA / "video/pf_WolfgangLanger_Pexels.mp4"))
    found = {True: [0, 0], False: [0, 0]}  # hand in frame -> [frames with a hand found, frames]
    search, swap_on, swap_off = [], [], []
    i = -1
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        i += 1
        if i % args.step:
            continue
        faces = engine.detect(frame, landmarks=True).sorted_by_area()[:1]
        if not len(faces):
            continue
        xy = faces.landmarks[0][:468, :2]
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        region = (float(x0 + x1) / 2, float(y0 + y1) / 2, float(max(x1 - x0, y1 - y0)) * HAND_SEARCH)
        start = time.process_time()
        result = hands.detect(frame, region=region, score_threshold=HAND_PALM_SCORE, max_hands=2)
        search.append((time.process_time() - start) * 1000)
        row = found[i in HAND_FRAMES]
        row[0] += len(result) > 0
        row[1] += 1
        for swapper, times in ((without, swap_off), (with_hands, swap_on)) if i % 2 else \
                ((with_hands, swap_on), (without, swap_off)):
            start = time.process_time()
            swapper.process(frame, faces)
            times.append((time.process_time() - start) * 1000)
    print(f"machine: {machine()}")
    print(f"frames with her hand over her face: hand found in {found[True][0]}/{found[True][1]}; "
          f"frames without a hand: found in {found[False][0]}/{found[False][1]}")
    print(f"hand search CPU ms per frame: median {statistics.median(search):.1f}, "
          f"p90 {sorted(search)[int(len(search) * 0.9)]:.1f}")
    print(f"box+occlusion swap CPU ms per frame: {statistics.median(swap_off):.1f} without the hand search, "
          f"{statistics.median(swap_on):.1f} with it")


if __name__ == "__main__":
    main()
