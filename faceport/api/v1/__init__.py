"""Seed D: the face platform API under /api/v1."""
