"""Active liveness: a random challenge sequence checked frame by frame, with 3-D and identity checks.

A session asks the person for a short random sequence of actions (``turn_left``,
``turn_right``, ``blink``, ``smile``, ``move_closer``; every generated sequence holds at least
one turn) and checks each step, in order and within ``step_timeout_s`` of client time, from
the FaceMesh landmarks of each frame:

- turns: head yaw (:func:`faceport.engine.attributes.head_pose`) moves at least
  ``turn_degrees`` from the neutral yaw of the session's first frames, towards the person's
  own left (``turn_left``: yaw decreases) or right (``turn_right``: yaw increases);
- ``blink``: the eye aspect ratio drops below ``blink_drop`` x its recent median and recovers
  above ``blink_recover`` x that median within ``blink_max_s``;
- ``smile``: the mouth width (relative to the outer eye corner distance) grows by
  ``smile_growth`` over the step's first frames;
- ``move_closer``: the face size (square root of the mesh box area) grows by ``closer_growth``.

Three checks guard the steps:

- **3-D consistency (parallax)**: during every turn, image points on the rigid part of the
  face (forehead, temples, cheeks, nose; not eyes, mouth or jaw) are tracked frame to frame
  with pyramidal Lucas-Kanade. One homography (least median of squares) is fitted to the
  points off the nose from their positions at the start of the step to the current frame,
  and the nose points' median residual against it is the parallax. A photo or a screen
  moved as a plane, however it is tilted, is explained by one homography, so its nose stays
  on it; a real head turning moves the nose against the cheeks. A turn passes only when the
  parallax, divided by the outer eye corner distance, reaches ``parallax_min``. Tracked image
  points are used rather than the mesh points because FaceMesh imposes a 3-D face prior: on
  a strongly tilted photo its landmarks bend as if a head turned (measured: BENCHMARKS.md).
- **identity**: the face is embedded (dlib ResNet) on its first frame, every
  ``embed_every`` frames and whenever a step passes; an embedding farther than
  ``identity_threshold`` from every earlier one of the session fails it (another person
  took over).
- **presentation cues**: every ``passive_every`` frames the single-image cues of
  :mod:`faceport.engine.liveness` (a device or print border around the face, screen moire)
  are measured; a session where more than ``passive_max_share`` of them fire fails.

Everything is numpy in, numpy out: the caller runs detection, landmarks and embeddings and
passes them in, so a service can keep the state in memory or serialise it
(:meth:`ActiveSession.to_bytes`) into Redis between frames.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast, get_args

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.attributes import head_pose
from faceport.engine.embed import compare
from faceport.engine.liveness import _native_crop, border_score, eye_aspect_ratio, moire_score
from faceport.engine.types import BGRImage

Challenge = Literal["turn_left", "turn_right", "blink", "smile", "move_closer"]
CHALLENGES: tuple[Challenge, ...] = get_args(Challenge)
TURNS: tuple[Challenge, ...] = ("turn_left", "turn_right")
INSTRUCTIONS: dict[Challenge, str] = {
    "turn_left": "Turn your head to your left",
    "turn_right": "Turn your head to your right",
    "blink": "Blink",
    "smile": "Smile",
    "move_closer": "Move closer to the camera",
}
Status = Literal["in_progress", "passed", "failed"]
StepStatus = Literal["pending", "active", "passed", "failed"]

# FaceMesh indices. The rigid region: the face oval above the mouth, minus eyes, brows and lips.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
EYE_REGIONS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246, 70, 63, 105, 66, 107),
    (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398, 300, 293, 334, 296, 336),
)
NOSE = (1, 2, 4, 5, 6, 19, 94, 168, 195, 197, 98, 327, 129, 358, 48, 278, 64, 294, 45, 275, 44, 274, 220, 440,
        237, 457)
_EYE_OUTER = (33, 263)
MAX_REFERENCES = 64  # embeddings kept per session for the identity check
_MOUTH_CORNERS = (61, 291)
_LIP_INNER = (13, 14)


@dataclass(frozen=True, slots=True)
class ActiveOptions:
    """Thresholds of the active check (angles in degrees, times in seconds of client time)."""

    turn_degrees: float = 8.0
    blink_drop: float = 0.72
    blink_recover: float = 0.9
    blink_max_s: float = 0.8
    smile_growth: float = 0.18
    closer_growth: float = 0.10
    parallax_min: float = 0.015  # nose shift off the face plane / eye-corner distance
    step_timeout_s: float = 6.0
    min_step_frames: int = 3
    max_face_gap_s: float = 1.0  # longer without a face fails the session
    identity_threshold: float = 0.42
    embed_every: int = 5
    passive_every: int = 3
    passive_max_share: float = 0.34
    passive_min_checks: int = 4  # a verdict on presentation cues needs at least this many
    # a straight edge framing the face on two sides (see border_score) in over passive_max_share of the
    # checked frames: one frame's 0.5 is common in rooms, a third of a session's frames is not
    border_threshold: float = 0.5
    moire_threshold: float = 1000.0
    work_side: int = 640  # frames are tracked at this longer side at most
    require_three_d: bool = True  # a session passes only with parallax measured on a turn


def random_challenges(length: int = 3, rng: random.Random | None = None) -> tuple[Challenge, ...]:
    """A random order of ``length`` distinct challenges (2..5), at least one of them a turn.

    Uses the system's secure random source unless ``rng`` is given.

    Raises:
        ValueError: ``length`` outside 2..5.
    """
    if not 2 <= length <= len(CHALLENGES):
        raise ValueError(f"challenge sequence length must be 2..{len(CHALLENGES)}, got {length}")
    rng = rng or random.SystemRandom()
    turn = rng.choice(TURNS)
    picks = [turn, *rng.sample([c for c in CHALLENGES if c != turn], length - 1)]
    rng.shuffle(picks)
    return tuple(picks)


@dataclass(frozen=True, slots=True)
class FaceMeasure:
    """What one frame's landmarks say: degrees, ratios, pixels."""

    yaw: float
    pitch: float
    ear: float  # eye aspect ratio
    mouth_width: float  # mouth corner distance / outer eye corner distance
    mouth_open: float  # inner lip gap / outer eye corner distance
    size: float  # sqrt of the mesh box area, pixels
    eye_span: float  # outer eye corner distance, pixels


