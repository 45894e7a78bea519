"""Settings: one ``Settings`` object, environment prefix ``FACEPORT_``, read via ``get_settings()``."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DetectorName = Literal["blazeface_short", "blazeface_full", "centerface", "yunet"]
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?$")


def _default_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "faceport"


class Settings(BaseSettings):
    """Every setting of the server. Each field is ``FACEPORT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FACEPORT_", env_nested_delimiter="__", extra="ignore",
                                      populate_by_name=True)

    environment: Literal["development", "production"] = "development"
    home: Path = Field(default_factory=_default_home, description="Data directory: models, database, outputs.")
    models_dir_override: Path | None = Field(default=None, alias="FACEPORT_MODELS_DIR",
                                             description="Model files; default <home>/models.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in home.")
    redis_url: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    privacy_port: int = Field(default=5000, ge=0, le=65535, description="0 disables the privacy app.")
    insecure: bool = Field(default=False, description="Allow a non-loopback bind without an API key.")
    api_key: str | None = Field(default=None,
                                description="Static service key (X-API-Key): user role on /api/v1, and /metrics.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins (scheme://host[:port], comma-separated, or *) allowed "
        "cross-origin on every app and on Socket.IO; empty: no CORS headers, Socket.IO same-origin only.")
    audit_log: str | None = Field(default=None, description="Audit log file (one JSON line per request, both apps); "
                                  "default <home>/audit.log; 'off' disables it.")
    audit_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=0,
                                     description="Size at which the audit log rotates; 0 never rotates.")
    audit_log_backups: int = Field(default=5, ge=0, le=1000, description="Rotated audit log files kept.")

    # Seed D authentication: RS256 JWTs (access + rotating refresh tokens).
    jwt_private_key_path: Path | None = Field(
        default=None, description="PEM RSA private key (>= 2048 bits) signing JWTs; "
        "default <home>/jwt_private.pem, created (mode 0600) on first start.")
    jwt_public_key_path: Path | None = Field(
        default=None, description="PEM public key of jwt_private_key_path (checked to match it); "
        "default derived from the private key and written to <home>/jwt_public.pem.")
    access_token_ttl: int = Field(default=900, ge=30, le=86_400,
                                  description="Seconds an access token is valid (default 15 minutes).")
    refresh_token_ttl: int = Field(default=604_800, ge=60, le=90 * 86_400,
                                   description="Seconds a refresh token is valid (default 7 days).")

    execution_providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    model_idle_ttl: float = Field(default=900.0, ge=0,
                                  description="Seconds before an unused model is unloaded; 0 keeps forever.")
    preload_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pull_on_start: bool = Field(default=True, description="Pull missing default models when the server starts.")
    thread_pool_size: int = Field(default_factory=lambda: max(2, min(8, os.cpu_count() or 2)), ge=1, le=64)

    detector: DetectorName = "yunet"  # chosen by recall/false positives/speed: BENCHMARKS.md, issue 11
    detector_score: float = Field(default=0.5, ge=0.0, le=1.0)
    verify_threshold: float = Field(default=0.42, gt=0.0, le=2.0,
                                    description="Max L2 distance of two normalised embeddings of one person.")
    embedder: Literal["onnx", "dlib"] = Field(
        default="onnx", description="Runtime of the dlib ResNet face embedding: onnx (model dlib_resnet_onnx, "
        "converted at pull time) or dlib (model dlib_resnet, the reference); same embeddings to ~1e-6.")
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest image upload.")
    max_upload_bytes: int = Field(default=500 * 1024 * 1024, ge=1)

    # Seed B (FaceFusion-style REST) and the local job runner.
    job_workers: int = Field(default=1, ge=1, le=64, description="Jobs the local runner runs at once.")
    media_root: Path | None = Field(default=None, description="Privacy app (seed E): input/output paths are "
                                    "relative to and confined in this directory; default <home>/media.")
    job_queue_max: int = Field(default=16, ge=1, le=100_000,
                               description="Jobs waiting in the local runner; more are refused (QUEUE_FULL).")
    jobs: Literal["local", "celery"] = Field(
        default="local", description="Job runner: local (threads of the server process) or celery (Celery workers, "
        "`faceport worker`, over Redis; the database and FACEPORT_HOME must be shared with them).")
    celery_broker_url: str | None = Field(default=None, description="Celery broker; default FACEPORT_REDIS_URL.")
    celery_queue: str = Field(default="faceport", min_length=1, description="Celery queue jobs go to by default.")
    celery_routes: dict[str, str] = Field(
        default_factory=dict, description="Job kind -> Celery queue (JSON), e.g. {\"facefusion.video\": \"gpu\"}: "
        "those jobs run only on workers consuming that queue.")
    celery_visibility_timeout: float = Field(
        default=3600.0, ge=1.0, description="Seconds before Redis hands a message a dead worker took to another "
        "worker; job leases usually recover the job long before.")
    job_lease_seconds: float = Field(
        default=30.0, ge=1.0, le=3600.0, description="A worker renews its claim on a running job this often "
        "(every third of it); a job whose claim expired (its worker died) is run again by another worker.")
    job_inline_timeout: float = Field(
        default=300.0, gt=0.0, description="Seconds a request answered synchronously waits for its job on a "
        "Celery worker (seed B's proxy timeout).")
    node_name: str | None = Field(default=None, description="This process's name in /health and in Redis "
                                  "(default host:pid).")
    sync_video_max_seconds: float = Field(default=120.0, ge=0.0,
                                          description="Videos up to this long are processed within the request; "
                                          "longer ones are queued as jobs.")
    output_retention_hours: float = Field(default=24.0, gt=0.0,
                                          description="Hours a /process output is kept before it is purged.")
    output_dir: Path | None = Field(default=None, description="Seed B outputs; default <home>/outputs.")
    upload_dir: Path | None = Field(default=None, description="Seed B uploads kept while their job runs; "
                                    "default <home>/uploads.")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key signing webhook deliveries; "
                                       "default <home>/webhook_secret, created (mode 0600) on first start.")
    webhook_allow_private: bool = Field(default=False, description="Allow webhook_url on loopback, link-local, "
                                        "private and metadata addresses (refused by default).")
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CIDRs (comma-separated) a webhook may reach although they are private, "
        "e.g. 10.1.2.0/24.")
    webhook_max_attempts: int = Field(default=6, ge=1, le=100, description="Delivery attempts per webhook.")
    webhook_backoff_seconds: float = Field(default=5.0, gt=0.0, le=3600.0,
                                           description="Wait before the first retry; doubled for each next one.")

    # Seed B face selection: "many"/"all"/"one" leave small background faces alone (no pale ghosts).
    swap_min_face_px: int = Field(default=24, ge=0, le=4096, description="Faces whose shorter box side is under "
                                  "this many pixels are not swapped/enhanced in selector modes many, all and one; "
                                  "a request's face_selector_min_size overrides it.")
    swap_min_face_ratio: float = Field(default=0.25, ge=0.0, le=1.0, description="... nor faces smaller than this "
                                       "share of the largest face's side in the same image (0 turns it off).")

    # Seed E live (Socket.IO rooms, WHIP/WHEP media through aiortc, on the privacy app).
    stream_max_rooms: int = Field(default=16, ge=1, le=10_000, description="Rooms open at once (all nodes when "
                                  "FACEPORT_REDIS_URL is set); more: error event TOO_MANY_ROOMS / HTTP 429.")
    stream_max_viewers: int = Field(default=8, ge=1, le=1000, description="WHEP viewers per room on one node; more: "
                                    "TOO_MANY_VIEWERS / HTTP 429.")
    stream_max_publishers: int = Field(default=2, ge=1, le=1000, description="Streams one node filters at once "
                                       "(each costs about a core); more: STREAM_CAPACITY / HTTP 503.")
    stream_room_ttl: float = Field(default=3600.0, gt=0.0, description="Seconds an idle room (no publisher) lives.")
    stream_audio_delay_s: float = Field(default=5.0, ge=0.5, le=30.0, description=(
        "Seconds a live stream's audio is held back while audio processing is on, so spoken personal data "
        "can be heard and bleeped before it goes out (audio not cleared in time is muted, never passed). "
        "It must exceed two speech passes plus 0.6 s: 1-2 s each on 2 cores beside the video filter."))
    stream_update_interval: float = Field(default=1.0, gt=0.0, le=60.0,
                                          description="Seconds between processing_update events.")

    # Seed A (live webcam face swap: /upload_source, /status, Socket.IO on the main app).
    live_max_fps: float = Field(default=15.0, gt=0.0, le=120.0,
                                description="Frames per second accepted from the active user; "
                                "more are dropped without a reply.")
    live_session_timeout: float = Field(default=300.0, gt=0.0,
                                        description="Seconds a live session lasts before the user is told and "
                                        "disconnected.")
    live_idle_timeout: float = Field(default=60.0, gt=0.0,
                                     description="Seconds without an event from the user before it is told and "
                                     "disconnected.")
    live_source_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1,
                                       description="Largest source image for /upload_source (400 above it).")
    live_request_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1,
                                        description="Largest /upload_source request body (413 above it).")
    live_frame_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1,
                                      description="Largest webcam frame (decoded bytes); larger ones get an "
                                      "error reply.")
    live_frame_max_pixels: int = Field(default=3840 * 2160, ge=1, description="Largest webcam frame in pixels.")
    live_message_max_bytes: int = Field(default=48 * 1024 * 1024, ge=1024,
                                        description="Largest Socket.IO message read at all; a larger one closes "
                                        "the connection (transport limit, above live_frame_max_bytes so that "
                                        "oversized frames get an error reply).")
    live_jpeg_quality: int = Field(default=85, ge=1, le=100, description="JPEG quality of swapped frames.")
    live_detector: DetectorName | None = Field(default=None,
                                               description="Detector of the live tracker; default: detector.")
    live_fallback_detector: DetectorName | None = Field(
        default="centerface", description="Detector the live tracker runs when live_detector finds no face "
                                          "(CenterFace: more robust on small and turned faces); unset: none.")
    live_max_faces: int = Field(default=1, ge=1, le=8, description="Faces swapped per webcam frame.")
    live_redetect_every: int = Field(default=30, ge=1, le=10_000,
                                     description="Frames between two detections; landmarks track in between.")
    live_redis_prefix: str = Field(default="faceport:live", min_length=1,
                                   description="Prefix of the live swap's Redis keys and Socket.IO channel.")

    # Seed C (proctoring WebSocket /ws on the main app).
    proctor_max_connections: int = Field(default=150, ge=1, le=100_000,
                                         description="Concurrent /ws connections; more are closed with 4002.")
    proctor_max_connections_per_ip: int = Field(
        default=50, ge=0, le=100_000,
        description="Concurrent /ws connections from one IP address (an exam room behind one NAT shares one); "
                    "more are closed with 4002; 0 = no per-address cap.")
    proctor_handshake_timeout: float = Field(
        default=30.0, gt=0.0,
        description="Seconds a /ws connection may stay without a valid first message (a registered client, "
                    "and its token where one is needed) before it is closed with 4001.")
    proctor_require_token: bool = Field(
        default=False,
        description="Refuse /ws clients that have no token set in the admin API (a client that has one must "
                    "always present it).")
    proctor_processing_timeout: float = Field(default=30.0, gt=0.0,
                                              description="Seconds a frame may take before PROCESSING_TIMEOUT.")
    proctor_decode_side: int = Field(
        default=640, ge=0, le=10_000,
        description="A /ws JPEG frame whose longer side is at least twice this is decoded at 1/2, 1/4 or 1/8 size "
                    "(longer side kept >= this); 0 decodes every frame at full size.")
    proctor_debounce_frames: int = Field(default=2, ge=1, le=1000,
                                         description="Consecutive frames with the same reason before acting.")
    proctor_block_after: int = Field(default=0, ge=0,
                                     description="Block a client after this many violations; 0 never blocks.")
    proctor_actions: dict[str, str] = Field(
        default_factory=lambda: {"REASON_NO_FACE": "ACTION_LOCK_SCREEN", "REASON_PHONE_DETECTION": "ACTION_SIGN_OUT",
                                 "REASON_WRONG_USER": "ACTION_SIGN_OUT", "REASON_SPOOF_IMAGE": "ACTION_SIGN_OUT",
                                 "REASON_MULTIPLE_FACES": "ACTION_WARNING"},
        description="Action per reason (JSON object in FACEPORT_PROCTOR_ACTIONS).")
    proctor_phone_score: float = Field(default=0.5, ge=0.0, le=1.0,
                                       description="SSD 'cell phone' confidence that counts as a phone.")
    proctor_phone_reuse_frames: int = Field(
        default=4, ge=0, le=1000,
        description="Frames in a row that may reuse a client's last 'no phone' answer when the frame barely "
                    "changed since the last checked one; 0 runs the phone detector on every frame.")
    proctor_phone_reuse_seconds: float = Field(default=2.0, ge=0.0,
                                               description="A 'no phone' answer older than this is never reused.")
    proctor_phone_change: float = Field(
        default=0.005, ge=0.0, le=1.0,
        description="Share of changed pixels (64x48 grey thumbnail, shift-tolerant) above which a frame is "
                    "always checked for phones.")
    proctor_liveness: bool = Field(default=True, description="Run the spoof (liveness) checks on /ws frames.")
    proctor_still_seconds: float = Field(
        default=8.0, ge=0.0, description="A face that neither blinks nor moves for this long (and for "
        "proctor_still_frames frames) is a still photo held up: REASON_SPOOF_IMAGE.")
    proctor_still_frames: int = Field(default=12, ge=2, le=100_000,
                                      description="Frames a still face must last (with proctor_still_seconds).")
    proctor_require_reference: bool = Field(
        default=True,
        description="Answer /ws frames of a client without a reference face ACTION_ERROR / "
                    "REASON_CLIENT_NOT_AVAILABLE ('no reference face'); false checks them without identity.")
    proctor_evidence_retention_days: float = Field(default=7.0, gt=0.0,
                                                   description="Days evidence frames are kept before the purge.")
    proctor_purge_interval: float = Field(default=3600.0, gt=0.0, description="Seconds between evidence purges.")

    # Seed D batches (/api/v1/batch/*) and realtime channels (/ws/face-analysis, /ws/system-status, /ws/notifications).
    batch_dir: Path | None = Field(default=None, description="Staged batch inputs while their job runs; "
                                   "default <home>/batches.")
    batch_max_items: int = Field(default=1000, ge=1, le=100_000, description="Images in one batch.")
    batch_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1,
                                 description="Bytes of images in one batch (an archive: uncompressed).")
    batch_retention_hours: float = Field(default=24.0, gt=0.0,
                                         description="Hours a finished batch and its results are kept.")
    ws_max_connections_per_user: int = Field(default=50, ge=1, description="Open /ws/* sockets per user or key.")
    ws_auth_timeout: float = Field(default=10.0, gt=0.0,
                                   description="Seconds a /ws/* socket may wait for its auth message.")
    ws_status_interval: float = Field(default=5.0, gt=0.0, description="Seconds between /ws/system-status pushes.")
    ws_reauth_interval: float = Field(default=30.0, gt=0.0, description="Seconds between re-checks of a /ws/* "
                                      "socket's credentials (logout, expiry, revoked key end it).")
    ws_redis_channel: str = Field(default="faceport:notify", min_length=1,
                                  description="Redis pub/sub channel carrying /ws/notifications between nodes.")

    # Active liveness sessions (seed D: /api/v1/face/anti-spoof/sessions).
    liveness_session_ttl: float = Field(default=120.0, gt=0.0, le=3600.0,
                                        description="Seconds an active-liveness session accepts frames.")
    liveness_result_ttl: float = Field(default=600.0, ge=0.0, le=86_400.0,
                                       description="Seconds a session's verdict stays readable after it expires.")
    liveness_challenges: int = Field(default=3, ge=2, le=5, description="Challenges in a generated sequence.")
    liveness_max_frames: int = Field(default=600, ge=10, le=100_000, description="Frames accepted per session.")
    liveness_turn_degrees: float = Field(default=8.0, ge=2.0, le=45.0,
                                         description="Head yaw (degrees from the first frames) a turn challenge needs.")
    liveness_step_timeout: float = Field(default=6.0, gt=0.0, le=60.0,
                                         description="Seconds of client time allowed for each challenge.")
    liveness_redis_prefix: str = Field(default="faceport:liveness", min_length=1,
                                       description="Redis key prefix of active-liveness sessions.")

    log_level: str = "INFO"

    # Seed D's default limits, in the `limits` library's notation ("100/hour", "5 per minute").
    rate_limits_enabled: bool = True
    rate_limit_user: str = Field(default="1000/hour", description="Every authenticated /api/v1 request, per user.")
    rate_limit_face: str = Field(default="100/hour", description="/api/v1/face/* analysis requests, per user.")
    rate_limit_batch: str = Field(default="10/hour", description="Batch job submissions, per user.")
    rate_limit_ip: str = Field(default="1000/hour", description="Unauthenticated requests (login, register), per IP.")
    rate_limit_key_prefix: str = Field(default="faceport", min_length=1,
                                       description="Prefix of the rate-limit keys in Redis.")

    @field_validator("execution_providers", "preload_models", "webhook_allowed_networks", "cors_origins",
                     mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("live_fallback_detector", mode="before")
    @classmethod
    def _no_fallback(cls, value: object) -> object:
        """``FACEPORT_LIVE_FALLBACK_DETECTOR=`` (or ``none``) turns the fallback off."""
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com or http://localhost:3000")
            origins.append(origin.lower())
        return origins

    @field_validator("rate_limit_user", "rate_limit_face", "rate_limit_batch", "rate_limit_ip")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(f"{value!r} is not a rate limit like '100/hour' or '5 per minute' (one limit, at least 1)")
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _parse_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network like 10.1.2.0/24 or fd00::/64") from None
        return value

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if not _is_loopback(self.host) and not self.api_key and not self.insecure:
            raise ValueError(
                f"refusing to bind {self.host!r} (not loopback) without FACEPORT_API_KEY; "
                "set an API key or pass --insecure"
            )
        return self

    @property
    def models_dir(self) -> Path:
        return self.models_dir_override or self.home / "models"

    @property
    def resolved_batch_dir(self) -> Path:
        return self.batch_dir or self.home / "batches"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'faceport.db'}"

    @property
    def audit_log_path(self) -> Path | None:
        """Where the audit log goes, ``None`` when ``FACEPORT_AUDIT_LOG=off``."""
        if self.audit_log is None or not self.audit_log.strip():
            return self.home / "audit.log"
        if self.audit_log.strip().lower() in ("off", "none", "false", "0"):
            return None
        return Path(self.audit_log).expanduser()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_name(settings: Settings) -> str:
    """This process's name in /health, logs and Redis: ``FACEPORT_NODE_NAME``, else ``host:pid``."""
    import socket

    return settings.node_name or f"{socket.gethostname()}:{os.getpid()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
