"""FaceFusion's face selection on real photos: modes, orders, gender/age filters, minimum size, reference distance.

Each test renders with the real engine (detector, mesh swap, demographics) and checks which faces'
pixels actually changed in the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceport.config import Settings
from faceport.engine.pipeline import FACE_ORDERS, order_faces
from faceport.services.facefusion import RenderOptions, render_image, validate_process_request
from tests.conftest import read_bgr

CHANGED = 4.0  # mean |diff| (grey levels) inside a face box that counts as swapped


def _options(settings: Settings | None = None, **request: Any) -> RenderOptions:
    return RenderOptions.from_request(validate_process_request({"face_detector_model": "centerface", **request}),
                                      settings)


def _changed(before: np.ndarray, after: np.ndarray, box: np.ndarray) -> bool:
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    diff = cv2.absdiff(before[y0:y1, x0:x1], after[y0:y1, x0:x1])
    return float(diff.mean()) > CHANGED


def _changed_faces(engine, before: np.ndarray, after: np.ndarray) -> list[bool]:  # type: ignore[no-untyped-def]
    faces = engine.detect(before, detector="centerface")
    faces = faces[np.argsort(faces.xyxy[:, 0], kind="stable")]
    return [_changed(before, after, box) for box in faces.xyxy]


@pytest.fixture(scope="module")
def multi(data_dir: Path) -> np.ndarray:
    return read_bgr(data_dir / "group" / "pf_multi_face.jpg")


def test_every_order_sorts_by_its_key(engine, multi: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    faces = engine.detect(multi, detector="centerface")
    assert len(faces) == 5
    area = (faces.xyxy[:, 2] - faces.xyxy[:, 0]) * (faces.xyxy[:, 3] - faces.xyxy[:, 1])
    keys = {"left-right": faces.xyxy[:, 0], "right-left": -faces.xyxy[:, 2], "top-bottom": faces.xyxy[:, 1],
            "bottom-top": -faces.xyxy[:, 3], "small-large": area, "large-small": -area,
            "best-worst": -faces.score, "worst-best": faces.score}
    assert set(keys) == set(FACE_ORDERS)
    for order, key in keys.items():
        ranked = key[order_faces(faces, order)]  # type: ignore[arg-type]
        assert np.all(np.diff(ranked) >= 0), order


@pytest.mark.parametrize(("order", "expected"), [("left-right", 0), ("right-left", 4)])
def test_mode_one_swaps_only_the_first_face_in_order(engine, grace_hopper, multi, order, expected) -> None:  # type: ignore[no-untyped-def]
    out = render_image(engine, [grace_hopper], multi, _options(face_selector_mode="one", face_selector_order=order))
    changed = _changed_faces(engine, multi, out)
    assert changed == [i == expected for i in range(5)], changed


def test_mode_one_large_small_swaps_the_largest(engine, grace_hopper, multi) -> None:  # type: ignore[no-untyped-def]
    faces = engine.detect(multi, detector="centerface")
    faces = faces[np.argsort(faces.xyxy[:, 0], kind="stable")]
    largest = int(np.argmax((faces.xyxy[:, 2] - faces.xyxy[:, 0]) * (faces.xyxy[:, 3] - faces.xyxy[:, 1])))
    out = render_image(engine, [grace_hopper], multi,
                       _options(face_selector_mode="one", face_selector_order="large-small"))
    assert _changed_faces(engine, multi, out) == [i == largest for i in range(5)]


def test_index_mode_counts_in_the_chosen_order(engine, grace_hopper, multi) -> None:  # type: ignore[no-untyped-def]
    out = render_image(engine, [grace_hopper], multi, _options(face_selector_mode="index", face_position=1,
                                                               face_selector_order="right-left"))
    assert _changed_faces(engine, multi, out) == [i == 3 for i in range(5)]


def test_gender_filter_swaps_only_that_gender(engine, grace_hopper, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    # Rose Leslie (left) and Kit Harington (right), both frontal
    image = read_bgr(data_dir / "group" / "fr_kit_with_rose.jpg")
    for gender, expected in (("female", [True, False]), ("male", [False, True])):
        out = render_image(engine, [grace_hopper], image, _options(face_selector_mode="many",
                                                                   face_selector_gender=gender))
        assert _changed_faces(engine, image, out)[:2] == expected, gender


def test_age_filter_outside_every_face_changes_nothing(engine, grace_hopper, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    image = read_bgr(data_dir / "group" / "fr_kit_with_rose.jpg")
    out = render_image(engine, [grace_hopper], image, _options(face_selector_age_start=85, face_selector_age_end=100))
    assert not any(_changed_faces(engine, image, out)[:2])
    out = render_image(engine, [grace_hopper], image, _options(face_selector_age_start=10, face_selector_age_end=70))
    assert all(_changed_faces(engine, image, out)[:2])


def _with_tiny_face(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two large real faces (fr_two_people.jpg, ~190 px) and a real face pasted small (~30 px) into the background."""
    scene = read_bgr(data_dir / "group" / "fr_two_people.jpg").copy()
    face = read_bgr(data_dir / "faces_misc" / "pf_single_face.jpg")
    h, w = face.shape[:2]
    small = cv2.resize(face, (int(w * 110 / h), 110), interpolation=cv2.INTER_AREA)
    y0, x0 = 10, scene.shape[1] - small.shape[1] - 10
    scene[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return scene, np.array([x0, y0, x0 + small.shape[1], y0 + small.shape[0]], np.float32)


def test_many_leaves_tiny_background_faces_alone(engine, grace_hopper, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scene, tiny = _with_tiny_face(data_dir)
    found = engine.detect(scene, detector="centerface")
    small = [box for box in found.xyxy if box[0] >= tiny[0] - 4 and box[2] <= tiny[2] + 4]
    assert len(small) == 1 and (small[0][2] - small[0][0]) < 45, found.xyxy  # the detector does see it
    settings = Settings(home=tmp_path)  # defaults: FACEPORT_SWAP_MIN_FACE_PX=24, _RATIO=0.25
    out = render_image(engine, [grace_hopper], scene, _options(settings, face_selector_mode="many"))
    large = [box for box in found.xyxy if box[2] - box[0] > 100]
    assert len(large) == 2 and all(_changed(scene, out, box) for box in large)
    assert not _changed(scene, out, small[0]), "a tiny background face was swapped (a pale ghost)"
    # asked for explicitly, every face found is processed
    out = render_image(engine, [grace_hopper], scene, _options(settings, face_selector_mode="many",
                                                               face_selector_min_size=0))
    assert _changed(scene, out, small[0])


def test_reference_distance_decides_whether_a_stranger_counts(engine, grace_hopper, multi) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.pipeline import PipelineOptions, select_faces

    # Grace Hopper is nobody in the group photo, but dlib puts one stranger at ~0.50 and the rest at 0.57-0.61
    reference = engine.embed_largest(grace_hopper).embedding[0]
    faces = engine.embedder().embed(multi, engine.detect(multi, detector="centerface"))
    strict = PipelineOptions(selector="reference", reference_embedding=reference, reference_threshold=0.4)
    assert len(select_faces(faces, strict)) == 0
    loose = PipelineOptions(selector="reference", reference_embedding=reference, reference_threshold=0.55)
    assert len(select_faces(faces, loose)) == 1
    # in the image itself, the reference face is found again at the usual distance
    out = render_image(engine, [grace_hopper], multi, _options(face_selector_mode="reference",
                                                               reference_face_index=2))
    assert _changed_faces(engine, multi, out) == [i == 2 for i in range(5)]
