"""Seed B's face mask fields (FaceFusion's face_mask_*, Deep-Live-Cam's mouth_mask) through a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from faceport.engine.swap.masks import LIPS_OUTER
from tests.api.conftest import LiveServer

SOURCE = "identity/rose_leslie/fr_img1.jpg"  # mouth closed: its lips are swapped in unless asked not to
TARGET = "identity/obama/fr_obama.jpg"

BAD = [
    ({"face_mask_types": ["box", "xseg"]}, "face_mask_types"),
    ({"face_mask_types": []}, "face_mask_types"),
    ({"face_mask_types": ["box", "box"]}, "face_mask_types"),
    ({"face_mask_regions": ["nose", "chin"]}, "face_mask_regions"),
    ({"face_mask_regions": []}, "face_mask_regions"),
    ({"face_mask_blur": 1.5}, "face_mask_blur"),
    ({"face_mask_blur": -0.1}, "face_mask_blur"),
    ({"face_mask_padding": [0, 0, 101, 0]}, "face_mask_padding"),
    ({"face_mask_padding": [0, -1]}, "face_mask_padding"),
    ({"face_mask_padding": [60, 0, 50, 0]}, "face_mask_padding"),
    ({"face_mask_padding": [1, 2, 3, 4, 5]}, "face_mask_padding"),
    ({"mouth_mask": "sometimes"}, "mouth_mask"),
]


def _post(server: LiveServer, data_dir: Path, request: dict[str, Any]) -> httpx.Response:
    files = [("target", (Path(TARGET).name, (data_dir / TARGET).read_bytes())),
             ("source", (Path(SOURCE).name, (data_dir / SOURCE).read_bytes()))]
    return httpx.post(f"{server.url}/process/image", files=files, data={"request": json.dumps(request)}, timeout=300)


def _output(server: LiveServer, body: dict[str, Any]) -> np.ndarray:
    image = cv2.imread(str(server.settings.home / "outputs" / body["output_path"].split("/")[-1]))
    assert image is not None
    return image


def test_bad_mask_fields_are_refused_in_the_seed_envelope(live_server: LiveServer, data_dir: Path) -> None:
    for request, field in BAD:
        response = _post(live_server, data_dir, request)
        body = response.json()
        assert response.status_code == 400, (request, body)
        assert body["code"] == "INVALID_INPUT" and body["details"]["field"] == field, (request, body)
        assert field in body["detail"], body
    body = _post(live_server, data_dir, {"face_mask_regions": ["chin"]}).json()
    assert "left-eyebrow" in body["detail"] and "lips" in body["detail"]  # the message lists the known names
    schema = httpx.get(f"{live_server.url}/openapi.json", timeout=30).text
    for name in ("face_mask_types", "face_mask_regions", "face_mask_blur", "face_mask_padding", "mouth_mask"):
        assert name in schema


def test_mask_fields_are_honoured_end_to_end(live_server: LiveServer, engine, data_dir: Path) -> None:
    target = cv2.imread(str(data_dir / TARGET))
    points = engine.detect(target, landmarks=True).sorted_by_area()[0].landmarks[0]
    lips = np.zeros(target.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(points[list(LIPS_OUTER), :2]).astype(np.int32)], 255)
    lips = cv2.erode(lips, np.ones((3, 3), np.uint8)) > 0
    upper = np.zeros(target.shape[:2], bool)  # brows, eyes and nose bridge
    upper[int(points[9, 1]):int(points[6, 1]), int(points[33, 0]):int(points[263, 0])] = True
    cheek = np.zeros(target.shape[:2], bool)
    r = int(np.ptp(points[:, 0]) * 0.06)
    cheek[int(points[205, 1]) - r:int(points[205, 1]) + r, int(points[205, 0]) - r:int(points[205, 0]) + r] = True

    def diff(request: dict[str, Any], where: np.ndarray) -> float:
        response = _post(live_server, data_dir, request)
        assert response.status_code == 200, response.text
        return float(np.abs(_output(live_server, response.json()).astype(int) - target.astype(int))[where].mean())

    # mouth_mask keeps the target's mouth (lips included); by default the source's lips are put in
    assert diff({}, lips) > 5
    assert diff({"mouth_mask": True}, lips) < 2.5  # what is left is the JPEG re-encoding
    # padding keeps the top of the face (CSS-style: [45, 0] is top and bottom 45, right and left 0)
    assert diff({}, upper) > 5
    assert diff({"face_mask_padding": [45, 0]}, upper) < 2.5
    # a region mask of the eyes and lips (the coarse aliases) leaves the cheeks alone
    assert diff({}, cheek) > 5
    assert diff({"face_mask_types": ["region"], "face_mask_regions": ["eyes", "lips"], "face_mask_blur": 0.0},
                cheek) < 2.5
    assert diff({"face_mask_types": ["box", "occlusion"], "face_mask_blur": 0.6}, lips) > 3  # still swapped
