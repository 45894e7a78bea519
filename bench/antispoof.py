"""Passive anti-spoof (``faceport.engine.antispoof``): APCER / BPCER per attack type, and per-call cost.

Usage: python bench/antispoof.py [--runs 3] [--dump cues.json] [--skip-images]

Bona fide set: every face of at least 48 px in the shared identity, group and faces_misc photos and the
Silent-Face live sample (spoof/sf_image_T1.jpg), plus the identity photos through the webcam model alone
(``camera_only``, a control). Attacks: the Silent-Face print sample (spoof/sf_image_F1.jpg, a real
recapture) and SYNTHETIC attacks made from every identity photo by tests/spoof_attacks.py (print with
border and fingers, print filling the frame, screen with bezel, screen filling the frame), two seeds
each, over the shared negatives as backgrounds. APCER: attacks judged live; BPCER: bona fide faces
judged spoof. Cost: the median over ``runs`` of ms per ``assess_spoof`` call on one face, 640x480.

Streams (the proctoring spoof decision, ``LivenessTracker`` as the proctoring service runs it, with the
default settings, one frame a second for the attacks and the clips' own timing for real clips): for each
synthetic attack stream of tests/spoof_attacks.py (printed photo held, tablet replaying a real clip, noisy
still of the client) the first frame judged a spoof and the deciding check; for real clips (every frame at
24-30 fps, and sampled) the number of frames judged a spoof (must be 0). Cost: ms per tracker update.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))

from bench.engine import machine  # noqa: E402
from faceport.engine.antispoof import assess_spoof  # noqa: E402
from faceport.engine.core import FaceEngine  # noqa: E402
from faceport.engine.liveness import LivenessTracker  # noqa: E402
from faceport.engine.models import ModelStore  # noqa: E402
from faceport.engine.models.cache import ModelCache  # noqa: E402
from tests.spoof_attacks import ATTACKS, STREAMS, attack_stream, camera_only, clip_frames, portrait  # noqa: E402

REAL_CLIPS = [("pf_WolfgangLanger_Pexels.mp4", 1, 48), ("pf_WolfgangLanger_Pexels.mp4", 12, 36),
              ("pf_single_face.mp4", 1, 60), ("skv_carphone_pristine.mp4", 1, 90), ("skv_carphone_pristine.mp4", 4, 30),
              ("derived_face_noface_h264.mp4", 2, 40)]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def bona_fide_paths(data: Path) -> list[Path]:
    paths = [p for d in ("identity", "group", "faces_misc") for p in sorted((data / d).rglob("*"))
             if p.suffix.lower() in IMAGE_SUFFIXES]
    return [*paths, data / "spoof/sf_image_T1.jpg"]


def identity_paths(data: Path) -> list[Path]:
    return [p for p in sorted((data / "identity").rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def backgrounds(data: Path) -> list[np.ndarray]:
    return [read(p) for p in sorted((data / "negatives").iterdir()) if p.suffix in (".jpg", ".png")
            and not p.name.startswith("if_mask")]


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def make_engine() -> FaceEngine:
    root = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache" / "faceport" / "models")
    return FaceEngine(ModelCache(ModelStore(root), idle_ttl=0))


def synthetic_attacks(engine: FaceEngine, data: Path, seeds: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """(attack type, source name, image) for every identity photo x attack x seed, plus the camera-only control."""
    backs = backgrounds(data)
    out = []
    for k, path in enumerate(identity_paths(data)):
        src = read(path)
        faces = engine.detect(src)
        if len(faces) == 0:
            continue
        photo = portrait(src, faces.sorted_by_area()[0].xyxy[0])
        for seed in range(seeds):
            rng = np.random.default_rng(1000 * seed + k)
            for name, attack in ATTACKS.items():
                out.append((name, path.name, attack(photo, backs[(k + seed) % len(backs)], rng)))
            if seed == 0:
                out.append(("camera_only", path.name, camera_only(photo, backs[0], rng)))
    return out


def evaluate(engine: FaceEngine, data: Path) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Per-set counts and error rates, and one record per judged face."""
    records: list[dict] = []

    def judge(kind: str, name: str, image: np.ndarray, attack: bool, largest_only: bool) -> None:
        faces = engine.detect(image)
        if largest_only:
            faces = faces.sorted_by_area()[:1]
        if len(faces) == 0:
            records.append({"set": kind, "name": name, "attack": attack, "detected": False})
            return
        result = assess_spoof(image, faces)
        for i in range(len(faces)):
            if result.method[i] == "too_small":
                continue
            records.append({"set": kind, "name": name, "attack": attack, "detected": True,
                            "live": bool(result.live[i]), "score": round(float(result.score[i]), 3),
                            "method": result.method[i], "cues": result.cues[i]})

    for path in bona_fide_paths(data):
        judge("bona_fide_photos", path.name, read(path), False, False)
    judge("silent_face_print", "sf_image_F1.jpg", read(data / "spoof/sf_image_F1.jpg"), True, True)
    for kind, name, image in synthetic_attacks(engine, data):
        judge("bona_fide_camera_only" if kind == "camera_only" else "synthetic_" + kind, name, image,
              kind != "camera_only", True)
    summary: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(r["set"] for r in records):
        rows = [r for r in records if r["set"] == kind]
        judged = [r for r in rows if r["detected"]]
        attack = rows[0]["attack"]
        wrong = sum(r["live"] is attack for r in judged)
        summary[kind] = {"samples": len(rows), "faces_judged": len(judged), "undetected": len(rows) - len(judged),
                         ("APCER" if attack else "BPCER"): round(wrong / max(len(judged), 1), 3)}
    return summary, records


