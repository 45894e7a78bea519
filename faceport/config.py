"""Settings: one ``Settings`` object, environment prefix ``FACEPORT_``, read via ``get_settings()``."""

from __future__ import annotations

import ipaddress
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DetectorName = Literal["blazeface_short", "blazeface_full", "centerface"]


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

    detector: DetectorName = "blazeface_full"
    detector_score: float = Field(default=0.5, ge=0.0, le=1.0)
    verify_threshold: float = Field(default=0.42, gt=0.0, le=2.0,
                                    description="Max L2 distance of two normalised embeddings of one person.")
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest image upload.")
    max_upload_bytes: int = Field(default=500 * 1024 * 1024, ge=1)

    log_level: str = "INFO"

    # Seed D's default limits, in the `limits` library's notation ("100/hour", "5 per minute").
    rate_limits_enabled: bool = True
    rate_limit_user: str = Field(default="1000/hour", description="Every authenticated /api/v1 request, per user.")
    rate_limit_face: str = Field(default="100/hour", description="/api/v1/face/* analysis requests, per user.")
    rate_limit_batch: str = Field(default="10/hour", description="Batch job submissions, per user.")
    rate_limit_ip: str = Field(default="1000/hour", description="Unauthenticated requests (login, register), per IP.")
    rate_limit_key_prefix: str = Field(default="faceport", min_length=1,
                                       description="Prefix of the rate-limit keys in Redis.")

    @field_validator("execution_providers", "preload_models", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

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
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'faceport.db'}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
