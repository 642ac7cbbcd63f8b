"""How one webhook delivery reaches its receiver: where it may go, how it is signed, and one HTTP attempt.

Where: http(s) URLs whose host resolves only to public addresses (every address is checked, when the webhook is
saved and again before each attempt, so that a name re-pointed later at an inside address is refused too); loopback,
private, link-local and other non-public addresses only where the registry allows them
(VERA_WEBHOOK_ALLOW_PRIVATE=true); cloud metadata addresses never. Redirects are not followed.

Signing (docs/webhooks.md shows a receiver's check): the body is JSON; the request carries ``X-Vera-Timestamp``
(Unix seconds) and ``X-Vera-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` under the
webhook's secret, so that a receiver can prove the sender knew the secret and refuse old (replayed) requests.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx

from registry.domain.errors import InvalidInput
from registry.domain.events import MAX_URL_LENGTH
from registry.domain.schemas import check_text

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS ECS; AWS over IPv6; Alibaba): never a target.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Vera-Signature", "X-Vera-Timestamp"
EVENT_HEADER, EVENT_ID_HEADER, DELIVERY_HEADER = "X-Vera-Event", "X-Vera-Event-Id", "X-Vera-Delivery"
USER_AGENT = "vera-registry-webhooks/1"


def _embedded_ipv4(ip: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it really goes; else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(ip.packed[-4:])
    return ip


def _kind(ip: Address) -> str | None:
    """What makes ``ip`` an inside address ('loopback', 'private', ...); None for a public one."""
    for kind, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


def check_address(host: str, address: str, *, allow_private: bool) -> None:
    """Refuse ``address`` (one that ``host`` resolves to) unless a webhook may be sent there."""
    ip = _embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))
    if ip in METADATA_ADDRESSES:
        raise InvalidInput(f"The webhook host {host!r} resolves to {ip}, a cloud metadata address; webhooks are never "
                           "sent there. Use the receiver's own address.")
    kind = _kind(ip)
    if kind is not None and not allow_private:
        raise InvalidInput(f"The webhook host {host!r} resolves to {ip}, a {kind} address; webhooks go to public "
                           "addresses only. Use a public URL, or let the registry reach its own network with "
                           "VERA_WEBHOOK_ALLOW_PRIVATE=true (set by the operator).")


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to; InvalidInput when it resolves to none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # no such name, a bad label, a port out of range
        raise InvalidInput(f"The webhook host {host!r} does not resolve ({exc}); check the URL.") from exc
    return sorted({str(info[4][0]) for info in infos})


def check_target(url: object, *, allow_private: bool) -> str:
    """``url`` (stripped), if webhooks may POST to it; InvalidInput saying what is expected otherwise."""
    text = check_text(url, "The webhook url", max_length=MAX_URL_LENGTH).strip()
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidInput(f"The webhook url {text[:200]!r} is not a URL ({exc}); give one like "
                           "https://example.org/hooks/vera.") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"The webhook url must be http:// or https:// with a host, like "
                           f"https://example.org/hooks/vera; got {text[:200]!r}.")
    if parsed.userinfo:
        raise InvalidInput("The webhook url carries a user name or password, which listings would show; remove it "
                           "(receivers check the X-Vera-Signature header instead).")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    for address in resolve(parsed.host, port):
        check_address(parsed.host, address, allow_private=allow_private)
    return text


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class Message:
    """What one delivery sends: the payload, where, and what identifies it to the receiver."""

    url: str
    secret: str
    delivery_id: int
    event: str
    event_id: int | None
    payload: dict[str, Any]

    def signed(self, now: float) -> tuple[bytes, dict[str, str]]:
        body, timestamp = encode(self.payload), int(now)
        return body, {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_HEADER: self.event,
                      EVENT_ID_HEADER: "" if self.event_id is None else str(self.event_id),
                      DELIVERY_HEADER: str(self.delivery_id), TIMESTAMP_HEADER: str(timestamp),
                      SIGNATURE_HEADER: signature(self.secret, timestamp, body)}


@dataclass(frozen=True)
class Outcome:
    """One attempt: the receiver's status code (None when it gave none), its duration, and why it failed."""

    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class Sender:
    """Sends messages, one HTTP POST each, giving the receiver ``timeout_s`` per step (connect, send, answer).

    Proxies from the environment are not used (the address checks must see where the request really goes)."""

    def __init__(self, *, timeout_s: float = 5.0, allow_private: bool = False,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeout_s, self.allow_private = timeout_s, allow_private
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False, transport=transport)

    def close(self) -> None:
        self.http.close()

    def send(self, message: Message) -> Outcome:
        started = time.monotonic()
        status, error = None, None
        try:
            check_target(message.url, allow_private=self.allow_private)
            body, headers = message.signed(time.time())
            with self.http.stream("POST", message.url, content=body, headers=headers) as response:
                status = response.status_code  # the body is never read: a receiver cannot make us wait for it
            if not 200 <= status < 300:
                error = f"the receiver answered {status}" + (" (redirects are not followed)" if 300 <= status < 400
                                                             else "")
        except InvalidInput as exc:
            error = f"refused: {exc}"
        except httpx.TimeoutException:
            error = f"no answer within {self.timeout_s:g} s (VERA_WEBHOOK_TIMEOUT_S)"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        return Outcome(status_code=status, duration_ms=round((time.monotonic() - started) * 1000), error=error)
