"""Phone check cost and accuracy: the full SSD on every frame vs the gated path (``PhoneGate``).

Usage: python bench/phone.py [--runs 3] [--frames 90]

Prints the machine, then for each real clip (distinct decoded frames, at the clip's rate and at a
lower sampled rate) the median over ``runs`` of ms per frame for the old check (SSD MobileNet v3 on
every frame) and the new one (frame-difference gate with the default window), with the share of
frames the new path sent to the SSD; the SSD at 1 and 2 OpenCV threads; and hits / false alarms on
the shared photo sets counted as BENCHMARKS.md counts them (5 phone photos; 39 non-phone photos from
negatives, faces_misc, group, text; plus 26 identity photos), through one gated stream in which every
photo is sent twice. Models come from $FACEPORT_MODELS_DIR or ~/.cache/faceport/models.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))

from bench.engine import machine  # noqa: E402
from faceport.engine.models import ModelStore  # noqa: E402
from faceport.engine.models.cache import ModelCache  # noqa: E402
from faceport.engine.objects import DEFAULT_PHONE_SCORE, ObjectDetector, PhoneGate  # noqa: E402

CLIPS = [("pf_single_face.mp4", 1), ("pf_single_face.mp4", 6), ("pf_WolfgangLanger_Pexels.mp4", 1),
         ("pf_WolfgangLanger_Pexels.mp4", 5), ("skv_carphone_pristine.mp4", 3)]


def clip_frames(name: str, step: int, limit: int) -> tuple[list[np.ndarray], float]:
    """Every ``step``-th decoded frame (at most ``limit``) and the seconds between two of them."""
    frames = []
    with av.open(str(DATA / "video" / name)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= limit:
                break
    return frames, step / fps


def score_fn(detector: ObjectDetector):  # type: ignore[no-untyped-def]
    return lambda image: detector.phones(image, score_threshold=0.3).max_score


def photo_sets() -> tuple[list[Path], list[Path], list[Path]]:
    positives = [*sorted((DATA / "phone").glob("*.jpg")), DATA / "synthetic/synth_phone_composite_single_face.jpg"]
    negatives = [p for d in ("negatives", "faces_misc", "group", "text") for p in sorted((DATA / d).iterdir())
                 if p.suffix in (".jpg", ".png")]
    identity = [p for p in sorted((DATA / "identity").rglob("*")) if p.suffix in (".jpg", ".jpeg", ".png")]
    return positives, negatives, identity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=90, help="most frames taken from each clip")
    args = parser.parse_args()

    models = Path(os.environ.get("FACEPORT_MODELS_DIR", Path.home() / ".cache/faceport/models"))
    cache = ModelCache(ModelStore(models), idle_ttl=0)
    detector = ObjectDetector(cache.get("ssd_mobilenet_v3_coco"))
    detect = score_fn(detector)
    load = os.getloadavg()
    print(machine(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} cv2 threads"),
          f"| load average at start {load[0]:.1f}")

    sample = None
    for name, step in CLIPS:
        frames, dt = clip_frames(name, step, args.frames)
        sample = frames[0] if sample is None else sample
        h, w = frames[0].shape[:2]
        for frame in frames[:3]:
            detect(frame)  # warm-up
        old, new, checked = [], [], 0
        for _ in range(args.runs):
            started = time.perf_counter()
            for frame in frames:
                detect(frame)
            old.append((time.perf_counter() - started) * 1000 / len(frames))
            gate, runs = PhoneGate(), 0
            started = time.perf_counter()
            for i, frame in enumerate(frames):
                runs += gate.check(frame, detect, now=i * dt).checked
            new.append((time.perf_counter() - started) * 1000 / len(frames))
            checked = runs
        print(f"{name} {w}x{h}, every {step}. frame ({1 / dt:.1f} fps), {len(frames)} frames: "
              f"old {statistics.median(old):.1f} ms/frame, new {statistics.median(new):.1f} ms/frame "
              f"({checked}/{len(frames)} frames sent to the SSD), median of {args.runs}")

    frame = sample
    gate, times = PhoneGate(), []
    for i in range(200):  # the gate alone (thumbnail + difference), the detector never asked again
        started = time.perf_counter()
        gate.check(frame, lambda image: 0.0, now=i * 1e-4)
        times.append((time.perf_counter() - started) * 1000)
    print(f"gate overhead per frame (thumbnail and difference, {frame.shape[1]}x{frame.shape[0]}): "
          f"{statistics.median(times):.2f} ms (median of 200)")
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        times = []
        for _ in range(3 + 10):
            started = time.perf_counter()
            detect(frame)
            times.append((time.perf_counter() - started) * 1000)
        print(f"SSD at cv2.setNumThreads({threads}): {statistics.median(times[3:]):.1f} ms/frame (median of 10)")

    positives, negatives, identity = photo_sets()
    old_hits = [p.name for p in positives if detect(cv2.imread(str(p))) >= DEFAULT_PHONE_SCORE]
    old_alarms = [p.name for p in negatives + identity if detect(cv2.imread(str(p))) >= DEFAULT_PHONE_SCORE]
    gate, runs, hits, alarms = PhoneGate(), 0, [], []
    order = [p for pair in itertools.zip_longest(negatives + identity, positives) for p in pair if p is not None]
    for t, path in enumerate(order):
        image = cv2.imread(str(path))
        results = [gate.check(image, detect, now=t + k * 0.1) for k in range(2)]
        runs += sum(r.checked for r in results)
        if any(r.score >= DEFAULT_PHONE_SCORE for r in results):
            (hits if path in positives else alarms).append(path.name)
    n_neg = f"{len(negatives)}+{len(identity)}"
    print(f"photos, old (every photo): hits {len(old_hits)}/{len(positives)}, false alarms "
          f"{len(old_alarms)}/{n_neg} {old_alarms}")
    print(f"photos, new (one gated stream, each photo twice, {runs}/{2 * len(order)} frames sent to the SSD): "
          f"hits {len(hits)}/{len(positives)} (missed {[p.name for p in positives if p.name not in hits]}), "
          f"false alarms {len(alarms)}/{n_neg} {alarms}")


if __name__ == "__main__":
    main()