def measure_face(landmarks: NDArray[np.float32]) -> FaceMeasure:
    """Pose, eyes, mouth and size of one face from its (468|478, 3) FaceMesh points (pixels)."""
    p = landmarks[:, :2].astype(np.float64)
    pose = head_pose(landmarks)
    span = max(float(np.linalg.norm(p[_EYE_OUTER[0]] - p[_EYE_OUTER[1]])), 1e-6)
    w, h = p[:468].max(0) - p[:468].min(0)
    return FaceMeasure(
        yaw=pose.yaw, pitch=pose.pitch, ear=eye_aspect_ratio(landmarks),
        mouth_width=float(np.linalg.norm(p[_MOUTH_CORNERS[0]] - p[_MOUTH_CORNERS[1]])) / span,
        mouth_open=float(np.linalg.norm(p[_LIP_INNER[0]] - p[_LIP_INNER[1]])) / span,
        size=float(math.sqrt(max(w * h, 0.0))), eye_span=span)


def rigid_mask(landmarks: NDArray[np.float32], shape: tuple[int, ...]) -> NDArray[np.uint8]:
    """uint8 mask (255 inside) of the rigid face region: the oval above the mouth, minus eyes and brows."""
    mask = np.zeros(shape[:2], np.uint8)
    pts = landmarks[:, :2]
    cv2.fillConvexPoly(mask, cv2.convexHull(pts[list(FACE_OVAL)].astype(np.int32)), 255)
    span = float(np.linalg.norm(pts[_EYE_OUTER[0]] - pts[_EYE_OUTER[1]]))
    for region in EYE_REGIONS:
        hull = cv2.convexHull(pts[list(region)].astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 0)
        cv2.polylines(mask, [hull], True, 0, thickness=max(1, int(0.12 * span)))
    mouth_top = float(pts[list(LIPS), 1].min()) - 0.08 * span
    mask[max(0, int(mouth_top)):, :] = 0  # lips and jaw move with speech and smiles
    return mask


