"""Active liveness: real clips performing their challenges pass; planar, replay, cut-out and switch attacks fail."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.active_liveness import (
    CHALLENGES,
    TURNS,
    ActiveOptions,
    ActiveSession,
    measure_face,
    nose_parallax,
    random_challenges,
)
from faceport.services.liveness import analyse_frame
from tests import liveness_clips as clips

# ---- units -------------------------------------------------------------------------------


def test_random_sequences_hold_a_turn_and_no_repeats() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(200):
        sequence = random_challenges(3, rng)
        assert len(sequence) == len(set(sequence)) == 3
        assert set(sequence) <= set(CHALLENGES) and any(c in TURNS for c in sequence)
        seen.add(sequence)
    assert len(seen) > 20  # really random, not a few fixed orders
    assert len(random_challenges(5)) == 5
    with pytest.raises(ValueError, match=r"2\.\.5"):
        random_challenges(1)


def _project(points: np.ndarray, yaw_deg: float, f: float = 800.0, depth: float = 600.0) -> np.ndarray:
    th = math.radians(yaw_deg)
    r = np.array([[math.cos(th), 0, math.sin(th)], [0, 1, 0], [-math.sin(th), 0, math.cos(th)]])
    p = points @ r.T + np.array([0, 0, depth])
    return (f * p[:, :2] / p[:, 2:3] + 320).astype(np.float32)


def test_nose_parallax_separates_a_head_from_a_plane() -> None:
    rng = np.random.default_rng(0)
    face = np.c_[rng.uniform(-60, 60, (80, 2)), np.zeros(80)]  # forehead and cheeks, roughly flat
    nose = np.c_[rng.uniform(-8, 8, (12, 2)), np.full(12, -30.0)]  # 30 mm in front of them
    is_nose = np.r_[np.zeros(80, bool), np.ones(12, bool)]
    head = np.r_[face, nose]
    plane = np.r_[face, np.c_[nose[:, :2], np.zeros(12)]]  # the same picture printed flat
    span = float(np.linalg.norm(_project(np.array([[-45.0, 0, 0], [45.0, 0, 0]]), 0)[0]
                                - _project(np.array([[-45.0, 0, 0], [45.0, 0, 0]]), 0)[1]))
    for yaw in (8.0, 15.0):
        real = nose_parallax(_project(head, 0), _project(head, yaw), is_nose, span)
        flat = nose_parallax(_project(plane, 0), _project(plane, yaw), is_nose, span)
        assert real is not None and flat is not None
        assert flat < 1e-3 < ActiveOptions().parallax_min < real
    assert nose_parallax(_project(head, 0)[:20], _project(head, 8)[:20], is_nose[:20], span) is None  # no nose points


def test_measures_of_a_real_face(engine, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    faces = engine.detect(grace_hopper, landmarks=True)
    m = measure_face(faces.landmarks[0])
    assert 0.2 < m.ear < 0.45 and 0.4 < m.mouth_width < 0.9 and abs(m.yaw) < 15
    assert m.size > 0.8 * float(faces.xyxy[0, 2] - faces.xyxy[0, 0])


def test_timestamps_must_increase_and_a_lost_face_fails(grace_hopper: np.ndarray) -> None:
    session = ActiveSession(("blink", "turn_left"))
    session.add_frame(0.0, grace_hopper, None)
    with pytest.raises(ValueError, match="increase"):
        session.add_frame(0.0, grace_hopper, None)
    session.add_frame(0.5, grace_hopper, None)
    assert session.status == "in_progress"
    session.last_face_t = 0.5
    session.add_frame(1.7, grace_hopper, None)
    assert (session.status, session.reason, session.live) == ("failed", "face_lost", False)


# ---- real clips --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segments(data_dir: Path) -> dict[str, clips.Frames]:
    return {s.name: clips.read_segment(data_dir, s) for s in (*clips.BONA_FIDE, clips.DOOR_SMILE_BLINK)}


def run(engine, frames: clips.Frames, challenges, options: ActiveOptions | None = None) -> ActiveSession:  # type: ignore[no-untyped-def]
    """Feed frames until the session finishes; a client that stops sending lets it expire."""
    session = ActiveSession(tuple(challenges), options)
    for t, frame in frames:
        analyse_frame(engine, session, t, frame)
        if session.status != "in_progress":
            break
    session.expire()
    return session


@pytest.mark.parametrize("segment", clips.BONA_FIDE, ids=lambda s: s.name)
def test_real_clips_pass_the_challenges_they_perform(engine, segments, segment: clips.Segment) -> None:  # type: ignore[no-untyped-def]
    session = run(engine, segments[segment.name], segment.challenges)
    assert session.status == "passed", (session.reason, [(s.challenge, s.status, s.values) for s in session.steps])
    assert session.live is True
    checks = session.checks()
    assert checks["three_d"]["measured"] and min(checks["three_d"]["parallax"]) >= ActiveOptions().parallax_min
    assert checks["identity"]["checks"] >= 2 and checks["presentation_cues"]["flagged"] == 0


def test_smile_and_blink_on_a_second_person(engine, segments) -> None:  # type: ignore[no-untyped-def]
    segment = clips.DOOR_SMILE_BLINK
    session = run(engine, segments[segment.name], segment.challenges, ActiveOptions(require_three_d=False))
    assert session.status == "passed", session.reason
    assert session.steps[0].values["mouth_width_growth"] >= 0.18
    assert session.steps[1].values["ear_closed_ratio"] < 0.72
    strict = run(engine, segments[segment.name], segment.challenges)  # the default needs a turn's parallax
    assert (strict.status, strict.reason) == ("failed", "three_d_not_measured")


def test_a_real_clip_fails_challenges_it_does_not_perform(engine, segments) -> None:  # type: ignore[no-untyped-def]
    # the woman smiles, blinks and turns left: asked to turn right first, she does not
    frames = segments[clips.BONA_FIDE[0].name]
    session = run(engine, frames, ("turn_right", "smile", "blink"))
    assert session.status == "failed" and session.steps[0].status == "failed"
    assert session.steps[0].reason == "challenge_timeout"


def test_state_survives_serialisation_mid_session(engine, segments) -> None:  # type: ignore[no-untyped-def]
    segment = clips.BONA_FIDE[0]
    frames = segments[segment.name]
    session = ActiveSession(segment.challenges)
    for i, (t, frame) in enumerate(frames):
        analyse_frame(engine, session, t, frame)
        if i % 10 == 9:  # as the Redis store does between frames
            session = ActiveSession.from_bytes(session.to_bytes())
        if session.status != "in_progress":
            break
    assert session.status == "passed", session.reason


# ---- attacks -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def still(engine, segments) -> tuple[np.ndarray, tuple[float, float]]:  # type: ignore[no-untyped-def]
    frame = segments[clips.BONA_FIDE[0].name][0][1]
    nose = engine.detect(frame, landmarks=True).landmarks[0][1]
    return frame, (float(nose[0]), float(nose[1]))


@pytest.mark.parametrize(("degrees", "challenge"), [(-60.0, "turn_left"), (60.0, "turn_right")])
def test_a_photo_turned_as_a_plane_fails(engine, still, degrees: float, challenge: str) -> None:  # type: ignore[no-untyped-def]
    frames = clips.planar_photo(still[0], still[1], degrees=degrees)
    session = run(engine, frames, (challenge,))
    assert session.status == "failed" and session.steps[0].reason in ("no_parallax", "challenge_timeout")
    # even when the mesh's yaw is accepted at any angle, the parallax check refuses the plane
    lenient = run(engine, frames, (challenge,), ActiveOptions(turn_degrees=2.0))
    assert lenient.status == "failed" and lenient.steps[0].reason == "no_parallax"
    assert lenient.steps[0].values["parallax"] < ActiveOptions().parallax_min


def test_a_photo_with_a_cut_out_mouth_fails_the_turn(engine, segments) -> None:  # type: ignore[no-untyped-def]
    frames = segments[clips.BONA_FIDE[0].name]
    landmarks, yaws = [], []
    for _, frame in frames:
        faces = engine.detect(frame, landmarks=True).sorted_by_area()
        points = faces.landmarks[0] if len(faces) else None
        landmarks.append(points)
        yaws.append(measure_face(points).yaw if points is not None else (yaws[-1] if yaws else 0.0))
    attack = clips.cutout_mouth(frames, landmarks, yaws)
    session = run(engine, attack, ("smile", "turn_left"), ActiveOptions(turn_degrees=2.0))
    assert session.steps[0].status == "passed"  # the real mouth behind the photo does smile
    assert session.status == "failed" and session.steps[1].reason == "no_parallax"


def test_a_screen_replay_of_a_real_clip_fails(engine, segments) -> None:  # type: ignore[no-untyped-def]
    segment = clips.BONA_FIDE[0]
    session = run(engine, clips.screen_replay(segments[segment.name]), segment.challenges)
    assert (session.status, session.reason) == ("failed", "presentation_cues")
    assert session.checks()["presentation_cues"]["max_border"] >= ActiveOptions().border_threshold


def test_an_identity_switch_mid_session_fails(engine, segments) -> None:  # type: ignore[no-untyped-def]
    first = segments[clips.BONA_FIDE[2].name]  # the woman turns left
    second = segments[clips.DOOR_SMILE_BLINK.name]  # a man smiles and blinks
    session = run(engine, clips.identity_switch(first, second), ("turn_left", "smile", "blink"))
    assert session.steps[0].status == "passed"
    assert (session.status, session.reason) == ("failed", "identity_changed")
    assert session.checks()["identity"]["max_distance"] > ActiveOptions().identity_threshold


def test_move_closer_on_a_zoomed_real_clip(engine, segments) -> None:  # type: ignore[no-untyped-def]
    """No clip here shows a person approaching the camera by 10%; a digital zoom of a real clip stands in."""
    frames = segments[clips.DOOR_SMILE_BLINK.name][:30]
    zoomed = []
    for i, (t, frame) in enumerate(frames):
        h, w = frame.shape[:2]
        scale = 1.0 + 0.3 * i / (len(frames) - 1)
        warp = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
        zoomed.append((t, cv2.warpAffine(frame, warp, (w, h))))
    options = ActiveOptions(require_three_d=False)
    assert run(engine, zoomed, ("move_closer",), options).status == "passed"
    still = [(t, frames[0][1]) for t, _ in frames] + [(1.0 + 0.2 * k, frames[0][1]) for k in range(30)]
    static = run(engine, still, ("move_closer",), replace(options, step_timeout_s=3.0))
    assert static.status == "failed" and static.steps[0].reason == "challenge_timeout"


def test_grace_hopper_still_image_never_passes(engine, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    frames = [(k / 15, grace_hopper) for k in range(100)]
    session = run(engine, frames, ("blink", "turn_left"))
    assert session.status == "failed" and session.steps[0].reason == "challenge_timeout"

