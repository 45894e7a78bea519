"""Swap colour and light: does the swapped face match its jaw, in every held-back photo?

Usage: python bench/swap_colour.py [--sources 9] [--json]

Targets: the first photo of each shared identity (identity/) and every face of at least
40 px in the group photos (group/). Sources: the first photo of each identity (a target
never gets its own identity). For each swap (mesh swap, default options except the colour
step) the judge in tests/colour_judge.py measures CIEDE2000 between the result's cheeks and
the target's skin along the jaw just outside the mask (the swap never reads it). The
target's own cheeks-vs-jaw difference is the floor (skin is not one colour). A relit
check: every identity target multiplied by a left-to-right light gradient in linear light (x0.3
to x1.2 across the face's box), and the result's cheek light balance (L* left - right) compared
with the relit target's. Prints medians for ``global`` (main's single LAB transfer) and
``regional`` (issue 16's per-region tone and shading).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine  # noqa: E402

from tests.colour_judge import cheek_light_balance, cheeks_vs_jaw, jaw_visible, off_tone_share  # noqa: E402

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))


def relight(image: np.ndarray, box: np.ndarray, lo: float = 0.3, hi: float = 1.2) -> np.ndarray:
    """The photo lit from the right: linear-light gain rising from ``lo`` to ``hi`` across the face's box."""
    linear = (image.astype(np.float32) / 255.0) ** 2.2
    x0, x1 = float(box[0]), float(box[2])
    ramp = lo + (np.arange(image.shape[1], dtype=np.float32) - x0) / max(x1 - x0, 1.0) * (hi - lo)
    gain = np.clip(ramp, lo, hi)[None, :, None]
    return np.asarray(np.clip((linear * gain) ** (1 / 2.2) * 255.0 + 0.5, 0, 255), np.uint8)


