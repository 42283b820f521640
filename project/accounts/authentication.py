from rest_framework import authentication, exceptions

from project.accounts.models import ApiKey
from project.accounts.tokens import bearer_from_header, token_hash


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mk_…` → the key's user."""

    def authenticate(self, request):
        raw = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None or not raw.startswith("mk_"):
            return None
        key = (
            ApiKey.objects.select_related("user")
            .filter(key_hash=token_hash(raw), revoked_at__isnull=True)
            .first()
        )
        if key is None or not key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
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
