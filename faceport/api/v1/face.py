"""Seed D face services: ``POST /api/v1/face/detect | recognize | verify | analyze | demographics | deepfake``.

Images come as multipart files (``image``; ``image1``/``image2`` for verify) or as base64 /
data-URL strings in a JSON body (or ``<field>_base64`` form fields). Blocking work runs on
the thread pool. Every score names the method that produced it.

Recognition and verification against the gallery see only the caller's subjects (admins:
every subject, or one owner's with ``owner``); someone else's ``subject_id`` is ``NOT_FOUND``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from faceport.api.context import AppContext
from faceport.api.deps import ContextDep, CurrentPrincipal
from faceport.api.envelope import Envelope, ok
from faceport.api.ratelimit import api_v1_dependencies
from faceport.api.requests import body_doc, image_field, read_fields, validate_params
from faceport.engine.attributes import face_quality, frontalness, head_pose
from faceport.engine.deepfake import CLIP_MODEL, DeepfakeScore
from faceport.engine.demographics import AGE_MODEL, EMOTION_LABELS, EMOTION_MODEL, GENDER_MODEL, Demographics
from faceport.engine.embed import compare
from faceport.engine.types import BGRImage, Faces
from faceport.errors import NoFace
from faceport.services.face_analysis import AntiSpoof, DeepfakeReport, detect_deepfakes, trust_signals
from faceport.services.gallery import owner_scope

router = APIRouter(prefix="/api/v1", tags=["face"], dependencies=api_v1_dependencies("user", "face"))

DetectorName = Literal["blazeface_short", "blazeface_full", "centerface", "yunet"]
EMBEDDING_MODEL = "dlib_resnet"
P = TypeVar("P", bound=BaseModel)


class DetectParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    detector: DetectorName | None = Field(None, description="default: the server's FACEPORT_DETECTOR")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_faces: int | None = Field(None, ge=1, le=1000)
    landmarks: bool = Field(False, description="add 468/478 FaceMesh landmarks")


class RecognizeParams(DetectParams):
    top_k: int = Field(5, ge=1, le=100, description="candidate subjects per face")
    threshold: float | None = Field(None, gt=0.0, le=2.0, description="max embedding distance for a match")
    owner: str | None = Field(None, min_length=1, max_length=64,
                              description="admins: search only this owner's subjects (default: every subject)")


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subject_id: str | None = Field(None, min_length=1, max_length=64, description="compare image1 with a subject")
    threshold: float | None = Field(None, gt=0.0, le=2.0)
    detector: DetectorName | None = None


class DemographicsParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    detector: DetectorName | None = Field(None, description="default: the server's FACEPORT_DETECTOR")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_faces: int | None = Field(None, ge=1, le=1000)


class AnalyzeParams(DetectParams):
    landmarks: bool = True
    top_k: int = Field(1, ge=1, le=100)
    threshold: float | None = Field(None, gt=0.0, le=2.0)
    include_embedding: bool = False


class BBox(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class FaceOut(BaseModel):
    bbox: BBox
    score: float
    keypoints: list[list[float]] = Field(description="5 x [x, y]: right eye, left eye, nose, right/left mouth corner")
    landmarks: list[list[float]] | None = None


class DetectData(BaseModel):
    faces: list[FaceOut]
    count: int
    image: dict[str, int]
    detector: str


class Candidate(BaseModel):
    subject_id: str
    subject: str
    distance: float
    similarity: float
    match: bool


class RecognizedFace(FaceOut):
    subject: Candidate | None = Field(description="the best candidate within the threshold, or null (unknown)")
    candidates: list[Candidate]


class RecognizeData(BaseModel):
    faces: list[RecognizedFace]
    count: int
    threshold: float
    gallery: dict[str, int]
    method: str


class VerifyData(BaseModel):
    verified: bool
    distance: float
    similarity: float
    threshold: float
    method: str
    faces: dict[str, BBox]


class Pose(BaseModel):
    yaw: float
    pitch: float
    roll: float
    method: str = "facemesh_axes"


class QualityOut(BaseModel):
    sharpness: float
    brightness: float
    size: float
    frontalness: float | None = Field(None, description="1 = facing the camera, 0 = 90 degrees away (from pose)")
    method: str = "laplacian_variance, mean grey, box side, pose angle"


AGE_METHOD = f"{AGE_MODEL} (Cydral age-v1, expectation over 81 age classes; score: the top class probability)"
GENDER_METHOD = f"{GENDER_MODEL} (Cydral gender-v1, female/male softmax)"
EMOTION_METHOD = f"{EMOTION_MODEL} (FER quantised CNN, 7 expressions)"


class AgeOut(BaseModel):
    value: int = Field(description="apparent age in whole years")
    years: float = Field(description="the expectation before rounding")
    score: float
    method: str = AGE_METHOD


class GenderOut(BaseModel):
    value: Literal["female", "male"] = Field(description="apparent gender as the model's two classes")
    score: float
    method: str = GENDER_METHOD


class EmotionOut(BaseModel):
    value: str = Field(description="the most likely expression")
    score: float
    scores: dict[str, float] = Field(description="every expression's probability")
    method: str = EMOTION_METHOD


class DemographicsOut(BaseModel):
    age: AgeOut
    gender: GenderOut
    emotion: EmotionOut


class DemographicFace(FaceOut):
    demographics: DemographicsOut


class DemographicsData(BaseModel):
    faces: list[DemographicFace]
    count: int
    image: dict[str, int]
    detector: str


# ---- deepfake and anti-spoof schemas (issue #13) ----
class DeepfakeVerdict(BaseModel):
    score: float = Field(description="0..1, higher = more likely manipulated")
    label: Literal["real", "fake"]
    method: str


class DeepfakeOut(DeepfakeVerdict):
    cues: dict[str, float] = Field(description="each face-swap cue mapped to 0..1")


class AntiSpoofOut(BaseModel):
    live: bool
    score: float = Field(description="0..1, higher = more likely a presentation attack")
    method: str
    cues: dict[str, float]


def _verdict(s: DeepfakeScore) -> DeepfakeVerdict:
    return DeepfakeVerdict(score=s.score, label=s.label, method=s.method)


def _deepfake_out(s: DeepfakeScore) -> DeepfakeOut:
    return DeepfakeOut(score=s.score, label=s.label, method=s.method, cues=s.cues)


def _anti_spoof_out(a: AntiSpoof) -> AntiSpoofOut:
    return AntiSpoofOut(live=a.live, score=a.score, method=a.method, cues=a.cues)


class AnalyzedFace(FaceOut):
    pose: Pose | None
    quality: QualityOut
    recognition: Candidate | None
    demographics: DemographicsOut | None = Field(None, description="null when the models are not installed")
    anti_spoof: AntiSpoofOut
    deepfake: DeepfakeOut
    embedding: list[float] | None = None


class AnalyzeData(BaseModel):
    faces: list[AnalyzedFace]
    count: int
    image: dict[str, int]
    deepfake: DeepfakeVerdict = Field(description="the image's face-swap verdict (its most suspicious face)")
    ai_generated: DeepfakeVerdict | None = Field(None, description="whole-image AI-generated detector, "
                                                 "null when clip_aigen is not installed")
    methods: dict[str, str]
    not_available: list[str]


def _r(v: float) -> float:
    return round(float(v), 2)


def _bbox(xyxy: np.ndarray) -> BBox:
    return BBox(x1=_r(xyxy[0]), y1=_r(xyxy[1]), x2=_r(xyxy[2]), y2=_r(xyxy[3]))


def _face_fields(faces: Faces, i: int) -> dict[str, Any]:
    return {
        "bbox": _bbox(faces.xyxy[i]),
        "score": round(float(faces.score[i]), 4),
        "keypoints": [[_r(x), _r(y)] for x, y in faces.kps[i]] if faces.kps is not None else [],
        "landmarks": [[_r(c) for c in p] for p in faces.landmarks[i]] if faces.landmarks is not None else None,
    }


def _demographics_out(d: Demographics, i: int) -> DemographicsOut:
    gender = d.gender_label(i)
    emotion = d.emotion_label(i)
    return DemographicsOut(
        age=AgeOut(value=int(np.floor(float(d.age[i]) + 0.5)), years=round(float(d.age[i]), 1),
                   score=round(float(d.age_score[i]), 4)),
        gender=GenderOut(value=gender, score=round(float(d.gender[i].max()), 4)),  # type: ignore[arg-type]
        emotion=EmotionOut(value=emotion, score=round(float(d.emotion[i].max()), 4),
                           scores={label: round(float(p), 4) for label, p in zip(EMOTION_LABELS, d.emotion[i],
                                                                                 strict=True)}))


def _demographics_installed(ctx: AppContext) -> bool:
    store = ctx.engine.cache.store
    return all(store.is_installed(name) for name in ("dlib_shape5", AGE_MODEL, GENDER_MODEL, EMOTION_MODEL))


def _detector_name(ctx: AppContext, params: DetectParams | VerifyParams | DemographicsParams) -> str:
    return params.detector or ctx.engine.options.detector


def _threshold(ctx: AppContext, value: float | None) -> float:
    return value if value is not None else ctx.engine.options.verify_threshold


def _candidates(ctx: AppContext, embedding: np.ndarray, k: int, threshold: float,
                owner: str | None) -> list[Candidate]:
    if ctx.gallery is None:
        return []
    return [Candidate(subject_id=m.subject_id, subject=m.subject_name, distance=round(m.distance, 4),
                      similarity=round(m.similarity, 4), match=m.distance <= threshold)
            for m in ctx.gallery.search(embedding, k=k, owner=owner)]


def _gallery_stats(ctx: AppContext, owner: str | None) -> dict[str, int]:
    """The size of the gallery the caller searched: their own subjects, or what an admin searched."""
    return dict(ctx.gallery.stats(owner=owner)) if ctx.gallery is not None else {"subjects": 0, "faces": 0}


async def _image_request(request: Request, ctx: AppContext, model: type[P]) -> tuple[P, BGRImage]:
    """The parameters and the decoded ``image`` of a single-image face request."""
    fields = await read_fields(request)
    params = validate_params(model, fields, exclude=("image", "image_base64"))
    image = await image_field(ctx, fields, "image")
    assert image is not None  # required=True raises MissingField instead
    return params, image


@router.post("/face/detect", response_model=Envelope[DetectData], summary="Detect faces",
             openapi_extra=body_doc(DetectParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def detect(request: Request, ctx: ContextDep) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, DetectParams)
    faces = await ctx.run(ctx.engine.detect, image, detector=params.detector, score_threshold=params.score_threshold,
                          max_faces=params.max_faces, landmarks=params.landmarks)
    name = _detector_name(ctx, params)
    request.state.model_used = name + (",facemesh,iris" if params.landmarks else "")
    data = DetectData(faces=[FaceOut(**_face_fields(faces, i)) for i in range(len(faces))], count=len(faces),
                      image={"width": image.shape[1], "height": image.shape[0]}, detector=name)
    return ok(request, data.model_dump())


@router.post("/face/recognize", response_model=Envelope[RecognizeData], summary="Recognise faces (1:N)",
             openapi_extra=body_doc(RecognizeParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def recognize(request: Request, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, RecognizeParams)
    owner = owner_scope(principal, params.owner)
    threshold = _threshold(ctx, params.threshold)
    faces = await ctx.run(ctx.engine.detect, image, detector=params.detector, score_threshold=params.score_threshold,
                          max_faces=params.max_faces, landmarks=params.landmarks, embed=True)
    request.state.model_used = f"{_detector_name(ctx, params)},{EMBEDDING_MODEL}"
    out = []
    for i in range(len(faces)):
        assert faces.embedding is not None
        candidates = await ctx.run(_candidates, ctx, faces.embedding[i], params.top_k, threshold, owner)
        best = candidates[0] if candidates and candidates[0].match else None
        out.append(RecognizedFace(**_face_fields(faces, i), subject=best, candidates=candidates))
    data = RecognizeData(faces=out, count=len(out), threshold=threshold, gallery=_gallery_stats(ctx, owner),
                         method=f"{EMBEDDING_MODEL} L2 distance, exact search")
    return ok(request, data.model_dump())


def _largest_embedding(ctx: AppContext, image: BGRImage, detector: str | None, which: str) -> Faces:
    try:
        return ctx.engine.embed_largest(image, detector=detector)
    except NoFace:
        raise NoFace(f"no face detected in {which}", details={"field": which}) from None


@router.post("/face/verify", response_model=Envelope[VerifyData], summary="Verify two faces (1:1)",
             openapi_extra=body_doc(VerifyParams, {"image1": "first image", "image2": "second image (or subject_id)"}))
async def verify(request: Request, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    fields = await read_fields(request)
    params = validate_params(VerifyParams, fields, exclude=("image1", "image2", "image1_base64", "image2_base64"))
    image1 = await image_field(ctx, fields, "image1")
    image2 = await image_field(ctx, fields, "image2", required=params.subject_id is None)
    assert image1 is not None
    threshold = _threshold(ctx, params.threshold)
    first = await ctx.run(_largest_embedding, ctx, image1, params.detector, "image1")
    assert first.embedding is not None
    boxes = {"image1": _bbox(first.xyxy[0])}
    if image2 is not None:
        second = await ctx.run(_largest_embedding, ctx, image2, params.detector, "image2")
        assert second.embedding is not None
        result = compare(first.embedding[0], second.embedding[0], threshold=threshold)
        boxes["image2"] = _bbox(second.xyxy[0])
        method = f"{EMBEDDING_MODEL} L2 distance"
    else:
        assert params.subject_id is not None
        references = await ctx.run(ctx.gallery.subject_embeddings, params.subject_id, owner=owner_scope(principal))
        results = [compare(first.embedding[0], ref, threshold=threshold) for ref in references]
        if not results:
            raise NoFace("the subject has no enrolled faces", details={"field": "subject_id"})
        result = min(results, key=lambda r: r.distance)
        method = f"{EMBEDDING_MODEL} L2 distance to the closest of {len(results)} enrolled faces"
    request.state.model_used = f"{_detector_name(ctx, params)},{EMBEDDING_MODEL}"
    data = VerifyData(verified=result.match, distance=round(result.distance, 4),
                      similarity=round(result.similarity, 4), threshold=threshold, method=method, faces=boxes)
    return ok(request, data.model_dump())


def _analyze(ctx: AppContext, image: BGRImage, params: AnalyzeParams, owner: str | None,
             with_demographics: bool) -> tuple[list[AnalyzedFace], DeepfakeReport]:
    # Landmarks are always computed (pose, frontalness and the deepfake cues need them); sent only when asked.
    faces = ctx.engine.detect(image, detector=params.detector, score_threshold=params.score_threshold,
                              max_faces=params.max_faces, landmarks=True, embed=True)
    threshold = _threshold(ctx, params.threshold)
    demographics = ctx.engine.demographics().analyze(image, faces) if with_demographics else None
    anti_spoof, deepfake = trust_signals(ctx.engine, image, faces)
    out = []
    for i in range(len(faces)):
        assert faces.embedding is not None and faces.landmarks is not None
        p = head_pose(faces.landmarks[i])
        q = face_quality(image, faces.xyxy[i])
        candidates = _candidates(ctx, faces.embedding[i], params.top_k, threshold, owner)
        fields = _face_fields(faces, i)
        if not params.landmarks:
            fields["landmarks"] = None
        out.append(AnalyzedFace(
            **fields, pose=Pose(yaw=p.yaw, pitch=p.pitch, roll=p.roll),
            quality=QualityOut(sharpness=q.sharpness, brightness=q.brightness, size=q.size, frontalness=frontalness(p)),
            recognition=candidates[0] if candidates and candidates[0].match else None,
            demographics=_demographics_out(demographics, i) if demographics is not None else None,
            anti_spoof=_anti_spoof_out(anti_spoof[i]), deepfake=_deepfake_out(deepfake.per_face[i]),
            embedding=[round(float(v), 6) for v in faces.embedding[i]] if params.include_embedding else None,
        ))
    return out, deepfake


@router.post("/face/analyze", response_model=Envelope[AnalyzeData], summary="Everything available in one call",
             openapi_extra=body_doc(AnalyzeParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def analyze(request: Request, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, AnalyzeParams)
    data = await ctx.run(analyze_data, ctx, image, params, owner_scope(principal))
    request.state.model_used = (f"{data.methods['detection']},{EMBEDDING_MODEL},facemesh,iris"
                                + (f",{AGE_MODEL},{GENDER_MODEL},{EMOTION_MODEL}" if "age" in data.methods else "")
                                + (f",{CLIP_MODEL}" if data.ai_generated is not None else ""))
    return ok(request, data.model_dump())


def analyze_data(ctx: AppContext, image: BGRImage, params: AnalyzeParams, owner: str | None) -> AnalyzeData:
    """What ``POST /face/analyze`` answers in ``data`` (blocking; also the batch operation ``analyze``)."""
    with_demographics = _demographics_installed(ctx)
    faces, deepfake = _analyze(ctx, image, params, owner, with_demographics)
    methods = {"detection": _detector_name(ctx, params), "landmarks": "facemesh+iris",
               "pose": "facemesh_axes (geometric)",
               "quality": "laplacian_variance, mean grey, box size, frontalness from pose",
               "recognition": f"{EMBEDDING_MODEL} exact search, threshold {_threshold(ctx, params.threshold)}",
               "anti_spoof": "single-image cues per face (see each face's anti_spoof.method)",
               "deepfake": deepfake.image.method}
    if with_demographics:
        methods.update({"age": AGE_METHOD, "gender": GENDER_METHOD, "emotion": EMOTION_METHOD})
    if deepfake.ai_generated is not None:
        methods["ai_generated"] = deepfake.ai_generated.method
    not_available = [*([] if with_demographics else ["demographics"]),
                     *([] if deepfake.ai_generated is not None else ["ai_generated"])]
    return AnalyzeData(faces=faces, count=len(faces), image={"width": image.shape[1], "height": image.shape[0]},
                       deepfake=_verdict(deepfake.image),
                       ai_generated=_verdict(deepfake.ai_generated) if deepfake.ai_generated is not None else None,
                       methods=methods, not_available=not_available)


def _demographics(ctx: AppContext, image: BGRImage, params: DemographicsParams) -> list[DemographicFace]:
    faces = ctx.engine.detect(image, detector=params.detector, score_threshold=params.score_threshold,
                              max_faces=params.max_faces)
    estimates = ctx.engine.demographics().analyze(image, faces)
    return [DemographicFace(**_face_fields(faces, i), demographics=_demographics_out(estimates, i))
            for i in range(len(faces))]


@router.post("/face/demographics", response_model=Envelope[DemographicsData],
             summary="Apparent age, gender and expression per face",
             openapi_extra=body_doc(DemographicsParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def demographics(request: Request, ctx: ContextDep) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, DemographicsParams)
    faces = await ctx.run(_demographics, ctx, image, params)
    detector = _detector_name(ctx, params)
    request.state.model_used = f"{detector},dlib_shape5,{AGE_MODEL},{GENDER_MODEL},{EMOTION_MODEL}"
    data = DemographicsData(faces=faces, count=len(faces), image={"width": image.shape[1], "height": image.shape[0]},
                            detector=detector)
    return ok(request, data.model_dump())


# ---- /face/deepfake (issue #13) ----
class DeepfakeParams(DemographicsParams):
    ai_generated: bool = Field(True, description="also run the whole-image AI-generated detector when installed "
                                                 "(faceport models pull clip_aigen)")


class DeepfakeFace(FaceOut):
    deepfake: DeepfakeOut


class DeepfakeData(BaseModel):
    faces: list[DeepfakeFace]
    count: int
    image: dict[str, int]
    detector: str
    deepfake: DeepfakeVerdict = Field(description="the image's face-swap verdict (its most suspicious face)")
    ai_generated: DeepfakeVerdict | None = Field(description="whole-image AI-generated detector; null when not "
                                                 "installed or not asked for")
    not_available: list[str]


@router.post("/face/deepfake", response_model=Envelope[DeepfakeData],
             summary="Face-swap artefacts per face and per image; AI-generated image (optional model)",
             openapi_extra=body_doc(DeepfakeParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def deepfake(request: Request, ctx: ContextDep) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, DeepfakeParams)
    data = await ctx.run(deepfake_data, ctx, image, params)
    request.state.model_used = f"{data.detector},facemesh,iris" + (f",{CLIP_MODEL}" if data.ai_generated else "")
    return ok(request, data.model_dump())


def deepfake_data(ctx: AppContext, image: BGRImage, params: DeepfakeParams) -> DeepfakeData:
    """What ``POST /face/deepfake`` answers in ``data`` (blocking; also a batch operation)."""
    report = detect_deepfakes(ctx.engine, image, detector=params.detector, score_threshold=params.score_threshold,
                              max_faces=params.max_faces, ai_generated=params.ai_generated)
    faces = [DeepfakeFace(**_face_fields(report.faces, i) | {"landmarks": None},
                          deepfake=_deepfake_out(report.per_face[i])) for i in range(len(report.faces))]
    return DeepfakeData(faces=faces, count=len(faces), image={"width": image.shape[1], "height": image.shape[0]},
                        detector=_detector_name(ctx, params), deepfake=_verdict(report.image),
                        ai_generated=_verdict(report.ai_generated) if report.ai_generated is not None else None,
                        not_available=[] if ctx.engine.ai_generated_installed() else ["ai_generated"])


# --- passive anti-spoof (single image) ----------------------------------------------------------------
class AntiSpoofParams(DemographicsParams):
    pass


class SpoofOut(BaseModel):
    live: bool = Field(description="false when a cue found a print or a screen held up to the camera")
    score: float = Field(description="spoof score in [0, 1]; 0.5 is the decision threshold")
    method: str = Field(description="passive_cues_v1:<cue that decided> (frame, moire, combined) or :passive")
    cues: dict[str, float] = Field(description="every cue's raw value and its [0, 1] *_score")


class AntiSpoofFace(FaceOut):
    anti_spoof: SpoofOut


class AntiSpoofData(BaseModel):
    faces: list[AntiSpoofFace]
    count: int
    live: bool = Field(description="every face judged live (true for no face)")
    image: dict[str, int]
    detector: str
    method: str


def _anti_spoof(ctx: AppContext, image: BGRImage, params: AntiSpoofParams) -> list[AntiSpoofFace]:
    from faceport.services.antispoof import check_image

    faces, result = check_image(ctx.engine, image, detector=params.detector, score_threshold=params.score_threshold,
                                max_faces=params.max_faces)
    return [AntiSpoofFace(**_face_fields(faces, i), anti_spoof=SpoofOut(
        live=bool(result.live[i]), score=round(float(result.score[i]), 4),
        method=f"passive_cues_v1:{result.method[i]}", cues={k: float(v) for k, v in result.cues[i].items()}))
        for i in range(len(faces))]


@router.post("/face/anti-spoof", response_model=Envelope[AntiSpoofData],
             summary="Passive anti-spoofing: is each face a print or a screen? (single image)",
             openapi_extra=body_doc(AntiSpoofParams, {"image": "JPEG, PNG, BMP or WebP"}))
async def anti_spoof(request: Request, ctx: ContextDep) -> dict[str, Any]:
    params, image = await _image_request(request, ctx, AntiSpoofParams)
    data = await ctx.run(anti_spoof_data, ctx, image, params)
    request.state.model_used = f"{data.detector},passive_cues_v1"
    return ok(request, data.model_dump())


def anti_spoof_data(ctx: AppContext, image: BGRImage, params: AntiSpoofParams) -> AntiSpoofData:
    """What ``POST /face/anti-spoof`` answers in ``data`` (blocking; also a batch operation)."""
    from faceport.services.antispoof import METHOD_DESCRIPTION

    faces = _anti_spoof(ctx, image, params)
    return AntiSpoofData(faces=faces, count=len(faces), live=all(f.anti_spoof.live for f in faces),
                         image={"width": image.shape[1], "height": image.shape[0]},
                         detector=_detector_name(ctx, params), method=METHOD_DESCRIPTION)
