"""``POST /api/v1/face/detect`` — faces with boxes, scores, 5 keypoints and optional 468/478 landmarks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel

from faceport.api.deps import ApiKeyDep, ContextDep
from faceport.api.envelope import Envelope, ok
from faceport.api.uploads import image_from_request
from faceport.engine.detect import DETECTORS
from faceport.engine.types import Faces
from faceport.errors import InvalidInput

router = APIRouter(prefix="/api/v1", tags=["face"], dependencies=[ApiKeyDep])


class FaceOut(BaseModel):
    box: list[float]  # [x1, y1, x2, y2] pixels
    score: float
    keypoints: list[list[float]]  # 5 x [x, y]: right eye, left eye, nose, right mouth, left mouth
    landmarks: list[list[float]] | None = None  # 468 or 478 x [x, y, z]


class DetectResult(BaseModel):
    faces: list[FaceOut]
    count: int
    image: dict[str, int]
    detector: str

    @classmethod
    def from_faces(cls, faces: Faces, *, width: int, height: int, detector: str) -> DetectResult:
        out = []
        for i in range(len(faces)):
            out.append(FaceOut(
                box=[round(float(v), 2) for v in faces.xyxy[i]],
                score=round(float(faces.score[i]), 4),
                keypoints=[[round(float(x), 2), round(float(y), 2)] for x, y in faces.kps[i]]
                if faces.kps is not None else [],
                landmarks=[[round(float(c), 2) for c in p] for p in faces.landmarks[i]]
                if faces.landmarks is not None else None,
            ))
        return cls(faces=out, count=len(out), image={"width": width, "height": height}, detector=detector)


@router.post("/face/detect", response_model=Envelope[DetectResult], summary="Detect faces")
async def detect(
    request: Request,
    ctx: ContextDep,
    image: Annotated[UploadFile | None, File(description="JPEG, PNG, BMP or WebP")] = None,
    image_base64: Annotated[str | None, Form(description="base64 or data URL, instead of a file")] = None,
    detector: Annotated[str | None, Form(description=f"one of {', '.join(DETECTORS)}")] = None,
    score_threshold: Annotated[float | None, Form(ge=0.0, le=1.0)] = None,
    max_faces: Annotated[int | None, Form(ge=1, le=1000)] = None,
    landmarks: Annotated[bool, Form(description="add 468/478 FaceMesh landmarks")] = False,
) -> dict[str, Any]:
    if detector is not None and detector not in DETECTORS:
        raise InvalidInput(f"detector: unknown {detector!r}; choose one of {', '.join(DETECTORS)}",
                           details={"field": "detector", "allowed": list(DETECTORS)})
    bgr = await image_from_request(ctx, upload=image, base64_text=image_base64)
    faces = await ctx.run(ctx.engine.detect, bgr, detector=detector, score_threshold=score_threshold,
                          max_faces=max_faces, landmarks=landmarks)
    name = detector or ctx.engine.options.detector
    result = DetectResult.from_faces(faces, width=bgr.shape[1], height=bgr.shape[0], detector=name)
    return ok(request, result.model_dump())
