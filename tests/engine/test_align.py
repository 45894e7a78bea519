"""Five-point alignment: templates, the similarity estimate, aligned crops of a real face, paste-back."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from faceport.engine.align import (
    ARCFACE_TEMPLATE_112,
    FFHQ_TEMPLATE_512,
    arcface_template,
    estimate_norm,
    paste_back,
    soft_mask,
    warp_face,
)
from faceport.engine.types import Faces


@pytest.fixture(scope="module")
def hopper_faces(engine, grace_hopper: np.ndarray) -> Faces:  # type: ignore[no-untyped-def]
    # Pinned: the tolerances below were measured with BlazeFace, whose mouth corners are placed on
    # the template's mouth/eye ratio. YuNet's real corners on this photo sit 8 px (of 112) from the
    # template after the LMEDS fit (eyes and nose exact); its alignment is tested in test_detect.py.
    faces = engine.detect(grace_hopper, detector="blazeface_full", landmarks=True)
    assert len(faces) == 1 and faces.kps is not None
    return faces


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


@pytest.mark.parametrize(("size", "scale", "dx"), [
    (112, 1.0, 0.0),
    (224, 2.0, 0.0),
    (128, 1.0, 8.0),  # insightface's 128 variant (inswapper_128)
    (256, 2.0, 16.0),
])
def test_arcface_template_scaling(size: int, scale: float, dx: float) -> None:
    expected = ARCFACE_TEMPLATE_112 * scale + np.array([dx, 0.0], np.float32)
    np.testing.assert_allclose(arcface_template(size), expected, atol=1e-4)


def test_template_values_are_insightfaces() -> None:
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[0], (38.2946, 51.6963))
    np.testing.assert_allclose(ARCFACE_TEMPLATE_112[4], (70.7299, 92.2041))
    # image-left eye first: the first eye has the smaller x in both templates
    assert ARCFACE_TEMPLATE_112[0, 0] < ARCFACE_TEMPLATE_112[1, 0]
    assert FFHQ_TEMPLATE_512[0, 0] < FFHQ_TEMPLATE_512[1, 0]


@pytest.mark.parametrize(("angle", "scale", "tx", "ty", "size"), [
    (0.0, 1.0, 0.0, 0.0, 112),
    (25.0, 2.7, 310.0, 120.0, 112),
    (-40.0, 0.6, 40.0, 400.0, 128),
])
def test_estimate_norm_inverts_a_similarity(angle: float, scale: float, tx: float, ty: float, size: int) -> None:
    template = arcface_template(size)
    to_image = similarity(angle, scale, tx, ty)
    kps = apply(to_image, template).astype(np.float32)
    m = estimate_norm(kps, size)
    np.testing.assert_allclose(apply(m, kps), template, atol=1e-3)
    # a similarity: no shear, equal scale on both axes
    assert m[0, 0] == pytest.approx(m[1, 1], abs=1e-6) and m[0, 1] == pytest.approx(-m[1, 0], abs=1e-6)
    assert math.hypot(m[0, 0], m[1, 0]) == pytest.approx(1 / scale, rel=1e-4)


@pytest.mark.parametrize(("kps", "error"), [
    pytest.param(np.zeros((4, 2), np.float32), ValueError, id="four-points"),
    pytest.param(np.full((5, 2), np.nan, np.float32), ValueError, id="nan"),
    pytest.param(np.full((5, 2), 10.0, np.float32), ValueError, id="all-one-point"),
])
def test_estimate_norm_rejects_bad_keypoints(kps: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        estimate_norm(kps, 112)


@pytest.mark.parametrize(("size", "template", "tolerance"), [
    (112, None, 6.0),
    (128, None, 6.0),
    (512, FFHQ_TEMPLATE_512, 25.0),
])
def test_warp_face_puts_a_real_face_on_the_template(grace_hopper: np.ndarray, hopper_faces: Faces, size: int,
                                                    template: np.ndarray | None, tolerance: float) -> None:
    assert hopper_faces.kps is not None
    kps = hopper_faces.kps[0]
    crop, m = warp_face(grace_hopper, kps, size, template)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    target = arcface_template(size) if template is None else template
    # Real keypoints are not an exact similarity of the template; the fit is still close.
    assert np.abs(apply(m, kps) - target).max() < tolerance
    np.testing.assert_array_equal(crop, cv2.warpAffine(grace_hopper, m, (size, size)))
    # The eyes of the crop are darker than the cheeks below them (a face, right way up).
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float64)
    r = max(2, size // 40)
    eye = np.mean([grey[int(y) - r:int(y) + r, int(x) - r:int(x) + r].mean() for x, y in target[:2]])
    cheek = np.mean([grey[int(y + size * 0.12) - r:int(y + size * 0.12) + r, int(x) - r:int(x) + r].mean()
                     for x, y in target[:2]])
    assert eye < cheek


def test_soft_mask_falls_to_zero_at_the_border() -> None:
    mask = soft_mask(None, 128)
    assert mask.shape == (128, 128) and mask.dtype == np.float32
    assert mask[64, 64] == pytest.approx(1.0)
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() == 0 and mask[:, -1].max() == 0
    edge = mask[64, :64]
    assert np.all(np.diff(edge) >= -1e-6)  # rises monotonically from the edge
    assert 0 < edge[8] < 1  # and softly
    custom = np.zeros((128, 128), np.uint8)
    custom[32:96, 32:96] = 255
    inner = soft_mask(custom, 128)
    assert inner[64, 64] == pytest.approx(1.0) and inner[:30].max() == 0
    with pytest.raises(ValueError):
        soft_mask(np.ones((64, 64), np.float32), 128)


def test_paste_back_changes_only_the_masked_face(grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    assert hopper_faces.kps is not None
    crop, m = warp_face(grace_hopper, hopper_faces.kps[0], 128)
    before = grace_hopper.copy()
    green = np.zeros_like(crop)
    green[:, :, 1] = 255
    out = paste_back(grace_hopper, green, m)
    np.testing.assert_array_equal(grace_hopper, before)  # never modifies the caller's frame
    # the nose is fully green, and the frame outside the warped soft mask is bit-identical
    nose = np.round(hopper_faces.kps[0, 2]).astype(int)
    assert tuple(out[nose[1], nose[0]]) == (0, 255, 0)
    support = cv2.warpAffine(soft_mask(None, 128), cv2.invertAffineTransform(m), grace_hopper.shape[1::-1]) > 0
    changed = np.any(out != grace_hopper, axis=2)
    assert changed.any() and not np.any(changed & ~support)
    # soft: between the full face and the untouched frame lie partly blended pixels
    partly = changed & (out[:, :, 1] < 250)
    assert partly.sum() > 200


def test_paste_back_of_the_unedited_crop_is_nearly_lossless(grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    assert hopper_faces.kps is not None
    crop, m = warp_face(grace_hopper, hopper_faces.kps[0], 512, FFHQ_TEMPLATE_512)  # upsampled: little loss
    out = paste_back(grace_hopper, crop, m)
    assert np.abs(out.astype(np.int16) - grace_hopper).mean() < 1.0


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_paste_back_strength(grace_hopper: np.ndarray, hopper_faces: Faces, strength: float) -> None:
    assert hopper_faces.kps is not None
    crop, m = warp_face(grace_hopper, hopper_faces.kps[0], 128)
    white = np.full_like(crop, 255)
    out = paste_back(grace_hopper, white, m, strength=strength)
    nose = np.round(hopper_faces.kps[0, 2]).astype(int)
    expected = grace_hopper[nose[1], nose[0]].astype(float) * (1 - strength) + 255 * strength
    np.testing.assert_allclose(out[nose[1], nose[0]], expected, atol=1.0)
    if strength == 0.0:
        np.testing.assert_array_equal(out, grace_hopper)


def test_paste_back_of_a_face_at_the_frame_edge(grace_hopper: np.ndarray) -> None:
    # Keypoints of a face half outside the frame: only the visible part is pasted, no error.
    kps = apply(similarity(0, 1.5, -60, 200), ARCFACE_TEMPLATE_112).astype(np.float32)
    crop, m = warp_face(grace_hopper, kps, 112)
    out = paste_back(grace_hopper, np.zeros_like(crop), m)
    assert out.shape == grace_hopper.shape
    assert np.any(out[200:300, :40] != grace_hopper[200:300, :40])
    np.testing.assert_array_equal(out[:, 200:], grace_hopper[:, 200:])
