"""Every default model installs and loads through the cache with the runtime its spec names."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.models import DEFAULT_MODELS, ModelCache, ModelStore
from faceport.engine.models.sessions import CascadeSet, DlibModel, LiteRTSession, OpenCVDnnSession, OrtSession
from tests.conftest import FIXTURES

RUNTIME_TYPES = {"onnxruntime": OrtSession, "litert": LiteRTSession, "dlib": DlibModel,
                 "opencv_dnn": OpenCVDnnSession, "opencv_cascade": CascadeSet}


@pytest.fixture(scope="module")
def full_cache(models_dir: Path):  # type: ignore[no-untyped-def]
    store = ModelStore(models_dir)
    missing = [s.name for s in DEFAULT_MODELS if not store.is_installed(s.name)]
    if missing:
        assert all(r.installed for r in store.pull(missing))
    cache = ModelCache(store, idle_ttl=0)
    yield cache
    cache.close()


@pytest.mark.parametrize("spec", DEFAULT_MODELS, ids=lambda s: s.name)
def test_default_model_verifies_and_loads(full_cache: ModelCache, spec) -> None:  # type: ignore[no-untyped-def]
    assert full_cache.store.verify(spec.name).installed
    model = full_cache.get(spec.name)
    if spec.tree:
        assert isinstance(model, Path) and model.is_dir()
        assert all((model / f.name).is_file() for f in spec.files)
    else:
        assert isinstance(model, RUNTIME_TYPES[spec.runtime])
    if spec.input_size and isinstance(model, (OrtSession, LiteRTSession)):
        shape = model.inputs[0].shape
        assert spec.input_size[0] in shape and spec.input_size[1] in shape


def test_ssd_mobilenet_finds_the_person_in_a_photo(full_cache: ModelCache) -> None:
    net = full_cache.get("ssd_mobilenet_v3_coco")
    image = cv2.imread(str(FIXTURES / "sk_astronaut.png"))
    blob = cv2.dnn.blobFromImage(image, 1.0 / 127.5, (320, 320), (127.5, 127.5, 127.5), swapRB=True)
    detections = net.forward(blob).reshape(-1, 7)  # [batch, class_id, score, x1, y1, x2, y2]
    people = detections[(detections[:, 1] == 1) & (detections[:, 2] > 0.5)]  # COCO class 1 = person
    assert len(people) >= 1


def test_plate_cascades_load_and_run(full_cache: ModelCache) -> None:
    cascades = full_cache.get("plate_cascades")
    gray = np.zeros((240, 320), np.uint8)
    for cascade in cascades.cascades:
        assert len(cascade.detectMultiScale(gray)) == 0
