"""Who is calling: one DRF authentication class per kind of bearer credential.

Each kind (an API key here; a registration token, an agent's token and a region
token in the apps that issue them) is a BearerAuthentication: it reads
`Authorization: Bearer …`, checks it, and answers (caller, credential) or
refuses (401 with a challenge, 403, 404). Views name the class; none checks a
credential in its body. `scheme` names the credential in the OpenAPI schema
(project/schema.py).
"""
import hmac
import time

from django.conf import settings
from rest_framework import authentication, exceptions

from project.accounts.models import ApiKey
from project.accounts.tokens import BEARER_CHALLENGE, bearer_from_header, token_hash

# The kinds of bearer credential, as the OpenAPI schema names them (`scheme`).
API_KEY = "apiKey"
AGENT_TOKEN = "agentToken"
REGISTRATION_TOKEN = "registrationToken"
REGION_TOKEN = "regionToken"
METRICS_TOKEN = "metricsToken"
ROUTER_ASSERTION = "routerAssertion"
ROUTER_LOCATE = "routerLocate"

_verified: dict[str, tuple[float, object, ApiKey]] = {}
_MAX_CACHED = 10_000


class Principal:
    """A caller that is not a user (an agent joining, a region): authenticated
    for DRF's IsAuthenticated, never staff."""

    is_authenticated = True
    is_staff = False


class BearerAuthentication(authentication.BaseAuthentication):
    scheme = ""  # the OpenAPI security scheme this credential is

    def authenticate(self, request):
        return self.verify(bearer_from_header(request.META.get("HTTP_AUTHORIZATION")), request)

    def verify(self, raw: str | None, request):
        raise NotImplementedError

    def authenticate_header(self, request) -> str:
        return BEARER_CHALLENGE


class ApiKeyAuthentication(BearerAuthentication):
    """`Authorization: Bearer mk_…` → the key's user (anything else: not this
    kind, so the session may authenticate instead).

    A verified key is remembered by this process for API_KEY_CACHE_SECONDS, so
    hot read paths (route queries) cost no query; revoking a key takes effect
    within that time."""

    scheme = API_KEY

    def verify(self, raw, request):
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


class MetricsTokenAuthentication(BearerAuthentication):
    """METRICS_TOKEN, a Prometheus scraper's (anything else: not this kind, so an
    API key with the fleet:read scope may authenticate instead)."""

    scheme = METRICS_TOKEN

    def verify(self, raw, request):
        if raw and settings.METRICS_TOKEN and hmac.compare_digest(raw, settings.METRICS_TOKEN):
            return Principal(), None
        return None
