"""Plate recall and false-positive area; text precision in ``pii`` mode (issue 12, points 3 and 6).

Usage: python bench/privacy_precision.py [--data ../shared/data] [--runs 3]

Plates: every ground-truth plate of data/plates (the ALPR .txt boxes plus the boxes drawn by eye
in tests/privacy_truth.py) is judged hidden when the pixels in its box lost their sharpness
(tests/privacy_judge.box_hidden). False positives: plate boxes on the photos with no plate
(negatives, faces_misc, group, text): how many, and the share of image area they blur (mean and
worst). Peer in the same run: the same detector without its 2x pass (``upscale_below=0``), with
the time per photo of each (median of ``--runs``) as a ratio.

Text: ``pii`` mode with the default filter on the photos of tests/privacy_truth.TEXT_TRUTH; a
second OCR (PP-OCRv4 at max side 1280, no orientation model: not the filter's own reading) on the
input and output decides: personal items hidden, ordinary lines kept. Peers in the same run:
``all`` mode, and ``pii`` with ``score_threshold`` 0 (every match, as before the filter had scores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import machine

from faceport.engine.models import ModelCache, ModelStore
from faceport.engine.plates import PlateDetector
from faceport.engine.redact import ClassOptions, RedactOptions, TextFilter, blur_regions, build_redactor
from faceport.engine.text import TextReader, alphabet_from_session
from tests.privacy_judge import box_hidden
from tests.privacy_truth import PLATE_FREE_DIRS, TEXT_TRUTH, TextJudgement, plate_truth

REPO = Path(__file__).resolve().parents[1]


FIGURES: dict[str, dict[str, float | int]] = {}  # written to faceport/services/privacy_figures.json


def plates(cache: ModelCache, data: Path, runs: int) -> None:
    base = build_redactor(cache, RedactOptions(faces=ClassOptions(False)))
    assert base.plates is not None
    variants = {"faceport (1x + 2x text passes)": base.plates,
                "peer: 1x text pass only": PlateDetector(base.plates.cascades, base.plates.reader, upscale_below=0)}
    truth = plate_truth(data)
    free = [p for d in PLATE_FREE_DIRS for p in sorted((data / d).glob("*")) if p.suffix in (".jpg", ".png")]
    print("| detector | plates hidden | small plates (< 70 px wide) hidden | false-positive boxes on "
          f"{len(free)} plate-free photos | FP area mean / worst | ms per plate photo (median of {runs}) |")
    print("|---|---|---|---|---|---|")
    for label, detector in variants.items():
        base.plates = detector
        hidden = total = small = small_hidden = 0
        missed: list[str] = []
        times: list[float] = []
        for name, boxes in truth.items():
            image = cv2.imread(str(data / "plates" / name))
            spent = []
            for _ in range(runs):
                started = time.perf_counter()
                found, _labels = base.find_plates(image)
                spent.append(time.perf_counter() - started)
            times.append(statistics.median(spent))
            out = blur_regions(image, found, base.options.blur)
            for box in boxes:
                ok = box_hidden(image, out, box)[0]
                total += 1
                hidden += ok
                if box[2] - box[0] < 70:
                    small += 1
                    small_hidden += ok
                if not ok:
                    missed.append(f"{name} {box.astype(int).tolist()}")
        fp_boxes, areas = 0, []
        for path in free:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            found, _labels = base.find_plates(image)
            fp_boxes += len(found)
            areas.append(float(sum((b[2] - b[0]) * (b[3] - b[1]) for b in found)) / (image.shape[0] * image.shape[1]))
        print(f"| {label} | {hidden}/{total} | {small_hidden}/{small} | {fp_boxes} | {100 * np.mean(areas):.2f} % / "
              f"{100 * max(areas):.2f} % | {1000 * statistics.median(times):.0f} |")
        if missed:
            print(f"|  missed: {'; '.join(missed)} |||||")
        if not label.startswith("peer"):
            FIGURES["plate_detection"] = {"recall": round(100.0 * hidden / total, 1), "plates_judged": total,
                                          "small_plates_hidden": small_hidden, "small_plates": small,
                                          "false_positive_boxes": fp_boxes, "plate_free_photos": len(free)}


def text(cache: ModelCache, data: Path) -> None:
    rec = cache.get("ppocr_v4_rec")
    judge_reader = TextReader(cache.get("ppocr_v4_det"), rec, alphabet_from_session(rec), max_side=1280)
    variants = {"pii, default filter (threshold 0.5)": RedactOptions(text=ClassOptions(True, 0.35), text_mode="pii"),
                "peer: pii, score_threshold 0": RedactOptions(text=ClassOptions(True, 0.35), text_mode="pii",
                                                              text_filter=TextFilter(score_threshold=0.0)),
                "peer: all": RedactOptions(text=ClassOptions(True, 0.35), text_mode="all")}
    print(f"\n| text mode on {len(TEXT_TRUTH)} photos | personal items hidden | ordinary lines kept | leaked | lost |")
    print("|---|---|---|---|---|")
    for label, options in variants.items():
        options = RedactOptions(faces=ClassOptions(False), plates=ClassOptions(False), text=options.text,
                                text_mode=options.text_mode, text_filter=options.text_filter)
        redactor = build_redactor(cache, options)
        judgement = TextJudgement()
        for truth in TEXT_TRUTH:
            image = cv2.imread(str(data / truth.path), cv2.IMREAD_COLOR)
            out, _found = redactor.redact_image(image)
            before = " ".join(line.text for line in judge_reader.read(image))
            after = " ".join(line.text for line in judge_reader.read(out))
            judgement.add(truth, before, after)
        print(f"| {label} | {judgement.hidden}/{judgement.personal} | {judgement.kept}/{judgement.ordinary} | "
              f"{'; '.join(judgement.leaked) or '-'} | {'; '.join(judgement.lost[:6]) or '-'}"
              f"{' ...' if len(judgement.lost) > 6 else ''} |")
        if label.startswith("pii, default"):
            FIGURES["text_detection"] = {"recall": round(100.0 * judgement.hidden / judgement.personal, 1),
                                         "personal_items": judgement.personal,
                                         "ordinary_lines_kept": round(100.0 * judgement.kept / judgement.ordinary, 1),
                                         "ordinary_lines": judgement.ordinary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not write the figures /api/v1/models reports")
    args = parser.parse_args()
    cache = ModelCache(ModelStore(Path(os.environ.get("FACEPORT_MODELS_DIR",
                                                       Path.home() / ".cache" / "faceport" / "models"))))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine()}; {load}")
    plates(cache, args.data, args.runs)
    text(cache, args.data)
    if not args.no_write:
        from faceport.services.privacy_figures import write_section

        write_section("plates_text", {
            "bench": "python bench/privacy_precision.py", "clips": ["plates/*", "text/* (tests/privacy_truth.py)"],
            "method": "plate recall: ground-truth plate boxes whose pixels lost their sharpness "
                      "(tests/privacy_judge.box_hidden); text: a second OCR pass on input and output decides which "
                      "personal items are gone (recall) and which ordinary lines stay readable",
            "figures": FIGURES})
        print("figures written to faceport/services/privacy_figures.json (section plates_text)")


if __name__ == "__main__":
    main()
