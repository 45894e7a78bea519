"""Seed B webhooks: safe targets, signed deliveries, retries with backoff, kept across restarts.

Safety. A ``webhook_url`` must be http(s) and every address its host resolves to must be public:
loopback, link-local (which holds the cloud metadata address 169.254.169.254), private,
shared (CGNAT), multicast, reserved and unspecified addresses are refused, unless
``FACEPORT_WEBHOOK_ALLOW_PRIVATE=true`` or the address is in ``FACEPORT_WEBHOOK_ALLOWED_NETWORKS``.
The check runs when the request comes in (a refused URL is a 400 naming ``webhook_url``) and
again at every attempt and every redirect hop; redirects are followed by hand (at most
:data:`MAX_REDIRECTS`), and each request is sent to the very address that was checked (the
URL's host goes in the ``Host`` header and TLS SNI/certificate check), so a DNS answer that
changes between check and connect cannot redirect a delivery to an internal address.

Signature. Each attempt carries ``X-Faceport-Timestamp: <unix seconds>`` and
``X-Faceport-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``, plus
``X-Faceport-Delivery: <id>`` (the same on every retry, for de-duplication). A receiver
recomputes the HMAC over the timestamp, a dot and the raw body, compares it in constant time
and refuses timestamps older than a few minutes (replays). The secret is
``FACEPORT_WEBHOOK_SECRET``, else ``$FACEPORT_HOME/webhook_secret`` (created with mode 0600
at first start).

Retries. A delivery is a row of ``webhook_deliveries``: non-2xx answers and network errors are
retried after ``webhook_backoff_seconds`` x 2^(attempt-1), up to ``webhook_max_attempts``; a
refused address is not retried. Each attempt is recorded (attempts, last status, error,
delivered_at), and pending deliveries resume after a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy.exc import IntegrityError

from faceport.config import Settings
from faceport.errors import FaceportError
from faceport.store import Store
from faceport.store.models import utcnow
from faceport.store.webhooks import (
    DeliveryRecord,
    claim_delivery,
    create_delivery,
    delivery_for_job,
    due_deliveries,
    next_due_at,
    record_attempt,
)

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 5
ATTEMPT_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 3600.0
SECRET_FILE = "webhook_secret"
SIGNATURE_HEADER = "X-Faceport-Signature"
TIMESTAMP_HEADER = "X-Faceport-Timestamp"
DELIVERY_HEADER = "X-Faceport-Delivery"
_REDIRECTS = (301, 302, 303, 307, 308)


class WebhookRefused(FaceportError):
    """A webhook target that resolves to an address this server must not call."""

    code = "INVALID_INPUT"


# ---- where a webhook may go -------------------------------------------------------------------------------
def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses a webhook may reach: public ones, plus ``allowed`` networks, or all with ``allow_private``."""

    allow_private: bool = False
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(settings.webhook_allow_private,
                   tuple(ipaddress.ip_network(n, strict=False) for n in settings.webhook_allowed_networks))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or ``None`` when it may be called."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_private or any(address in network for network in self.allowed):
            return None
        for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
            if getattr(address, f"is_{kind}"):
                return kind.replace("_", "-")
        if not address.is_global:
            return "not public"
        return None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked webhook hop: the URL, and the address it will be sent to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def connect_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def check_target(url: str, policy: AddressPolicy, resolver: Resolver = system_resolver) -> Target:
    """Resolve ``url``'s host and check every address it has.

    Returns:
        The hop to send to: the first address, which was checked.

    Raises:
        WebhookRefused: not http(s), no host, unresolvable, or an address the policy refuses
            (``details.field == "webhook_url"``; the message names the address class, not the address).
    """
    parts = urlsplit(url)
    details = {"field": "webhook_url"}
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host", details=details)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("webhook_url has an invalid port", details=details) from None
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolver(host, port)]
        except (OSError, UnicodeError, ValueError) as exc:
            raise WebhookRefused(f"webhook_url host {host!r} cannot be resolved ({exc})", details=details) from None
    if not addresses:
        raise WebhookRefused(f"webhook_url host {host!r} has no address", details=details)
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise WebhookRefused(
                f"webhook_url host {host!r} resolves to a {reason} address; webhooks may only reach public "
                "addresses (set FACEPORT_WEBHOOK_ALLOW_PRIVATE=true or FACEPORT_WEBHOOK_ALLOWED_NETWORKS to allow it)",
                details={**details, "reason": reason})
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(url, parts.scheme, host, port, str(addresses[0]), path)


