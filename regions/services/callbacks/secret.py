"""A caller's signing secret for its completion callbacks: made or replaced on
request and shown once. The region keeps it as it is (it must sign with it) in
its own database only."""
from __future__ import annotations

import secrets

from django.utils import timezone

from regions.models import CallbackSecret

PREFIX = "whsec_"


def callback_secret_rotate(*, user) -> CallbackSecret:
    """A new secret for the caller, replacing any previous one at once: a
    delivery signed after this uses the new one."""
    secret, _ = CallbackSecret.objects.update_or_create(
        user=user, defaults={"secret": PREFIX + secrets.token_urlsafe(32), "created_at": timezone.now()})
    return secret


def callback_secret_of(user_id) -> str | None:
    return CallbackSecret.objects.filter(user_id=user_id).values_list("secret", flat=True).first()
