"""The proctoring spoof decision over a client's frames: passive cues (faceport.engine.antispoof) with the
temporal checks (faceport.engine.liveness). A printed photo held up, a tablet replaying a real clip and a
noisy still photo of the real client must not pass for long; real clips of a person must pass throughout.
The attacks are synthetic recaptures of real photos and clips (tests/spoof_attacks.py)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from faceport.services.proctor import Action, ProctorService, Reason
from faceport.store import open_store
from tests.conftest import read_bgr
from tests.spoof_attacks import portrait, print_attack, screen_attack


def _clip(path: Path, step: int, count: int) -> list[tuple[float, np.ndarray]]:
    """Every ``step``-th frame with its time in seconds."""
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append((float(frame.time or 0.0), frame.to_ndarray(format="bgr24")))
            if len(frames) >= count:
                break
    return frames


def _service(settings, engine, **overrides) -> ProctorService:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"proctor_require_reference": False, **overrides})
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    service.create_client("candidate")
    return service


def _largest_portrait(engine, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return portrait(image, engine.detect(image).sorted_by_area().xyxy[0])


def _attack_frames(engine, data_dir: Path, attack: str) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    background = read_bgr(data_dir / "negatives/sk_coffee.png")
    client = read_bgr(data_dir / "identity/obama/fr_obama2.jpg")
    if attack == "printed_photo":  # held in the hand: the pose changes a little from frame to frame
        photo = _largest_portrait(engine, client)
        return [print_attack(photo, background, np.random.default_rng(i)) for i in range(10)]
    if attack == "tablet_replay":  # a real clip on a tablet held still (same geometry, fresh camera noise)
        frames = [f for _, f in _clip(data_dir / "video/pf_WolfgangLanger_Pexels.mp4", 12, 10)]
        out = []
        for i, frame in enumerate(frames):
            rng = np.random.default_rng(5)
            shown = screen_attack(_largest_portrait(engine, frame), background, rng)
            noise = np.random.default_rng(100 + i).normal(0, 2, shown.shape)
            out.append(np.clip(shown + noise, 0, 255).astype(np.uint8))
        return out
    rng = np.random.default_rng(0)  # noisy still: the client's own photo, fresh sensor noise on every frame
    return [np.clip(client + rng.normal(0, 8, client.shape), 0, 255).astype(np.uint8) for _ in range(16)]


@pytest.mark.parametrize("attack", ["printed_photo", "tablet_replay", "noisy_still"])
def test_attacks_do_not_pass_for_long(settings, engine, data_dir: Path, attack: str) -> None:  # type: ignore[no-untyped-def]
    service = _service(settings, engine)
    # one frame a second, as a proctoring client sends them
    decisions = [service.check_frame("candidate", frame, now=float(i))
                 for i, frame in enumerate(_attack_frames(engine, data_dir, attack))]
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
    decisions = [service.check_frame("candidate", f, now=t) for t, f in _clip(data_dir / "video" / video, step, count)]
    reasons = [d.reason for d in decisions if d.details.get("faces")]
    assert len(reasons) >= count - 2
    assert Reason.REASON_SPOOF_IMAGE not in reasons, [
        d.details.get("liveness") for d in decisions if d.reason is Reason.REASON_SPOOF_IMAGE][:2]
