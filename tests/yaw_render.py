"""A SYNTHETIC head turn: a real frontal photo's FaceMesh rotated about a vertical axis behind the face.

Each mesh triangle is warped from the photo into its rotated place (painter's order, back faces dropped),
over the photo with its own face inpainted away. No shared clip turns past ~30°, so the live path's
±60° robustness is exercised on these renders (tests/services/test_live_tracking.py, bench/live_yaw.py).
A rotated mesh keeps more of the face in view than a real head at the same yaw: easier than a person.
"""

from __future__ import annotations

import cv2
import numpy as np


def all_triangles(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles over every mesh point (eyes and mouth included: they are rendered)."""
    xy = points[:, :2].astype(np.float64)
    lo = xy.min(0) - 10
    hi = xy.max(0) + 10
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    lookup = {}
    for i, (x, y) in enumerate(xy):
        subdiv.insert((float(x), float(y)))
        lookup[(round(float(x), 3), round(float(y), 3))] = i
    tri = []
    for t in subdiv.getTriangleList():
        ids = [lookup.get((round(float(t[2 * k]), 3), round(float(t[2 * k + 1]), 3))) for k in range(3)]
        if None not in ids:
            tri.append(ids)
    return np.asarray(tri, np.int32)


class YawRenderer:
    """Renders one photo's face turned by a given yaw (degrees; + turns the face to the image's left)."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray) -> None:
        self.image = image
        self.points = landmarks[:468, :3].astype(np.float64)
        self.triangles = all_triangles(self.points)
        width = float(np.ptp(self.points[:, 0]))
        self.centre = np.array([self.points[:, 0].mean(), 0.0, self.points[:, 2].mean() + 0.55 * width])
        hull = cv2.convexHull(self.points[:, :2].astype(np.int32))
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, hull, 255)
        mask = cv2.dilate(mask, np.ones((9, 9), np.uint8))
        self.background = cv2.inpaint(image, mask, 9, cv2.INPAINT_TELEA)
        self.hull_mask = mask

    def rotated(self, yaw: float) -> np.ndarray:
        a = np.radians(yaw)
        p = self.points - self.centre
        x = p[:, 0] * np.cos(a) + p[:, 2] * np.sin(a)
        z = -p[:, 0] * np.sin(a) + p[:, 2] * np.cos(a)
        return np.stack([x + self.centre[0], self.points[:, 1], z + self.centre[2]], axis=1)

    def render(self, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """The frame and the rendered face's mask."""
        dst = self.rotated(yaw)
        out = self.background.copy()
        face_mask = np.zeros(out.shape[:2], np.uint8)
        src2 = self.points[:, :2]
        dst2 = dst[:, :2]
        tri_src = src2[self.triangles]
        tri_dst = dst2[self.triangles]
        # back faces: the triangle's winding flips against the frontal one
        def area(t: np.ndarray) -> np.ndarray:
            u, v = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
            return u[:, 0] * v[:, 1] - v[:, 0] * u[:, 1]
        front = np.sign(area(tri_src)) == np.sign(area(tri_dst))
        depth = dst[self.triangles][:, :, 2].mean(1)
        h, w = out.shape[:2]
        for k in np.argsort(-depth):  # far first (larger z is farther from the camera)
            if not front[k]:
                continue
            s = tri_src[k].astype(np.float32)
            d = tri_dst[k].astype(np.float32)
            x0, y0 = np.floor(d.min(0)).astype(int)
            x1, y1 = np.ceil(d.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            m = cv2.getAffineTransform(s, d - np.float32([x0, y0]))
            patch = cv2.warpAffine(self.image, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            tri_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillConvexPoly(tri_mask, np.round(d - [x0, y0]).astype(np.int32), 255)
            region = out[y0:y1, x0:x1]
            region[tri_mask > 0] = patch[tri_mask > 0]
            face_mask[y0:y1, x0:x1] |= tri_mask
        return out, face_mask


def sweep(max_yaw: float, step: float) -> list[float]:
    up = list(np.arange(0, max_yaw + 1e-6, step))
    return [*up, *up[::-1][1:], *[-y for y in up[1:]], *[-y for y in up[::-1][1:]]]