def nose_parallax(start: NDArray[np.float32], current: NDArray[np.float32], nose: NDArray[np.bool_],
                  scale: float) -> float | None:
    """How far the nose moved against the plane of the rest of the face, divided by ``scale``.

    One homography (least median of squares) is fitted to the points off the nose (forehead,
    cheeks, temples) from ``start`` to ``current``; the nose points' residuals against it are
    averaged (their median vector), so random tracking noise cancels and the systematic shift
    of a nose standing out of the face remains. A plane has none. None with fewer than 10
    points off the nose or 3 on it.
    """
    outer = ~nose
    if int(outer.sum()) < 10 or int(nose.sum()) < 3:
        return None
    homography, _ = cv2.findHomography(start[outer].astype(np.float64), current[outer].astype(np.float64),
                                       cv2.LMEDS)
    if homography is None:
        return None
    projected = cv2.perspectiveTransform(start[nose][None].astype(np.float64), homography)[0]
    shift = np.median(current[nose] - projected, axis=0)
    return float(np.linalg.norm(shift)) / max(scale, 1e-6)


@dataclass(slots=True)
class ParallaxTracker:
    """Image points of the rigid face region tracked from a start frame (all in work-frame pixels)."""

    start: NDArray[np.float32]  # (n, 2) positions in the start frame
    current: NDArray[np.float32]  # (n, 2) positions in the last frame
    nose: NDArray[np.bool_]  # (n,) the point lies on the nose
    prev: NDArray[np.uint8]  # the last grey work frame
    scale: float  # eye-corner distance in the start frame

    @classmethod
    def begin(cls, grey: NDArray[np.uint8], landmarks: NDArray[np.float32]) -> ParallaxTracker:
        """Corners of the rigid region (``rigid_mask``) plus the mesh's own nose points."""
        span = float(np.linalg.norm(landmarks[_EYE_OUTER[0], :2] - landmarks[_EYE_OUTER[1], :2]))
        found = cv2.goodFeaturesToTrack(grey, 300, 0.005, max(2, int(span * 0.04)),
                                        mask=rigid_mask(landmarks, grey.shape))
        corners = (found.reshape(-1, 2) if found is not None else np.zeros((0, 2))).astype(np.float32)
        nose_mask = np.zeros(grey.shape[:2], np.uint8)
        cv2.fillConvexPoly(nose_mask, cv2.convexHull(landmarks[list(NOSE), :2].astype(np.int32)), 255)
        h, w = grey.shape[:2]
        on_nose = np.array([nose_mask[min(h - 1, max(0, int(y))), min(w - 1, max(0, int(x)))] > 0
                            for x, y in corners], bool).reshape(-1)
        seeds = landmarks[list(NOSE), :2].astype(np.float32)
        points = np.concatenate([corners, seeds])
        nose = np.concatenate([on_nose, np.ones(len(seeds), bool)])
        return cls(points, points.copy(), nose, grey, span)

    def update(self, grey: NDArray[np.uint8]) -> None:
        """Follow the points into ``grey``; points failing a forward-backward check (> 1 px) are dropped."""
        if len(self.current) and grey.shape == self.prev.shape:
            lk = {"winSize": (21, 21), "maxLevel": 3}
            cur = self.current.reshape(-1, 1, 2)
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(self.prev, grey, cur, None, **lk)  # type: ignore[call-overload]
            back, st2, _ = cv2.calcOpticalFlowPyrLK(grey, self.prev, nxt, None, **lk)  # type: ignore[call-overload]
            keep = (st.ravel() == 1) & (st2.ravel() == 1) & (
                np.linalg.norm(back.reshape(-1, 2) - self.current, axis=1) < 1.0)
            self.start, self.nose = self.start[keep], self.nose[keep]
            self.current = nxt.reshape(-1, 2)[keep].astype(np.float32)
        elif grey.shape != self.prev.shape:
            self.start = self.current = np.zeros((0, 2), np.float32)
            self.nose = np.zeros((0,), bool)
        self.prev = grey

    def usable(self) -> bool:
        """Enough points left on and off the nose to measure parallax."""
        return int(self.nose.sum()) >= 3 and int((~self.nose).sum()) >= 10

    def residual(self) -> float | None:
        return nose_parallax(self.start, self.current, self.nose, self.scale)


