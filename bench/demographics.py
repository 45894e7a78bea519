"""Demographics (apparent age, gender, expression): error on the identity photos and per-call cost.

Error: the largest face of each of the 26 identity photos of ../shared/data, found by the default
detector (yunet), against tests/fixtures/identity_demographics.json (gender; age at the photo's
likely year, an estimate: see that file): gender accuracy, age MAE overall and per identity.

Cost: milliseconds for one ``DemographicsAnalyzer.analyze`` call (5-point landmarks, two Cydral
chips and networks, FER crop and network) on a one-face photo and on ``group/pf_multi_face.jpg``,
detection excluded, and each network alone; the median of ``--runs`` runs after a warm-up.

Usage: python bench/demographics.py [--runs 15] [--json]
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
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from engine import machine  # noqa: E402

from tests.identity_demographics import measure, summary  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and fastest of ``runs`` timed calls, after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnxruntime

    from faceport.engine.core import FaceEngine
    from faceport.engine.demographics import AGE_CHIP, GENDER_CHIP, cydral_chips, fer_crops
    from faceport.engine.models import ModelCache, ModelStore

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    store = ModelStore(models)
    store.pull(["yunet", "dlib_shape5", "age_cydral", "gender_cydral", "fer_emotion"])
    engine = FaceEngine(ModelCache(store, idle_ttl=0))
    manifest = json.loads((DATA / "manifest.json").read_text())

    results = measure(engine, DATA, manifest)
    per_photo = [{"path": r.path, "gender": r.gender, "expected_gender": r.expected.gender, "age": round(r.age, 1),
                  "expected_age": r.expected.age, "emotion": r.emotion} for r in results]
    report: dict[str, object] = {"accuracy": summary(results), "per_photo": per_photo}

    analyzer = engine.demographics()
    cost: dict[str, dict[str, float]] = {}
    for name, path in (("one face (identity/obama/fr_obama.jpg)", "identity/obama/fr_obama.jpg"),
                       ("group (group/pf_multi_face.jpg)", "group/pf_multi_face.jpg")):
        image = np.asarray(cv2.imread(str(DATA / path), cv2.IMREAD_COLOR), np.uint8)
        faces = engine.detect(image)
        med, best = median_ms(lambda image=image, faces=faces: analyzer.analyze(image, faces), args.runs)
        cost[f"analyze, {name}, {len(faces)} faces"] = {"median_ms": round(med, 2), "fastest_ms": round(best, 2),
                                                        "median_ms_per_face": round(med / len(faces), 2)}
        if len(faces) == 1:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            shapes = analyzer._shapes(rgb, faces)
            age_chips, gender_chips = cydral_chips(rgb, shapes, AGE_CHIP), cydral_chips(rgb, shapes, GENDER_CHIP)
            crops = fer_crops(image, faces.xyxy)
            for part, fn in (("5-point landmarks", lambda rgb=rgb, faces=faces: analyzer._shapes(rgb, faces)),
                             ("both Cydral chips", lambda rgb=rgb, shapes=shapes: (
                                 cydral_chips(rgb, shapes, AGE_CHIP), cydral_chips(rgb, shapes, GENDER_CHIP))),
                             ("age-v1 network", lambda chips=age_chips: analyzer.age.predict(chips)),
                             ("gender-v1 network", lambda chips=gender_chips: analyzer.gender.probabilities(chips)),
                             ("FER crop", lambda image=image, faces=faces: fer_crops(image, faces.xyxy)),
                             ("FER network", lambda crops=crops: analyzer.emotion.probabilities(crops))):
                med, best = median_ms(fn, args.runs)
                cost[f"one face: {part}"] = {"median_ms": round(med, 2), "fastest_ms": round(best, 2)}
    report["cost"] = cost
    load = os.getloadavg()
    report["machine"] = machine(f"onnxruntime {onnxruntime.__version__}")
    report["load_average_1_5_15"] = [round(v, 2) for v in load]

    if args.json:
        print(json.dumps(report, indent=1))
        return
    acc = report["accuracy"]
    assert isinstance(acc, dict)
    print(f"{report['machine']}; load average {report['load_average_1_5_15']}")
    print(f"gender {acc['gender_correct']}/{acc['photos']} right, age MAE {acc['age_mae']:.2f} years, "
          f"{acc['age_within_uncertainty']}/{acc['photos']} ages within the label's uncertainty")
    print("| identity | photos | gender | gender right | expected age | mean estimate | age MAE |")
    print("|---|---|---|---|---|---|---|")
    for name, row in acc["per_identity"].items():
        print(f"| {name} | {row['photos']} | {row['gender']} | {row['gender_correct']}/{row['photos']} | "
              f"{row['expected_age']} | {row['mean_estimate']} | {row['age_mae']} |")
    print("| step | median | fastest |")
    print("|---|---|---|")
    for name, row in cost.items():
        print(f"| {name} | {row['median_ms']} ms | {row['fastest_ms']} ms |")


if __name__ == "__main__":
    main()
