"""Swap quality over every ordered pair of different people among the shared identity photos.

For each ordered pair (source photo, target photo) of two DIFFERENT identities the default swap runs as a
user gets it (``build_swapper(engine, [source])`` + ``engine.detect(target, landmarks=True)``, the largest
target face) and is judged by things the swap does not use:

- identity transfer: the dlib ResNet embedding of the swapped face (CenterFace box, as tests/engine/test_swap.py)
  is closer to the source photo's than to the target photo's (share of outputs; a swapped face no detector
  finds counts as a miss);
- seam: gradient energy on the blend boundary, swapped / original (1.0 = no visible seam; median, p90);
- realism floor: dlib's HOG frontal detector still finds a face overlapping the target face (share), beside
  the same detector's rate on the unswapped targets (the baseline: HOG misses some real faces too);
- far-cheek stripes: on the cheek the source sees worse, the streak energy of the swapped cheek's fine
  texture (structure tensor λ1 - λ2) over all the fine-texture energy (λ1 + λ2) of the target's own cheek
  (low = skin-like; the target alone scores its cheek's coherence, 0.1-0.5; ≫ 1 = a torn, streaked smear);
- everything again per |source yaw - target yaw| bin (0-15, 15-30, 30-45, >45 degrees, FaceMesh head pose).

No shared pair of people differs by more than 45° of yaw (and only 10 by 30-45°), so a second table uses
SYNTHETIC sources: Grace Hopper's photo turned ±30, ±45, ±55° (tests/yaw_render.py: the photo's own mesh
rotated, back faces dropped; the hidden side is simply missing, as on a real turned head) onto the first
photo of every other identity (``--no-turned`` skips it).

Photos: the first ``--per-identity`` photos of each identity (sorted by file name, ``partial_face`` crops
left out; default 2, which makes 14 photos and 172 ordered pairs, about 3 minutes on two busy cores).

``--pictures docs/swap/ --prefix after`` writes side-by-side JPEGs (source | target | result, ≤ 900 px wide,
quality 85) for hard pairs built ONLY from photos whose manifest licence is public domain / CC0 / Pexels
(NASA astronaut, Grace Hopper, the DoD street scene, the Pexels clip): a 40° yaw difference (a synthetic
head turn of a real photo, tests/yaw_render.py), a group photo with small faces, an open mouth and a hand
over the face (frames of the Pexels clip).

Usage: python bench/swap_quality.py [--per-identity 2] [--json out.json] [--save-dir DIR]
                                    [--mask-types box,occlusion] [--mouth-mask] [--colour global]
                                    [--pictures docs/swap --prefix after]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from engine import machine  # noqa: E402

from tests.swap_metrics import HogJudge, cheek_stripes, seam_ratio  # noqa: E402

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))
BINS = ((0, 15), (15, 30), (30, 45), (45, 181))


def identity_photos(manifest: dict, per_identity: int) -> list[tuple[str, str]]:
    by: dict[str, list[str]] = {}
    for entry in manifest["files"]:
        if entry["path"].startswith("identity/") and "partial_face" not in entry["path"]:
            by.setdefault(entry["identity"], []).append(entry["path"])
    return [(name, path) for name, paths in sorted(by.items()) for path in sorted(paths)[:per_identity]]


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def summarise(rows: list[dict]) -> dict:
    if not rows:
        return {"n": 0}
    seams = [r["seam"] for r in rows if r["seam"] is not None]
    stripes = [r["stripes"] for r in rows if r["stripes"] is not None]
    return {
        "n": len(rows),
        "identity": sum(r["closer_to_source"] for r in rows) / len(rows),
        "seam_median": statistics.median(seams) if seams else None,
        "seam_p90": float(np.percentile(seams, 90)) if seams else None,
        "hog": sum(r["hog"] for r in rows) / len(rows),
        "stripes_median": statistics.median(stripes) if stripes else None,
        "stripes_p90": float(np.percentile(stripes, 90)) if stripes else None,
    }


def fmt(s: dict) -> str:
    if not s["n"]:
        return "   0 pairs"
    return (f"{s['n']:4d} pairs  identity {100 * s['identity']:5.1f} %  seam {s['seam_median']:.2f} "
            f"(p90 {s['seam_p90']:.2f})  HOG {100 * s['hog']:5.1f} %  far-cheek stripes {s['stripes_median']:.2f} "
            f"(p90 {s['stripes_p90']:.2f})")


OPTIONS = None  # SwapOptions from --mask-types / --mouth-mask / --colour (None: the defaults a user gets)


def quality(args: argparse.Namespace, engine) -> dict:  # type: ignore[no-untyped-def]
    from faceport.engine.attributes import head_pose
    from faceport.engine.swap import build_swapper
    from faceport.errors import NoFace

    manifest = json.loads((DATA / "manifest.json").read_text())
    photos = identity_photos(manifest, args.per_identity)
    hog = HogJudge()
    info = {}
    for name, path in photos:
        image = read(DATA / path)
        faces = engine.detect(image, landmarks=True).sorted_by_area()[:1]
        if not len(faces):
            print(f"  (no face with landmarks in {path}: left out)")
            continue
        info[path] = {
            "name": name, "image": image, "faces": faces, "yaw": head_pose(faces.landmarks[0]).yaw,
            "reference": engine.embed_largest(image, detector="centerface").embedding[0],
            "hog_baseline": hog.finds(image, faces.xyxy[0]),
        }
    rows: list[dict] = []
    started = time.perf_counter()
    swap_s: list[float] = []
    for src_path, src in info.items():
        swapper = build_swapper(engine, [src["image"]], options=OPTIONS)
        for tgt_path, tgt in info.items():
            if src["name"] == tgt["name"]:
                continue
            t0 = time.perf_counter()
            swapped = swapper.process(tgt["image"], tgt["faces"])
            swap_s.append(time.perf_counter() - t0)
            landmarks = tgt["faces"].landmarks[0]
            try:
                out = engine.embed_largest(swapped, detector="centerface").embedding[0]
                closer = bool(np.linalg.norm(out - src["reference"]) < np.linalg.norm(out - tgt["reference"]))
            except NoFace:
                closer = False
            src_lm = src["faces"].landmarks[0]
            row = {
                "source": src_path, "target": tgt_path, "yaw_diff": abs(src["yaw"] - tgt["yaw"]),
                "closer_to_source": closer, "seam": seam_ratio(tgt["image"], swapped, landmarks),
                "hog": hog.finds(swapped, tgt["faces"].xyxy[0]), "hog_baseline": tgt["hog_baseline"],
                "stripes": cheek_stripes(tgt["image"], swapped, landmarks, src_lm),
            }
            rows.append(row)
            if args.save_dir:
                args.save_dir.mkdir(parents=True, exist_ok=True)
                name = f"{Path(src_path).stem}__on__{Path(tgt_path).stem}.jpg"
                cv2.imwrite(str(args.save_dir / name), swapped, [cv2.IMWRITE_JPEG_QUALITY, 90])
    wall = time.perf_counter() - started
    overall = summarise(rows)
    baseline = sum(t["hog_baseline"] for t in info.values()) / len(info)
    by_bin = {f"{lo}-{hi}" if hi < 181 else f"{lo}+": summarise([r for r in rows if lo <= r["yaw_diff"] < hi])
              for lo, hi in BINS}
    print(f"machine: {machine()}")
    print(f"photos: {len(info)} ({args.per_identity} per identity at most) of "
          f"{len({v['name'] for v in info.values()})} identities; {len(rows)} ordered pairs of different people; "
          f"{wall:.0f} s (swap alone median {1000 * statistics.median(swap_s):.0f} ms per photo)")
    print(f"all        {fmt(overall)}")
    print(f"HOG baseline on the unswapped targets: {100 * baseline:.1f} % of {len(info)} photos")
    for label, s in by_bin.items():
        print(f"yaw {label:>6}: {fmt(s)}")
    result = {"overall": overall, "hog_baseline": baseline, "by_yaw_diff": by_bin, "pairs": rows,
              "per_identity": args.per_identity, "machine": machine()}
    if args.turned:
        result["turned"] = turned_sources(engine, info, hog)
    return result


def turned_sources(engine, info: dict, hog: HogJudge) -> dict:  # type: ignore[no-untyped-def]
    """No shared pair differs by more than 45° of yaw, so: SYNTHETIC head turns of one real frontal photo
    (Grace Hopper, tests/yaw_render.py) as the source, onto the first photo of every other identity.
    Identity is judged against the unturned photo's embedding."""
    from faceport.engine.attributes import head_pose
    from faceport.engine.swap import build_swapper
    from faceport.errors import NoFace
    from tests.yaw_render import YawRenderer

    hopper_path = "identity/grace_hopper/mpl_grace_hopper.jpg"
    hopper = info[hopper_path]
    renderer = YawRenderer(hopper["image"], hopper["faces"].landmarks[0])
    targets = {}
    for path, t in info.items():
        targets.setdefault(t["name"], (path, t))
    rows = []
    for yaw in (-55.0, -45.0, -30.0, 30.0, 45.0, 55.0):
        source = renderer.render(yaw)[0]
        faces = engine.detect(source, landmarks=True).sorted_by_area()[:1]
        if not len(faces):
            print(f"  turned {yaw:+.0f}°: FaceMesh finds no face in the render: left out")
            continue
        swapper = build_swapper(engine, [source], options=OPTIONS)
        src_yaw = head_pose(faces.landmarks[0]).yaw
        for name, (path, tgt) in targets.items():
            if name == hopper["name"]:
                continue
            swapped = swapper.process(tgt["image"], tgt["faces"])
            landmarks = tgt["faces"].landmarks[0]
            try:
                out = engine.embed_largest(swapped, detector="centerface").embedding[0]
                closer = bool(np.linalg.norm(out - hopper["reference"]) < np.linalg.norm(out - tgt["reference"]))
            except NoFace:
                closer = False
            rows.append({"source": f"{hopper_path}@{yaw:+.0f}", "target": path, "yaw_diff": abs(src_yaw - tgt["yaw"]),
                         "closer_to_source": closer, "seam": seam_ratio(tgt["image"], swapped, landmarks),
                         "hog": hog.finds(swapped, tgt["faces"].xyxy[0]), "hog_baseline": tgt["hog_baseline"],
                         "stripes": cheek_stripes(tgt["image"], swapped, landmarks, faces.landmarks[0])})
    by_bin = {f"{lo}-{hi}" if hi < 181 else f"{lo}+": summarise([r for r in rows if lo <= r["yaw_diff"] < hi])
              for lo, hi in BINS}
    print(f"SYNTHETIC head turns of {hopper_path} (±30, ±45, ±55° renders) onto {len(targets) - 1} identities:")
    print(f"all        {fmt(summarise(rows))}")
    for label, s in by_bin.items():
        print(f"yaw {label:>6}: {fmt(s)}")
    return {"overall": summarise(rows), "by_yaw_diff": by_bin, "pairs": rows}


