"""Deepfake signals: face-swap cues on real photos vs faceport's own swaps; the optional CLIP probe."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceport.engine.deepfake import (
    CUES,
    FACE_OVAL,
    ClipProbe,
    DeepfakeOptions,
    ProbeHead,
    image_verdict,
    swap_artefacts,
)
from faceport.engine.models.sessions import OrtSession
from faceport.errors import InvalidInput, ModelLoadFailed
from tests.deepfake_pairs import build_samples, roc_auc, score_samples

# Measured 0.873 on this set (BENCHMARKS.md, "Deepfake"); the floor leaves room for detector jitter.
AUC_FLOOR = 0.80


@pytest.fixture(scope="module")
def scored(engine, data_dir: Path, manifest: dict):  # type: ignore[no-untyped-def]
    samples = build_samples(engine, data_dir, manifest)
    return score_samples(engine, samples, swap_artefacts)


def test_real_photos_score_below_faceports_own_swaps(scored, capsys) -> None:  # type: ignore[no-untyped-def]
    real = [s.score for s in scored if not s.sample.fake]
    fake = [s.score for s in scored if s.sample.fake]
    assert len(real) >= 40 and len(fake) >= 50
    auc = roc_auc(real, fake)
    threshold = DeepfakeOptions().threshold
    fpr = float(np.mean(np.array(real) >= threshold))
    with capsys.disabled():
        print(f"\n[deepfake] own mesh swaps: ROC AUC {auc:.3f}; mean real {np.mean(real):.3f}, "
              f"mean swap {np.mean(fake):.3f}; real photos labelled fake {fpr:.3f}")
    assert np.mean(real) < np.mean(fake)
    assert auc >= AUC_FLOOR
    assert fpr <= 0.10  # measured 0.073: three real photos of 41


def test_softening_only_the_inside_of_a_real_face_is_flagged(engine, grace_hopper: np.ndarray) -> None:
    """What a resampled paste does, without a second person: the face inside its hull blurred, the rest kept."""
    faces = engine.detect(grace_hopper, landmarks=True)
    [before] = swap_artefacts(grace_hopper, faces)
    assert before.label == "real" and before.method.startswith("swap_artefacts")
    mask = np.zeros(grace_hopper.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(faces.landmarks[0][list(FACE_OVAL), :2]).astype(np.int32)], 255)
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
    softened = np.where(mask[..., None] > 0, cv2.GaussianBlur(grace_hopper, (0, 0), 2.0), grace_hopper)
    [after] = swap_artefacts(softened, engine.detect(softened, landmarks=True))
    assert set(after.cues) == set(CUES) == set(after.raw)
    assert after.raw["sharpness"] > before.raw["sharpness"] + 0.3
    assert after.score > before.score + 0.1 and after.label == "fake"


def test_swap_artefacts_needs_landmarks_and_an_empty_image_is_real(engine, grace_hopper: np.ndarray) -> None:
    faces = engine.detect(grace_hopper)  # no FaceMesh
    with pytest.raises(InvalidInput, match="landmarks"):
        swap_artefacts(grace_hopper, faces)
    verdict = image_verdict([])
    assert (verdict.score, verdict.label) == (0.0, "real") and "no face" in verdict.method


# ---- the optional AI-generated-image detector -------------------------------------------------------------
def test_clip_probe_runs_the_real_model(clip_aigen: Path, engine, grace_hopper: np.ndarray,
                                        data_dir: Path) -> None:
    probe = engine.clip_probe()
    first = probe.score(grace_hopper)
    assert 0.0 <= first.score <= 1.0 and first.method.startswith("clip_aigen")
    assert probe.score(grace_hopper.copy()) == first  # deterministic
    other = probe.score(cv2.imread(str(data_dir / "group/pf_multi_face.jpg")))
    assert other.score != first.score  # it looks at the image


def _tiny_clip(path: Path) -> None:
    """pixel_values (1, 3, 224, 224) -> per-channel mean -> (1, 512): channel c drives embedding dims 0..2."""
    projection = np.zeros((3, 512), np.float32)
    projection[0, 0] = projection[1, 1] = projection[2, 2] = 1.0
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixel_values"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "proj"], ["image_embeds"])],
        "tiny_clip", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(projection, "proj")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def test_clip_probe_reads_the_embedding_through_the_head(tmp_path: Path) -> None:
    """The loading and scoring code against a tiny graph with the same signature: a head that points at
    the red channel calls a red image fake and a blue one real."""
    _tiny_clip(tmp_path / "tiny.onnx")
    weights = np.zeros(512, np.float32)
    weights[0], weights[2] = 4.0, -4.0  # RGB order inside the model: dim 0 red, dim 2 blue
    (tmp_path / "head.json").write_text(json.dumps({"weights": weights.tolist(), "bias": 0.0}))
    probe = ClipProbe(OrtSession(tmp_path / "tiny.onnx"), ProbeHead.load(tmp_path / "head.json"))
    red = np.zeros((300, 400, 3), np.uint8)
    red[..., 2] = 255  # BGR
    blue = np.zeros((300, 400, 3), np.uint8)
    blue[..., 0] = 255
    assert probe.score(red).label == "fake" and probe.score(red).score > 0.95
    assert probe.score(blue).label == "real" and probe.score(blue).score < 0.05


@pytest.mark.parametrize(("content", "why"), [
    ({"weights": [0.1] * 511, "bias": 0.0}, "511 weights"),
    ({"weights": [0.0] * 512, "bias": 0.0}, "all zero"),
    ({"weights": [float("nan")] + [0.1] * 511, "bias": 0.0}, "not finite"),
    ({"bias": 0.0}, "no weights"),
    ("{not json", "not JSON"),
])
def test_a_bad_probe_head_fails_to_load(tmp_path: Path, content: object, why: str) -> None:
    path = tmp_path / "clip_head.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ModelLoadFailed):
        ProbeHead.load(path)
