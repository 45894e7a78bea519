"""Hands (MediaPipe palm detector + 21 hand landmarks) on real photos and frames, and the swap keeping them on top.

* the woman in the Pexels clip covers her mouth with her own hand (frames ~72-228): found around her face;
* Lin-Manuel Miranda's hand holding a microphone is found; photos without hands (a cat, a landscape, an
  animated title) and the clip's frames where her hands are down give none;
* with ``occlusion`` in the mask types, her hand over her mouth (same skin tone: the colour model misses it)
  keeps the target's pixels, inside a polygon traced by hand on the frame, while the rest of the face is swapped.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.hands import HandLandmarker, Hands, hand_silhouette, palm_anchors
from faceport.engine.swap import build_swapper
from faceport.engine.swap.masks import FACE_OVAL
from faceport.engine.swap.mesh import SwapOptions
from tests.conftest import read_bgr

CLIP = "video/pf_WolfgangLanger_Pexels.mp4"
LIN = "identity/lin_manuel_miranda/fr_lin-manuel-miranda.png"
# frame 192 of the clip: her right hand over her mouth, index, middle and ring fingers upright on her upper lip
# and cheek. Traced by hand on the 640x360 frame, well inside the three fingers (x 340-415, y 200-290).
HAND_ON_FACE = [(362, 212), (402, 212), (404, 262), (362, 266)]
# her lower forehead (above it the swap keeps the hairline) and her other cheek, far from the hand
FOREHEAD = [(400, 82), (480, 82), (480, 100), (400, 100)]
OTHER_CHEEK = [(450, 150), (490, 150), (490, 200), (450, 200)]


def _frames(data_dir: Path, indices: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(data_dir / CLIP))
    out, i = {}, 0
    while len(out) < len(indices):
        ok, frame = cap.read()
        if not ok:
            break
        if i in indices:
            out[i] = frame
        i += 1
    cap.release()
    return out


def _region(mask_points: list[tuple[int, int]], shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.asarray(mask_points, np.int32)], 255)
    return mask > 0


@pytest.fixture(scope="module")
def hands(engine) -> HandLandmarker:  # type: ignore[no-untyped-def]
    return engine.hands()


def _around_face(engine, image: np.ndarray) -> tuple[float, float, float] | None:  # type: ignore[no-untyped-def]
    faces = engine.detect(image)
    if not len(faces):
        return None
    x0, y0, x1, y1 = faces.sorted_by_area().xyxy[0]
    return float(x0 + x1) / 2, float(y0 + y1) / 2, float(max(x1 - x0, y1 - y0)) * 3.0


def test_palm_anchors_follow_the_ssd_layout() -> None:
    anchors = palm_anchors()
    assert anchors.shape == (2016, 2)
    # 24x24 cells x 2 first (stride 8), then 12x12 x 6 (stride 16); cell centres in [0, 1]
    np.testing.assert_allclose(anchors[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[1152], [0.5 / 12, 0.5 / 12])
    np.testing.assert_allclose(anchors[-1], [11.5 / 12, 11.5 / 12])


def test_finds_her_hand_over_her_face_and_none_when_her_hands_are_down(engine, hands, data_dir: Path,
                                                                      capsys) -> None:
    over = set(range(96, 229, 12))  # hand over the mouth, nose or cheek
    down = set(range(0, 48, 12)) | set(range(252, 472, 24))  # no hand in the frame
    frames = _frames(data_dir, over | down)
    found = {}
    for i, frame in frames.items():
        region = _around_face(engine, frame)
        assert region is not None
        result = hands.detect(frame, region=region, score_threshold=0.1, max_hands=2)
        found[i] = len(result)
        if i in over and len(result):
            face = engine.detect(frame, landmarks=True).sorted_by_area()[:1].landmarks[0]
            oval = np.zeros(frame.shape[:2], np.uint8)
            cv2.fillPoly(oval, [np.round(face[list(FACE_OVAL), :2]).astype(np.int32)], 255)
            silhouette = hand_silhouette(result.landmarks, frame.shape[:2])
            assert ((silhouette > 0) & (oval > 0)).sum() > 300, f"frame {i}: the hand found is not over the face"
    hits = sum(found[i] > 0 for i in over)
    false = sum(found[i] > 0 for i in down)
    with capsys.disabled():
        print(f"\n[hands] Pexels clip: hand found over the face in {hits}/{len(over)} frames, "
              f"in {false}/{len(down)} frames without a hand")
    assert hits >= 0.7 * len(over)
    assert false == 0


def test_finds_the_hand_holding_a_microphone(hands, data_dir: Path) -> None:
    image = read_bgr(data_dir / LIN)
    result = hands.detect(image, score_threshold=0.1)
    assert len(result) >= 1
    # the hand holding the microphone is in the bottom middle of the still (x 380-530, y 455-612)
    centre = result.landmarks[:, :, :2].mean(1)
    assert ((centre[:, 0] > 330) & (centre[:, 0] < 580) & (centre[:, 1] > 420)).any(), centre


def test_finds_obamas_hand_on_his_crossed_arms(hands, data_dir: Path) -> None:
    image = read_bgr(data_dir / "identity/obama/fr_obama.jpg")  # official portrait, arms crossed, a hand showing
    result = hands.detect(image, score_threshold=0.1)
    assert len(result) >= 1
    centre = result.landmarks[:, :, :2].mean(1)
    # his left hand on his right forearm, traced on the 910x1137 photo at about x 520-740, y 780-940
    assert ((centre[:, 0] > 500) & (centre[:, 0] < 760) & (centre[:, 1] > 760) & (centre[:, 1] < 960)).any(), centre


@pytest.mark.parametrize("path", ["negatives/sk_chelsea.png", "negatives/pf_free-mountain-vector-01.jpg",
                                  "faces_misc/pf_single_face.jpg"])
def test_finds_no_hand_where_there_is_none(hands, data_dir: Path, path: str) -> None:
    image = read_bgr(data_dir / path)
    assert len(hands.detect(image, score_threshold=0.1)) == 0


def test_hands_result_shapes_are_checked() -> None:
    empty = Hands.empty()
    assert len(empty) == 0 and empty.landmarks.shape == (0, 21, 3)
    with pytest.raises(ValueError, match="landmarks"):
        Hands(np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.zeros((1, 20, 3), np.float32),
              np.zeros(1, np.float32))


def test_occlusion_keeps_her_own_hand_over_her_face(engine, data_dir: Path, capsys) -> None:
    target = _frames(data_dir, {192})[192]
    faces = engine.detect(target, landmarks=True).sorted_by_area()[:1]
    source = read_bgr(data_dir / "identity/obama/fr_obama.jpg")
    hand, forehead, cheek = (_region(p, target.shape) for p in (HAND_ON_FACE, FOREHEAD, OTHER_CHEEK))
    oval = np.zeros(target.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(faces.landmarks[0][list(FACE_OVAL), :2]).astype(np.int32)], 255)
    assert (hand & (oval > 0)).mean() / hand.mean() > 0.9  # the traced hand lies over the face

    def diff(options: SwapOptions, where: np.ndarray) -> float:
        out = build_swapper(engine, [source], options=options).process(target, faces)
        return float(np.abs(out.astype(int) - target.astype(int)).max(axis=2)[where].mean())

    options = SwapOptions(mask_types=("box", "occlusion"))
    on_hand = diff(options, hand)
    box_on_hand = diff(SwapOptions(), hand)
    rest = min(diff(options, forehead), diff(options, cheek))
    with capsys.disabled():
        print(f"\n[hands] her hand over her mouth (frame 192), Obama swapped in: mean change on the hand "
              f"{box_on_hand:.1f} with box, {on_hand:.1f} with box+occlusion; forehead/cheek {rest:.1f}")
    assert box_on_hand > 8  # without occlusion the source is pasted over her hand
    assert on_hand < 2.0  # with occlusion her hand is kept
    assert rest > 8  # and the rest of her face is swapped
