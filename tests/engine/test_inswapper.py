"""ArcFace embedding and the inswapper_128 face swapper, loaded through the real model path.

The models are tiny ONNX graphs built here with the real models' tensor names and shapes:

- ArcFace: ``input.1`` (1, 3, 112, 112) -> ``683`` (1, 512), a 16x16 block average (a 7x7 grid
  per channel, so a misaligned or wrongly coloured crop gives another vector) times a fixed
  (147, 512) matrix.
- inswapper: ``target`` (1, 3, 128, 128) and ``source`` (1, 512) -> ``output`` (1, 3, 128, 128)
  = 0.5 * target + 0.5 * source[:3] per RGB channel, so the latent the swapper feeds shows up
  as a colour shift of the face. A decoy (512, 512) initializer *named* ``emap`` comes first;
  the real emap is the last initializer, as in insightface's file.

Each graph is written to a file, installed with ``ModelStore.pull_from`` into a temporary
store, loaded by ``ModelCache`` (onnxruntime) and run on a real photo with faces found by
the real detector and FaceMesh.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceport.engine.align import ARCFACE_TEMPLATE_112, estimate_norm, soft_mask
from faceport.engine.arcface import ArcFaceEmbedder
from faceport.engine.landmarks import kps_from_mesh
from faceport.engine.models import ModelCache, ModelStore
from faceport.engine.swap.inswapper import InswapperSwapper, build_inswapper, read_emap, source_latent
from faceport.engine.types import Faces
from faceport.errors import InvalidInput, ModelLoadFailed, ModelUnavailable, NoFace

RNG = np.random.default_rng(7)
POOL_W = (RNG.standard_normal((147, 512)) / 12).astype(np.float32)
SOURCE = RNG.standard_normal(512).astype(np.float32)
SOURCE /= np.linalg.norm(SOURCE)
# latent = SOURCE @ EMAP = LATENT (unit): its first three values become an RGB shift of the face.
LATENT = np.concatenate([[0.6, 0.1, 0.3], RNG.standard_normal(509) * 0.0445]).astype(np.float32)
LATENT /= np.linalg.norm(LATENT)
EMAP = np.outer(SOURCE, LATENT).astype(np.float32)


def _model_bytes(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def arcface_bytes() -> bytes:
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(POOL_W, "fc")],
    )
    return _model_bytes(graph)


def inswapper_bytes(last_initializer: np.ndarray = EMAP) -> bytes:
    initializers = [
        numpy_helper.from_array(np.eye(512, dtype=np.float32), "emap"),  # decoy: right name, wrong place
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([3], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape"),
        numpy_helper.from_array(last_initializer, "buff2fs"),
    ]
    nodes = [
        helper.make_node("Mul", ["target", "half"], ["dim_target"]),
        helper.make_node("Slice", ["source", "starts", "ends", "axes"], ["rgb"]),
        helper.make_node("Reshape", ["rgb", "shape"], ["rgb4"]),
        helper.make_node("Mul", ["rgb4", "half"], ["shift"]),
        helper.make_node("Add", ["dim_target", "shift"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_inswapper",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        initializers,
    )
    return _model_bytes(graph)


def install(store: ModelStore, name: str, data: bytes, directory: Path) -> None:
    """Install model bytes the way a user does: ``faceport models pull NAME --from FILE --sha256 HEX``."""
    path = directory / f"{name}.onnx"
    path.write_bytes(data)
    status = store.pull_from(name, str(path), hashlib.sha256(data).hexdigest())
    assert status.installed, status.problems


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("tiny-models")
    store = ModelStore(root / "store")
    install(store, "arcface_w600k_r50", arcface_bytes(), root)
    install(store, "inswapper_128", inswapper_bytes(), root)
    cache = ModelCache(store, idle_ttl=0)
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def hopper_faces(engine, grace_hopper: np.ndarray) -> Faces:  # type: ignore[no-untyped-def]
    faces = engine.detect(grace_hopper, landmarks=True)
    assert len(faces) == 1 and faces.kps is not None
    return faces


def manual_embedding(image: np.ndarray, kps: np.ndarray, *, rgb: bool = True) -> np.ndarray:
    """What the tiny ArcFace must return, computed without faceport's alignment code."""
    m, _ = cv2.estimateAffinePartial2D(kps.astype(np.float64), ARCFACE_TEMPLATE_112.astype(np.float64),
                                       method=cv2.LMEDS)
    crop = cv2.warpAffine(image, m, (112, 112))
    if rgb:
        crop = crop[:, :, ::-1]
    x = (crop.astype(np.float32) - 127.5) / 127.5  # (112, 112, 3)
    pooled = x.reshape(7, 16, 7, 16, 3).mean(axis=(1, 3)).transpose(2, 0, 1).reshape(1, 147)  # C, gy, gx
    vector = pooled @ POOL_W
    return (vector / np.linalg.norm(vector))[0]


