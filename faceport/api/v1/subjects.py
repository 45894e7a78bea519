"""Seed D routes under /api/v1 (being implemented)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
