"""Bearer credentials: random, shown once, stored only as a SHA-256 digest.

The tokens carry 256 bits of randomness, so a fast digest is enough (a slow
password hash would only tax the hot path); lookups go by digest.
"""
import hashlib
import secrets

BEARER_CHALLENGE = 'Bearer realm="meridian"'  # WWW-Authenticate of every 401


def token_generate(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def bearer_from_header(header: str | None) -> str | None:
    """`Authorization: Bearer <token>` (or `Token <token>`) → token, else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        return None
    return value.strip()