def cost(engine: FaceEngine, data: Path, runs: int) -> float:
    image = cv2.resize(read(data / "spoof/sf_image_T1.jpg"), (480, 640))
    faces = engine.detect(image).sorted_by_area()[:1]
    assess_spoof(image, faces)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(10):
            assess_spoof(image, faces)
        times.append((time.perf_counter() - started) * 100)
    return statistics.median(times)


def run_stream(engine: FaceEngine, frames: list[tuple[float, np.ndarray]]) -> tuple[list[str], list[float]]:
    """Per frame: "-" (no face), "live" or the deciding spoof check; and ms per tracker update."""
    tracker, out, ms = LivenessTracker(), [], []
    for now, frame in frames:
        faces = engine.detect(frame, landmarks=True)
        if len(faces) == 0:
            tracker.reset()
            out.append("-")
            continue
        face = faces.sorted_by_area()[0]
        started = time.perf_counter()
        result = tracker.update(frame, face.xyxy[0], face.landmarks[0], now=now)  # type: ignore[index]
        ms.append((time.perf_counter() - started) * 1000)
        out.append("live" if result.live else result.method)
    return out, ms


def streams(engine: FaceEngine, data: Path) -> None:
    costs: list[float] = []
    for kind in STREAMS:
        verdicts, ms = run_stream(engine, [(float(i), f) for i, f in enumerate(attack_stream(engine, data, kind))])
        costs += ms
        first = next((i for i, v in enumerate(verdicts) if v not in ("live", "-")), None)
        spoofed = sum(v not in ("live", "-") for v in verdicts)
        print(f"attack {kind:16s} frames={len(verdicts)} first_spoof_frame={first} spoof_frames={spoofed} "
              f"by={sorted(set(v for v in verdicts if v not in ('live', '-')))}")
    for name, step, count in REAL_CLIPS:
        verdicts, ms = run_stream(engine, clip_frames(data / "video" / name, step, count))
        costs += ms
        judged = [v for v in verdicts if v != "-"]
        print(f"real   {name} step={step:<3d} frames_with_face={len(judged)} "
              f"spoof_frames={sum(v != 'live' for v in judged)} {sorted(set(judged) - {'live'})}")
    print(f"LivenessTracker.update (passive cues + temporal): median {statistics.median(costs):.1f} ms per frame "
          f"over {len(costs)} frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dump", type=Path, help="write every judged face's cues as JSON")
    parser.add_argument("--skip-images", action="store_true", help="only the streams")
    args = parser.parse_args()
    print(machine(), "| load average", " ".join(f"{v:.1f}" for v in os.getloadavg()))
    engine = make_engine()
    streams(engine, DATA)
    if args.skip_images:
        return
    summary, records = evaluate(engine, DATA)
    for kind, row in summary.items():
        print(f"{kind:28s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    wrong = [r for r in records if r["detected"] and r["live"] is r["attack"]]
    for r in wrong:
        print(f"  wrong: {r['set']} {r['name']} score={r['score']} method={r['method']}")
    print(f"assess_spoof, one face, 480x640: {cost(engine, DATA, args.runs):.1f} ms per call "
          f"(median of {args.runs} x 10)")
    if args.dump:
        args.dump.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