# ---------------------------------------------------------------- pictures (permissive photos only)

PERMISSIVE = ("public domain", "cc0", "pexels license")


def permissive(manifest: dict, path: str) -> bool:
    for entry in manifest["files"]:
        if entry["path"] == path:
            text = " ".join(str(entry.get(k, "")) for k in ("licence", "license")) + str(entry["source"].get("license"))
            return any(p in text.lower() for p in PERMISSIVE)
    return False


def side_by_side(images: list[np.ndarray], height: int = 300, max_width: int = 900) -> np.ndarray:
    scaled = [cv2.resize(im, (max(1, round(im.shape[1] * height / im.shape[0])), height),
                         interpolation=cv2.INTER_AREA) for im in images]
    sheet = np.concatenate([np.pad(s, ((0, 0), (0, 4), (0, 0)), constant_values=255) for s in scaled], axis=1)
    if sheet.shape[1] > max_width:
        f = max_width / sheet.shape[1]
        sheet = cv2.resize(sheet, (max_width, round(sheet.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return sheet


def clip_frame(path: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"cannot read frame {index} of {path}")
    return frame


def crop_face(image: np.ndarray, box: np.ndarray, pad: float = 0.6) -> np.ndarray:
    x1, y1, x2, y2 = box
    p = max(pad * max(x2 - x1, y2 - y1), 40)
    h, w = image.shape[:2]
    return image[int(max(0, y1 - p)):int(min(h, y2 + p)), int(max(0, x1 - p)):int(min(w, x2 + p))]


def pictures(args: argparse.Namespace, engine) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.pipeline import Pipeline, PipelineOptions, build_processors
    from faceport.engine.swap import build_swapper
    from tests.yaw_render import YawRenderer

    manifest = json.loads((DATA / "manifest.json").read_text())
    astronaut_p, hopper_p = "identity/eileen_collins/sk_astronaut.png", "identity/grace_hopper/mpl_grace_hopper.jpg"
    street_p, clip_p = "group/dt_17790319373_street.jpg", "video/pf_WolfgangLanger_Pexels.mp4"
    for p in (astronaut_p, hopper_p, street_p, clip_p):
        if not permissive(manifest, p):
            raise SystemExit(f"{p}: licence not public domain / CC0 / Pexels: not used for committed pictures")
    astronaut, hopper, street = read(DATA / astronaut_p), read(DATA / hopper_p), read(DATA / street_p)
    out_dir: Path = args.pictures
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(name: str, source: np.ndarray, target: np.ndarray, result: np.ndarray, box=None) -> None:  # type: ignore[no-untyped-def]
        if box is not None:
            target, result = crop_face(target, box), crop_face(result, box)
        path = out_dir / f"{args.prefix}_{name}.jpg"
        cv2.imwrite(str(path), side_by_side([source, target, result]), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"wrote {path}")

    # 1. large yaw difference: the source turned 40° (a synthetic head turn of the real photo), target frontal
    faces = engine.detect(hopper, landmarks=True).sorted_by_area()[:1]
    turned, _ = YawRenderer(hopper, faces.landmarks[0]).render(40.0)
    target_faces = engine.detect(astronaut, landmarks=True).sorted_by_area()[:1]
    result = build_swapper(engine, [turned], options=OPTIONS).process(astronaut, target_faces)
    write("yaw40_hopper_turned_onto_astronaut", turned, astronaut, result, target_faces.xyxy[0])
    # 2. the reverse: frontal source, target turned 40°
    a_faces = engine.detect(astronaut, landmarks=True).sorted_by_area()[:1]
    turned_a, _ = YawRenderer(astronaut, a_faces.landmarks[0]).render(-40.0)
    t_faces = engine.detect(turned_a, landmarks=True).sorted_by_area()[:1]
    result = build_swapper(engine, [hopper], options=OPTIONS).process(turned_a, t_faces)
    write("yaw40_hopper_onto_astronaut_turned", hopper, turned_a, result, t_faces.xyxy[0])
    # 3. group photo with small faces (mode all)
    pipeline = Pipeline(engine, build_processors(engine, ["face_swapper"], sources=[astronaut]),
                        PipelineOptions(selector="all"))
    swapped = pipeline.process_image(street)
    boxes = engine.detect(street).xyxy  # the faces are ~20 px: show each one's surroundings, side by side

    def crops(image: np.ndarray) -> np.ndarray:
        tiles = [cv2.resize(crop_face(image, b, pad=2.0), (160, 160), interpolation=cv2.INTER_CUBIC) for b in boxes]
        return np.concatenate(tiles, axis=1) if tiles else image
    write("group_astronaut_onto_street_faces", astronaut, crops(street), crops(swapped))
    # 4. open mouth and 5. a hand over the face: frames of the Pexels clip
    clip = DATA / clip_p
    swapper = build_swapper(engine, [hopper], options=OPTIONS)
    for name, index in (("open_mouth", args.mouth_frame), ("hand_over_face", args.hand_frame)):
        frame = clip_frame(clip, index)
        f = engine.detect(frame, landmarks=True).sorted_by_area()[:1]
        if not len(f):
            print(f"  no face in frame {index} of the clip: {name} skipped")
            continue
        write(f"{name}_hopper_onto_clip_frame{index}", hopper, frame, swapper.process(frame, f), f.xyxy[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-identity", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--save-dir", type=Path, default=None, help="write every swapped photo here")
    parser.add_argument("--pictures", type=Path, default=None, help="write side-by-side pictures here and stop")
    parser.add_argument("--prefix", default="after", help="picture file name prefix (before / after)")
    parser.add_argument("--no-turned", dest="turned", action="store_false",
                        help="skip the synthetic head-turn sources (the >45° yaw-difference bin)")
    parser.add_argument("--mouth-frame", type=int, default=300)
    parser.add_argument("--hand-frame", type=int, default=200)
    parser.add_argument("--mask-types", default=None,
                        help="SwapOptions.mask_types, comma-separated (box,occlusion,region); default: the defaults")
    parser.add_argument("--mouth-mask", action="store_true", help="SwapOptions.mouth_mask")
    parser.add_argument("--colour", choices=("regional", "global"), default=None, help="SwapOptions.colour_transfer")
    args = parser.parse_args()

    global OPTIONS
    if args.mask_types or args.mouth_mask or args.colour:
        from dataclasses import replace

        from faceport.engine.swap.mesh import SwapOptions

        OPTIONS = SwapOptions()
        if args.mask_types:
            OPTIONS = replace(OPTIONS, mask_types=tuple(t.strip() for t in args.mask_types.split(",")))
        if args.mouth_mask:
            OPTIONS = replace(OPTIONS, mouth_mask=True)
        if args.colour:
            OPTIONS = replace(OPTIONS, colour_transfer=args.colour)
        print(f"swap options: {OPTIONS}")

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    if args.pictures:
        pictures(args, engine)
        return
    result = quality(args, engine)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
