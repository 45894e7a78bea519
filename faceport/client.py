"""``FaceportClient``: a small httpx client for the face platform API (seed D, ``/api/v1``).

    from faceport.client import FaceportClient

    with FaceportClient("http://127.0.0.1:8000") as fp:
        fp.login("alice", "correct horse battery")
        subject = fp.create_subject("Grace Hopper")
        fp.add_face(subject["id"], "hopper.jpg")
        result = fp.recognize("group.jpg")            # result["faces"][0]["subject"]
        fp.verify("a.jpg", "b.jpg")["verified"]

Every method returns the envelope's ``data``; an error envelope raises ``FaceportAPIError``
with the seed's ``code`` (AUTH_EXPIRED, INVALID_FORMAT, ...), the HTTP status and details.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ImageInput = str | Path | bytes


class FaceportAPIError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.request_id = request_id


def _file(value: ImageInput, name: str) -> tuple[str, bytes, str]:
    if isinstance(value, bytes):
        return (name, value, "application/octet-stream")
    path = Path(value)
    return (path.name, path.read_bytes(), "application/octet-stream")


class FaceportClient:
    """Client for ``/api/v1``. Keeps the access/refresh tokens after ``login`` and refreshes once on AUTH_EXPIRED."""

    def __init__(self, base_url: str, *, access_token: str | None = None, refresh_token: str | None = None,
                 api_key: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.api_key = api_key
        self.last_response: httpx.Response | None = None
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    # ---- plumbing --------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FaceportClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        headers = {"X-API-Version": "v1"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return headers

    def request(self, method: str, path: str, *, retry_on_expiry: bool = True, **kwargs: Any) -> Any:
        """Send a request to ``/api/v1<path>`` and return ``data``, or raise ``FaceportAPIError``."""
        response = self._http.request(method, f"/api/v1{path}", headers=self._headers(), **kwargs)
        self.last_response = response
        try:
            body = response.json()
        except ValueError:
            raise FaceportAPIError(response.status_code, "INVALID_RESPONSE", response.text[:200]) from None
        if isinstance(body, dict) and body.get("success") is True:
            return body.get("data")
        error = body.get("error", {}) if isinstance(body, dict) else {}
        code = error.get("code", "UNKNOWN")
        if code == "AUTH_EXPIRED" and retry_on_expiry and self.refresh_token:
            self.refresh()
            return self.request(method, path, retry_on_expiry=False, **kwargs)
        raise FaceportAPIError(response.status_code, code, error.get("message", response.reason_phrase),
                               error.get("details"), (body.get("meta") or {}).get("request_id"))

    # ---- auth ------------------------------------------------------------------------
    def register(self, username: str, email: str, password: str) -> dict[str, Any]:
        return dict(self.request("POST", "/auth/register", json={"username": username, "email": email,
                                                                  "password": password}))

    def login(self, username: str, password: str) -> dict[str, Any]:
        tokens = dict(self.request("POST", "/auth/login", json={"username": username, "password": password}))
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        return tokens

    def refresh(self) -> dict[str, Any]:
        tokens = dict(self.request("POST", "/auth/refresh", json={"refresh_token": self.refresh_token},
                                   retry_on_expiry=False))
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        return tokens

    def logout(self, *, everywhere: bool = False) -> None:
        """End this session; ``everywhere=True`` ends every session of the account."""
        body: dict[str, Any] = {"refresh_token": self.refresh_token} if self.refresh_token else {}
        if everywhere:
            body["all"] = True
        self.request("POST", "/auth/logout", json=body, retry_on_expiry=False)
        self.access_token = self.refresh_token = None

    def profile(self) -> dict[str, Any]:
        return dict(self.request("GET", "/auth/profile"))

    def update_profile(self, **changes: Any) -> dict[str, Any]:
        return dict(self.request("PUT", "/auth/profile", json=changes))

    # ---- face services ---------------------------------------------------------------
    def detect(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/detect", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def recognize(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/recognize", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def analyze(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/analyze", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def demographics(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/demographics", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def deepfake(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/deepfake", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def anti_spoof(self, image: ImageInput, **params: Any) -> dict[str, Any]:
        return dict(self.request("POST", "/face/anti-spoof", files={"image": _file(image, "image")},
                                 data=_form(params)))

    def verify(self, image1: ImageInput, image2: ImageInput | None = None, *, subject_id: str | None = None,
               **params: Any) -> dict[str, Any]:
        files = {"image1": _file(image1, "image1")}
        if image2 is not None:
            files["image2"] = _file(image2, "image2")
        if subject_id is not None:
            params["subject_id"] = subject_id
        return dict(self.request("POST", "/face/verify", files=files, data=_form(params)))

    # ---- gallery ---------------------------------------------------------------------
    def create_subject(self, name: str) -> dict[str, Any]:
        return dict(self.request("POST", "/face/subjects", json={"name": name}))

    def list_subjects(self, page: int = 1, size: int = 20, owner: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "size": size}
        if owner is not None:
            params["owner"] = owner  # admins only
        return dict(self.request("GET", "/face/subjects", params=params))

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/face/subjects/{subject_id}"))

    def rename_subject(self, subject_id: str, name: str) -> dict[str, Any]:
        return dict(self.request("PUT", f"/face/subjects/{subject_id}", json={"name": name}))

    def delete_subject(self, subject_id: str) -> Any:
        return self.request("DELETE", f"/face/subjects/{subject_id}")

    def add_face(self, subject_id: str, image: ImageInput) -> dict[str, Any]:
        return dict(self.request("POST", f"/face/subjects/{subject_id}/faces", files={"image": _file(image, "image")}))

    def list_faces(self, subject_id: str) -> Any:
        return self.request("GET", f"/face/subjects/{subject_id}/faces")

    def delete_face(self, subject_id: str, face_id: str) -> Any:
        return self.request("DELETE", f"/face/subjects/{subject_id}/faces/{face_id}")


def _form(params: dict[str, Any]) -> dict[str, str]:
    return {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items() if v is not None}
