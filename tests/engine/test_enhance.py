"""The ``face_enhancer``: classical enhancement of a real face, and GFPGAN / CodeFormer loading.

The neural restorers are tiny ONNX graphs with the real models' tensor names and shapes
(GFPGAN: ``input`` -> ``output``, both (1, 3, 512, 512); CodeFormer: ``input`` plus a double
``weight`` (1,)), installed with ``ModelStore.pull_from`` into a temporary store, loaded by
``ModelCache`` and chosen by ``build_enhancer``; they run on a real photo with faces from the
real detector and FaceMesh.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from faceport.engine.align import FFHQ_TEMPLATE_512, estimate_norm, soft_mask
from faceport.engine.core import FaceEngine
from faceport.engine.enhance import (
    ClassicalEnhancer,
    CodeFormerEnhancer,
    GfpganEnhancer,
    build_enhancer,
    face_polygon,
)
from faceport.engine.models import ModelCache, ModelStore
from faceport.engine.types import Faces
from faceport.errors import InvalidInput, ModelUnavailable

IMAGE_SHAPE = [1, 3, 512, 512]


def _model_bytes(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gfpgan_bytes() -> bytes:
    """output = -input: the restored face comes back as its negative."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["input"], ["output"])], "tiny_gfpgan",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, IMAGE_SHAPE)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, IMAGE_SHAPE)],
    )
    return _model_bytes(graph)


def codeformer_bytes(with_weight: bool = True) -> bytes:
    """output = -input * weight (weight is a double (1,), as in FaceFusion's codeformer.onnx)."""
    if not with_weight:
        graph = helper.make_graph(
            [helper.make_node("Neg", ["input"], ["output"])], "tiny_codeformer_no_weight",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, IMAGE_SHAPE)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, IMAGE_SHAPE)],
        )
        return _model_bytes(graph)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["weight"], ["w32"], to=TensorProto.FLOAT),
         helper.make_node("Neg", ["input"], ["negative"]),
         helper.make_node("Mul", ["negative", "w32"], ["output"])],
        "tiny_codeformer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, IMAGE_SHAPE),
         helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, IMAGE_SHAPE)],
    )
    return _model_bytes(graph)


def install(store: ModelStore, name: str, data: bytes, directory: Path) -> None:
    """Install model bytes the way a user does: ``faceport models pull NAME --from FILE --sha256 HEX``."""
    path = directory / f"{name}.onnx"
    path.write_bytes(data)
    status = store.pull_from(name, str(path), hashlib.sha256(data).hexdigest())
    assert status.installed, status.problems


def engine_with(tmp_path: Path, models: dict[str, bytes]) -> FaceEngine:
    """An engine over a temporary store holding only ``models`` (nothing else is loaded)."""
    store = ModelStore(tmp_path / "store")
    for name, data in models.items():
        install(store, name, data, tmp_path)
    return FaceEngine(ModelCache(store, idle_ttl=0))


@pytest.fixture(scope="module")
def hopper_faces(engine, grace_hopper: np.ndarray) -> Faces:  # type: ignore[no-untyped-def]
    faces = engine.detect(grace_hopper, landmarks=True)
    assert len(faces) == 1 and faces.landmarks is not None and faces.kps is not None
    return faces


