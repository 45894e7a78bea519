"""The proctoring service's phone check (the frame-difference gate, with and without a face in view) and the
reference-face requirement."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from faceport.services.proctor import Action, ProctorService, Reason
from faceport.store import open_store
from tests.conftest import read_bgr


@pytest.mark.parametrize(("reuse_frames", "phone_runs"), [(0, 6), (4, 2)])
def test_phone_held_up_without_a_face_after_still_frames(settings, engine, data_dir: Path,  # type: ignore[no-untyped-def]
                                                          reuse_frames: int, phone_runs: int) -> None:
    settings = settings.model_copy(update={"proctor_phone_reuse_frames": reuse_frames,
                                           "proctor_phone_reuse_seconds": 600.0})
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    face = read_bgr(data_dir / "faces_misc/pf_single_face.jpg")
    service.create_client("student")
    service.add_face("student", face)
    phone = cv2.resize(read_bgr(data_dir / "phone/in_n02992529_cellular_telephone.jpg"),
                       (face.shape[1], face.shape[0]))
    decisions = [service.check_frame("student", frame) for frame in [face] * 5 + [phone]]
    assert [d.details["faces"] for d in decisions] == [1] * 5 + [0]
    assert [d.details["phone"]["checked"] for d in decisions[:5]] == [True] + [reuse_frames == 0] * 4
    assert all(d.details["phone"]["score"] < settings.proctor_phone_score for d in decisions[:5])
    held = decisions[-1].details
    # the phone is found on the frame it appears in and decides, though it hides the face
    assert held["phone"]["checked"] and held["phone"]["score"] >= settings.proctor_phone_score
    assert held["decided_by"].startswith("ssd_mobilenet") and decisions[-1].reason in (
        Reason.REASON_PHONE_DETECTION, Reason.EMPTY_REASON)  # EMPTY_REASON while debounced
    assert len(service.check_ms["phone_detection"]) == phone_runs


def test_phone_held_up_with_no_face_in_view_answers_phone_detection(settings, engine,  # type: ignore[no-untyped-def]
                                                                    data_dir: Path) -> None:
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    service.create_client("student")
    service.add_face("student", read_bgr(data_dir / "faces_misc/pf_single_face.jpg"))
    phone = read_bgr(data_dir / "phone/in_n02992529_cellular_telephone.jpg")
    decisions = [service.check_frame("student", phone) for _ in range(settings.proctor_debounce_frames)]
    assert decisions[-1].details["faces"] == 0
    assert (decisions[-1].action, decisions[-1].reason) == (Action.ACTION_SIGN_OUT, Reason.REASON_PHONE_DETECTION)
    assert decisions[-1].details["decided_by"] == "ssd_mobilenet_v3_coco:cell_phone"


@pytest.mark.parametrize(("require", "reference", "refused"), [
    (True, False, True),     # registered without a reference face: refused, whatever the frame
    (True, True, False),
    (False, False, False),   # FACEPORT_PROCTOR_REQUIRE_REFERENCE=false: checked without identity
])
def test_a_client_without_a_reference_face_is_refused_unless_allowed(settings, engine,  # type: ignore[no-untyped-def]
                                                                      data_dir: Path, require: bool,
                                                                      reference: bool, refused: bool) -> None:
    settings = settings.model_copy(update={"proctor_require_reference": require})
    service = ProctorService(settings, engine, open_store(settings.resolved_database_url))
    face = read_bgr(data_dir / "identity/obama/fr_obama.jpg")
    service.create_client("obama")
    if reference:
        service.add_face("obama", face)
    decision = service.check_frame("obama", read_bgr(data_dir / "identity/obama/fr_obama2.jpg"))
    if refused:
        assert (decision.action, decision.reason, decision.message) == (
            Action.ACTION_ERROR, Reason.REASON_CLIENT_NOT_AVAILABLE, "no reference face")
        assert "faces" not in decision.details  # no check ran
    else:
        assert decision.reason is Reason.EMPTY_REASON and decision.message is None
        assert decision.details["faces"] == 1
        assert decision.details["identity"]["method"] == ("dlib_resnet_l2" if reference else "none")
