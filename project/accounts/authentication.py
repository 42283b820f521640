import time

from django.conf import settings
from rest_framework import authentication, exceptions

from project.accounts.models import ApiKey
from project.accounts.tokens import bearer_from_header, token_hash

_verified: dict[str, tuple[float, object, ApiKey]] = {}
_MAX_CACHED = 10_000


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mk_…` → the key's user.

    A verified key is remembered by this process for API_KEY_CACHE_SECONDS, so
    hot read paths (route queries) cost no query; revoking a key takes effect
    within that time."""

    def authenticate(self, request):
        raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None or not raw.startswith("mk_"):
            return None
        digest = token_hash(raw)
        hit = _verified.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]
        key = ApiKey.objects.select_related("user").filter(key_hash=digest, revoked_at__isnull=True).first()
        if key is None or not key.user.is_active:
            _verified.pop(digest, None)
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if len(_verified) >= _MAX_CACHED:
            _verified.clear()
        _verified[digest] = (time.monotonic() + settings.API_KEY_CACHE_SECONDS, key.user, key)
        return key.user, key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="meridian"'


class BearerChallenge(authentication.BaseAuthentication):
    """For views that check their own bearer credential (registration and agent
    tokens): authenticates nobody, but makes a refusal a 401 with a challenge."""

    def authenticate(self, request):
        return None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="meridian"'