def laplacian_variance(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def inner_box(faces: Faces) -> tuple[int, int, int, int]:
    """The middle of the face (eyes to mouth), well inside every mask."""
    x0, y0, x1, y1 = faces.xyxy[0]
    w, h = x1 - x0, y1 - y0
    return int(x0 + w * 0.25), int(y0 + h * 0.25), int(x1 - w * 0.25), int(y1 - h * 0.2)


def outside(mask_shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Boolean (H, W): True outside ``box`` (x0, y0, x1, y1), box edges rounded outward."""
    x0, y0, x1, y1 = box
    keep = np.ones(mask_shape, bool)
    keep[int(np.floor(y0)):int(np.ceil(y1)) + 1, int(np.floor(x0)):int(np.ceil(x1)) + 1] = False
    return keep


# ---- classical --------------------------------------------------------------------------
def test_strength_zero_is_identity(grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    out = ClassicalEnhancer(0.0).process(grace_hopper, hopper_faces)
    np.testing.assert_array_equal(out, grace_hopper)
    assert out is not grace_hopper


@pytest.mark.parametrize("with_landmarks", [True, False], ids=["mesh-hull", "box"])
def test_full_strength_sharpens_only_the_face(grace_hopper: np.ndarray, hopper_faces: Faces,
                                              with_landmarks: bool) -> None:
    faces = hopper_faces if with_landmarks else Faces(hopper_faces.xyxy, hopper_faces.score, hopper_faces.kps)
    before = grace_hopper.copy()
    out = ClassicalEnhancer(1.0).process(grace_hopper, faces)
    np.testing.assert_array_equal(grace_hopper, before)  # the caller's frame is not touched
    box = inner_box(faces)
    assert laplacian_variance(out, box) > 1.5 * laplacian_variance(grace_hopper, box)
    # Outside the face's outline (mesh hull or detection box) every pixel is bit-identical.
    polygon = face_polygon(faces, 0)
    region = (*polygon.min(0), *polygon.max(0))
    changed = np.any(out != grace_hopper, axis=2)
    assert changed.any() and not np.any(changed & outside(changed.shape, region))
    if not with_landmarks:
        assert not np.any(changed & outside(changed.shape, tuple(faces.xyxy[0])))
    # Luminance only: B, G and R move together (chroma kept to rounding), never clipping
    # this saturated skin (red near 255, blue near 0) into another hue.
    x0, y0, x1, y1 = box
    moved = out[y0:y1, x0:x1].astype(np.int16) - grace_hopper[y0:y1, x0:x1]
    assert np.abs(moved).mean() > 3  # luminance did change
    assert (moved.max(axis=2) - moved.min(axis=2)).max() <= 1


def test_strength_scales_the_effect(grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    diffs = [np.abs(ClassicalEnhancer(s).process(grace_hopper, hopper_faces).astype(np.int16) - grace_hopper).mean()
             for s in (0.25, 0.6, 1.0)]
    assert 0 < diffs[0] < diffs[1] < diffs[2]


def test_a_blurred_face_becomes_sharper(engine, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    blurred = cv2.GaussianBlur(grace_hopper, (0, 0), 2.0)
    faces = engine.detect(blurred, landmarks=True)
    assert len(faces) == 1
    box = inner_box(faces)
    out = ClassicalEnhancer(1.0).process(blurred, faces)
    assert laplacian_variance(out, box) > 2 * laplacian_variance(blurred, box)
    # and closer to the sharp original than the blurred input was, in edge energy
    sharp = laplacian_variance(grace_hopper, box)
    assert abs(laplacian_variance(out, box) - sharp) < abs(laplacian_variance(blurred, box) - sharp)


def test_two_faces_and_none(grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    enhancer = ClassicalEnhancer(1.0)
    np.testing.assert_array_equal(enhancer.process(grace_hopper, Faces.empty()), grace_hopper)
    # the same photo twice, side by side: both faces are enhanced
    pair = np.hstack([grace_hopper, grace_hopper])
    shift = np.array([grace_hopper.shape[1], 0], np.float32)
    assert hopper_faces.landmarks is not None and hopper_faces.kps is not None
    second_landmarks = hopper_faces.landmarks.copy()
    second_landmarks[..., :2] += shift
    faces = Faces(np.concatenate([hopper_faces.xyxy, hopper_faces.xyxy + np.tile(shift, 2)]),
                  np.concatenate([hopper_faces.score] * 2),
                  landmarks=np.concatenate([hopper_faces.landmarks, second_landmarks]))
    out = enhancer.process(pair, faces)
    single = enhancer.process(grace_hopper, hopper_faces)
    np.testing.assert_array_equal(out[:, :grace_hopper.shape[1]], single)
    np.testing.assert_array_equal(out[:, grace_hopper.shape[1]:], single)


# ---- neural restorers ---------------------------------------------------------------------
def face_centre(image: np.ndarray, faces: Faces, half: int = 8) -> np.ndarray:
    assert faces.kps is not None
    cx, cy = np.round(faces.kps[0, [0, 1, 3, 4]].mean(0)).astype(int)
    return image[cy - half:cy + half, cx - half:cx + half].reshape(-1, 3).astype(np.float64).mean(0)


def assert_only_inside_the_mask(out: np.ndarray, frame: np.ndarray, faces: Faces) -> None:
    assert faces.kps is not None
    m = estimate_norm(faces.kps[0], 512, FFHQ_TEMPLATE_512)
    support = cv2.warpAffine(soft_mask(None, 512), cv2.invertAffineTransform(m), frame.shape[1::-1]) > 0
    changed = np.any(out != frame, axis=2)
    assert changed.any() and not np.any(changed & ~support), "pixels outside the soft mask changed"


def test_gfpgan_restores_through_the_ffhq_crop(tmp_path: Path, grace_hopper: np.ndarray,
                                              hopper_faces: Faces) -> None:
    engine = engine_with(tmp_path, {"gfpgan_1.4": gfpgan_bytes()})
    enhancer = build_enhancer(engine, strength=1.0)  # auto: GFPGAN is installed
    assert isinstance(enhancer, GfpganEnhancer) and enhancer.name == "face_enhancer"
    assert enhancer.input_name == "input"
    before = grace_hopper.copy()
    out = enhancer.process(grace_hopper, hopper_faces)
    np.testing.assert_array_equal(grace_hopper, before)
    # -x in [-1, 1] maps back to 255 - pixel: the face comes back inverted
    np.testing.assert_allclose(face_centre(out, hopper_faces), 255.0 - face_centre(grace_hopper, hopper_faces),
                               atol=3.0)
    assert_only_inside_the_mask(out, grace_hopper, hopper_faces)


def test_codeformer_gets_its_fidelity_weight(tmp_path: Path, grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    engine = engine_with(tmp_path, {"codeformer": codeformer_bytes()})
    enhancer = build_enhancer(engine, strength=1.0)  # auto: only CodeFormer is installed
    assert isinstance(enhancer, CodeFormerEnhancer)
    assert enhancer.weight is not None and enhancer.weight.dtype == np.float64 and enhancer.weight.shape == (1,)
    out = enhancer.process(grace_hopper, hopper_faces)
    # x' = -0.5 x  =>  pixel' = 127.5 * (1 - 0.5 * (p / 127.5 - 1)) = 191.25 - 0.5 p
    expected = 191.25 - 0.5 * face_centre(grace_hopper, hopper_faces)
    np.testing.assert_allclose(face_centre(out, hopper_faces), expected, atol=3.0)
    assert_only_inside_the_mask(out, grace_hopper, hopper_faces)
    strong = CodeFormerEnhancer(engine.cache.get("codeformer"), fidelity=1.0).process(grace_hopper, hopper_faces)
    np.testing.assert_allclose(face_centre(strong, hopper_faces), 255.0 - face_centre(grace_hopper, hopper_faces),
                               atol=3.0)


def test_codeformer_without_a_weight_input(tmp_path: Path, grace_hopper: np.ndarray, hopper_faces: Faces) -> None:
    engine = engine_with(tmp_path, {"codeformer": codeformer_bytes(with_weight=False)})
    enhancer = build_enhancer(engine, strength=0.5, model="codeformer")
    assert isinstance(enhancer, CodeFormerEnhancer) and enhancer.weight is None
    out = enhancer.process(grace_hopper, hopper_faces)
    original = face_centre(grace_hopper, hopper_faces)
    np.testing.assert_allclose(face_centre(out, hopper_faces), 0.5 * original + 0.5 * (255.0 - original), atol=3.0)


@pytest.mark.parametrize(("installed", "model", "strength", "expected"), [
    pytest.param({}, "auto", 0.6, ClassicalEnhancer, id="auto-nothing-installed"),
    pytest.param({"codeformer": codeformer_bytes()}, "auto", 0.6, CodeFormerEnhancer, id="auto-codeformer"),
    pytest.param({"codeformer": codeformer_bytes(), "gfpgan_1.4": gfpgan_bytes()}, "auto", 0.6, GfpganEnhancer,
                 id="auto-prefers-gfpgan"),
    pytest.param({"gfpgan_1.4": gfpgan_bytes()}, "classical", 0.3, ClassicalEnhancer, id="classical-forced"),
    pytest.param({}, "gfpgan_1.4", 0.6, ModelUnavailable, id="named-model-missing"),
    pytest.param({}, "restoreformer", 0.6, InvalidInput, id="unknown-model"),
    pytest.param({}, "auto", 1.5, InvalidInput, id="strength-above-one"),
    pytest.param({}, "classical", -0.1, InvalidInput, id="strength-negative"),
])
def test_build_enhancer_choice(tmp_path: Path, installed: dict[str, bytes], model: str, strength: float,
                               expected: type) -> None:
    engine = engine_with(tmp_path, installed)
    if issubclass(expected, Exception):
        with pytest.raises(expected):
            build_enhancer(engine, strength=strength, model=model)
        return
    enhancer = build_enhancer(engine, strength=strength, model=model)
    assert type(enhancer) is expected
    assert enhancer.name == "face_enhancer" and enhancer.strength == strength  # type: ignore[attr-defined]
