"""Detectors on real photos: one face per portrait, recall on groups, no faces on negatives, golden boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.detect import DETECTORS, blazeface_anchors, weighted_nms
from faceport.errors import InvalidInput
from tests.conftest import FIXTURES, read_bgr

GOLDEN = json.loads((FIXTURES / "golden.json").read_text())
# Faces cut by the image border: listed so a regression on them is recognised as such.
KNOWN_PARTIAL = {"identity/obama/fr_obama_partial_face.jpg", "identity/obama/fr_obama_partial_face2.jpg"}
# Detectors meant for photos at any distance; blazeface_short is for faces within ~2 m (selfies).
GENERAL_DETECTORS = ("blazeface_full", "centerface")


def _entries(manifest: dict, folder: str) -> list[dict]:
    return [f for f in manifest["files"] if f["path"].startswith(folder + "/")
            and Path(f["path"]).suffix.lower() in (".jpg", ".jpeg", ".png")]


def _expected_min(num_faces: object) -> int:
    """Lower bound of the manifest's count: 2, "2-3" and "~4-6" give 2, 2 and 4."""
    text = str(num_faces).lstrip("~")
    return int(text.split("-")[0])


def test_anchor_counts_match_the_models() -> None:
    assert blazeface_anchors(128, (8, 16, 16, 16), 2).shape == (896, 2)
    assert blazeface_anchors(192, (4,), 1).shape == (2304, 2)


def test_weighted_nms_merges_a_cluster_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    points = np.zeros((3, 2, 2), np.float32)
    out_b, out_s, _ = weighted_nms(boxes, scores, points, 0.3)
    assert len(out_b) == 2
    np.testing.assert_allclose(out_b[0], [0.4, 0.4, 10.4, 10.4], atol=1e-4)  # 0.9/1.5 and 0.6/1.5 weights
    assert out_s.tolist() == pytest.approx([0.9, 0.8])


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_boxes(engine, detector: str, name: str) -> None:
    faces = engine.detect(read_bgr(FIXTURES / name), detector=detector)
    expected = GOLDEN[name][detector]
    assert len(faces) == len(expected["xyxy"])
    np.testing.assert_allclose(faces.xyxy, np.array(expected["xyxy"], np.float32), atol=2.0)
    np.testing.assert_allclose(faces.score, expected["score"], atol=0.01)


@pytest.mark.parametrize("detector", DETECTORS)
def test_keypoints_lie_inside_the_face_in_anatomical_order(engine, grace_hopper, detector: str) -> None:
    faces = engine.detect(grace_hopper, detector=detector)
    assert faces.kps is not None and faces.kps.shape == (1, 5, 2)
    (x1, y1, x2, y2), kps = faces.xyxy[0], faces.kps[0]
    assert ((kps[:, 0] > x1) & (kps[:, 0] < x2) & (kps[:, 1] > y1) & (kps[:, 1] < y2)).all()
    right_eye, left_eye, nose, right_mouth, left_mouth = kps
    assert right_eye[0] < left_eye[0]  # the person's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
    assert right_mouth[0] < left_mouth[0]


@pytest.mark.parametrize("detector", DETECTORS)
def test_boxes_follow_the_image_scale_with_no_state_between_calls(engine, grace_hopper, detector: str) -> None:
    small = engine.detect(grace_hopper, detector=detector)
    padded = cv2.copyMakeBorder(grace_hopper, 0, 300, 0, 500, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    big = cv2.resize(padded, None, fx=1.5, fy=1.5)
    on_big = engine.detect(big, detector=detector)
    again = engine.detect(grace_hopper, detector=detector)
    np.testing.assert_allclose(again.xyxy, small.xyxy, atol=1e-3)
    assert len(on_big) == 1
    iou_box = on_big.xyxy[0] / 1.5
    inter = np.clip(np.minimum(iou_box[2:], small.xyxy[0, 2:]) - np.maximum(iou_box[:2], small.xyxy[0, :2]), 0, None)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    iou = inter.prod() / (area(iou_box) + area(small.xyxy[0]) - inter.prod())
    assert iou > 0.7, iou


def test_unknown_detector_and_bad_arrays_are_refused(engine, grace_hopper) -> None:
    with pytest.raises(InvalidInput, match="blazeface_full"):
        engine.detect(grace_hopper, detector="yolo")
    with pytest.raises(InvalidInput, match="BGR uint8"):
        engine.detect(grace_hopper.astype(np.float32))
    with pytest.raises(InvalidInput):
        engine.detect(grace_hopper[:, :, 0])


def test_blank_and_tiny_images_have_no_faces(engine) -> None:
    for detector in DETECTORS:
        assert len(engine.detect(np.zeros((480, 640, 3), np.uint8), detector=detector)) == 0
        assert len(engine.detect(np.full((1, 1, 3), 200, np.uint8), detector=detector)) == 0


@pytest.mark.parametrize("detector", GENERAL_DETECTORS)
def test_one_face_on_every_single_face_identity_photo(engine, manifest, data_dir: Path, detector: str) -> None:
    wrong = {}
    for entry in _entries(manifest, "identity"):
        count = len(engine.detect(read_bgr(data_dir / entry["path"]), detector=detector))
        if count != 1:
            wrong[entry["path"]] = count
    assert not wrong, f"{detector}: expected exactly one face (partial faces: {sorted(KNOWN_PARTIAL)}): {wrong}"


def test_recall_on_groups_and_false_positives_on_negatives(engine, manifest, data_dir: Path, capsys) -> None:
    groups = _entries(manifest, "group")
    negatives = _entries(manifest, "negatives")
    expected = sum(_expected_min(e["num_faces"]) for e in groups)
    report = {}
    for detector in DETECTORS:
        found = sum(min(len(engine.detect(read_bgr(data_dir / e["path"]), detector=detector)),
                        _expected_min(e["num_faces"])) for e in groups)
        false_pos = sum(len(engine.detect(read_bgr(data_dir / e["path"]), detector=detector)) for e in negatives)
        report[detector] = (found / expected, false_pos)
    with capsys.disabled():
        print(f"\n[detection] group recall over {expected} faces in {len(groups)} photos; "
              f"false positives over {len(negatives)} negatives")
        for detector, (recall, false_pos) in report.items():
            print(f"[detection] {detector:16s} recall {recall:.2f}  false positives {false_pos}")
    for detector in GENERAL_DETECTORS:
        recall, false_pos = report[detector]
        assert recall >= 0.8, (detector, recall)
        assert false_pos == 0, (detector, false_pos)
    assert report["blazeface_short"][1] <= 1
