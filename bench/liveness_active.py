"""Active liveness: pass/fail of real clips and attacks, parallax margins, per-frame cost.

Verdicts: every bona fide segment of tests/liveness_clips.py with the challenges its person
performs, and each attack built there from the same real frames (planar photo, cut-out mouth,
screen replay with and without a bezel, identity switch), through the same
``analyse_frame`` the server runs, default ``ActiveOptions`` unless the row says otherwise.
Detection, landmarks and embeddings of each frame are computed once and reused by the
sessions of that frame sequence (the sessions themselves run in full).

Parallax margins: the largest nose parallax each real turn and each planar warp reaches
(a session with an unreachable ``parallax_min`` so it measures until the step times out).

Replay odds: a replay of the woman's clip (smile, blink, turn left) without a bezel against
every 3-step sequence the server can draw: how many would it pass.

Cost: milliseconds per frame of ``analyse_frame`` (detection + FaceMesh + iris, the session
update, an embedding every 5th frame, cues every 3rd) on the woman's turn-left segment, the
median over ``--runs`` passes, beside ``engine.detect(landmarks=True)`` alone on the same
frames (the part any landmark-based check pays) as the peer.

Usage: python bench/liveness_active.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from engine import machine  # noqa: E402

from faceport.engine.active_liveness import CHALLENGES, TURNS, ActiveOptions, ActiveSession, measure_face  # noqa: E402
from faceport.services.liveness import analyse_frame  # noqa: E402
from tests import liveness_clips as clips  # noqa: E402


class Observed:
    """One frame sequence with each frame's largest face found once; embeddings computed on first use."""

    def __init__(self, engine, frames: clips.Frames) -> None:  # type: ignore[no-untyped-def]
        self.engine, self.frames = engine, frames
        self.faces = []
        for _, frame in frames:
            faces = engine.detect(frame, landmarks=True)
            self.faces.append(faces.sorted_by_area()[0] if len(faces) else None)
        self._embeddings: dict[int, np.ndarray] = {}

    def embedding(self, i: int) -> np.ndarray:
        if i not in self._embeddings:
            face = self.faces[i]
            self._embeddings[i] = self.engine.embedder().embed(self.frames[i][1], face).embedding[0]
        return self._embeddings[i]

    def run(self, challenges, options: ActiveOptions | None = None) -> ActiveSession:  # type: ignore[no-untyped-def]
        session = ActiveSession(tuple(challenges), options)
        for i, ((t, frame), face) in enumerate(zip(self.frames, self.faces, strict=True)):
            if face is None:
                session.add_frame(t, frame, None)
            else:
                session.add_frame(t, frame, face.landmarks[0], face.xyxy[0], lambda i=i: self.embedding(i))
            if session.status != "in_progress":
                break
        session.expire()
        return session


