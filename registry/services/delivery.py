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

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from registry.domain.errors import InvalidInput
from registry.domain.events import MAX_URL_LENGTH, NOT_SENT
from registry.domain.schemas import check_text

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS ECS; AWS over IPv6; Alibaba; Azure's WireServer):
#: never a target.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: IPv4-compatible IPv6 addresses (::a.b.c.d, deprecated by RFC 4291, not :: or ::1): ::a9fe:a9fe is 169.254.169.254
#: written so, which was let through where private targets are allowed (an outsider's finding, session 43).
_COMPATIBLE = ipaddress.ip_network("::/96")
#: More IPv6 forms that carry an IPv4 address in their last 32 bits: NAT64's local-use prefix (RFC 8215, as a /96)
#: and SIIT's IPv4-translated addresses (::ffff:0:a.b.c.d), both let through to 169.254.169.254 (a re-check).
_CARRIERS = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::ffff:0:0:0/96"))
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Vera-Signature", "X-Vera-Timestamp"
EVENT_HEADER, EVENT_ID_HEADER, DELIVERY_HEADER = "X-Vera-Event", "X-Vera-Event-Id", "X-Vera-Delivery"
USER_AGENT = "vera-registry-webhooks/1"


def _embedded_ipv4(ip: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, IPv4-compatible), which is where it really goes;
    else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64 or any(ip in n for n in _CARRIERS) or (ip in _COMPATIBLE and int(ip) > 1):
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
        raise InvalidInput(f"The webhook host {host!r} resolves to a cloud metadata address; webhooks are never "
                           "sent there. Use the receiver's own address.")
    kind = _kind(ip)
    if kind is not None and not allow_private:  # (the address is not said: names inside a network stay unmapped)
        raise InvalidInput(f"The webhook host {host!r} resolves to a {kind} address; webhooks go to public "
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
        host = parsed.host  # decoded from IDNA here: 'xn--' raises (idna.IDNAError, a ValueError)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidInput(f"The webhook url {text[:200]!r} is not a URL ({exc}); give one like "
                           "https://example.org/hooks/vera.") from exc
    if parsed.scheme not in ("http", "https") or not host:
        raise InvalidInput(f"The webhook url must be http:// or https:// with a host, like "
                           f"https://example.org/hooks/vera; got {text[:200]!r}.")
    if parsed.userinfo:
        raise InvalidInput("The webhook url carries a user name or password, which listings would show; remove it "
                           "(receivers check the X-Vera-Signature header instead).")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:  # saved, it could never be delivered
        raise InvalidInput(f"The webhook url's port {parsed.port} is not a TCP port (1 to 65535).")
    allowed_addresses(parsed, allow_private=allow_private)
    return text


def allowed_addresses(url: httpx.URL, *, allow_private: bool) -> list[str]:
    """Every address ``url``'s host resolves to, each checked (``check_address``): one lookup, for the check and
    for whatever connects to them. Where inside addresses are refused, a name that does not resolve and one that
    resolves inside get the same answer: otherwise saving webhooks would map which inside names exist."""
    try:
        addresses = resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
        for address in addresses:
            check_address(url.host, address, allow_private=allow_private)
    except InvalidInput:
        if allow_private:
            raise
        raise InvalidInput(f"The webhook host {url.host!r} does not resolve to a public address; webhooks go to "
                           "public addresses only. Check the URL; for a receiver on the registry's own network, the "
                           "operator sets VERA_WEBHOOK_ALLOW_PRIVATE=true.") from None
    return addresses


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
    """Sends messages, one HTTP POST each, over a connection to an address that was checked (the name is resolved
    once, for the check and the connection both: a name that answers a public address to the check and an inside
    one to the connection, DNS rebinding, gets nowhere), within ``timeout_s`` for the whole attempt (connect, TLS,
    send, status line and headers; a receiver that trickles its answer a byte at a time is cut off at the deadline,
    so it holds no thread of the registry longer). The answer's body is never read.

    Proxies are never used (the address checks must see where the request really goes); https:// is verified
    against the URL's host name, as any client does."""

    def __init__(self, *, timeout_s: float = 5.0, allow_private: bool = False) -> None:
        self.timeout_s, self.allow_private = timeout_s, allow_private
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        """Nothing to release: each attempt opens and closes its own connection."""

    def send(self, message: Message) -> Outcome:
        started = time.monotonic()
        status, error = None, None
        try:
            url = httpx.URL(check_text(message.url, "The webhook url", max_length=MAX_URL_LENGTH).strip())
            body, headers = message.signed(time.time())
            status = self._post(url, body, headers)
            if not 200 <= status < 300:
                error = f"the receiver answered {status}" + (" (redirects are not followed)" if 300 <= status < 400
                                                             else "")
        except InvalidInput as exc:
            error = f"{NOT_SENT}{exc}"
        except _Deadline:
            error = f"no answer within {self.timeout_s:g} s (VERA_WEBHOOK_TIMEOUT_S, for the whole attempt)"
        except ssl.SSLError as exc:
            error = f"TLS: {exc.reason or exc}"
        except (OSError, http.client.HTTPException, httpx.InvalidURL, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return Outcome(status_code=status, duration_ms=round((time.monotonic() - started) * 1000), error=error)

    def _post(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> int:
        """The status code of one POST to ``url``, sent to an address of its host that passes the checks."""
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidInput("The webhook url must be http:// or https:// with a host.")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = allowed_addresses(url, allow_private=self.allow_private)  # every one, as when it was saved
        deadline = _Watchdog(self.timeout_s)
        try:
            sock = _connect(addresses, port, time.monotonic() + self.timeout_s)
            deadline.watch(sock)
            if url.scheme == "https":
                sock = self._tls.wrap_socket(sock, server_hostname=url.host)
                deadline.watch(sock)
            connection = http.client.HTTPConnection(url.host, port, timeout=self.timeout_s)
            connection.sock = sock  # the checked address, already connected: http.client looks up nothing
            target = url.raw_path.decode("ascii") or "/"  # path and query
            host = url.netloc.decode("ascii")  # [v6]:port as written (userinfo is refused on save)
            connection.request("POST", target, body=body, headers={**headers, "Host": host})
            status = connection.getresponse().status
            if deadline.fired:  # shut mid-headers, http.client reads the end of them: a status line alone was a
                raise _Deadline  # delivery (a receiver that trickled its headers "answered 200": a docs audit)
            return status
        except (OSError, http.client.HTTPException) as exc:
            if deadline.fired or isinstance(exc, TimeoutError):
                raise _Deadline from None
            raise
        finally:
            deadline.stop()


class _Deadline(Exception):
    """The attempt ran past its deadline (the watchdog shut its connection)."""


class _Watchdog:
    """Shuts the watched socket ``seconds`` after it was made, whatever the attempt is waiting for then."""

    def __init__(self, seconds: float) -> None:
        self.fired, self._sockets = False, list[socket.socket]()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        self._sockets.append(sock)
        if self.fired:
            self._fire()

    def _fire(self) -> None:
        self.fired = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._timer.cancel()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _connect(addresses: list[str], port: int, end: float) -> socket.socket:
    """A TCP connection to the first of ``addresses`` (checked ones) that answers before ``end`` (time.monotonic):
    the addresses share the attempt's deadline, so a name with many addresses that drop connections costs no more."""
    last: OSError | None = None
    for address in addresses:
        if (left := end - time.monotonic()) <= 0:
            raise _Deadline
        try:
            return socket.create_connection((address, port), timeout=left)
        except OSError as exc:
            last = exc
    raise last or OSError("no address to connect to")
