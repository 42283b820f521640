"""The bounds of a registration token, the same in both roles (a region's tokens
at the region, the router's where it places an agent): a number of uses spent
atomically, an expiry, and a rate per token counted in Redis.

One token once registered 300 agents in 17 s (issue 17, item 6); these bound
what a leaked or over-shared token can do."""
from __future__ import annotations

import argparse
import re
import time
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from project.accounts.models import HashedToken
from project.exceptions import Refused

WINDOW_SECONDS = 60  # REGISTRATION_RATE_PER_TOKEN is per minute
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DURATION = timedelta(days=3650)


class TokenExpired(Refused):
    status, code = 401, "token_expired"


class TokenUsedUp(Refused):
    status, code = 401, "token_used_up"


class TokenRevoked(Refused):
    status, code = 401, "authentication_failed"


class RegistrationRateLimited(Refused):
    status, code = 429, "throttled"

    def __init__(self, detail: str, *, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


def duration_parse(text: str) -> timedelta:
    """"30m", "12h", "7d" (or "90s") → timedelta; ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 12h or 7d (a positive whole number and one of "
                         "s, m, h, d)")
    duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days; leave the expiry out for never")
    return duration


def max_uses_argument(text: str) -> int:
    """argparse type of --max-uses: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of uses (a whole number of at least 1; "
                                         "leave --max-uses out for unlimited)")
    return value


def expires_in_argument(text: str) -> timedelta:
    """argparse type of --expires-in."""
    try:
        return duration_parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bounds_arguments(parser) -> None:
    """--max-uses and --expires-in, for the commands that make registration tokens."""
    parser.add_argument("--max-uses", type=max_uses_argument, default=None, metavar="N",
                        help="registrations the token may make (an agent re-registering with its own "
                             "credential at a region spends none); default: unlimited")
    parser.add_argument("--expires-in", type=expires_in_argument, default=None, metavar="DURATION",
                        help="refused after this long: a whole number and s, m, h or d (30m, 12h, 7d); "
                             "default: never")


def bounds_describe(*, max_uses: int | None, expires_at: datetime | None) -> str:
    """For the audit trail: "max uses: 5; expires at: …" or "unlimited uses; never expires"."""
    uses = f"max uses: {max_uses}" if max_uses is not None else "unlimited uses"
    expiry = f"expires at: {_when(expires_at)}" if expires_at is not None else "never expires"
    return f"{uses}; {expiry}"


def uses_describe(token: HashedToken) -> str:
    """For the admin: "3 of 10", or "3 (unlimited)"."""
    return f"{token.uses} of {token.max_uses}" if token.max_uses is not None else f"{token.uses} (unlimited)"


def _when(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def token_refusal(token: HashedToken, *, now: datetime | None = None) -> Refused | None:
    """Why this (unrevoked) token may register nobody new, or None."""
    now = now or timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return TokenExpired(f"registration token expired at {_when(token.expires_at)}")
    if token.max_uses is not None and token.uses >= token.max_uses:
        return TokenUsedUp(f"registration token used up ({token.uses} of {token.max_uses})")
    return None


def token_expiry_check(token: HashedToken) -> None:
    """At authentication: an expired token is refused whatever it is used for."""
    refusal = token_refusal(token)
    if isinstance(refusal, TokenExpired):
        raise refusal


def token_use(token: HashedToken) -> None:
    """Spend one use of `token`, or raise why it cannot be spent.

    One conditional UPDATE (uses = uses + 1 WHERE uses < max_uses): two
    registrations racing for the last use both reach it, the second waits on the
    first's row lock and, once that commits, finds the condition false (READ
    COMMITTED re-reads the row), so exactly one wins. Inside the caller's
    transaction, a registration refused later gives its use back by rolling back."""
    now = timezone.now()
    model = type(token)
    spent = model.objects.filter(
        Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")),
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        pk=token.pk, revoked_at__isnull=True,
    ).update(uses=F("uses") + 1, last_used_at=now)
    if spent:
        return
    current = model.objects.filter(pk=token.pk).first()
    if current is None or current.revoked_at is not None:
        raise TokenRevoked("registration token revoked")  # between authentication and now
    raise token_refusal(current, now=now) or TokenUsedUp("registration token could not be used")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                                socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT, decode_responses=True)


def rate_check(*, key: str, per_minute: int) -> None:
    """At most `per_minute` registrations per token per minute, in a fixed window
    counted in Redis under `key` (as regions' rate_check counts submissions).
    0 means no limit. No Redis means no limit: refusing every agent because the
    counter is away would be worse than admitting a burst."""
    if per_minute <= 0:
        return
    slot = int(time.time() // WINDOW_SECONDS)
    name = f"{key}:{slot}"
    try:
        pipe = _client().pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS + 1)
        used = pipe.execute()[0]
    except redis.RedisError:
        return
    if used > per_minute:
        raise RegistrationRateLimited(
            f"registration token rate limit reached: at most {per_minute} registrations per minute "
            "(REGISTRATION_RATE_PER_TOKEN); retry later",
            retry_after=max(1, int(WINDOW_SECONDS - time.time() % WINDOW_SECONDS)))
