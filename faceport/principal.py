"""Who is calling: set on ``request.state.principal`` by the auth dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller of ``/api/v1``.

    Attributes:
        user_id: the user's id (``None`` for an API key that belongs to no user).
        username: the user's name, or ``"apikey:<name>"`` for a service key.
        role: ``"admin"`` or ``"user"``.
        method: how the caller authenticated.
        token_id: the access token's ``jti`` or the API key's id.
        session_id: the sign-in session a JWT belongs to (its refresh-token family,
            claim ``sid``); ``None`` for API keys.
    """

    user_id: str | None
    username: str
    role: Literal["admin", "user"]
    method: Literal["jwt", "api_key"]
    token_id: str | None = None
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def owner(self) -> str:
        """Who the caller's stored objects (gallery subjects) belong to.

        A user, and every API key acting for that user, own the same objects (the user id);
        a service key acting for no user owns its own (``key:<key id>``; the operator's
        ``FACEPORT_API_KEY`` is ``key:settings``).
        """
        return self.user_id if self.user_id else f"key:{self.token_id}"

    @property
    def rate_key(self) -> str:
        """The identity rate limits count against."""
        return f"user:{self.user_id}" if self.user_id else f"key:{self.token_id}"
