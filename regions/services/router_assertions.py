"""What the router asserts to this region: a forwarded caller, an operator's
question of where a task is (the router's task finder), or an agent it
placed here (project/accounts/assertions.py says how they are made). The router
never relays a caller's key; a region believes only what is signed by a router
key it is configured with (ROUTER_PUBLIC_KEYS), for this region, fresh, and
seen once."""
from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.contrib.auth import get_user_model

from project.accounts.assertions import (
    FORWARD,
    LOCATE,
    REGISTER,
    Assertion,
    AssertionInvalid,
    assertion_verify,
    body_digest,
    router_public_keys,
)
from project.exceptions import ServiceUnavailable
from regions.services import liveness
from regions.services.agents.registry import AuthError, ForbiddenError

logger = logging.getLogger("regions.services.router_assertions")


def _verified(raw: str, *, purpose: str) -> Assertion:
    try:
        return assertion_verify(raw, keys=router_public_keys(), audience=settings.REGION_ID, purpose=purpose,
                                skew=settings.ROUTER_ASSERTION_SKEW_SECONDS)
    except AssertionInvalid as exc:
        raise AuthError(str(exc)) from exc


def assertion_jti_claim(*, jti: str, expires_at: float, now: float) -> bool:
    """Remember `jti` until the assertion can no longer be accepted anyway;
    False if it was already seen. A Redis that cannot answer is a 503: an
    assertion accepted without this check could be a replay."""
    ttl = max(1, int(expires_at - now + settings.ROUTER_ASSERTION_SKEW_SECONDS) + 1)
    try:
        return bool(liveness.client().set(liveness.key(f"jti:{jti}"), 1, nx=True, ex=ttl))
    except liveness.RedisError as exc:
        raise ServiceUnavailable("liveness store (Redis) unavailable to check a router assertion's "
                                 "single use; retry shortly") from exc


def forwarded_caller(*, raw: str, body: bytes, method: str, path: str, now: float):
    """(user, assertion) for a request the router forwarded: signed by the
    router, for this region, not expired, for exactly this body, method and
    path, and never seen before. The caller is this region's user of the same
    username (made on first sight), so a key it holds here sees the same tasks."""
    assertion = _verified(raw, purpose=FORWARD)
    if not hmac.compare_digest(assertion.body, body_digest(body)):
        raise AuthError("Router assertion was made for another request body.")
    if assertion.method != method.upper() or assertion.path != path:
        raise AuthError("Router assertion was made for another request.")
    if not assertion_jti_claim(jti=assertion.jti, expires_at=assertion.expires_at, now=now):
        logger.warning("router assertion %s for %s replayed", assertion.jti, assertion.subject)
        raise AuthError("Router assertion already used.")
    user, _ = get_user_model().objects.get_or_create(username=assertion.subject)
    if not user.is_active:
        raise AuthError(f"User {assertion.subject} is disabled in this region.")
    return user, assertion


def registration_grant_check(*, raw: str, agent_id: object) -> Assertion:
    """A registration grant the router gave an agent it placed here: valid for
    that agent id only, in this region only, until it expires. The agent may
    retry its registration with it (503, 409), so it is not single-use; what a
    registration does is bounded by the agent-id rules (a live agent's id needs
    its current token)."""
    assertion = _verified(raw, purpose=REGISTER)
    if not isinstance(agent_id, str) or assertion.subject != agent_id:
        raise AuthError("This registration grant is for another agent.")
    return assertion


def locate_grant_check(*, raw: str, task_id: str, now: float) -> Assertion:
    """The router's question "do you hold task `task_id`?", asked for an
    operator of its console: signed by the router, for this region, fresh,
    seen once and made for exactly this task id. It is no caller: it reads no
    task (a forward assertion and an API key are not this), so nothing but the
    locate endpoint takes it."""
    assertion = _verified(raw, purpose=LOCATE)
    if assertion.claims.get("task") != task_id:
        raise ForbiddenError("Router locate assertion was made for another task.")
    if not assertion_jti_claim(jti=assertion.jti, expires_at=assertion.expires_at, now=now):
        logger.warning("router locate assertion %s for %s replayed", assertion.jti, assertion.subject)
        raise AuthError("Router assertion already used.")
    return assertion
