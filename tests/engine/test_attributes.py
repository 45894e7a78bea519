"""Head pose and quality measured on real faces, checked against known transformations."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from faceport.engine.attributes import face_quality, head_pose
from tests.conftest import read_bgr


def _pose(engine, image):  # type: ignore[no-untyped-def]
    return head_pose(engine.detect(image, landmarks=True).landmarks[0])


def test_frontal_face_reads_near_zero(engine, grace_hopper) -> None:
    pose = _pose(engine, grace_hopper)
    assert abs(pose.yaw) < 8 and abs(pose.roll) < 5 and -5 < pose.pitch < 15


def test_roll_follows_an_image_rotation(engine, grace_hopper) -> None:
    h, w = grace_hopper.shape[:2]
    for angle in (-25, 25):
        rotated = cv2.warpAffine(grace_hopper, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h))
        assert _pose(engine, rotated).roll == pytest.approx(-angle, abs=6)


def test_yaw_of_a_turned_head_flips_with_a_mirror(engine, data_dir: Path) -> None:
    image = read_bgr(data_dir / "faces_misc" / "pf_45-m7-di-ph.jpg")  # the face points to the image's left
    turned = _pose(engine, image)
    mirrored = _pose(engine, image[:, ::-1].copy())
    assert turned.yaw > 20 and mirrored.yaw < -20
    assert turned.yaw == pytest.approx(-mirrored.yaw, abs=6)


def test_blur_lowers_sharpness_and_brightness_follows_exposure(engine, grace_hopper) -> None:
    box = engine.detect(grace_hopper).xyxy[0]
    sharp = face_quality(grace_hopper, box)
    blurred = face_quality(cv2.GaussianBlur(grace_hopper, (15, 15), 5), box)
    darker = face_quality((grace_hopper * 0.5).astype("uint8"), box)
    assert blurred.sharpness < sharp.sharpness / 10
    assert darker.brightness == pytest.approx(sharp.brightness / 2, rel=0.05)
    assert sharp.size == pytest.approx(min(box[2] - box[0], box[3] - box[1]), abs=2)
