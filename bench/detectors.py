"""Face detectors side by side: recall on the group photos, false positives, one-face share, speed.

Usage: python bench/detectors.py [--runs 20] [--json]

* recall: faces found among those a person can see in ../shared/data/group, boxed by eye in
  tests/fixtures/group_faces.json (a detection matches a face when its centre lies in the
  face's box or the face's centre lies in the detection's box, one to one; faces marked
  ``hard`` are neither required nor counted against a detector);
* extra: detections on the group photos that match no boxed face (hard ones included);
* false positives: every detection on the 12 photos of ../shared/data/negatives (none of
  them shows a face a person could recognise);
* one face: identity photos (one person each) where exactly one face is found;
* ms: median over 6 real photos letterboxed to 640x480, ``--runs`` rounds in which every
  detector takes its turn (so a drifting machine load hits all of them alike).

Every detector runs at the server's default threshold (FACEPORT_DETECTOR_SCORE, 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.engine import PHOTOS, machine, to_640x480  # noqa: E402
from faceport.engine.core import EngineOptions, FaceEngine  # noqa: E402
from faceport.engine.models import ModelCache, ModelStore  # noqa: E402
from tests.group_faces import load_group_faces, match_faces, required_faces  # noqa: E402

DATA = REPO.parent / "shared" / "data"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CV2_YUNET = "yunet through cv2.FaceDetectorYN"

# name in the table -> (engine detector name, engine options, score threshold; None: 0.5)
CONFIGS: dict[str, tuple[str, EngineOptions, float | None]] = {
    "blazeface_short": ("blazeface_short", EngineOptions(), None),
    "blazeface_full": ("blazeface_full", EngineOptions(), None),
    "centerface": ("centerface", EngineOptions(), None),
    "centerface, max side 1280": ("centerface", EngineOptions(centerface_max_side=1280), None),
    "yunet": ("yunet", EngineOptions(), None),
    "yunet, OpenCV's score (sqrt(cls*obj)) >= 0.5": ("yunet", EngineOptions(), 0.25),
    "yunet, max side 960": ("yunet", EngineOptions(yunet_max_side=960), None),
    "yunet, max side 1280": ("yunet", EngineOptions(yunet_max_side=1280), None),
}


def _images(folder: str) -> list[Path]:
    return sorted(p for p in (DATA / folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def score_detector(detect: Callable[[np.ndarray], np.ndarray]) -> dict[str, object]:
    """Accuracy figures of one detector (``detect`` maps a BGR image to its (n, 4) boxes)."""
    photos = load_group_faces()
    required = sum(required_faces(p) for p in photos.values())
    found = extra = 0
    missed: dict[str, int] = {}
    for rel, photo in photos.items():
        got, _hard, unmatched = match_faces(detect(_read(DATA / rel)), photo["faces"])
        want = required_faces(photo)
        found += got
        extra += unmatched
        if got < want:
            missed[rel] = want - got
    negatives = {str(p.relative_to(DATA)): len(detect(_read(p))) for p in _images("negatives")}
    identity = {str(p.relative_to(DATA)): len(detect(_read(p))) for p in _images("identity")}
    return {
        "recall": found / required, "found": found, "required": required, "missed": missed, "extra": extra,
        "false_positives": sum(negatives.values()), "fp_photos": {k: v for k, v in negatives.items() if v},
        "one_face": sum(1 for n in identity.values() if n == 1), "identity_photos": len(identity),
        "not_one": {k: v for k, v in identity.items() if v != 1},
    }


def interleaved_ms(fns: dict[str, Callable[[np.ndarray], object]], frames: list[np.ndarray],
                   runs: int) -> dict[str, tuple[float, float]]:
    """(median, fastest) ms per call of each function, taking turns run by run (fair when the load drifts).

    On a shared machine the median carries the other processes' load; the fastest call is
    close to what the detector costs on an idle core.
    """
    for fn in fns.values():
        for frame in frames:
            fn(frame)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            for frame in frames:
                started = time.perf_counter()
                fn(frame)
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None, help="table names to run (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import onnxruntime

    store = ModelStore(Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models"))
    cache = ModelCache(store, idle_ttl=0)
    frames = [to_640x480(_read(p)) for p in PHOTOS]
    rows: dict[str, dict[str, object]] = {}
    timed: dict[str, Callable[[np.ndarray], object]] = {}
    for label, (name, options, threshold) in CONFIGS.items():
        if args.only and label not in args.only:
            continue
        detector = FaceEngine(cache, options).detector(name)
        rows[label] = score_detector(lambda image, d=detector, t=threshold: d.detect(image, score_threshold=t).xyxy)
        timed[label] = lambda image, d=detector, t=threshold: d.detect(image, score_threshold=t)
    if store.is_installed("yunet"):  # the same file through OpenCV's own FaceDetectorYN (the runtime choice)
        yn = cv2.FaceDetectorYN.create(str(store.path("yunet")), "", (640, 480), 0.5, 0.3, 5000)
        timed[CV2_YUNET] = lambda image: yn.detect(image)
    speed = interleaved_ms(timed, frames, args.runs)
    for label, row in rows.items():
        row["ms_640x480"], row["fastest_ms"] = speed[label]
    cv2_ms = speed.get(CV2_YUNET)
    cache.close()

    print(f"machine: {machine(f'onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}')}; "
          f"onnxruntime intra-op threads: all cores; cv2 threads {cv2.getNumThreads()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps({"rows": rows, "cv2_yunet_ms": cv2_ms}, indent=1, default=float))
        return 0
    first = next(iter(rows.values()), None)
    if first is None:
        return 0
    print(f"| detector | group recall ({first['required']} faces, 7 photos) | extra on groups | "
          f"false positives (12 negatives) | exactly one face ({first['identity_photos']} identity photos) "
          "| ms at 640x480, median (fastest) |")
    print("|---|---|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['recall']:.2f} ({row['found']}/{row['required']}) | {row['extra']} | "
              f"{row['false_positives']} | {row['one_face']}/{row['identity_photos']} | "
              f"{row['ms_640x480']:.2f} ({row['fastest_ms']:.2f}) |")
    for label, row in rows.items():
        print(f"{label}: missed {row['missed']}; fp {row['fp_photos']}; not one {row['not_one']}")
    if cv2_ms is not None:
        print(f"{CV2_YUNET} (same file, same frames): {cv2_ms[0]:.2f} ms ({cv2_ms[1]:.2f} fastest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
