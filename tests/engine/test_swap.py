"""The mesh face swap on real faces: identity moves to the source, the rest of the picture stays."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.pipeline import Pipeline, PipelineOptions, build_processors
from faceport.engine.swap import build_swapper
from faceport.engine.swap.mesh import LIPS_INNER, SwapOptions
from faceport.errors import InvalidInput, NoFace
from tests.conftest import FIXTURES, read_bgr
from tests.swap_metrics import seam_ratio


def one_photo_per_identity(manifest: dict, data_dir: Path) -> dict[str, np.ndarray]:
    by: dict[str, list[str]] = {}
    for entry in manifest["files"]:
        if entry["path"].startswith("identity/"):
            by.setdefault(entry["identity"], []).append(entry["path"])
    return {name: read_bgr(data_dir / sorted(paths)[0]) for name, paths in sorted(by.items())}


def test_identity_moves_to_the_source_on_pairs_of_different_people(engine, manifest, data_dir: Path,
                                                                   capsys) -> None:
    photos = one_photo_per_identity(manifest, data_dir)
    # measure identity with CenterFace boxes: it still finds the tight 112-px crop after a swap
    reference = {n: engine.embed_largest(img, detector="centerface").embedding[0] for n, img in photos.items()}
    closer = total = 0
    seams = []
    for source, target in itertools.permutations(photos, 2):
        swapper = build_swapper(engine, [photos[source]])
        faces = engine.detect(photos[target], landmarks=True).sorted_by_area()[:1]
        swapped = swapper.process(photos[target], faces)
        total += 1
        try:
            out = engine.embed_largest(swapped, detector="centerface").embedding[0]
        except NoFace:
            continue
        closer += np.linalg.norm(out - reference[source]) < np.linalg.norm(out - reference[target])
        seams.append(seam_ratio(photos[target], swapped, faces.landmarks[0]))
    ratio = closer / total
    with capsys.disabled():
        print(f"\n[swap] {total} ordered pairs of {len(photos)} identities: swapped face closer to the source "
              f"than to the target in {ratio:.3f}; seam gradient ratio median {np.median(seams):.2f} "
              f"(p90 {np.percentile(seams, 90):.2f})")
    assert ratio >= 0.8
    assert np.median(seams) < 1.5


def test_only_the_face_changes_and_the_open_mouth_stays(engine, data_dir: Path) -> None:
    source = read_bgr(data_dir / "identity/biden/fr_biden.jpg")
    target = read_bgr(data_dir / "identity/obama/fr_obama.jpg")  # a broad smile: teeth visible
    faces = engine.detect(target, landmarks=True)
    swapped = build_swapper(engine, [source]).process(target, faces)
    assert swapped.shape == target.shape and swapped is not target
    changed = np.abs(swapped.astype(int) - target.astype(int)).max(axis=2) > 0
    x1, y1, x2, y2 = faces.xyxy[0]
    pad = 0.25 * (x2 - x1)
    outside = np.ones_like(changed)
    outside[int(max(0, y1 - pad)):int(y2 + pad), int(max(0, x1 - pad)):int(x2 + pad)] = False
    assert not changed[outside].any()  # nothing outside the face moved
    inside = changed[int(y1):int(y2), int(x1):int(x2)]
    assert inside.mean() > 0.4  # the face itself did
    mouth = np.zeros(target.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(faces.landmarks[0][list(LIPS_INNER), :2]).astype(np.int32)], 255)
    mouth = cv2.erode(mouth, np.ones((5, 5), np.uint8), iterations=2) > 0
    diff = np.abs(swapped.astype(int) - target.astype(int))[mouth].mean()
    assert diff < 4  # the target's teeth are kept


def test_several_source_images_and_seamless_blend(engine, data_dir: Path) -> None:
    sources = [read_bgr(data_dir / "identity/kit_harington" / n) for n in ("fr_john1.jpeg", "fr_john2.jpeg")]
    target = read_bgr(FIXTURES / "mpl_grace_hopper.jpg")
    faces = engine.detect(target, landmarks=True)
    swapper = build_swapper(engine, sources, options=SwapOptions(blend="seamless"))
    assert len(swapper.sources) == 2
    out = swapper.process(target, faces)
    kit = engine.embed_largest(sources[0]).embedding[0]
    hopper = engine.embed_largest(target).embedding[0]
    result = engine.embed_largest(out).embedding[0]
    assert np.linalg.norm(result - kit) < np.linalg.norm(result - hopper)


def test_source_without_a_face_is_refused(engine) -> None:
    with pytest.raises(NoFace):
        build_swapper(engine, [np.zeros((200, 200, 3), np.uint8)])
    with pytest.raises(InvalidInput, match="source"):
        build_processors(engine, ["face_swapper"], sources=[])
    with pytest.raises(InvalidInput, match="face_enhancer"):
        build_processors(engine, ["face_morpher"])


@pytest.mark.parametrize("selector", ["index", "reference"])
def test_one_face_of_a_group_is_chosen(engine, data_dir: Path, selector: str) -> None:
    group = read_bgr(data_dir / "group/fr_two_people.jpg")  # obama left, biden right
    source = read_bgr(FIXTURES / "mpl_grace_hopper.jpg")
    if selector == "index":
        options = PipelineOptions(selector="index", face_index=1)  # the second from the left: biden
    else:
        biden = engine.embed_largest(read_bgr(data_dir / "identity/biden/fr_biden.jpg")).embedding[0]
        options = PipelineOptions(selector="reference", reference_embedding=biden)
    pipeline = Pipeline(engine, build_processors(engine, ["face_swapper"], sources=[source]), options)
    out = pipeline.process_image(group)
    faces = engine.detect(group)
    left, right = sorted(range(len(faces)), key=lambda i: faces.xyxy[i, 0])
    def region_changed(i: int) -> float:
        x1, y1, x2, y2 = faces.xyxy[i].astype(int)
        return float((np.abs(out[y1:y2, x1:x2].astype(int) - group[y1:y2, x1:x2].astype(int)) > 8).mean())
    assert region_changed(right) > 0.3
    assert region_changed(left) == 0.0