def write_pictures(folder: Path, sources: dict[str, np.ndarray],
                   targets: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """A few relit pairs side by side: source | relit target | main's global transfer | regional."""
    from faceport.engine.swap.mesh import MeshSwapper, SwapOptions

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    names = list(sources)
    for k, (_, name, img, lm, box) in enumerate(targets[:4]):
        src_name = next(n for n in names[(k + 2) % len(names):] + names if n != name)
        relit = relight(img, box)
        x0, y0, x1, y1 = box
        pad = 0.35 * (x1 - x0)
        crop = (slice(max(0, int(y0 - pad)), int(y1 + pad)), slice(max(0, int(x0 - pad)), int(x1 + pad)))
        src = sources[src_name]
        tiles = [cv2.resize(src, (200, int(200 * src.shape[0] / src.shape[1])))]
        for mode in (None, "global", "regional"):
            if mode is None:
                out = relit
            else:
                mesh = MeshSwapper(_SOURCES[src_name], SwapOptions(colour_transfer=mode))  # type: ignore[arg-type]
                out = mesh._swap_one(relit.copy(), mesh.sources[0], lm)  # pastes in place
            part = out[crop]
            tiles.append(cv2.resize(part, (200, int(200 * part.shape[0] / part.shape[1]))))
        h = min(t.shape[0] for t in tiles)
        rows.append(np.hstack([t[:h] for t in tiles]))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([cv2.copyMakeBorder(r, 0, 4, 0, width - r.shape[1], cv2.BORDER_CONSTANT) for r in rows])
    cv2.imwrite(str(folder / "swap_colour_relit.jpg"), sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {folder / 'swap_colour_relit.jpg'}")


_SOURCES: dict[str, list[Any]] = {}  # name -> the prepared SourceFace list (filled by main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=9, help="how many identities serve as sources")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="also write side-by-side JPEGs (source | relit target | global | regional) here")
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.engine.swap.mesh import MeshSwapper, SwapOptions

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    manifest = json.loads((DATA / "manifest.json").read_text())
    by: dict[str, list[str]] = {}
    for entry in manifest["files"]:
        if entry["path"].startswith("identity/"):
            by.setdefault(entry["identity"], []).append(entry["path"])
    identities = {name: cv2.imread(str(DATA / sorted(paths)[0])) for name, paths in sorted(by.items())}
    sources = dict(list(identities.items())[: args.sources])
    swappers = {name: build_swapper(engine, [img]) for name, img in sources.items()}
    _SOURCES.update({name: sw.sources for name, sw in swappers.items() if isinstance(sw, MeshSwapper)})

    targets: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = []  # (kind, identity, image, mesh, box)
    for name, img in identities.items():
        faces = engine.detect(img, landmarks=True).sorted_by_area()[:1]
        if len(faces) and faces.landmarks is not None:
            targets.append(("identity", name, img, faces.landmarks[0], faces.xyxy[0]))
    for path in sorted((DATA / "group").glob("*")):
        img = cv2.imread(str(path))
        if img is None:
            continue
        faces = engine.detect(img, landmarks=True, max_faces=16)
        for i in range(len(faces)):
            x0, y0, x1, y1 = faces.xyxy[i]
            if min(x1 - x0, y1 - y0) >= 40 and faces.landmarks is not None:
                targets.append(("group", "", img, faces.landmarks[i], faces.xyxy[i]))

    rows: dict[str, dict[str, list[float]]] = {m: {"identity": [], "group": [], "light_err": [], "off": []}
                                               for m in ("global", "regional")}
    floors: dict[str, list[float]] = {"identity": [], "group": [], "off": []}
    skipped = 0
    for kind, name, img, lm, _box in targets:
        if not jaw_visible(img, lm):
            skipped += 1
            continue
        floors[kind].append(cheeks_vs_jaw(img, img, lm))
        floors["off"].append(off_tone_share(img, img, lm))
        for src_name, swapper in swappers.items():
            if src_name == name:
                continue
            assert isinstance(swapper, MeshSwapper)
            for mode in ("global", "regional"):
                mesh = MeshSwapper(swapper.sources, SwapOptions(colour_transfer=mode))  # type: ignore[arg-type]
                out = mesh._swap_one(img.copy(), mesh.sources[0], lm)  # pastes in place
                rows[mode][kind].append(cheeks_vs_jaw(out, img, lm))
                rows[mode]["off"].append(off_tone_share(out, img, lm))
    relit_count = 0
    for kind, name, img, lm, box in targets:
        if kind != "identity":
            continue
        relit = relight(img, box)
        want = cheek_light_balance(relit, lm)
        relit_count += 1
        for src_name, swapper in swappers.items():
            if src_name == name:
                continue
            assert isinstance(swapper, MeshSwapper)
            for mode in ("global", "regional"):
                mesh = MeshSwapper(swapper.sources, SwapOptions(colour_transfer=mode))  # type: ignore[arg-type]
                out = mesh._swap_one(relit.copy(), mesh.sources[0], lm)  # pastes in place
                rows[mode]["light_err"].append(abs(cheek_light_balance(out, lm) - want))

    if args.pictures is not None:
        write_pictures(args.pictures, sources, [t for t in targets if t[0] == "identity"])

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2) if values else float("nan")

    def p90(values: list[float]) -> float:
        return round(float(np.percentile(values, 90)), 2) if values else float("nan")

    result = {
        "machine": machine(),
        "targets": {"identity": len(floors["identity"]), "group faces": len(floors["group"]),
                    "skipped (jaw out of frame)": skipped, "relit": relit_count},
        "sources": len(swappers),
        "floor (target's own cheeks vs jaw, median)": {k: med(v) for k, v in floors.items() if k != "off"},
        "floor off-tone share (target itself, mean)": round(float(np.mean(floors["off"])), 3),
        "modes": {mode: {"identity dE00 median": med(r["identity"]), "identity dE00 p90": p90(r["identity"]),
                         "group dE00 median": med(r["group"]), "group dE00 p90": p90(r["group"]),
                         "off-tone skin share mean": round(float(np.mean(r["off"])), 3),
                         "relit |L balance error| median": med(r["light_err"]),
                         "relit p90": p90(r["light_err"]), "swaps": len(r["identity"]) + len(r["group"])}
                  for mode, r in rows.items()},
    }
    if args.json:
        print(json.dumps(result))
        return
    floor = result["floor (target's own cheeks vs jaw, median)"]
    print(f"machine: {result['machine']}")
    print(f"targets: {result['targets']}; sources: {result['sources']}")
    print(f"floor (target's own cheeks vs its jaw, CIEDE2000 median): {floor}; target's own off-tone share "
          f"{result['floor off-tone share (target itself, mean)']}")
    for mode, figures in result["modes"].items():
        print(f"{mode:9s} " + "; ".join(f"{k} {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
