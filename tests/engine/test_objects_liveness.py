"""Phone detection (SSD MobileNet v3 COCO) and the heuristic liveness checks, on real photos and clips."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.liveness import LivenessTracker, eye_aspect_ratio, single_image_liveness
from faceport.engine.objects import CELL_PHONE, DEFAULT_PHONE_SCORE, ObjectDetector, PhoneGate, PhoneGateOptions
from faceport.engine.types import Faces
from tests.conftest import FIXTURES, read_bgr

PHONES = ["phone/in_n02992529_cellular_telephone.jpg", "phone/in_n03485407_hand-held_computer.jpg",
          "phone/in_n03584254_iPod.jpg", "synthetic/synth_phone_composite_single_face.jpg"]
NEGATIVES = ["negatives/sk_coffee.png", "negatives/sk_chelsea.png", "faces_misc/pf_single_face.jpg",
             "group/fr_two_people.jpg", "text/in_n06596364_comic_book.jpg", "negatives/sk_hubble_deep_field.jpg"]


@pytest.fixture(scope="module")
def detector(model_cache) -> ObjectDetector:  # type: ignore[no-untyped-def]
    from faceport.engine.models import ModelStore

    store: ModelStore = model_cache.store
    if not store.is_installed("ssd_mobilenet_v3_coco"):
        assert all(r.installed for r in store.pull(["ssd_mobilenet_v3_coco"]))
    return ObjectDetector(model_cache.get("ssd_mobilenet_v3_coco"))


@pytest.mark.parametrize(("name", "has_phone"), [(p, True) for p in PHONES] + [(n, False) for n in NEGATIVES])
def test_phone_detection(detector: ObjectDetector, data_dir: Path, name: str, has_phone: bool) -> None:
    image = read_bgr(data_dir / name)
    phones = detector.phones(image)
    assert (len(phones) > 0) is has_phone, phones.score
    if has_phone:
        assert set(phones.class_id.tolist()) == {CELL_PHONE}
        x1, y1, x2, y2 = phones.xyxy[0]
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]


def _faces(engine, image: np.ndarray) -> Faces:  # type: ignore[no-untyped-def]
    faces = engine.detect(image, landmarks=True)
    assert len(faces) >= 1
    return faces.sorted_by_area()[0]


def test_spoof_samples_report_a_method(engine, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    for name in ("sf_image_F1.jpg", "sf_image_T1.jpg"):
        # The files are stored rotated with an EXIF orientation tag; cv2.imread applies it, so they
        # read upright (turning them again laid the faces on their side).
        image = read_bgr(data_dir / "spoof" / name)
        assert image.shape[:2] == (640, 480)
        face = _faces(engine, image)
        result = single_image_liveness(image, face.xyxy[0])
        assert result.method in ("single_image", "moire", "border")
        assert {"moire", "border"} <= set(result.details)
        assert 0.0 <= result.score <= 1.0


def test_eye_aspect_ratio_of_open_eyes(engine, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    face = _faces(engine, grace_hopper)
    assert face.landmarks is not None
    assert 0.15 < eye_aspect_ratio(face.landmarks[0]) < 0.45


def _run(engine, frames: list[np.ndarray]) -> list:  # type: ignore[no-untyped-def]
    tracker = LivenessTracker()
    results = []
    for frame in frames:
        face = _faces(engine, frame)
        assert face.landmarks is not None
        results.append(tracker.update(frame, face.xyxy[0], face.landmarks[0]))
    return results


def test_a_photo_moved_as_a_plane_is_a_spoof(engine) -> None:  # type: ignore[no-untyped-def]
    image = read_bgr(FIXTURES / "mpl_grace_hopper.jpg")
    h, w = image.shape[:2]
    rng = np.random.default_rng(3)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    frames = [cv2.warpPerspective(image, cv2.getPerspectiveTransform(
        src, (src + rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]).astype(np.float32)), (w, h),
        borderMode=cv2.BORDER_REPLICATE) for _ in range(7)]
    results = _run(engine, frames)
    assert results[0].method == "insufficient_frames" and results[0].live
    assert not results[-1].live and results[-1].method == "planar_motion"
    assert results[-1].details["planar_share"] >= 0.6


def test_a_resent_still_is_a_frozen_frame(engine, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    results = _run(engine, [grace_hopper] * 5)
    assert not results[-1].live and results[-1].method == "frozen_frame"


@pytest.mark.parametrize(("video", "step"), [("pf_single_face.mp4", 7), ("skv_carphone_pristine.mp4", 10),
                                             ("pf_WolfgangLanger_Pexels.mp4", 15)])
def test_real_clips_are_live(engine, data_dir: Path, video: str, step: int) -> None:  # type: ignore[no-untyped-def]
    import av

    frames = []
    with av.open(str(data_dir / "video" / video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= 8:
                break
    results = _run(engine, frames)
    assert all(r.live for r in results), [(r.method, r.details) for r in results if not r.live]
    assert results[-1].details["pairs"] >= 3


# The cheap phone path: a per-stream frame-difference gate in front of the same SSD. --------------
def _photo_sets(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """BENCHMARKS.md's sets: 5 phone photos (4 hits today; the miss is a wall pay phone) and 39 non-phone
    photos (negatives, faces_misc, group, text), plus the 26 identity photos as further non-phone frames."""
    positives = [*sorted((data_dir / "phone").glob("*.jpg")),
                 data_dir / "synthetic/synth_phone_composite_single_face.jpg"]
    negatives = [p for d in ("negatives", "faces_misc", "group", "text") for p in sorted((data_dir / d).iterdir())
                 if p.suffix in (".jpg", ".png")]
    negatives += [p for p in sorted((data_dir / "identity").rglob("*")) if p.suffix in (".jpg", ".jpeg", ".png")]
    return positives, negatives


class CountingDetector:
    """The real SSD phone score, counting how often it runs."""

    def __init__(self, detector: ObjectDetector) -> None:
        self.detector, self.calls = detector, 0

    def __call__(self, image: np.ndarray) -> float:
        self.calls += 1
        return self.detector.phones(image, score_threshold=0.3).max_score


def test_gated_phone_check_keeps_recall_and_has_no_false_alarms(detector: ObjectDetector, data_dir: Path) -> None:
    positives, negatives = _photo_sets(data_dir)
    assert len(positives) == 5 and len(negatives) >= 39
    gate, detect = PhoneGate(), CountingDetector(detector)
    hits, alarms = [], []
    # One stream: every photo twice (the repeat is an unchanged frame that may reuse the answer),
    # phone photos interleaved with non-phone ones so each phone follows a "no phone" answer.
    order = [p for pair in itertools.zip_longest(negatives, positives) for p in pair if p is not None]
    for t, path in enumerate(order):
        image = read_bgr(path)
        results = [gate.check(image, detect, now=t * 1.0 + k * 0.1) for k in range(2)]
        found = any(r.score >= DEFAULT_PHONE_SCORE for r in results)
        if found:
            (hits if path in positives else alarms).append(path.name)
    assert len(hits) >= 4, hits
    assert alarms == [], alarms
    assert detect.calls < 2 * len(order)  # repeated non-phone frames reused their answer


@pytest.mark.parametrize(("before", "phone", "change_fraction", "window"), [
    # a phone pasted into the same face photo: the change alone triggers a check at once
    ("faces_misc/pf_single_face.jpg", "synthetic/synth_phone_composite_single_face.jpg", 0.005, 0),
    # a phone held up with no face in view, after an empty scene
    ("negatives/sk_coffee.png", "phone/in_n02992529_cellular_telephone.jpg", 0.005, 0),
    # change detection off: the reuse window alone bounds the delay (max_reuse_frames = 4)
    ("faces_misc/pf_single_face.jpg", "synthetic/synth_phone_composite_single_face.jpg", 1.0, 4),
])
def test_a_phone_after_unchanged_frames_is_found_within_the_window(
        detector: ObjectDetector, data_dir: Path, before: str, phone: str, change_fraction: float,
        window: int) -> None:
    options = PhoneGateOptions(max_reuse_frames=4, max_reuse_seconds=60.0, change_fraction=change_fraction)
    gate, detect = PhoneGate(options), CountingDetector(detector)
    still, held = read_bgr(data_dir / before), read_bgr(data_dir / phone)
    if held.shape != still.shape:  # one camera: every frame has the same size
        held = cv2.resize(held, (still.shape[1], still.shape[0]))
    for i in range(6):  # the same frame again and again: checked, reused 4 times, checked
        result = gate.check(still, detect, now=i * 0.2)
        assert result.score < DEFAULT_PHONE_SCORE and result.checked is (i in (0, 5))
    assert detect.calls == 2
    found_at = next(i for i in range(options.max_reuse_frames + 1)
                    if gate.check(held, detect, now=2.0 + i * 0.2).score >= DEFAULT_PHONE_SCORE)
    assert found_at == window


def test_the_seconds_bound_forces_a_check(detector: ObjectDetector, data_dir: Path) -> None:
    gate = PhoneGate(PhoneGateOptions(max_reuse_frames=100, max_reuse_seconds=2.0, change_fraction=1.0))
    detect = CountingDetector(detector)
    still = read_bgr(data_dir / "faces_misc/pf_single_face.jpg")
    held = read_bgr(data_dir / "synthetic/synth_phone_composite_single_face.jpg")
    assert not gate.check(still, detect, now=0.0).score >= DEFAULT_PHONE_SCORE
    assert not gate.check(held, detect, now=1.9).checked  # within 2 s: reused
    result = gate.check(held, detect, now=2.0)
    assert result.checked and result.score >= DEFAULT_PHONE_SCORE