@dataclass(slots=True)
class StepResult:
    challenge: Challenge
    status: StepStatus = "pending"
    started_at: float | None = None  # client seconds
    ended_at: float | None = None
    frames: int = 0
    reason: str | None = None
    values: dict[str, float] = field(default_factory=dict)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


@dataclass(slots=True)
class FrameOutcome:
    """What one frame did: the session status after it, and the step it advanced, if any."""

    status: Status
    step: int  # index of the active step (== len(challenges) when done)
    face: bool
    passed_step: Challenge | None = None
    measure: FaceMeasure | None = None


class ActiveSession:
    """The state of one active-liveness session; feed frames in client-time order with :meth:`add_frame`.

    Not thread-safe: one session's frames are processed one at a time.
    """

    def __init__(self, challenges: tuple[Challenge, ...] | list[Challenge],
                 options: ActiveOptions | None = None) -> None:
        if not challenges:
            raise ValueError("a session needs at least one challenge")
        unknown = [c for c in challenges if c not in CHALLENGES]
        if unknown:
            raise ValueError(f"unknown challenge(s) {unknown}; choose from {', '.join(CHALLENGES)}")
        self.options = options or ActiveOptions()
        self.challenges: tuple[Challenge, ...] = tuple(challenges)
        self.steps = [StepResult(c) for c in self.challenges]
        self.step = 0
        self.status: Status = "in_progress"
        self.reason: str | None = None
        self.frames = 0
        self.face_frames = 0
        self.last_t: float | None = None
        self.last_face_t: float | None = None
        self.neutral: list[float] = []  # yaws of the first face frames
        self.ears: list[float] = []  # recent eye aspect ratios
        self.recent: list[dict[str, float]] = []  # last frames' yaw/mouth/size, for smoothing
        self.baseline: list[dict[str, float]] = []  # the active step's first frames
        self.blink_closed_at: float | None = None
        self.blink_base: float = 0.0
        self.references: NDArray[np.float32] | None = None  # (k, d) embeddings seen so far
        self.identity_max: float = 0.0
        self.identity_checks = 0
        self.passive_checks = 0
        self.passive_flags = 0
        self.passive_max: dict[str, float] = {"border": 0.0, "moire": 0.0}
        self.parallax: ParallaxTracker | None = None
        self.parallax_best: float = 0.0
        self.three_d: list[float] = []  # parallax of each passed turn

    # ---- per frame -------------------------------------------------------------------------

    def add_frame(self, t: float, image: BGRImage, landmarks: NDArray[np.float32] | None,
                  box: NDArray[np.float32] | None = None,
                  embed: Callable[[], NDArray[np.float32] | None] | None = None) -> FrameOutcome:
        """Add one frame taken at client time ``t`` (seconds) with its largest face.

        Args:
            t: client timestamp in seconds; must increase from frame to frame.
            image: (H, W, 3) uint8 BGR frame.
            landmarks: (468|478, 3) FaceMesh points of the largest face, or None (no face).
            box: (4,) face box in pixels (for the presentation cues); default the mesh extent.
            embed: returns the face's (d,) L2-normalised embedding when called; called only on the
                frames that need one (first face, every ``embed_every`` face frames, passed steps).

        Raises:
            ValueError: ``t`` does not increase.
        """
        if self.last_t is not None and t <= self.last_t:
            raise ValueError(f"frame timestamps must increase: {t} after {self.last_t}")
        self.last_t = t
        if self.status != "in_progress":
            return FrameOutcome(self.status, self.step, landmarks is not None)
        self.frames += 1
        opts = self.options
        grey, factor = self._work_frame(image)
        if landmarks is None:
            self.parallax = None
            if self.last_face_t is not None and t - self.last_face_t > opts.max_face_gap_s:
                self._fail("face_lost")
            elif self._timed_out(t):
                self._fail_step(t, "challenge_timeout")
            return FrameOutcome(self.status, self.step, False)
        self.face_frames += 1
        self.last_face_t = t
        m = measure_face(landmarks)
        if len(self.neutral) < 3:
            self.neutral.append(m.yaw)
        self.recent = [*self.recent[-2:], {"yaw": m.yaw, "mouth_width": m.mouth_width, "size": m.size}]
        if box is None:
            xy = landmarks[:468, :2]
            box = np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)
        if (self.face_frames - 1) % opts.passive_every == 0:
            self._passive(image, box)
        if embed is not None and (self.references is None or (self.face_frames - 1) % opts.embed_every == 0):
            self._identity(embed)
        if self.status == "in_progress":
            if self.parallax is not None:
                self.parallax.update(grey)
            passed = self._advance(t, m, grey, landmarks * np.float32(factor))
            if passed is not None and embed is not None and self.status == "in_progress":
                self._identity(embed)
            if passed is not None and self.status == "in_progress" and self.step >= len(self.steps):
                self._finish()
            self.ears = [*self.ears[-14:], m.ear]
            return FrameOutcome(self.status, self.step, True, passed, m)
        self.ears = [*self.ears[-14:], m.ear]
        return FrameOutcome(self.status, self.step, True, None, m)

    def _work_frame(self, image: BGRImage) -> tuple[NDArray[np.uint8], float]:
        h, w = image.shape[:2]
        factor = min(1.0, self.options.work_side / max(h, w))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if factor < 1.0:
            grey = cv2.resize(grey, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(grey, np.uint8), factor

    def _passive(self, image: BGRImage, box: NDArray[np.float32]) -> None:
        opts = self.options
        border = border_score(image, box)
        moire = moire_score(_native_crop(image, box))
        self.passive_checks += 1
        self.passive_max["border"] = max(self.passive_max["border"], float(border))
        self.passive_max["moire"] = max(self.passive_max["moire"], round(float(moire), 2))
        if border >= opts.border_threshold or moire >= opts.moire_threshold:
            self.passive_flags += 1
        if self.passive_checks >= opts.passive_min_checks and \
                self.passive_flags / self.passive_checks > opts.passive_max_share:
            self._fail("presentation_cues")

    def _identity(self, embed: Callable[[], NDArray[np.float32] | None]) -> None:
        """Compare this frame's embedding with every earlier one of the session; the nearest must match.

        The nearest rather than the first: one person's embeddings drift with pose and expression
        over a session (up to 0.47 from the first frame on a real clip here) while staying close
        to the frames just before; another person is far from all of them.
        """
        vector = embed()
        if vector is None:
            return
        vector = np.asarray(vector, np.float32).ravel()
        if self.references is not None and len(self.references):
            self.identity_checks += 1
            distance = min(compare(ref, vector).distance for ref in self.references)
            self.identity_max = max(self.identity_max, round(distance, 4))
            if distance > self.options.identity_threshold:
                self._fail("identity_changed")
                return
            self.references = np.concatenate([self.references, vector[None]])[-MAX_REFERENCES:]
        else:
            self.references = vector[None]

    def _timed_out(self, t: float) -> bool:
        started = self.steps[self.step].started_at if self.step < len(self.steps) else None
        return started is not None and t - started > self.options.step_timeout_s

    def _advance(self, t: float, m: FaceMeasure, grey: NDArray[np.uint8],
                 work_landmarks: NDArray[np.float32]) -> Challenge | None:
        opts = self.options
        step = self.steps[self.step]
        if step.status == "pending":
            step.status, step.started_at = "active", t
            self.baseline, self.blink_closed_at, self.parallax_best = [], None, 0.0
            self.parallax = None
        if step.challenge in TURNS and (self.parallax is None or not self.parallax.usable()):
            # the step's first frame, the face was lost, or too many points were lost (occlusion): start again
            self.parallax = ParallaxTracker.begin(grey, work_landmarks)
        step.frames += 1
        if len(self.baseline) < 3:
            self.baseline.append({"mouth_width": m.mouth_width, "size": m.size})
        done = step.frames >= opts.min_step_frames and self._performed(step, t, m)
        if done:
            step.status, step.ended_at = "passed", t
            self.step += 1
            return step.challenge
        if t - cast(float, step.started_at) > opts.step_timeout_s:
            self._fail_step(t, self._unfinished_reason(step))
        return None

    @staticmethod
    def _unfinished_reason(step: StepResult) -> str:
        """Why an active step did not pass: a turn made without parallax, or the challenge not performed."""
        if step.challenge in TURNS and step.values.get("yaw_change_reached", 0.0) > 0:
            return "no_parallax"
        return "challenge_timeout"

    def _smoothed(self, key: str) -> float:
        return _median([r[key] for r in self.recent])

    def _performed(self, step: StepResult, t: float, m: FaceMeasure) -> bool:
        opts = self.options
        c = step.challenge
        if c in TURNS:
            change = self._smoothed("yaw") - _median(self.neutral)
            toward = -change if c == "turn_left" else change
            step.values["yaw_change"] = round(max(step.values.get("yaw_change", -90.0), toward), 2)
            if toward < opts.turn_degrees or self.parallax is None:
                return False
            step.values["yaw_change_reached"] = 1.0
            residual = self.parallax.residual()
            if residual is not None:
                self.parallax_best = max(self.parallax_best, residual)
                step.values["parallax"] = round(self.parallax_best, 4)
            step.values["tracked_points"] = float(len(self.parallax.start))
            if self.parallax_best >= opts.parallax_min:
                self.three_d.append(self.parallax_best)
                return True
            return False
        if c == "blink":
            base = _median(self.ears) if len(self.ears) >= 3 else float("nan")
            if not math.isfinite(base):
                return False
            if self.blink_closed_at is None:
                if m.ear < opts.blink_drop * base:
                    self.blink_closed_at, self.blink_base = t, base
                    step.values["ear_closed_ratio"] = round(m.ear / base, 3)
                return False
            if t - self.blink_closed_at > opts.blink_max_s:
                self.blink_closed_at = None  # eyes stayed closed: not a blink
                return False
            step.values["ear_closed_ratio"] = round(min(step.values["ear_closed_ratio"], m.ear / self.blink_base), 3)
            return m.ear >= opts.blink_recover * self.blink_base
        key, need = ("mouth_width", opts.smile_growth) if c == "smile" else ("size", opts.closer_growth)
        if len(self.baseline) < 3:
            return False
        base = _median([b[key] for b in self.baseline])
        growth = min(r[key] for r in self.recent[-2:]) / max(base, 1e-6) - 1.0  # two frames in a row
        step.values[f"{key}_growth"] = round(max(step.values.get(f"{key}_growth", -1.0), growth), 3)
        return growth >= need

    def _fail_step(self, t: float, reason: str) -> None:
        step = self.steps[self.step]
        step.status, step.ended_at, step.reason = "failed", t, reason
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self.status == "in_progress":
            self.status, self.reason = "failed", reason
            self.parallax = None
            for step in self.steps:
                if step.status == "active":
                    step.status, step.reason = "failed", step.reason or reason

    def _finish(self) -> None:
        opts = self.options
        if self.passive_checks and self.passive_flags / self.passive_checks > opts.passive_max_share:
            self._fail("presentation_cues")
        elif opts.require_three_d and not self.three_d:
            self._fail("three_d_not_measured")
        else:
            self.status, self.parallax = "passed", None

    def expire(self) -> None:
        """The session ran out of (server) time before it finished."""
        if self.status == "in_progress":
            if self.step < len(self.steps) and self.steps[self.step].status == "active":
                self.steps[self.step].reason = self._unfinished_reason(self.steps[self.step])
            self._fail("session_expired")

    # ---- reporting -------------------------------------------------------------------------

    @property
    def live(self) -> bool | None:
        """True when every step and check passed, False when one failed, None while in progress."""
        return None if self.status == "in_progress" else self.status == "passed"

    def checks(self) -> dict[str, Any]:
        """Every measured value by check, for the verdict."""
        opts = self.options
        return {
            "challenges": {"passed": sum(s.status == "passed" for s in self.steps), "total": len(self.steps)},
            "three_d": {"parallax": [round(v, 4) for v in self.three_d], "threshold": opts.parallax_min,
                        "measured": bool(self.three_d)},
            "identity": {"max_distance": self.identity_max, "checks": self.identity_checks,
                         "threshold": opts.identity_threshold},
            "presentation_cues": {"checks": self.passive_checks, "flagged": self.passive_flags,
                                  "max_border": self.passive_max["border"], "max_moire": self.passive_max["moire"],
                                  "max_share": opts.passive_max_share},
            "frames": {"received": self.frames, "with_face": self.face_frames},
        }

    # ---- serialisation (Redis) ------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state as bytes (an .npz archive: arrays plus one JSON record); see :meth:`from_bytes`."""
        record = {
            "options": asdict(self.options), "challenges": list(self.challenges),
            "steps": [asdict(s) for s in self.steps], "step": self.step, "status": self.status,
            "reason": self.reason, "frames": self.frames, "face_frames": self.face_frames, "last_t": self.last_t,
            "last_face_t": self.last_face_t, "neutral": self.neutral, "ears": self.ears, "recent": self.recent,
            "baseline": self.baseline, "blink_closed_at": self.blink_closed_at, "blink_base": self.blink_base,
            "identity_max": self.identity_max, "identity_checks": self.identity_checks,
            "passive_checks": self.passive_checks, "passive_flags": self.passive_flags,
            "passive_max": self.passive_max, "parallax_best": self.parallax_best, "three_d": self.three_d,
            "parallax_scale": self.parallax.scale if self.parallax is not None else None,
        }
        arrays: dict[str, NDArray[Any]] = {"record": np.frombuffer(json.dumps(record).encode(), np.uint8)}
        if self.references is not None:
            arrays["references"] = self.references
        if self.parallax is not None:
            arrays.update(p_start=self.parallax.start, p_current=self.parallax.current, p_nose=self.parallax.nose,
                          p_prev=self.parallax.prev)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ActiveSession:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            record = json.loads(archive["record"].tobytes().decode())
            arrays = {k: archive[k] for k in archive.files if k != "record"}
        session = cls(record["challenges"], ActiveOptions(**record["options"]))
        session.steps = [StepResult(**s) for s in record["steps"]]
        for name in ("step", "status", "reason", "frames", "face_frames", "last_t", "last_face_t", "neutral", "ears",
                     "recent", "baseline", "blink_closed_at", "blink_base", "identity_max", "identity_checks",
                     "passive_checks", "passive_flags", "passive_max", "parallax_best", "three_d"):
            setattr(session, name, record[name])
        session.references = arrays.get("references")
        if "p_start" in arrays:
            session.parallax = ParallaxTracker(arrays["p_start"], arrays["p_current"], arrays["p_nose"],
                                               arrays["p_prev"], float(record["parallax_scale"]))
        return session
