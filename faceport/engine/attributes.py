"""Per-face attributes computed from pixels and landmarks: head pose and image quality.

Both are geometric/photometric measurements, not learned models:
- head pose: the face's axes read off the FaceMesh points (no 3-D model fitting);
- quality: sharpness (variance of the Laplacian on a 112-px-high crop), brightness (mean
  grey level) and face size in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

# Mesh indices spanning the face: outer eye corners (image-left, image-right), forehead top, chin.
_EYE_LEFT, _EYE_RIGHT, _FOREHEAD, _CHIN = 33, 263, 10, 152
QUALITY_CROP_HEIGHT = 112


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Degrees. yaw > 0: the face turns towards the image's left (the person's right);
    pitch > 0: looks up; roll > 0: the head leans clockwise in the image."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, slots=True)
class Quality:
    sharpness: float  # variance of the Laplacian, higher is sharper (blurry faces < ~50)
    brightness: float  # mean grey level 0..255
    size: float  # the shorter side of the face box, pixels


def head_pose(landmarks: NDArray[np.float32]) -> HeadPose:
    """Head pose of one face from its (468|478, 3) FaceMesh landmarks (x, y pixels; z depth, same scale).

    The face's own axes are read off the mesh: x from eye corner to eye corner, y from
    forehead to chin (made orthogonal to x), z their cross product; the angles are the
    rotation between those axes and the camera's. A frontal face reads within a few
    degrees of zero (pitch carries a +5 to +10 degree bias from the mesh's geometry).
    """
    p = landmarks[:, :3].astype(np.float64)
    x_axis = p[_EYE_RIGHT] - p[_EYE_LEFT]
    x_axis /= max(float(np.linalg.norm(x_axis)), 1e-9)
    y_axis = p[_CHIN] - p[_FOREHEAD]
    y_axis -= x_axis * float(np.dot(y_axis, x_axis))
    y_axis /= max(float(np.linalg.norm(y_axis)), 1e-9)
    z_axis = np.cross(x_axis, y_axis)
    yaw = math.degrees(math.asin(float(np.clip(-x_axis[2], -1.0, 1.0))))
    pitch = math.degrees(math.atan2(float(y_axis[2]), float(z_axis[2])))
    roll = math.degrees(math.atan2(float(x_axis[1]), float(x_axis[0])))
    return HeadPose(yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2))


PITCH_BIAS = 7.5  # degrees a frontal face reads as pitch on the FaceMesh axes (see head_pose)


def frontalness(pose: HeadPose) -> float:
    """1 for a face looking straight at the camera, falling linearly to 0 at 90 degrees away
    (the angle combines yaw and the bias-corrected pitch; roll does not hide features)."""
    angle = math.hypot(pose.yaw, pose.pitch - PITCH_BIAS)
    return round(max(0.0, 1.0 - angle / 90.0), 3)


def face_quality(image: BGRImage, xyxy: NDArray[np.float32]) -> Quality:
    """Sharpness, brightness and size of the face inside ``xyxy`` (pixels)."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(xyxy[0])), max(0, int(xyxy[1]))
    x2, y2 = min(w, int(np.ceil(xyxy[2]))), min(h, int(np.ceil(xyxy[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return Quality(0.0, 0.0, 0.0)
    gray = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    scale = QUALITY_CROP_HEIGHT / gray.shape[0]
    resized = cv2.resize(gray, (max(2, round(gray.shape[1] * scale)), QUALITY_CROP_HEIGHT),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sharpness = float(cv2.Laplacian(resized, cv2.CV_64F).var())
    return Quality(round(sharpness, 2), round(float(gray.mean()), 2), float(min(x2 - x1, y2 - y1)))