def test_arcface_embeds_the_aligned_rgb_crop(tiny_cache: ModelCache, grace_hopper: np.ndarray,
                                             hopper_faces: Faces) -> None:
    session = tiny_cache.get("arcface_w600k_r50")
    embedder = ArcFaceEmbedder(session)
    assert (embedder.input_name, embedder.output_name) == ("input.1", "683")  # read from the session
    faces = embedder.embed(grace_hopper, hopper_faces)
    assert faces.embedding is not None and faces.embedding.shape == (1, 512)
    assert faces.embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(faces.embedding, axis=1), 1.0, atol=1e-5)
    assert hopper_faces.kps is not None
    expected = manual_embedding(grace_hopper, hopper_faces.kps[0])
    np.testing.assert_allclose(faces.embedding[0], expected, atol=2e-4)
    # The comparison can fail: BGR instead of RGB, or the keypoints shifted by a few pixels,
    # give clearly different vectors.
    assert np.linalg.norm(faces.embedding[0] - manual_embedding(grace_hopper, hopper_faces.kps[0], rgb=False)) > 0.05
    shifted = manual_embedding(grace_hopper, hopper_faces.kps[0] + np.float32(8.0))
    assert np.linalg.norm(faces.embedding[0] - shifted) > 0.05


def test_arcface_without_keypoints_uses_the_mesh(tiny_cache: ModelCache, grace_hopper: np.ndarray,
                                                 hopper_faces: Faces) -> None:
    embedder = ArcFaceEmbedder(tiny_cache.get("arcface_w600k_r50"))
    with_kps = embedder.embed(grace_hopper, hopper_faces).embedding
    mesh_only = Faces(hopper_faces.xyxy, hopper_faces.score, landmarks=hopper_faces.landmarks)
    from_mesh = embedder.embed(grace_hopper, mesh_only).embedding
    assert with_kps is not None and from_mesh is not None and hopper_faces.landmarks is not None
    np.testing.assert_allclose(from_mesh[0], manual_embedding(grace_hopper, kps_from_mesh(hopper_faces.landmarks[0])),
                               atol=2e-4)
    assert float(with_kps[0] @ from_mesh[0]) > 0.9  # the same face, aligned from other keypoints
    with pytest.raises(InvalidInput):
        embedder.embed(grace_hopper, Faces(hopper_faces.xyxy, hopper_faces.score))
    assert embedder.embed(grace_hopper, Faces.empty()).embedding.shape == (0, 512)  # type: ignore[union-attr]


def test_emap_is_the_last_initializer(tiny_cache: ModelCache) -> None:
    path = tiny_cache.store.path("inswapper_128")
    from_file = read_emap(path)
    np.testing.assert_array_equal(from_file, EMAP)
    np.testing.assert_array_equal(read_emap(path.read_bytes()), EMAP)
    np.testing.assert_allclose(source_latent(SOURCE, from_file), LATENT[None], atol=1e-5)


