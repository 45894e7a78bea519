"""By-eye face boxes of ../shared/data/group (tests/fixtures/group_faces.json) and matching detections to them.

Shared by tests/engine/test_detect.py and bench/detectors.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GROUP_FACES = Path(__file__).resolve().parent / "fixtures" / "group_faces.json"


def load_group_faces() -> dict[str, dict]:
    """Photo path (relative to the shared data folder) -> {"note", "faces": [{"xyxy", "who", "hard"?}]}."""
    return dict(json.loads(GROUP_FACES.read_text())["photos"])


def required_faces(photo: dict) -> int:
    return sum(1 for face in photo["faces"] if not face.get("hard"))


def _inside(point: Sequence[float], box: Sequence[float]) -> bool:
    return bool(box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def match_faces(xyxy: np.ndarray, faces: list[dict]) -> tuple[int, int, int]:
    """Match detections to by-eye faces, one to one.

    A detection matches a face when its centre lies in the face's box or the face's centre
    lies in the detection's box. Required faces are tried before ``hard`` ones, so a hard
    neighbour never takes a detection a required face needs.

    Returns:
        (required faces found, hard faces found, detections matching no face).
    """
    used = [False] * len(faces)
    found = hard = extra = 0
    order = sorted(range(len(faces)), key=lambda i: bool(faces[i].get("hard")))
    for box in np.asarray(xyxy, np.float32).reshape(-1, 4):
        centre = (box[:2] + box[2:]) / 2
        for i in order:
            x1, y1, x2, y2 = faces[i]["xyxy"]
            if not used[i] and (_inside(centre, (x1, y1, x2, y2)) or _inside(((x1 + x2) / 2, (y1 + y2) / 2), box)):
                used[i] = True
                if faces[i].get("hard"):
                    hard += 1
                else:
                    found += 1
                break
        else:
            extra += 1
    return found, hard, extra
