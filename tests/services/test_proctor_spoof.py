"""The proctoring spoof decision over a client's frames: passive cues (faceport.engine.antispoof) with the
temporal checks (faceport.engine.liveness). A printed photo held up, a tablet replaying a real clip and a
noisy still photo of the real client must not pass for long; real clips of a person must pass throughout.
The attacks are synthetic recaptures of real photos and clips (tests/spoof_attacks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceport.services.proctor import Action, ProctorService, Reason
from faceport.store import open_store
from tests.spoof_attacks import STREAMS, attack_stream, clip_frames


def _service(settings, engine, **overrides) -> ProctorService:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"proctor_require_reference": False, **overrides})
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    service.create_client("candidate")
    return service


@pytest.mark.parametrize("attack", STREAMS)
def test_attacks_do_not_pass_for_long(settings, engine, data_dir: Path, attack: str) -> None:  # type: ignore[no-untyped-def]
    service = _service(settings, engine)
    # one frame a second, as a proctoring client sends them
    decisions = [service.check_frame("candidate", frame, now=float(i))
                 for i, frame in enumerate(attack_stream(engine, data_dir, attack))]
    assert all(d.details["faces"] >= 1 for d in decisions)
    spoofed = [i for i, d in enumerate(decisions) if d.reason is Reason.REASON_SPOOF_IMAGE]
    assert spoofed, [d.details.get("liveness") for d in decisions]
    assert spoofed[0] <= len(decisions) - 2  # found with frames to spare, then held
    assert decisions[-1].reason is Reason.REASON_SPOOF_IMAGE
    assert decisions[-1].action is Action.ACTION_SIGN_OUT
    assert decisions[-1].details["decided_by"].startswith("liveness:")


@pytest.mark.parametrize(("video", "step", "count"), [
    ("pf_WolfgangLanger_Pexels.mp4", 1, 30),   # consecutive frames at 24 fps (planar_motion was a false SPOOF)
    ("pf_WolfgangLanger_Pexels.mp4", 12, 24),
    ("pf_single_face.mp4", 1, 30),
    ("skv_carphone_pristine.mp4", 4, 24),
])
def test_real_clips_pass(settings, engine, data_dir: Path, video: str, step: int,  # type: ignore[no-untyped-def]
                         count: int) -> None:
    service = _service(settings, engine)
    frames = clip_frames(data_dir / "video" / video, step, count)
    decisions = [service.check_frame("candidate", frame, now=t) for t, frame in frames]
    reasons = [d.reason for d in decisions if d.details.get("faces")]
    assert len(reasons) >= count - 2
    assert Reason.REASON_SPOOF_IMAGE not in reasons, [
        d.details.get("liveness") for d in decisions if d.reason is Reason.REASON_SPOOF_IMAGE][:2]
