"""A caller's signing secret for its completion callbacks: made or replaced on
request and shown once. The region keeps it as it is (it must sign with it) in
its own database only."""
from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from regions.models import CallbackSecret

PREFIX = "whsec_"


def callback_secret_rotate(*, user) -> CallbackSecret:
    """A new secret for the caller. The one it replaces keeps signing beside it
    for CALLBACK_SECRET_GRACE_HOURS (each delivery carries a v1 for both), so a
    receiver can switch without refusing a delivery."""
    now = timezone.now()
    with transaction.atomic():
        current = CallbackSecret.objects.select_for_update().filter(user=user).first()
        secret, _ = CallbackSecret.objects.update_or_create(user=user, defaults={
            "secret": PREFIX + secrets.token_urlsafe(32), "created_at": now,
            "previous": current.secret if current else "",
            "previous_until": now + timedelta(hours=settings.CALLBACK_SECRET_GRACE_HOURS) if current else None})
    return secret


def callback_secrets_of(user_id) -> tuple[str, str] | None:
    """(the secret, the previous one while its grace lasts, else ""), or None."""
    row = CallbackSecret.objects.filter(user_id=user_id).values_list("secret", "previous", "previous_until").first()
    if row is None:
        return None
    secret, previous, until = row
    return secret, previous if until is not None and until > timezone.now() else ""
