"""Seed D active liveness: ``/api/v1/face/anti-spoof/sessions``.

- ``POST /face/anti-spoof/sessions``: a new session with a random challenge sequence (JSON body,
  optional: ``length``; admins may fix ``challenges``), owned by the caller.
- ``POST /face/anti-spoof/sessions/{id}/frames``: one camera frame (``image`` as a multipart file
  or base64 / data URL) with the client's capture ``timestamp`` in milliseconds.
- ``GET /face/anti-spoof/sessions/{id}``: progress and, once finished, the verdict.

Someone else's session is ``NOT_FOUND`` (admins see every session). Creating a session counts
against the ``face`` rate limit; its frames count against no per-request limit (a session takes
at most ``FACEPORT_LIVENESS_MAX_FRAMES``) so that a 15 fps camera is not throttled mid-session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from faceport.api.context import AppContext
from faceport.api.deps import ContextDep, CurrentPrincipal, current_principal
from faceport.api.envelope import Envelope, ok
from faceport.api.ratelimit import rate_limit
from faceport.api.requests import body_doc, image_field, read_fields, validate_params
from faceport.engine.active_liveness import CHALLENGES, INSTRUCTIONS, Challenge
from faceport.errors import FaceportError
from faceport.services.liveness import METHOD, FrameReport, LivenessService, SessionRecord

router = APIRouter(prefix="/api/v1", tags=["face"], dependencies=[Depends(current_principal)])

MODELS_USED = "yunet,facemesh,iris,dlib_resnet"


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: int | None = Field(None, ge=2, le=len(CHALLENGES),
                               description="challenges in the random sequence (default FACEPORT_LIVENESS_CHALLENGES)")
    challenges: list[Challenge] | None = Field(
        None, min_length=1, max_length=8,
        description="admins only: a fixed sequence (testing, calibration); it must hold a turn")


class FrameParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timestamp: float = Field(ge=0, le=1e15, allow_inf_nan=False,
                             description="client capture time of the frame, milliseconds (e.g. Date.now())")


class ChallengeOut(BaseModel):
    type: Challenge
    instruction: str
    status: Literal["pending", "active", "passed", "failed"]
    started_at: float | None = Field(description="client milliseconds")
    ended_at: float | None
    frames: int
    reason: str | None = Field(description="why it failed: challenge_timeout, no_parallax, identity_changed, ...")
    measured: dict[str, float]


class VerdictOut(BaseModel):
    live: bool | None = Field(description="null while the session is in progress")
    reason: str | None
    method: str = METHOD
    checks: dict[str, Any]


class SessionOut(BaseModel):
    session_id: str
    status: Literal["in_progress", "passed", "failed"]
    challenges: list[ChallengeOut]
    current_step: int | None = Field(description="index of the challenge to perform now; null when finished")
    instruction: str | None
    created_at: str
    expires_at: str
    step_timeout_s: float
    verdict: VerdictOut


class FrameMeasureOut(BaseModel):
    yaw: float
    pitch: float
    eye_aspect_ratio: float
    mouth_width: float
    face_size: float


class FrameOut(SessionOut):
    face_detected: bool
    passed_step: Challenge | None
    frame: FrameMeasureOut | None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def session_out(record: SessionRecord) -> dict[str, Any]:
    state = record.state
    active = state.step if state.status == "in_progress" and state.step < len(state.steps) else None
    return SessionOut(
        session_id=record.id, status=state.status,
        challenges=[ChallengeOut(type=s.challenge, instruction=INSTRUCTIONS[s.challenge], status=s.status,
                                 started_at=_ms(s.started_at), ended_at=_ms(s.ended_at), frames=s.frames,
                                 reason=s.reason, measured={k: v for k, v in s.values.items()
                                                            if k != "yaw_change_reached"})
                    for s in state.steps],
        current_step=active, instruction=INSTRUCTIONS[state.challenges[active]] if active is not None else None,
        created_at=_iso(record.created_at), expires_at=_iso(record.expires_at),
        step_timeout_s=state.options.step_timeout_s,
        verdict=VerdictOut(live=state.live, reason=state.reason, checks=state.checks()),
    ).model_dump()


def frame_out(report: FrameReport) -> dict[str, Any]:
    m = report.outcome.measure
    measure = None if m is None else FrameMeasureOut(
        yaw=round(m.yaw, 2), pitch=round(m.pitch, 2), eye_aspect_ratio=round(m.ear, 4),
        mouth_width=round(m.mouth_width, 4), face_size=round(m.size, 1))
    return FrameOut(**session_out(report.record), face_detected=report.outcome.face,
                    passed_step=report.outcome.passed_step, frame=measure).model_dump()


def _service(ctx: AppContext) -> LivenessService:
    if ctx.liveness is None:
        raise FaceportError("active liveness is not available on this server", code="PROCESSING_FAILED")
    service: LivenessService = ctx.liveness
    return service


@router.post("/face/anti-spoof/sessions", status_code=201, response_model=Envelope[SessionOut],
             summary="Start an active liveness session (random challenges)",
             dependencies=[Depends(rate_limit("user", "face"))])
async def create_session(request: Request, ctx: ContextDep, principal: CurrentPrincipal) -> dict[str, Any]:
    fields = await read_fields(request)
    params = validate_params(SessionCreate, fields)
    record = await ctx.run(_service(ctx).create, principal, challenges=params.challenges, length=params.length)
    return ok(request, session_out(record))


@router.post("/face/anti-spoof/sessions/{session_id}/frames", response_model=Envelope[FrameOut],
             summary="Send one frame of an active liveness session",
             openapi_extra=body_doc(FrameParams, {"image": "one camera frame: JPEG, PNG, BMP or WebP"}))
async def add_frame(session_id: str, request: Request, ctx: ContextDep,
                    principal: CurrentPrincipal) -> dict[str, Any]:
    service = _service(ctx)
    await ctx.run(service.get, session_id, principal)  # NOT_FOUND before reading an upload
    fields = await read_fields(request)
    params = validate_params(FrameParams, fields, exclude=("image", "image_base64"))
    image = await image_field(ctx, fields, "image")
    assert image is not None
    report = await ctx.run(service.add_frame, session_id, principal, image, params.timestamp)
    request.state.model_used = MODELS_USED
    return ok(request, frame_out(report))


@router.get("/face/anti-spoof/sessions/{session_id}", response_model=Envelope[SessionOut],
            summary="Progress and verdict of an active liveness session",
            dependencies=[Depends(rate_limit("user"))])
async def get_session(session_id: str, request: Request, ctx: ContextDep,
                      principal: CurrentPrincipal) -> dict[str, Any]:
    record = await ctx.run(_service(ctx).get, session_id, principal)
    return ok(request, session_out(record))


# ---- the same frames over /ws/face-analysis ---------------------------------------------------
def _ws_liveness_frame(ctx: AppContext, principal: Any, message: dict[str, Any], _state: dict[str, Any]
                       ) -> dict[str, Any]:
    """``{"type": "liveness_frame", "session_id", "image": <base64 or data URL>, "timestamp": <ms>}`` → the
    REST frame route's ``data`` (blocking; run on the thread pool by the socket)."""
    from faceport.engine.imageio import decode_image
    from faceport.errors import InvalidInput, MissingField

    for name in ("session_id", "image", "timestamp"):
        if message.get(name) in (None, ""):
            raise MissingField(f"{name} is required", details={"field": name})
    session_id, image, timestamp = message["session_id"], message["image"], message["timestamp"]
    if not isinstance(session_id, str) or not isinstance(image, str):
        raise InvalidInput("session_id and image must be strings", details={"field": "session_id"})
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise InvalidInput("timestamp must be a number of milliseconds", details={"field": "timestamp"})
    service = _service(ctx)
    service.get(session_id, principal)  # NOT_FOUND before decoding
    settings = ctx.settings
    frame = decode_image(image, max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes)
    return frame_out(service.add_frame(session_id, principal, frame, float(timestamp)))


def _register_ws() -> None:
    from faceport.realtime.platform_ws import MESSAGE_TYPES, register_message_type

    if "liveness_frame" not in MESSAGE_TYPES:
        register_message_type("liveness_frame", _ws_liveness_frame, reply_type="liveness_frame.result")


_register_ws()
