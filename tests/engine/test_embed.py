"""dlib alignment + embedding: verification accuracy on real pairs, compare() semantics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from faceport.engine.embed import DEFAULT_THRESHOLD, compare, normalize
from faceport.errors import NoFace
from tests.conftest import FIXTURES, read_bgr


def test_verification_accuracy_on_pairs_at_the_default_threshold(engine, data_dir: Path, capsys) -> None:
    rows = list(csv.DictReader((data_dir / "pairs" / "pairs.csv").open()))
    cache: dict[str, np.ndarray] = {}

    def embedding(rel: str) -> np.ndarray:
        if rel not in cache:
            cache[rel] = engine.embed_largest(read_bgr(data_dir / rel)).embedding[0]
        return cache[rel]

    correct = same_ok = diff_ok = same_n = diff_n = 0
    for row in rows:
        result = compare(embedding(row["path_a"]), embedding(row["path_b"]))
        same = row["same"] == "1"
        correct += result.match == same
        same_n += same
        diff_n += not same
        same_ok += same and result.match
        diff_ok += (not same) and not result.match
    accuracy = correct / len(rows)
    with capsys.disabled():
        print(f"\n[verification] {len(rows)} pairs at threshold {DEFAULT_THRESHOLD}: accuracy {accuracy:.4f} "
              f"(same {same_ok}/{same_n}, different {diff_ok}/{diff_n})")
    assert accuracy >= 0.95


def test_embeddings_are_unit_length_and_stable(engine, grace_hopper) -> None:
    a = engine.detect(grace_hopper, embed=True)
    b = engine.detect(grace_hopper.copy(), embed=True)
    assert a.embedding.shape == (1, 128)
    assert np.linalg.norm(a.embedding[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)


def test_different_people_are_refused_and_the_same_accepted(engine) -> None:
    hopper = read_bgr(FIXTURES / "mpl_grace_hopper.jpg")
    collins = read_bgr(FIXTURES / "sk_astronaut.png")
    assert not engine.verify(hopper, collins).match
    shifted = np.roll(hopper, (15, -10), axis=(0, 1))
    same = engine.verify(hopper, shifted)
    assert same.match and same.similarity > 0.85


def test_compare_maps_distance_to_similarity() -> None:
    rng = np.random.default_rng(0)
    a = normalize(rng.normal(size=128).astype(np.float32))
    assert compare(a, a).distance == pytest.approx(0.0, abs=1e-6)
    assert compare(a, a).similarity == pytest.approx(1.0)
    assert compare(a, -a).similarity == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        compare(a, a[:64])


def test_no_face_is_a_clear_error(engine) -> None:
    with pytest.raises(NoFace):
        engine.embed_largest(np.zeros((200, 200, 3), np.uint8))


# ---- the ResNet on onnxruntime (default) against dlib (the reference) ----------------------
@pytest.fixture(scope="module")
def both(model_cache):  # type: ignore[no-untyped-def]
    from faceport.engine.core import EngineOptions, FaceEngine

    return FaceEngine(model_cache), FaceEngine(model_cache, EngineOptions(embedder="dlib"))


def test_the_engine_embeds_on_onnxruntime_by_default_and_on_dlib_when_asked(both, model_cache) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.core import EngineOptions, FaceEngine
    from faceport.engine.embed import DlibEmbedder, OnnxDlibEmbedder
    from faceport.engine.models.sessions import OrtSession
    from faceport.errors import InvalidInput

    onnx_engine, dlib_engine = both
    assert isinstance(onnx_engine.embedder(), OnnxDlibEmbedder)
    assert isinstance(onnx_engine.embedder().session, OrtSession)
    assert type(dlib_engine.embedder()) is DlibEmbedder
    with pytest.raises(InvalidInput, match="unknown embedder"):
        FaceEngine(model_cache, EngineOptions(embedder="torch"))


def test_onnx_descriptors_equal_dlibs_on_every_identity_photo(both, data_dir: Path, manifest: dict) -> None:  # type: ignore[no-untyped-def]
    onnx_engine, dlib_engine = both
    photos = [f["path"] for f in manifest["files"] if f["path"].startswith("identity/")]
    assert len(photos) >= 20
    worst = 0.0
    for rel in photos:
        image = read_bgr(data_dir / rel)
        faces = onnx_engine.detect(image)
        assert len(faces) >= 1, rel
        reference = dlib_engine.embedder()
        chips = reference.chips(image, faces)
        raw_dlib = reference.descriptors(chips)
        raw_onnx = onnx_engine.embedder().descriptors(chips)
        assert raw_onnx.shape == raw_dlib.shape == (len(faces), 128)
        worst = max(worst, float(np.abs(raw_onnx - raw_dlib).max()))
        assert float(np.abs(raw_onnx - raw_dlib).max()) < 1e-4, rel
        # and through the public path (alignment + normalisation) as well
        a = onnx_engine.embedder().embed(image, faces).embedding
        b = dlib_engine.embedder().embed(image, faces).embedding
        assert float(np.linalg.norm(a - b, axis=1).max()) < 1e-4, rel
    assert worst < 1e-5  # in practice a few 1e-7: float32 rounding only


def test_several_faces_go_in_one_batch_and_equal_one_by_one(both, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    onnx_engine, dlib_engine = both
    image = read_bgr(data_dir / "group" / "pf_multi_face.jpg")
    faces = onnx_engine.detect(image)
    assert len(faces) >= 3
    calls: list[int] = []
    embedder = onnx_engine.embedder()
    session = embedder.session
    original = session.run

    def counting(feeds):  # type: ignore[no-untyped-def]
        calls.append(len(next(iter(feeds.values()))))
        return original(feeds)

    session.run = counting  # type: ignore[method-assign]
    try:
        batched = embedder.embed(image, faces).embedding
        single = np.concatenate([embedder.embed(image, faces[i:i + 1]).embedding for i in range(len(faces))])
    finally:
        del session.run
    assert calls == [len(faces)] + [1] * len(faces)
    np.testing.assert_allclose(batched, single, atol=1e-6)
    reference = dlib_engine.embedder().embed(image, faces).embedding
    assert float(np.linalg.norm(batched - reference, axis=1).max()) < 1e-4


def test_verification_on_pairs_is_unchanged_by_the_onnx_runtime(both, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    onnx_engine, dlib_engine = both
    rows = list(csv.DictReader((data_dir / "pairs" / "pairs.csv").open()))
    embeddings: dict[tuple[str, str], np.ndarray] = {}
    for rel in sorted({r["path_a"] for r in rows} | {r["path_b"] for r in rows}):
        image = read_bgr(data_dir / rel)
        faces = onnx_engine.detect(image).sorted_by_area()[:1]
        if len(faces) == 0:
            continue
        embeddings["onnx", rel] = onnx_engine.embedder().embed(image, faces).embedding[0]
        embeddings["dlib", rel] = dlib_engine.embedder().embed(image, faces).embedding[0]
    compared = 0
    for row in rows:
        if ("onnx", row["path_a"]) not in embeddings or ("onnx", row["path_b"]) not in embeddings:
            continue
        a = compare(embeddings["onnx", row["path_a"]], embeddings["onnx", row["path_b"]])
        b = compare(embeddings["dlib", row["path_a"]], embeddings["dlib", row["path_b"]])
        assert a.distance == pytest.approx(b.distance, abs=1e-4)
        assert a.match == b.match, row
        compared += 1
    assert compared >= 0.95 * len(rows)
