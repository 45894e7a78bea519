"""Deepfake signals: ROC AUC on real photos vs faceport's own swaps, and per-call cost.

Data (tests/deepfake_pairs.py): every real photo under identity/, group/ and faces_misc/ of
../shared/data against each identity photo with its largest face swapped by faceport's landmark
mesh swap for two other identities. This measures what faceport's OWN swapper leaves behind,
not deepfakes from the wild. inswapper_128 swaps are added only where a user has installed
that optional model.

Reported per method (face-swap artefact score, each cue alone, the optional clip_aigen
AI-generated-image detector): image-level ROC AUC, mean real / mean swap score, and the
false-positive / true-positive rate at the method's threshold; the same after every image is
re-encoded as JPEG quality 75 (as a shared file would be). Cost: the median of ``--runs``
calls after a warm-up, next to the detection + FaceMesh call the route makes anyway (ratio).

Usage: python bench/deepfake.py [--runs 9] [--json]
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

from tests.deepfake_pairs import Sample, build_samples, roc_auc  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)


def evaluate(engine, samples: list[Sample], with_clip: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from faceport.engine.deepfake import CUES, DeepfakeOptions, swap_artefacts

    opts = DeepfakeOptions()
    probe = engine.clip_probe() if with_clip else None
    rows = []
    for s in samples:
        faces = engine.detect(s.image, landmarks=True)
        scores = swap_artefacts(s.image, faces, opts)
        worst = max(scores, key=lambda x: x.score) if scores else None
        row = {"fake": s.fake, "swapper": s.swapper, "faces": len(faces),
               "swap_artefacts": worst.score if worst else 0.0}
        for cue in CUES:
            row[cue] = max((x.cues[cue] for x in scores), default=0.0)
        if probe is not None:
            row["clip_aigen"] = probe.score(s.image).score
        rows.append(row)
    methods = {"swap_artefacts": opts.threshold, **dict.fromkeys(CUES, 0.5)}
    if probe is not None:
        methods["clip_aigen"] = probe.threshold
    out: dict[str, object] = {"real_images": sum(not r["fake"] for r in rows),
                              "swapped_images": sum(bool(r["fake"]) for r in rows),
                              "real_images_without_a_face": sum(not r["fake"] and r["faces"] == 0 for r in rows)}
    for swapper in sorted({r["swapper"] for r in rows if r["fake"]}):
        real = [r for r in rows if not r["fake"]]
        fake = [r for r in rows if r["fake"] and r["swapper"] == swapper]
        table = {}
        for name, threshold in methods.items():
            rs, fs = [float(r[name]) for r in real], [float(r[name]) for r in fake]
            table[name] = {"auc": round(roc_auc(rs, fs), 3), "mean_real": round(float(np.mean(rs)), 3),
                           "mean_swap": round(float(np.mean(fs)), 3),
                           "fpr_at_threshold": round(float(np.mean(np.array(rs) >= threshold)), 3),
                           "tpr_at_threshold": round(float(np.mean(np.array(fs) >= threshold)), 3)}
        out[f"swapper={swapper}"] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnxruntime

    from faceport.engine.core import FaceEngine
    from faceport.engine.deepfake import swap_artefacts
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import neural_swap_installed

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    store = ModelStore(models)
    store.pull(["yunet", "facemesh", "iris", "clip_aigen"])
    engine = FaceEngine(ModelCache(store, idle_ttl=0))
    manifest = json.loads((DATA / "manifest.json").read_text())

    swappers = ["mesh"] + (["inswapper_128"] if neural_swap_installed(engine) else [])
    samples = build_samples(engine, DATA, manifest, swappers=swappers)
    report: dict[str, object] = {
        "swappers": swappers,
        "inswapper_128": "measured" if "inswapper_128" in swappers else "not installed here: not measured",
        "as_decoded": evaluate(engine, samples, with_clip=True),
        "after_jpeg_q75": evaluate(engine, [Sample(s.name, s.fake, jpeg(s.image), s.swapper) for s in samples],
                                   with_clip=True),
    }

    probe = engine.clip_probe()
    cost: dict[str, float] = {}
    for name, path in (("one face (identity/obama/fr_obama.jpg)", "identity/obama/fr_obama.jpg"),
                       ("group (group/pf_multi_face.jpg)", "group/pf_multi_face.jpg")):
        image = np.asarray(cv2.imread(str(DATA / path), cv2.IMREAD_COLOR), np.uint8)
        faces = engine.detect(image, landmarks=True)
        label = f"{name}, {len(faces)} faces, {image.shape[1]}x{image.shape[0]}"
        cost[f"detection + FaceMesh (peer), {label}"] = median_ms(lambda i=image: engine.detect(i, landmarks=True),
                                                                  args.runs)
        cost[f"swap_artefacts, {label}"] = median_ms(lambda i=image, f=faces: swap_artefacts(i, f), args.runs)
        cost[f"clip_aigen, {label}"] = median_ms(lambda i=image: probe.score(i), args.runs)
    report["cost_ms"] = cost
    report["machine"] = machine(f"onnxruntime {onnxruntime.__version__}")
    report["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]

    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['machine']}; load average {report['load_average_1_5_15']}; swappers {swappers}; "
          f"inswapper_128: {report['inswapper_128']}")
    for variant in ("as_decoded", "after_jpeg_q75"):
        block = report[variant]
        assert isinstance(block, dict)
        print(f"\n{variant}: {block['real_images']} real images ({block['real_images_without_a_face']} without a "
              f"detected face), {block['swapped_images']} swaps")
        for key, table in block.items():
            if not key.startswith("swapper="):
                continue
            print(f"| {key} method | ROC AUC | mean real | mean swap | FPR at threshold | TPR at threshold |")
            print("|---|---|---|---|---|---|")
            for method, row in table.items():
                print(f"| {method} | {row['auc']} | {row['mean_real']} | {row['mean_swap']} | "
                      f"{row['fpr_at_threshold']} | {row['tpr_at_threshold']} |")
    print("\n| call | median ms |")
    print("|---|---|")
    for name, ms in cost.items():
        print(f"| {name} | {ms} |")


if __name__ == "__main__":
    main()
