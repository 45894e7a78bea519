"""The built-in batch operations: each image's result is what the matching ``/face/*`` route answers in ``data``.

One line adds an operation (see :func:`faceport.services.batch.register_operation`), e.g.::

    register_operation("anti_spoof", lambda ctx, image, params, state: anti_spoof_data(ctx, image, params["options"]))

``params`` is the job's: ``options`` (validated at submit), ``owner``, ``gallery_owner`` (whose
subjects recognition searches: the caller's, or for admins every subject or one owner's) and
``subject_id`` (verify).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from faceport.api.requests import validate_params
from faceport.api.v1 import face
from faceport.engine.embed import compare
from faceport.engine.types import BGRImage
from faceport.errors import NoFace
from faceport.services.batch import register_operation, require_subject


def _validator(model: type[BaseModel]) -> Any:
    def validate(options: dict[str, Any], _runtime: Any, _params: dict[str, Any]) -> dict[str, Any]:
        prefixed = validate_params(model, options)
        return prefixed.model_dump(mode="json", exclude_none=True)

    return validate


def _image_size(image: BGRImage) -> dict[str, int]:
    return {"width": int(image.shape[1]), "height": int(image.shape[0])}


def detect(ctx: Any, image: BGRImage, params: dict[str, Any], _state: Any) -> dict[str, Any]:
    options = face.DetectParams(**params["options"])
    faces = ctx.engine.detect(image, detector=options.detector, score_threshold=options.score_threshold,
                              max_faces=options.max_faces, landmarks=options.landmarks)
    return face.DetectData(faces=[face.FaceOut(**face._face_fields(faces, i)) for i in range(len(faces))],
                           count=len(faces), image=_image_size(image),
                           detector=face._detector_name(ctx, options)).model_dump()


def recognize(ctx: Any, image: BGRImage, params: dict[str, Any], _state: Any) -> dict[str, Any]:
    options = face.RecognizeParams(**params["options"])
    owner = params.get("gallery_owner")
    threshold = face._threshold(ctx, options.threshold)
    faces = ctx.engine.detect(image, detector=options.detector, score_threshold=options.score_threshold,
                              max_faces=options.max_faces, landmarks=options.landmarks, embed=True)
    out = []
    for i in range(len(faces)):
        assert faces.embedding is not None
        candidates = face._candidates(ctx, faces.embedding[i], options.top_k, threshold, owner)
        best = candidates[0] if candidates and candidates[0].match else None
        out.append(face.RecognizedFace(**face._face_fields(faces, i), subject=best, candidates=candidates))
    return face.RecognizeData(faces=out, count=len(out), threshold=threshold,
                              gallery=face._gallery_stats(ctx, owner),
                              method=f"{face.EMBEDDING_MODEL} L2 distance, exact search").model_dump()


def verify_setup(ctx: Any, params: dict[str, Any]) -> np.ndarray:
    """The subject's enrolled embeddings, read once per job run. Raises: NotFound, NoFace (no faces enrolled)."""
    references = ctx.gallery.subject_embeddings(params["subject_id"], owner=params.get("gallery_owner"))
    if len(references) == 0:
        raise NoFace("the subject has no enrolled faces", details={"field": "subject_id"})
    return np.asarray(references)


def verify(ctx: Any, image: BGRImage, params: dict[str, Any], references: np.ndarray) -> dict[str, Any]:
    options = face.VerifyParams(**params["options"])
    threshold = face._threshold(ctx, options.threshold)
    first = face._largest_embedding(ctx, image, options.detector, "image")
    assert first.embedding is not None
    result = min((compare(first.embedding[0], ref, threshold=threshold) for ref in references),
                 key=lambda r: r.distance)
    return face.VerifyData(verified=result.match, distance=round(result.distance, 4),
                           similarity=round(result.similarity, 4), threshold=threshold,
                           method=f"{face.EMBEDDING_MODEL} L2 distance to the closest of {len(references)} "
                                  "enrolled faces",
                           faces={"image": face._bbox(first.xyxy[0])}).model_dump()


def _verify_validate(options: dict[str, Any], ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    checked = _validator(face.VerifyParams)(options, ctx, params)
    checked.pop("subject_id", None)
    require_subject(ctx, params["subject_id"], params.get("gallery_owner"))
    return checked


def analyze(ctx: Any, image: BGRImage, params: dict[str, Any], _state: Any) -> dict[str, Any]:
    options = face.AnalyzeParams(**params["options"])
    return face.analyze_data(ctx, image, options, params.get("gallery_owner")).model_dump()


def demographics(ctx: Any, image: BGRImage, params: dict[str, Any], _state: Any) -> dict[str, Any]:
    options = face.DemographicsParams(**params["options"])
    faces = face._demographics(ctx, image, options)
    return face.DemographicsData(faces=faces, count=len(faces), image=_image_size(image),
                                 detector=face._detector_name(ctx, options)).model_dump()


register_operation("detect", detect, validate=_validator(face.DetectParams), description="as POST /face/detect")
register_operation("recognize", recognize, validate=_validator(face.RecognizeParams),
                   description="as POST /face/recognize, against the caller's gallery")
register_operation("verify", verify, setup=verify_setup, validate=_verify_validate, needs_subject=True,
                   description="as POST /face/verify with subject_id: each image's largest face against the subject")
register_operation("analyze", analyze, validate=_validator(face.AnalyzeParams), description="as POST /face/analyze")
register_operation("demographics", demographics, validate=_validator(face.DemographicsParams),
                   description="as POST /face/demographics")
register_operation("anti_spoof", lambda ctx, image, params, _state: face.anti_spoof_data(
    ctx, image, face.AntiSpoofParams(**params["options"])).model_dump(),
    validate=_validator(face.AntiSpoofParams), description="as POST /face/anti-spoof")
register_operation("deepfake", lambda ctx, image, params, _state: face.deepfake_data(
    ctx, image, face.DeepfakeParams(**params["options"])).model_dump(),
    validate=_validator(face.DeepfakeParams), description="as POST /face/deepfake")