@pytest.mark.parametrize(("model", "error"), [
    pytest.param(lambda: inswapper_bytes(np.ones((512, 3), np.float32)), ModelLoadFailed, id="last-not-square"),
    pytest.param(lambda: b"not an onnx file", ModelLoadFailed, id="garbage"),
])
def test_unusable_emap_is_a_load_error(model, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        read_emap(model())


def face_centre_patch(image: np.ndarray, kps: np.ndarray, half: int = 8) -> np.ndarray:
    """Mean BGR of a patch between the eyes and the mouth (well inside every soft mask)."""
    cx, cy = np.round(kps[[0, 1, 3, 4]].mean(0)).astype(int)
    return image[cy - half:cy + half, cx - half:cx + half].reshape(-1, 3).astype(np.float64).mean(0)


def test_swap_applies_the_emap_and_stays_inside_the_face(tiny_cache: ModelCache, grace_hopper: np.ndarray,
                                                         hopper_faces: Faces) -> None:
    arcface = ArcFaceEmbedder(tiny_cache.get("arcface_w600k_r50"))
    swapper = InswapperSwapper(tiny_cache.get("inswapper_128"), arcface, SOURCE,
                               model=tiny_cache.store.path("inswapper_128"))
    assert swapper.name == "face_swapper"
    assert (swapper.target_name, swapper.source_name) == ("target", "source")
    before = grace_hopper.copy()
    out = swapper.process(grace_hopper, hopper_faces)
    np.testing.assert_array_equal(grace_hopper, before)  # the caller's frame is not touched
    assert out.shape == grace_hopper.shape and out.dtype == np.uint8

    # (a) the graph saw source @ emap: 0.5 * face + 0.5 * (0.6, 0.1, 0.3) in RGB.
    assert hopper_faces.kps is not None
    kps = hopper_faces.kps[0]
    original = face_centre_patch(grace_hopper, kps)
    expected = 0.5 * original + 0.5 * 255.0 * LATENT[:3][::-1]  # BGR order
    np.testing.assert_allclose(face_centre_patch(out, kps), expected, atol=4.0)
    # Fed the raw embedding (or the decoy identity "emap"), the shift would be tiny instead.
    raw = 0.5 * original + 0.5 * 255.0 * SOURCE[:3][::-1]
    assert np.abs(face_centre_patch(out, kps) - raw).max() > 30

    # (b) and (c): every changed pixel lies where the warped soft mask is non-zero; around
    # the face it all changed; the rest of the frame is bit-identical.
    m = estimate_norm(kps, 128)
    support = cv2.warpAffine(soft_mask(None, 128), cv2.invertAffineTransform(m),
                             grace_hopper.shape[1::-1], flags=cv2.INTER_LINEAR) > 0
    changed = np.any(out != grace_hopper, axis=2)
    assert not np.any(changed & ~support), "pixels outside the soft mask changed"
    x0, y0, x1, y1 = hopper_faces.xyxy[0]
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    inner = changed[int(cy - h / 4):int(cy + h / 4), int(cx - w / 4):int(cx + w / 4)]
    assert inner.mean() > 0.95
    assert changed.mean() < 0.3  # a face, not the frame
    assert not changed[:, : int(x0 - w / 2)].any() and not changed[:, int(x1 + w / 2):].any()


def test_build_inswapper_embeds_the_source_with_arcface(tiny_cache: ModelCache, grace_hopper: np.ndarray,
                                                        hopper_faces: Faces) -> None:
    swapper = build_inswapper(tiny_cache, [(grace_hopper, hopper_faces), (grace_hopper, Faces.empty())])
    assert hopper_faces.kps is not None
    identity = manual_embedding(grace_hopper, hopper_faces.kps[0])
    expected = identity @ EMAP
    np.testing.assert_allclose(swapper.latent[0], expected / np.linalg.norm(expected), atol=1e-4)
    out = swapper.process(grace_hopper, hopper_faces)
    assert np.any(out != grace_hopper)
    # A new source through the same loaded models: the same identity gives the same latent.
    again = swapper.with_source(grace_hopper, hopper_faces)
    np.testing.assert_allclose(again.latent, swapper.latent, atol=1e-6)


def test_build_inswapper_errors(tmp_path: Path, tiny_cache: ModelCache, grace_hopper: np.ndarray,
                                hopper_faces: Faces) -> None:
    with pytest.raises(NoFace):
        build_inswapper(tiny_cache, [(grace_hopper, Faces.empty())])
    empty = ModelCache(ModelStore(tmp_path / "empty"), idle_ttl=0)
    with pytest.raises(ModelUnavailable, match="faceport models pull arcface_w600k_r50"):
        build_inswapper(empty, [(grace_hopper, hopper_faces)])
    with pytest.raises(InvalidInput):
        InswapperSwapper(tiny_cache.get("inswapper_128"), ArcFaceEmbedder(tiny_cache.get("arcface_w600k_r50")),
                         SOURCE)  # neither the model file nor an emap
    with pytest.raises(InvalidInput):
        source_latent(np.ones(128, np.float32), EMAP)  # a dlib-sized embedding is not an ArcFace one
