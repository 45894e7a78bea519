"""The proctoring service's phone check: the frame-difference gate, with and without a face in view."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from faceport.services.proctor import ProctorService, Reason
from faceport.store import open_store
from tests.conftest import read_bgr


@pytest.mark.parametrize(("reuse_frames", "phone_runs"), [(0, 6), (4, 2)])
def test_phone_held_up_without_a_face_after_still_frames(settings, engine, data_dir: Path,  # type: ignore[no-untyped-def]
                                                          reuse_frames: int, phone_runs: int) -> None:
    settings = settings.model_copy(update={"proctor_phone_reuse_frames": reuse_frames,
                                           "proctor_phone_reuse_seconds": 600.0})
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    service.create_client("student")
    face = read_bgr(data_dir / "faces_misc/pf_single_face.jpg")
    phone = cv2.resize(read_bgr(data_dir / "phone/in_n02992529_cellular_telephone.jpg"),
                       (face.shape[1], face.shape[0]))
    decisions = [service.check_frame("student", frame) for frame in [face] * 5 + [phone]]
    assert [d.details["faces"] for d in decisions] == [1] * 5 + [0]
    assert [d.details["phone"]["checked"] for d in decisions[:5]] == [True] + [reuse_frames == 0] * 4
    assert all(d.details["phone"]["score"] < settings.proctor_phone_score for d in decisions[:5])
    held = decisions[-1].details
    # the phone is found on the frame it appears in, though the reason order answers NO_FACE first
    assert held["phone"]["checked"] and held["phone"]["score"] >= settings.proctor_phone_score
    assert held["decided_by"].startswith("face_detection") and decisions[-1].reason in (
        Reason.REASON_NO_FACE, Reason.EMPTY_REASON)  # EMPTY_REASON while debounced
    assert len(service.check_ms["phone_detection"]) == phone_runs
