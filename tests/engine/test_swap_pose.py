"""Pose-robust swap texture (issue 16, point 1): no torn far cheek when source and target yaw differ.

The sources are head turns of a real photo (tests/yaw_render.py: the photo's own FaceMesh rotated, back
faces dropped), because no shared photo of one person turns 40° with a frontal twin; the targets are real
photos. The judge is the far-cheek stripe ratio (tests/swap_metrics.py): the structure-tensor λ1/λ2 of the
fine texture on the cheek the source hides, swapped over the target's own cheek; the pre-UV swap that
samples the photo directly stretches that cheek into parallel streaks (8x the target cheek's own
fine-texture energy at 40° onto the astronaut).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceport.engine.swap import build_swapper
from faceport.engine.swap.mesh import SwapOptions
from faceport.engine.swap.texture import canonical_layout, derive_canonical
from tests.conftest import read_bgr
from tests.swap_metrics import cheek_stripes, seam_ratio
from tests.yaw_render import YawRenderer

HOPPER = "identity/grace_hopper/mpl_grace_hopper.jpg"
TARGETS = ("identity/eileen_collins/sk_astronaut.png", "identity/obama/fr_obama.jpg")


@pytest.fixture(scope="module")
def turned_hopper(engine, data_dir: Path):  # type: ignore[no-untyped-def]
    photo = read_bgr(data_dir / HOPPER)
    faces = engine.detect(photo, landmarks=True).sorted_by_area()[:1]
    renderer = YawRenderer(photo, faces.landmarks[0])
    return photo, {yaw: renderer.render(yaw)[0] for yaw in (-40.0, -35.0, 35.0, 40.0)}


def _swap(engine, sources, target, options=None):  # type: ignore[no-untyped-def]
    faces = engine.detect(target, landmarks=True).sorted_by_area()[:1]
    swapper = build_swapper(engine, sources, options=options)
    return swapper, faces, swapper.process(target, faces)


@pytest.mark.parametrize("target_path", TARGETS)
@pytest.mark.parametrize("yaw", [-40.0, 40.0])
def test_far_cheek_does_not_tear_at_a_40_degree_yaw_difference(engine, data_dir: Path, turned_hopper,
                                                                target_path: str, yaw: float) -> None:
    photo, turned = turned_hopper
    source = turned[yaw]
    target = read_bgr(data_dir / target_path)
    source_lm = engine.detect(source, landmarks=True).sorted_by_area()[0].landmarks[0]
    _, faces, out = _swap(engine, [source], target)
    stripes = cheek_stripes(target, out, faces.landmarks[0], source_lm)
    assert stripes < 1.5, f"far cheek streaked: directional ratio {stripes:.2f} x the target's own cheek"
    assert seam_ratio(target, out, faces.landmarks[0]) < 1.6
    # the identity still moves to the source (judged by the dlib embedding the swap does not use)
    src_e = engine.embed_largest(photo, detector="centerface").embedding[0]
    tgt_e = engine.embed_largest(target, detector="centerface").embedding[0]
    out_e = engine.embed_largest(out, detector="centerface").embedding[0]
    assert np.linalg.norm(out_e - src_e) < np.linalg.norm(out_e - tgt_e)


def test_the_pre_uv_swap_does_tear_there(engine, data_dir: Path, turned_hopper) -> None:
    """The stripe judge can fail: sampling the turned photo directly streaks the far cheek."""
    _, turned = turned_hopper
    target = read_bgr(data_dir / TARGETS[0])
    source_lm = engine.detect(turned[40.0], landmarks=True).sorted_by_area()[0].landmarks[0]
    _, faces, out = _swap(engine, [turned[40.0]], target, SwapOptions(pose_texture=False))
    assert cheek_stripes(target, out, faces.landmarks[0], source_lm) > 3.0


def test_sources_turned_both_ways_merge_in_uv_space(engine, data_dir: Path, turned_hopper) -> None:
    """Two photos, each hiding the other's visible side: every texel comes from the one that sees it,
    so nothing needs the mirror (one photo alone needs it for a sixth of the face), and both cheeks come
    out as clean as from the frontal photo itself (Hopper's wrinkles are real streaks: the bar is relative)."""
    photo, turned = turned_hopper
    target = read_bgr(data_dir / TARGETS[0])
    one, _, _ = _swap(engine, [turned[35.0]], target)
    both, faces, out = _swap(engine, [turned[35.0], turned[-35.0]], target)
    _, _, frontal = _swap(engine, [photo], target)
    assert one.uv is not None and both.uv is not None
    assert one.uv.mirrored > 0.08
    assert both.uv.mirrored < one.uv.mirrored / 4
    for yaw in (35.0, -35.0):
        lm = engine.detect(turned[yaw], landmarks=True).sorted_by_area()[0].landmarks[0]
        merged = cheek_stripes(target, out, faces.landmarks[0], lm)
        assert merged < 1.35 * cheek_stripes(target, frontal, faces.landmarks[0], lm)


def test_several_real_photos_of_one_person(engine, data_dir: Path) -> None:
    kit = [read_bgr(data_dir / "identity/kit_harington" / n)
           for n in ("fr_john1.jpeg", "fr_john2.jpeg", "fr_johnsnow_test1.jpg")]
    target = read_bgr(data_dir / TARGETS[0])
    swapper, faces, out = _swap(engine, kit, target)
    assert len(swapper.sources) == 3
    kit_e = engine.embed_largest(kit[0], detector="centerface").embedding[0]
    tgt_e = engine.embed_largest(target, detector="centerface").embedding[0]
    out_e = engine.embed_largest(out, detector="centerface").embedding[0]
    assert np.linalg.norm(out_e - kit_e) < np.linalg.norm(out_e - tgt_e)
    assert seam_ratio(target, out, faces.landmarks[0]) < 1.6


def test_canonical_layout_is_symmetric_and_rederivable(engine, data_dir: Path) -> None:
    canonical, pairs = canonical_layout()
    assert np.array_equal(pairs[pairs], np.arange(468))  # an involution
    assert np.allclose(canonical[pairs, 0], -canonical[:, 0], atol=1e-4)
    assert np.allclose(canonical[pairs, 1:], canonical[:, 1:], atol=1e-4)
    assert pairs[1] == 1 and pairs[33] == 263 and pairs[61] == 291  # nose tip; eye corners; mouth corners
    # one frontal photo's mesh gives nearly the same layout and pairs
    photo = read_bgr(data_dir / HOPPER)
    one, one_pairs = derive_canonical([engine.detect(photo, landmarks=True).landmarks[0]])
    assert (one_pairs == pairs).mean() > 0.85  # 89 %: a single photo is a little lopsided
    assert np.abs(one[:, :2] - canonical[:, :2]).max() < 0.15  # eye distances
