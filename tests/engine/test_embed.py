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
