"""A region's registration tokens are bounded (issue 17, item 6): a number of uses
spent atomically, an expiry, and a rate per token; the refusals say which bound
it was. Agents re-registering with their own credential spend no use."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import redis
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from project.accounts import registration
from project.accounts.assertions import REGISTER, assertion_sign, private_key_load
from project.accounts.models import AuditEvent
from regions.models import RegistrationToken
from regions.services.agents.registry import agent_register, registration_token_create
from tests.races import race

pytestmark = pytest.mark.django_db


def register(raw: str, agent_id: str, current_token: str | None = None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    headers = {"HTTP_X_AGENT_TOKEN": current_token} if current_token else {}
    return client.post("/api/v1/agents/register", {"agent_id": agent_id, "capabilities": ["echo"]},
                       format="json", **headers)


def test_a_token_with_max_uses_registers_that_many_agents_then_is_refused_as_used_up(redis_clean):
    token, raw = registration_token_create(name="rack", max_uses=2)
    assert register(raw, "a1").status_code == 201
    assert register(raw, "a2").status_code == 201
    r = register(raw, "a3")
    assert r.status_code == 401, r.content
    assert r.json() == {"error": "token_used_up", "detail": "registration token used up (2 of 2)"}
    assert r["WWW-Authenticate"].startswith("Bearer")
    token.refresh_from_db()
    assert token.uses == 2 and token.last_used_at is not None


def test_re_registering_with_the_agents_own_credential_spends_no_use(redis_clean):
    token, raw = registration_token_create(name="rack", max_uses=1)
    first = register(raw, "a1")
    assert first.status_code == 201
    # A restart that kept its credential: still admitted once the token is used up, spending nothing.
    again = register(raw, "a1", current_token=first.json()["token"])
    assert again.status_code == 201, again.content
    assert register(raw, "a1", current_token=again.json()["token"]).status_code == 201
    token.refresh_from_db()
    assert token.uses == 1
    assert register(raw, "a2").json()["error"] == "token_used_up"  # a new agent is not


def test_a_refused_registration_spends_no_use(redis_clean):
    token, raw = registration_token_create(name="rack", max_uses=5)
    first = register(raw, "a1")
    assert register(raw, "a1").status_code == 409  # online, and no credential shown
    token.refresh_from_db()
    assert first.status_code == 201 and token.uses == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_registrations_for_the_last_use_exactly_one_wins(redis_clean):
    token, _ = registration_token_create(name="last", max_uses=3)
    RegistrationToken.objects.filter(pk=token.pk).update(uses=2)
    token.refresh_from_db()
    contenders = 6
    won, refused = race(contenders, lambda i: agent_register(agent_id=f"race-{i}", capabilities=["echo"], registration_token=token))
    assert len(won) == 1 and len(refused) == contenders - 1
    assert {exc.code for exc in refused} == {"token_used_up"}
    assert RegistrationToken.objects.get(pk=token.pk).uses == 3


def test_an_expired_token_is_refused_naming_when_it_expired(redis_clean):
    token, raw = registration_token_create(name="old", expires_at=timezone.now() + timedelta(hours=1))
    assert register(raw, "a1").status_code == 201
    past = timezone.now() - timedelta(minutes=1)
    RegistrationToken.objects.filter(pk=token.pk).update(expires_at=past)
    r = register(raw, "a2")
    assert r.status_code == 401 and r.json()["error"] == "token_expired"
    assert r.json()["detail"] == f"registration token expired at {past.isoformat(timespec='seconds')}"


def test_registrations_over_the_rate_per_token_get_429_with_retry_after(redis_clean, settings):
    settings.REGISTRATION_RATE_PER_TOKEN = 2
    _, raw = registration_token_create(name="burst")
    _, other = registration_token_create(name="other")
    assert register(raw, "a1").status_code == 201
    assert register(raw, "a2").status_code == 201
    r = register(raw, "a3")
    assert r.status_code == 429, r.content
    assert r.json()["error"] == "throttled" and "2 registrations per minute" in r.json()["detail"]
    assert 1 <= int(r["Retry-After"]) <= 60
    assert register(other, "a4").status_code == 201  # per token


def test_without_redis_the_rate_is_not_enforced(monkeypatch, settings):
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, decode_responses=True)
    monkeypatch.setattr(registration, "_client", lambda: dead)
    for _ in range(3):
        registration.rate_check(key="m:test:regrate:1", per_minute=1)  # no counter, no limit


def test_the_bootstrap_token_from_settings_stays_unbounded(redis_clean, settings):
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    settings.REGISTRATION_RATE_PER_TOKEN = 1
    assert [register("reg-secret", f"a{i}").status_code for i in range(3)] == [201, 201, 201]


def test_a_router_grant_is_taken_whatever_the_regions_tokens_have_left(redis_clean, settings):
    """The router's token is bounded where the router places the agent; its grant is
    one agent's, already bounded, and spends nothing of the region's tokens."""
    settings.AGENT_REGISTRATION_TOKEN = ""
    settings.REGISTRATION_RATE_PER_TOKEN = 1
    token, raw = registration_token_create(name="same as the router's", max_uses=1)
    assert register(raw, "a0").status_code == 201
    key = private_key_load(settings.ROUTER_SIGNING_KEY)
    for i in (1, 2):
        grant = assertion_sign(key=key, audience=settings.REGION_ID, subject=f"placed-{i}", purpose=REGISTER,
                               ttl=300.0)
        assert register(grant, f"placed-{i}").status_code == 201
    token.refresh_from_db()
    assert token.uses == 1


# --- the command ----------------------------------------------------------------------

def test_create_registration_token_takes_max_uses_and_expires_in_and_audits_them(capsys):
    before = timezone.now()
    call_command("create_registration_token", "--name", "rack-9", "--max-uses", "300", "--expires-in", "12h")
    raw = capsys.readouterr().out.strip()
    token = RegistrationToken.objects.get(name="rack-9")
    assert token.prefix == raw[:10] and token.max_uses == 300 and token.uses == 0
    assert before + timedelta(hours=12) <= token.expires_at <= timezone.now() + timedelta(hours=12)
    event = AuditEvent.objects.get(action="token.create")
    assert "max uses: 300" in event.detail and f"expires at: {token.expires_at.isoformat(timespec='seconds')}" \
        in event.detail


def test_create_registration_token_without_bounds_is_unlimited(capsys):
    call_command("create_registration_token", "--name", "open")
    token = RegistrationToken.objects.get(name="open")
    assert token.max_uses is None and token.expires_at is None
    assert "unlimited uses; never expires" in AuditEvent.objects.get(action="token.create").detail


@pytest.mark.parametrize("args, problem", [
    (["--expires-in", "7"], "--expires-in"), (["--expires-in", "0d"], "--expires-in"),
    (["--expires-in", "-1h"], "--expires-in"), (["--expires-in", "2w"], "--expires-in"),
    (["--expires-in", "soon"], "--expires-in"), (["--expires-in", "9999999d"], "--expires-in"), (["--max-uses", "0"], "--max-uses"),
    (["--max-uses", "-3"], "--max-uses"), (["--max-uses", "many"], "--max-uses"),
])
def test_create_registration_token_refuses_bad_bounds_clearly(args, problem):
    with pytest.raises(CommandError, match=re.escape(problem)):
        call_command("create_registration_token", "--name", "bad", *args)
    assert not RegistrationToken.objects.filter(name="bad").exists()


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("12h", 43200), ("7d", 604800), ("90s", 90)])
def test_durations_read_as_the_help_says(text, seconds):
    assert registration.duration_parse(text) == timedelta(seconds=seconds)


# --- the admin ------------------------------------------------------------------------

@pytest.fixture
def staff(client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


def test_the_admin_shows_uses_of_max_and_expiry_and_sets_them_on_add(staff):
    expires = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    r = staff.post(reverse("admin:regions_registrationtoken_add"), {
        "name": "rack-7", "max_uses": "10", "expires_at_0": expires.strftime("%Y-%m-%d"),
        "expires_at_1": expires.strftime("%H:%M:%S")})
    assert r.status_code == 200, r.content.decode()[:2000]
    token = RegistrationToken.objects.get(name="rack-7")
    assert token.max_uses == 10 and token.expires_at == expires
    RegistrationToken.objects.filter(pk=token.pk).update(uses=3)
    listing = staff.get(reverse("admin:regions_registrationtoken_changelist")).content.decode()
    assert "3 of 10" in listing
    change = staff.get(reverse("admin:regions_registrationtoken_change", args=[token.pk])).content.decode()
    assert "3 of 10" in change and 'name="uses"' not in change  # read-only


def test_changing_a_token_in_the_admin_keeps_the_uses_counted_meanwhile(staff):
    token, _ = registration_token_create(name="rack-8", max_uses=5)
    page = staff.get(reverse("admin:regions_registrationtoken_change", args=[token.pk]))
    assert page.status_code == 200
    RegistrationToken.objects.filter(pk=token.pk).update(uses=4)  # registrations while the form was open
    r = staff.post(reverse("admin:regions_registrationtoken_change", args=[token.pk]),
                   {"name": "rack-8", "max_uses": "50", "expires_at_0": "", "expires_at_1": "",
                    "revoked_at_0": "", "revoked_at_1": ""})
    assert r.status_code == 302, r.content.decode()[:3000]
    token.refresh_from_db()
    assert token.max_uses == 50 and token.uses == 4
    assert "max uses: 50" in AuditEvent.objects.get(action="token.update").detail
