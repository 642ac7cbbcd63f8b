"""A real OpenID Connect issuer for tests, standing in for GitHub Actions' (token.actions.githubusercontent.com), which
cannot be reached offline: an http.server on 127.0.0.1 in a thread that answers the discovery document and the key set
(JWKS) as such an issuer does, signs identity tokens with its RSA keys (PyJWT), records every request, and answers
GitHub Actions' token request (``ACTIONS_ID_TOKEN_REQUEST_URL``: a bearer-authorised GET with ``audience``, answering
``{"value": <token>}``) as a runner's does."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

#: What GitHub Actions puts in a workflow's identity token (a subset), for repository acme/adapters on main.
GITHUB_CLAIMS = {"sub": "repo:acme/adapters:ref:refs/heads/main", "repository": "acme/adapters",
                 "repository_owner": "acme", "ref": "refs/heads/main", "workflow": "publish",
                 "event_name": "push", "run_id": "1234", "actor": "alice"}


class Issuer:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.requests: list[str] = []  # paths asked for
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.runner_secret = uuid.uuid4().hex  # ACTIONS_ID_TOKEN_REQUEST_TOKEN
        self.runner_claims: dict[str, Any] = dict(GITHUB_CLAIMS)
        self.down = False  # answer 503 to everything
        self.hanging = False  # answer nothing until ``released`` is set
        self.released = threading.Event()
        self.rotate()

    def rotate(self) -> str:
        """A new signing key (the old ones stay published until ``retire``); its key id."""
        kid = uuid.uuid4().hex[:16]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing = kid
        return kid

    def retire(self, kid: str) -> None:
        del self.keys[kid]

    def token(self, audience: str | list[str] = "vera", *, issuer: str | None = None, lifetime_s: float = 300,
              issued_ago_s: float = 0, key: Any = None, algorithm: str = "RS256", kid: str | None = None,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """An identity token as GitHub Actions issues one (GITHUB_CLAIMS, a fresh jti), ``claims`` over them."""
        now = int(time.time() - issued_ago_s)
        payload = {**GITHUB_CLAIMS, "iss": issuer or self.url, "aud": audience, "iat": now, "nbf": now,
                   "exp": int(now + lifetime_s), "jti": str(uuid.uuid4()), **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        signing_key = key if key is not None else self.keys[self.signing]
        return jwt.encode(payload, signing_key, algorithm=algorithm,
                          headers={"kid": kid or self.signing, **(headers or {})})

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private in self.keys.items():
            entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            keys.append({**entry, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}


class _Handler(BaseHTTPRequestHandler):
    issuer: Issuer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        issuer, parts = self.issuer, urlsplit(self.path)
        issuer.requests.append(parts.path)
        if issuer.hanging:
            issuer.released.wait(60)
        if issuer.down:
            return self._answer(503, {"message": "down"})
        if parts.path == "/.well-known/openid-configuration":
            return self._answer(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/.well-known/jwks",
                                      "id_token_signing_alg_values_supported": ["RS256"]})
        if parts.path == "/.well-known/jwks":
            return self._answer(200, issuer.jwks())
        if parts.path == "/runner/token":  # GitHub Actions' ACTIONS_ID_TOKEN_REQUEST_URL
            if self.headers.get("Authorization") != f"bearer {issuer.runner_secret}":
                return self._answer(401, {"message": "Bad credentials"})
            audience = parse_qs(parts.query).get("audience", [f"https://github.com/{GITHUB_CLAIMS['repository_owner']}"])
            return self._answer(200, {"count": 1, "value": issuer.token(audience[0], **issuer.runner_claims)})
        return self._answer(404, {"message": "Not Found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    issuer = Issuer(server.server_address[1])
    server.RequestHandlerClass = type("Handler", (_Handler,), {"issuer": issuer})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
