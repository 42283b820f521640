"""Router assertions: what the router says about a request it passes to a region.

The router never relays a caller's credential. It authenticates the caller
itself and sends the region a short-lived statement, signed with its Ed25519
private key (ROUTER_SIGNING_KEY), that only the router can make and any region
can check with the router's public key (ROUTER_PUBLIC_KEYS):

    Authorization: Bearer mra_<claims, base64url JSON>.<signature, base64url>

The signature covers the bytes `mra1.` + the encoded claims. Claims:

- `iss` "router"; `aud` the one region it is for; `sub` the caller's username
  (a forward), the agent id (a registration grant) or the operator (a locate);
  `purpose` "forward", "register" or "locate"; `iat`, `exp` (Unix seconds);
  `jti` a random id.
- A forward also carries `scopes` (the caller's, at the router), `body` (the
  SHA-256 hex digest of the exact request body), `method` and `path`.
- A locate (the router's task finder asking where a task is) carries `task`,
  the one task id it may ask about; it opens nothing but that question
  (regions/api/views/locate.py): no task's payload, result or error.

Both roles import this module (project/ imports no app): the router signs, a
region verifies (regions/api/authentication.py), and also refuses a `jti` it
has seen (that needs the region's Redis, so it is done there).
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

PREFIX = "mra_"
ISSUER = "router"
FORWARD = "forward"
REGISTER = "register"
LOCATE = "locate"
_SIGNED_PREFIX = b"mra1."
_MAX_LENGTH = 4096  # an assertion is a few hundred bytes; anything longer is not one


class AssertionInvalid(Exception):
    """Why an assertion is refused (a 401 at the region)."""


@dataclass(frozen=True)
class Assertion:
    """A verified assertion: request.auth at the region."""

    audience: str
    subject: str
    purpose: str
    issued_at: float
    expires_at: float
    jti: str
    scopes: tuple[str, ...] = ()
    body: str = ""
    method: str = ""
    path: str = ""
    claims: dict = field(default_factory=dict, compare=False, repr=False)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- keys -------------------------------------------------------------------

def _key_load(value: str, *, private: bool, setting: str):
    """A PEM Ed25519 key (PKCS#8 private, SubjectPublicKeyInfo public), or its
    32 raw bytes in base64; errors name the setting it came from."""
    value = value.strip()
    kind = Ed25519PrivateKey if private else Ed25519PublicKey
    what = "private" if private else "public"
    if value.startswith("-----BEGIN"):
        key = (serialization.load_pem_private_key(value.encode(), password=None) if private
               else serialization.load_pem_public_key(value.encode()))
        if not isinstance(key, kind):
            raise ValueError(f"{setting}: not an Ed25519 {what} key")
        return key
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{setting}: neither a PEM key nor base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{setting}: an Ed25519 raw {what} key is 32 bytes")
    return kind.from_private_bytes(raw) if private else kind.from_public_bytes(raw)


def private_key_load(value: str) -> Ed25519PrivateKey:
    return _key_load(value, private=True, setting="ROUTER_SIGNING_KEY")


def public_key_load(value: str) -> Ed25519PublicKey:
    return _key_load(value, private=False, setting="ROUTER_PUBLIC_KEYS")


def keypair_generate() -> tuple[str, str]:
    """(private, public), each 32 raw bytes in base64: ROUTER_SIGNING_KEY and one of ROUTER_PUBLIC_KEYS."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return base64.b64encode(private).decode(), public_key_text(key)


def public_key_text(key: Ed25519PrivateKey) -> str:
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(public).decode()


# --- sign and verify -----------------------------------------------------------

def assertion_sign(*, key: Ed25519PrivateKey, audience: str, subject: str, purpose: str, ttl: float,
                   scopes: tuple[str, ...] | list[str] = (), body: bytes | None = None, method: str = "",
                   path: str = "", task: str = "", now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = {"iss": ISSUER, "aud": audience, "sub": subject, "purpose": purpose,
              "iat": int(now), "exp": int(now + ttl), "jti": secrets.token_urlsafe(16)}
    if purpose == FORWARD:
        claims.update(scopes=sorted(scopes), body=body_digest(body or b""), method=method.upper(), path=path)
    if purpose == LOCATE:
        claims["task"] = task
    encoded = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = key.sign(_SIGNED_PREFIX + encoded.encode())
    return f"{PREFIX}{encoded}.{_b64encode(signature)}"


def assertion_verify(raw: str, *, keys: list[Ed25519PublicKey], audience: str, purpose: str,
                     skew: float, now: float | None = None) -> Assertion:
    """The assertion's claims if it is signed by one of `keys`, for `audience`
    and `purpose`, and not expired (allowing `skew` seconds of clock
    difference); AssertionInvalid saying why otherwise. The body digest, the
    request's method and path and the jti are the caller's to check."""
    if not keys:
        raise AssertionInvalid("This region accepts no router assertion (ROUTER_PUBLIC_KEYS is not set).")
    if not raw.startswith(PREFIX) or len(raw) > _MAX_LENGTH or raw.count(".") != 1:
        raise AssertionInvalid("Malformed router assertion.")
    encoded, _, signature_text = raw[len(PREFIX):].partition(".")
    try:
        signature = _b64decode(signature_text)
    except (binascii.Error, ValueError) as exc:
        raise AssertionInvalid("Malformed router assertion.") from exc
    for key in keys:
        try:
            key.verify(signature, _SIGNED_PREFIX + encoded.encode())
            break
        except InvalidSignature:
            continue
    else:
        raise AssertionInvalid("Router assertion signature is not valid under any configured router key.")
    try:
        claims = json.loads(_b64decode(encoded))
    except (binascii.Error, ValueError) as exc:
        raise AssertionInvalid("Malformed router assertion.") from exc
    if not isinstance(claims, dict):
        raise AssertionInvalid("Malformed router assertion.")
    now = time.time() if now is None else now
    if claims.get("iss") != ISSUER:
        raise AssertionInvalid("Router assertion from an unknown issuer.")
    if claims.get("aud") != audience:
        raise AssertionInvalid(f"Router assertion is for another region, not {audience}.")
    if claims.get("purpose") != purpose:
        raise AssertionInvalid(f"Router assertion is not a {purpose} assertion.")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
        raise AssertionInvalid("Malformed router assertion.")
    if now > exp + skew:
        raise AssertionInvalid("Router assertion has expired.")
    if iat > now + skew:
        raise AssertionInvalid("Router assertion is dated in the future.")
    subject, jti = claims.get("sub"), claims.get("jti")
    scopes = claims.get("scopes", [])
    if (not isinstance(subject, str) or not subject or not isinstance(jti, str) or not jti
            or not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        raise AssertionInvalid("Malformed router assertion.")
    return Assertion(audience=audience, subject=subject, purpose=purpose, issued_at=float(iat),
                     expires_at=float(exp), jti=jti, scopes=tuple(scopes), body=str(claims.get("body", "")),
                     method=str(claims.get("method", "")), path=str(claims.get("path", "")), claims=claims)


# --- this process's keys (settings) ---------------------------------------------

@functools.lru_cache(maxsize=4)
def _private_cached(value: str) -> Ed25519PrivateKey:
    return private_key_load(value)


@functools.lru_cache(maxsize=4)
def _public_cached(values: tuple[str, ...]) -> tuple[Ed25519PublicKey, ...]:
    return tuple(public_key_load(v) for v in values)


def router_signing_key() -> Ed25519PrivateKey | None:
    """The router's private key (ROUTER_SIGNING_KEY), None when not set."""
    return _private_cached(settings.ROUTER_SIGNING_KEY) if settings.ROUTER_SIGNING_KEY else None


def router_public_keys() -> list[Ed25519PublicKey]:
    """The router keys a region trusts (ROUTER_PUBLIC_KEYS; several while one is rotated)."""
    return list(_public_cached(tuple(v for v in settings.ROUTER_PUBLIC_KEYS if v.strip())))


def assertion_subject(raw: str) -> str | None:
    """The caller a router assertion names, if one of ROUTER_PUBLIC_KEYS signed
    it (expiry, audience and replay are the view's to check): a web worker's
    turns (project/turns.py) queue a forwarded request as that caller's, and a
    forged assertion names nobody. None for anything else."""
    if not raw.startswith(PREFIX) or len(raw) > _MAX_LENGTH or raw.count(".") != 1:
        return None
    encoded, _, signature_text = raw[len(PREFIX):].partition(".")
    try:
        signature = _b64decode(signature_text)
        for key in router_public_keys():
            try:
                key.verify(signature, _SIGNED_PREFIX + encoded.encode())
            except InvalidSignature:
                continue
            subject = json.loads(_b64decode(encoded)).get("sub")
            return subject if isinstance(subject, str) else None
    except (binascii.Error, ValueError, AttributeError, RecursionError):
        return None
    return None
