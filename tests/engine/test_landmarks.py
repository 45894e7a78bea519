"""FaceMesh on real faces: 468/478 points on the face, iris inside the eyes, tracking over a real clip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceport.engine.landmarks import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, kps_from_mesh
from faceport.engine.video import iter_frames


def test_478_points_on_grace_hopper(engine, grace_hopper) -> None:
    faces = engine.detect(grace_hopper, landmarks=True)
    assert faces.landmarks is not None and faces.landmarks.shape == (1, 478, 3)
    points = faces.landmarks[0]
    x1, y1, x2, y2 = faces.xyxy[0]
    margin = 0.15 * (x2 - x1)
    inside = ((points[:468, 0] > x1 - margin) & (points[:468, 0] < x2 + margin)
              & (points[:468, 1] > y1 - margin) & (points[:468, 1] < y2 + margin))
    assert inside.mean() > 0.97
    # mesh eyes/nose agree with the detector's keypoints within 10% of the face width
    np.testing.assert_allclose(kps_from_mesh(points)[:3], faces.kps[0][:3], atol=0.1 * (x2 - x1))


def test_iris_centres_lie_between_the_eye_corners(engine, grace_hopper) -> None:
    points = engine.detect(grace_hopper, landmarks=True).landmarks[0]
    for centre_index, corners in ((468, LEFT_EYE_CORNERS), (473, RIGHT_EYE_CORNERS)):
        a, b = points[corners[0], :2], points[corners[1], :2]
        centre = points[centre_index, :2]
        t = float(np.dot(centre - a, b - a) / np.dot(b - a, b - a))
        assert 0.15 < t < 0.85, (centre_index, t)
        assert abs(centre[1] - (a[1] + b[1]) / 2) < 0.5 * np.linalg.norm(b - a)


def test_landmarks_follow_a_rotated_face(engine, grace_hopper) -> None:
    h, w = grace_hopper.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0)
    rotated = cv2.warpAffine(grace_hopper, rot, (w, h))
    upright = engine.detect(grace_hopper, landmarks=True).landmarks[0][:468, :2]
    turned = engine.detect(rotated, landmarks=True)
    assert len(turned) == 1
    expected = upright @ rot[:, :2].T + rot[:, 2]
    error = np.linalg.norm(turned.landmarks[0][:468, :2] - expected, axis=1).mean()
    assert error < 0.04 * (turned.xyxy[0, 2] - turned.xyxy[0, 0]), error


def test_tracker_covers_every_frame_of_a_clip_and_agrees_with_detection(engine, data_dir: Path) -> None:
    frames = [frame for _i, _t, frame in iter_frames(data_dir / "video" / "pf_single_face.mp4", max_frames=60)]
    assert len(frames) == 60
    tracker = engine.tracker(redetect_every=1000)
    errors = []
    for frame in frames:
        tracked = tracker.process(frame)
        assert len(tracked) == 1
        fresh = engine.detect(frame, landmarks=True)
        width = fresh.xyxy[0, 2] - fresh.xyxy[0, 0]
        errors.append(np.linalg.norm(tracked.landmarks[0][:468, :2] - fresh.landmarks[0][:468, :2], axis=1).mean()
                      / width)
    assert tracker.detections_run < len(frames) / 4  # tracking, not detection, carried the clip
    assert float(np.median(errors)) < 0.03


def test_tracker_redetects_when_the_face_leaves(engine, grace_hopper) -> None:
    tracker = engine.tracker(redetect_every=1000)
    assert len(tracker.process(grace_hopper)) == 1
    assert len(tracker.process(np.zeros_like(grace_hopper))) == 0
    runs = tracker.detections_run
    assert len(tracker.process(grace_hopper)) == 1
    assert tracker.detections_run == runs + 1


def test_tracker_falls_back_to_the_second_detector_when_the_first_finds_nothing(engine, data_dir: Path) -> None:
    frames = [frame for _i, _t, frame in iter_frames(data_dir / "video" / "pf_single_face.mp4", max_frames=20)]
    tracker = engine.tracker(detector="yunet", fallback="centerface", trust_detector=True, redetect_every=5)
    tracker.score_threshold = 0.999  # YuNet (real) now finds nothing here: only the fallback can
    assert len(engine.detector("yunet").detect(frames[0], score_threshold=0.999)) == 0
    assert all(len(tracker.process(frame)) == 1 for frame in frames)
    assert tracker.fallbacks_run == tracker.detections_run >= len(frames) // 5
    without = engine.tracker(detector="yunet", trust_detector=True)
    without.score_threshold = 0.999
    assert len(without.process(frames[0])) == 0


def test_tracker_fallback_runs_rarely_on_a_scene_without_faces(engine, data_dir: Path) -> None:
    frames = [frame for _i, _t, frame in iter_frames(data_dir / "video" / "pf_no_face.mp4", max_frames=60)]
    tracker = engine.tracker(detector="yunet", fallback="centerface", trust_detector=True, redetect_every=30)
    assert sum(len(tracker.process(frame)) for frame in frames) == 0
    assert tracker.detections_run == len(frames)  # the primary detector looks on every frame ...
    assert tracker.fallbacks_run <= len(frames) // 30 + 1  # ... the slower fallback once per redetect interval
