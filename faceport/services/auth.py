"""Authentication and accounts (seed D): argon2 passwords, RS256 JWTs with rotation, API keys.

(Being implemented: ``build_auth`` and ``AuthService``.)
"""

from __future__ import annotations

from typing import Any


def build_auth(settings: Any, store: Any) -> Any:  # replaced by the real implementation
    return None