def describe(session: ActiveSession) -> dict:
    failed = next((s for s in session.steps if s.status == "failed"), None)
    return {"verdict": "pass" if session.live else "FAIL", "reason": session.reason,
            "step": None if failed is None else f"{failed.challenge}: {failed.reason}",
            "parallax": [round(v, 4) for v in session.three_d],
            "identity_max": session.identity_max,
            "cues": f"{session.passive_flags}/{session.passive_checks}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    segments = {s.name: clips.read_segment(DATA, s) for s in (*clips.BONA_FIDE, clips.DOOR_SMILE_BLINK)}
    woman = segments[clips.BONA_FIDE[0].name]
    rows: list[dict] = []

    def row(kind: str, name: str, challenges, session: ActiveSession, note: str = "") -> None:  # type: ignore[no-untyped-def]
        rows.append({"kind": kind, "name": name, "challenges": ",".join(challenges), **describe(session),
                     "note": note})
        print(f"{kind:9s} {name:52s} {rows[-1]['verdict']:4s} {rows[-1]['reason'] or ''}", file=sys.stderr)

    for segment in clips.BONA_FIDE:
        row("bona fide", segment.name, segment.challenges,
            Observed(engine, segments[segment.name]).run(segment.challenges))
    door = clips.DOOR_SMILE_BLINK
    row("bona fide", door.name, door.challenges,
        Observed(engine, segments[door.name]).run(door.challenges, ActiveOptions(require_three_d=False)),
        "no turn in the clip: require_three_d=False")

    still = woman[0][1]
    nose = engine.detect(still, landmarks=True).landmarks[0][1]
    lenient = ActiveOptions(turn_degrees=2.0)
    planar = {}
    for degrees, challenge in ((-60.0, "turn_left"), (60.0, "turn_right"), (-30.0, "turn_left")):
        planar[degrees] = Observed(engine, clips.planar_photo(still, (float(nose[0]), float(nose[1])), degrees=degrees))
        row("attack", f"photo turned as a plane, {degrees:+.0f} deg", (challenge,), planar[degrees].run((challenge,)))
        row("attack", f"photo turned as a plane, {degrees:+.0f} deg", (challenge,),
            planar[degrees].run((challenge,), lenient), "turn_degrees=2: any mesh yaw accepted")
    woman_obs = Observed(engine, woman)
    yaws = [measure_face(f.landmarks[0]).yaw if f is not None else 0.0 for f in woman_obs.faces]
    cutout = Observed(engine, clips.cutout_mouth(woman, [f.landmarks[0] if f is not None else None
                                                         for f in woman_obs.faces], yaws))
    row("attack", "photo with a cut-out mouth (real mouth behind)", ("smile", "turn_left"),
        cutout.run(("smile", "turn_left")))
    row("attack", "photo with a cut-out mouth (real mouth behind)", ("smile", "turn_left"),
        cutout.run(("smile", "turn_left"), lenient), "turn_degrees=2")
    replay = Observed(engine, clips.screen_replay(woman))
    seg = clips.BONA_FIDE[0]
    row("attack", "screen replay of the clip, bezel in view", seg.challenges, replay.run(seg.challenges),
        "the clip's own challenges")
    bare = Observed(engine, clips.screen_replay(woman, bezel=False))
    row("attack", "screen replay filling the view (no bezel)", seg.challenges, bare.run(seg.challenges),
        "the clip's own challenges")
    sequences = [s for s in itertools.permutations(CHALLENGES, 3) if set(s) & set(TURNS)]
    passed = [s for s in sequences if bare.run(s).live]
    rows.append({"kind": "attack", "name": "screen replay filling the view, random sequence",
                 "challenges": f"all {len(sequences)} drawable 3-step sequences",
                 "verdict": f"{len(passed)}/{len(sequences)} pass", "reason": None,
                 "step": None, "parallax": [], "identity_max": None, "cues": "",
                 "note": "passing: " + "; ".join(",".join(s) for s in passed)})
    print(f"replay vs random sequences: {len(passed)}/{len(sequences)} pass", file=sys.stderr)
    switch = Observed(engine, clips.identity_switch(segments[clips.BONA_FIDE[2].name], segments[door.name]))
    row("attack", "identity switch after the turn (woman, then the man)", ("turn_left", "smile", "blink"),
        switch.run(("turn_left", "smile", "blink")))

    # parallax margins: measure to the end of the step
    probe = ActiveOptions(parallax_min=10.0, step_timeout_s=30.0, turn_degrees=2.0)
    margins = []
    car = clips.BONA_FIDE[3]
    turns = [(segment.name, segments[segment.name], segment.challenges[: segment.challenges.index(turn) + 1])
             for segment in clips.BONA_FIDE[:3] for turn in segment.challenges if turn in TURNS]
    turns += [(car.name, segments[car.name], ("turn_right",)),
              (car.name, segments[car.name][20:], ("turn_left",))]  # after his turn right
    for name, frames_, challenges in turns:
        session = Observed(engine, frames_).run(challenges, probe)
        margins.append({"sequence": f"real: {name} ({challenges[-1]})",
                        "max_parallax": session.steps[-1].values.get("parallax")})
    for degrees, obs in planar.items():
        session = obs.run(("turn_left" if degrees < 0 else "turn_right",), probe)
        margins.append({"sequence": f"planar photo {degrees:+.0f} deg", "max_parallax":
                        session.steps[0].values.get("parallax")})
    session = cutout.run(("smile", "turn_left"), probe)
    margins.append({"sequence": "cut-out mouth photo", "max_parallax": session.steps[1].values.get("parallax")})

    # cost per frame
    frames = segments[clips.BONA_FIDE[2].name]
    full, detect_only = [], []
    for _ in range(args.runs):
        session = ActiveSession(clips.BONA_FIDE[2].challenges, replace(ActiveOptions(), parallax_min=10.0,
                                                                       step_timeout_s=60.0))
        for t, frame in frames:
            started = time.perf_counter()
            analyse_frame(engine, session, t, frame)
            full.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            engine.detect(frame, landmarks=True)
            detect_only.append((time.perf_counter() - started) * 1000)
    obs = Observed(engine, frames)
    update, embed = [], []
    for _ in range(args.runs):
        session = ActiveSession(clips.BONA_FIDE[2].challenges, replace(ActiveOptions(), parallax_min=10.0,
                                                                       step_timeout_s=60.0))
        for i, ((t, frame), face) in enumerate(zip(obs.frames, obs.faces, strict=True)):
            if face is None:
                continue
            vector = obs.embedding(i)
            started = time.perf_counter()
            session.add_frame(t, frame, face.landmarks[0], face.xyxy[0], lambda v=vector: v)
            update.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        engine.embedder().embed(frames[0][1], obs.faces[0])
        embed.append((time.perf_counter() - started) * 1000)
    cost = {"frames": len(full), "analyse_frame_ms": round(statistics.median(full), 1),
            "session_update_ms": round(statistics.median(update), 2),
            "session_update_p90_ms": round(float(np.percentile(update, 90)), 2),
            "embedding_ms": round(statistics.median(embed), 1),
            "analyse_frame_p90_ms": round(float(np.percentile(full, 90)), 1),
            "detect_landmarks_ms": round(statistics.median(detect_only), 1),
            "ratio": round(statistics.median(full) / statistics.median(detect_only), 2),
            "frame_size": f"{frames[0][1].shape[1]}x{frames[0][1].shape[0]}"}
    load = os.getloadavg()
    result = {"machine": machine(), "load_average": [round(v, 2) for v in load], "verdicts": rows,
              "parallax_margins": margins, "cost": cost, "threshold": ActiveOptions().parallax_min}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"machine: {result['machine']}; load average {result['load_average']}")
    print("| kind | sequence | challenges | verdict | reason / failed step | parallax at pass | cues flagged | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['name']} | {r['challenges']} | {r['verdict']} | {r['step'] or r['reason'] or ''} "
              f"| {', '.join(map(str, r['parallax']))} | {r['cues']} | {r['note']} |")
    print(f"\nparallax threshold {ActiveOptions().parallax_min}")
    print("| sequence | largest nose parallax |\n|---|---|")
    for m in margins:
        print(f"| {m['sequence']} | {m['max_parallax']} |")
    print(f"\ncost: {cost}")


if __name__ == "__main__":
    main()
