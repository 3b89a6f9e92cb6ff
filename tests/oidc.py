"""A local identity provider's parts: signing keys, tokens, and a real HTTP server
on 127.0.0.1 publishing their JWKS (http.server, in a thread), which counts its hits
and can misbehave on demand: hang, trickle, answer garbage or far too much."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.org/realms/staff"
AUDIENCE = "documents-api"
#: A shared secret long enough for HS256 (RFC 7518, 3.2).
SECRET = "a-shared-secret-of-forty-bytes-0123456789"


@dataclass
class SigningKey:
    """A private key, the algorithm it signs with, and its kid."""

    algorithm: str
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    @property
    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def jwk(self, **extra: Any) -> dict[str, Any]:
        family = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm, "Ed": OKPAlgorithm}[self.algorithm[:2]]
        found = family.to_jwk(self.private.public_key(), as_dict=True)
        return {**found, "kid": self.kid, "alg": self.algorithm, "use": "sig", **extra}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid, **headers})


def make_key(algorithm: str, kid: str | None = None) -> SigningKey:
    if algorithm.startswith(("RS", "PS")):
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(algorithm)
    return SigningKey(algorithm, private, kid or f"{algorithm.lower()}-{int(time.time() * 1e6)}")


def claims(sub: str = "alice", *, expires_in: timedelta = timedelta(minutes=5), **extra: Any) -> dict[str, Any]:
    """An OpenID Connect access token's claims, as Keycloak issues them."""
    now = datetime.now(UTC)
    found = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now - timedelta(seconds=5),
        "exp": now + expires_in,
        "azp": "documents-web",
        "preferred_username": sub,
    }
    found.update(extra)
    return {k: v for k, v in found.items() if v is not None}


def hs_token(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any] | str, payload: dict[str, Any] | str, secret: bytes | None = None) -> str:
    """A token assembled by hand: any header or payload text, signed with HMAC-SHA256
    of ``secret`` (as an attacker holding a public key as "secret" would) or unsigned."""
    parts = [b64(h.encode() if isinstance(h, str) else json.dumps(h, default=str).encode()) for h in (header, payload)]
    signing_input = ".".join(parts).encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest() if secret is not None else b""
    return f"{parts[0]}.{parts[1]}.{b64(signature)}"


@dataclass
class JWKSServer:
    """``GET /jwks.json`` on 127.0.0.1: the current ``keys``, or what ``mode`` says.

    Modes: ``ok``, ``slow`` (answers after ``delay``), ``hang`` (no answer until
    stopped), ``trickle`` (headers, then a byte of body every 0.1 s),
    ``trickle_headers`` (a byte of the status line every 0.1 s), ``garbage``,
    ``nested`` (JSON nested 100,000 deep), ``huge`` (8 MiB of JSON, no length),
    ``redirect``, ``unavailable`` (503).
    """

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"
    cache_control: str | None = None
    delay: float = 0.3
    hits: int = 0
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.released = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits += 1
                    owner.paths.append(self.path)
                try:
                    owner.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def body(self) -> bytes:
        return json.dumps({"keys": self.keys}).encode()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "hang":
            self.released.wait(30)
            return
        if mode == "trickle_headers":
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if self.released.wait(0.1):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            return
        if mode == "slow":
            time.sleep(self.delay)
        if mode == "redirect":
            handler.send_response(302)
            handler.send_header("Location", "http://127.0.0.1:9/elsewhere.json")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if mode == "unavailable":
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = {
            "garbage": b"<html>Service Temporarily Unavailable</html>",
            "nested": b"[" * 100_000 + b"]" * 100_000,
        }.get(mode, self.body())
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.cache_control:
            handler.send_header("Cache-Control", self.cache_control)
        if mode in ("huge", "trickle"):
            handler.send_header("Connection", "close")
            handler.end_headers()
            if mode == "trickle":
                for byte in body:
                    if self.released.wait(0.1):
                        return
                    handler.wfile.write(bytes([byte]))
                    handler.wfile.flush()
                return
            filler = b'{"keys": [], "padding": "' + b"x" * (1 << 20)
            for _ in range(8):
                handler.wfile.write(filler)
                filler = b"x" * (1 << 20)
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self) -> None:
        """Down: the port refuses connections from now on."""
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