# ---- signing ---------------------------------------------------------------------------------------------
def load_secret(settings: Settings) -> bytes:
    """``FACEPORT_WEBHOOK_SECRET``, else the secret kept in ``$FACEPORT_HOME/webhook_secret`` (created 0600)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    path = settings.home / SECRET_FILE
    try:
        return path.read_text().strip().encode()
    except FileNotFoundError:
        pass
    settings.home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    log.info("created the webhook signing secret in %s (mode 0600)", Path(path).name)
    return value.encode()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Faceport-Signature`` value: ``sha256=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: bytes, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300.0,
                     now: float | None = None) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


# ---- one attempt ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    status: int | None  # the last HTTP status received
    error: str | None  # None when delivered
    retry: bool  # worth trying again later


def send_once(url: str, body: bytes, *, secret: bytes, delivery_id: str, policy: AddressPolicy,
              resolver: Resolver = system_resolver, timeout: float = ATTEMPT_TIMEOUT_S) -> Attempt:
    """POST ``body`` (JSON) to ``url``, following redirects by hand with the address check at every hop."""
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = check_target(current, policy, resolver)
            except WebhookRefused as exc:
                return Attempt(None, f"refused: {exc.message}", retry=False)
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "Host": target.host_header,
                       "User-Agent": "faceport-webhook", TIMESTAMP_HEADER: str(timestamp),
                       SIGNATURE_HEADER: sign(secret, timestamp, body), DELIVERY_HEADER: delivery_id}
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            try:
                response = client.post(target.connect_url, content=body, headers=headers, extensions=extensions)
            except httpx.HTTPError as exc:
                return Attempt(None, f"{type(exc).__name__}: {exc}", retry=True)
            if response.status_code in _REDIRECTS and "location" in response.headers:
                current = urljoin(current, response.headers["location"])
                continue
            if response.is_success:
                return Attempt(response.status_code, None, retry=False)
            return Attempt(response.status_code, f"answered HTTP {response.status_code}", retry=True)
    return Attempt(None, f"more than {MAX_REDIRECTS} redirects", retry=False)


def backoff_s(base_s: float, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1 = the first retry): ``base * 2**(attempt-1)``, at most an hour."""
    return float(min(MAX_BACKOFF_S, base_s * 2.0 ** (attempt - 1)))


# ---- the dispatcher ---------------------------------------------------------------------------------------
class WebhookDispatcher:
    """Sends the pending rows of ``webhook_deliveries`` from one background thread.

    Args:
        settings: ``webhook_*`` settings and ``home`` (the generated secret).
        store: The database holding the deliveries.
        resolver: Name resolution (tests may pass their own; the process boundary).
    """

    def __init__(self, settings: Settings, store: Store, *, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.store = store
        self.policy = AddressPolicy.from_settings(settings)
        self.resolver = resolver
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_base_s = settings.webhook_backoff_seconds
        self._secret: bytes | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_secret(self.settings)
        return self._secret

    def check(self, url: str) -> None:
        """Raises: WebhookRefused (a 400 naming ``webhook_url``)."""
        check_target(url, self.policy, self.resolver)

    def start(self) -> None:
        """Load (or create) the secret and start sending; pending deliveries of earlier runs resume."""
        _ = self.secret
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="faceport-webhooks", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def enqueue(self, job_id: str, url: str, payload: dict[str, Any]) -> DeliveryRecord:
        """Record a delivery (due now) and wake the sender."""
        try:
            with self.store.session() as session:
                record = create_delivery(session=session, job_id=job_id, url=url, payload=payload)
        except IntegrityError:  # another process recorded it a moment ago
            with self.store.session() as session:
                existing = delivery_for_job(session=session, job_id=job_id)
            if existing is None:
                raise
            record = existing
        self._wake.set()
        return record

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_due()
                wait = 0.0 if sent else self._seconds_to_next()
            except Exception:  # the sender must outlive a database hiccup
                log.exception("webhook sender error")
                wait = 5.0
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _seconds_to_next(self) -> float:
        with self.store.session() as session:
            due = next_due_at(session=session)
        if due is None:
            return 30.0
        return max(0.0, min(30.0, (due - utcnow()).total_seconds()))

    def run_due(self) -> int:
        """Make one attempt at every due delivery; returns how many were attempted."""
        with self.store.session() as session:
            due = due_deliveries(session=session)
        count = 0
        for delivery in due:
            if self._stop.is_set():
                break
            with self.store.session() as session:
                lease = timedelta(seconds=ATTEMPT_TIMEOUT_S * (MAX_REDIRECTS + 1) + 5)
                if not claim_delivery(session=session, delivery=delivery, lease=lease):
                    continue
            self.attempt(delivery)
            count += 1
        return count

    def attempt(self, delivery: DeliveryRecord) -> DeliveryRecord:
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        result = send_once(delivery.url, body, secret=self.secret, delivery_id=delivery.id, policy=self.policy,
                           resolver=self.resolver)
        number = delivery.attempts + 1
        if result.error is None:
            state, retry_at = "delivered", None
            log.info("webhook of job %s delivered (HTTP %s, attempt %d)", delivery.job_id, result.status, number)
        elif result.retry and number < self.max_attempts:
            state, retry_at = "pending", utcnow() + timedelta(seconds=backoff_s(self.backoff_base_s, number))
            log.warning("webhook of job %s failed (attempt %d/%d): %s; retrying at %s", delivery.job_id, number,
                        self.max_attempts, result.error, retry_at.isoformat())
        else:
            state, retry_at = "failed", None
            log.error("webhook of job %s gave up after %d attempt(s): %s", delivery.job_id, number, result.error)
        with self.store.session() as session:
            return record_attempt(session=session, delivery_id=delivery.id, status=result.status,
                                  error=result.error, state=state, retry_at=retry_at)  # type: ignore[arg-type]
