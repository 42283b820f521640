from django.contrib.auth import get_user_model

from project.accounts.models import ApiKey
from project.accounts.tokens import token_generate, token_hash


def api_key_create(*, username: str, name: str = "default", staff: bool = False,
                   raw: str | None = None) -> tuple[ApiKey, str]:
    """Create (or reuse) the user and issue a new key; the raw key is returned once.

    `raw` imports a key issued elsewhere (the same caller known to the router and
    to regions, so the router can pass a submission through)."""
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": staff})
    raw = raw or token_generate("mk")
    if not raw.startswith("mk_"):
        raise ValueError("API keys start with mk_")
    key = ApiKey.objects.create(user=user, name=name, prefix=raw[:10], key_hash=token_hash(raw))
    return key, raw
