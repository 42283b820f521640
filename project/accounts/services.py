from django.contrib.auth import get_user_model

from project.accounts.models import CALLER_SCOPES, SCOPES, ApiKey
from project.accounts.tokens import token_generate, token_hash


def api_key_create(*, username: str, name: str = "default", staff: bool = False,
                   scopes: list[str] | None = None, raw: str | None = None) -> tuple[ApiKey, str]:
    """Create (or reuse) the user and issue a new key; the raw key is returned once.

    scopes: what the key may do (project/accounts/scopes.py); the caller's
    (tasks:submit, tasks:read) unless given; every scope for an operator's key
    (staff, whose user may also be given a password for the admin).
    `raw` imports a key issued elsewhere (the same caller known to the router and
    to regions, so the router can pass a submission through)."""
    scopes = list(SCOPES) if staff and scopes is None else list(dict.fromkeys(scopes or CALLER_SCOPES))
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}")
    raw = raw or token_generate("mk")
    if not raw.startswith("mk_"):
        raise ValueError("API keys start with mk_")
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": staff})
    key = ApiKey.objects.create(user=user, name=name, prefix=raw[:10], key_hash=token_hash(raw), scopes=scopes)
    return key, raw
