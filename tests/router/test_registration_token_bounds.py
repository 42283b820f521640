"""The router's registration tokens are bounded where the router places an agent
(POST /register_agent): uses spent atomically, an expiry, a rate per token. The
region then takes the router's grant, one use already bounded here."""
from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from project.accounts.models import AuditEvent
from router.models import RegistrationToken
from router.selectors import regions_directory_reset
from router.services.placement import agent_place
from router.services.regions import region_authenticate, region_create, registration_token_create
from router.services.summaries import summary_ingest
from tests.races import race

pytestmark = pytest.mark.django_db
router_urls = pytest.mark.urls("tests.router_urls")  # the API tests; the admin is in the project's


def region_ready(region_id: str = "eu-west-3") -> None:
    _, token = region_create(region_id=region_id, orchestrator_url=f"http://{region_id}.example:8000")
    summary_ingest(region=region_authenticate(token), summary={
        "region_id": region_id, "orchestrator_url": f"http://{region_id}.example:8000", "available_agents": 5,
        "agent_capabilities_summary": {"echo": {"count": 5, "idle": 5}}, "last_updated": time.time()})
    regions_directory_reset()  # this process's cached directory


def register(raw: str, agent_id: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client.post("/register_agent", {"agent_id": agent_id, "capabilities": ["echo"]}, format="json")


@router_urls
def test_a_router_token_places_max_uses_agents_then_is_refused_as_used_up(redis_clean):
    region_ready()
    token, raw = registration_token_create(name="fleet", max_uses=2)
    assert register(raw, "a1").status_code == 200
    assert register(raw, "a2").status_code == 200
    r = register(raw, "a3")
    assert r.status_code == 401, r.content
    assert r.json() == {"error": "token_used_up", "detail": "registration token used up (2 of 2)"}
    token.refresh_from_db()
    assert token.uses == 2 and token.last_used_at is not None


@router_urls
def test_a_placement_refused_for_want_of_a_region_spends_no_use(redis_clean):
    region_ready()
    token, raw = registration_token_create(name="fleet", regions=["us-east-1"], max_uses=1)
    assert register(raw, "a1").status_code == 503  # no healthy region it may use
    token.refresh_from_db()
    assert token.uses == 0
    region_ready("us-east-1")
    assert register(raw, "a1").status_code == 200
    token.refresh_from_db()
    assert token.uses == 1


@pytest.mark.postgresql  # concurrent writers: SQLite locks the table
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_placements_for_the_last_use_exactly_one_wins(redis_clean):
    region_ready()
    token, _ = registration_token_create(name="last", max_uses=1)
    contenders = 6
    won, refused = race(contenders, lambda i: agent_place(token=token, agent_id=f"race-{i}", capabilities=["echo"]))
    assert len(won) == 1 and len(refused) == contenders - 1
    assert {exc.code for exc in refused} == {"token_used_up"}
    assert RegistrationToken.objects.get(pk=token.pk).uses == 1


@router_urls
def test_an_expired_router_token_is_refused_naming_when_it_expired(redis_clean):
    region_ready()
    past = timezone.now() - timedelta(seconds=5)
    _, raw = registration_token_create(name="old", expires_at=past)
    r = register(raw, "a1")
    assert r.status_code == 401 and r.json()["error"] == "token_expired"
    assert r.json()["detail"] == f"registration token expired at {past.isoformat(timespec='seconds')}"
    assert r["WWW-Authenticate"].startswith("Bearer")


@router_urls
def test_placements_over_the_rate_per_token_get_429_with_retry_after(redis_clean, settings):
    region_ready()
    settings.REGISTRATION_RATE_PER_TOKEN = 3
    token, raw = registration_token_create(name="burst")
    assert [register(raw, f"a{i}").status_code for i in range(3)] == [200, 200, 200]
    r = register(raw, "a4")
    assert r.status_code == 429, r.content
    assert r.json()["error"] == "throttled" and "3 registrations per minute" in r.json()["detail"]
    assert 1 <= int(r["Retry-After"]) <= 60
    token.refresh_from_db()
    assert token.uses == 3  # a throttled placement spends no use


def test_router_add_registration_token_takes_max_uses_and_expires_in(capsys):
    before = timezone.now()
    call_command("router_add_registration_token", "--name", "eu", "--regions", "eu-west-3", "--max-uses", "40",
                 "--expires-in", "30m")
    raw = capsys.readouterr().out.strip()
    token = RegistrationToken.objects.get(name="eu")
    assert token.prefix == raw[:10] and token.max_uses == 40 and token.regions == ["eu-west-3"]
    assert before + timedelta(minutes=30) <= token.expires_at <= timezone.now() + timedelta(minutes=30)
    detail = AuditEvent.objects.get(action="token.create").detail
    assert "regions: eu-west-3" in detail and "max uses: 40" in detail and "expires at: " in detail


@pytest.mark.parametrize("args, problem", [
    (["--expires-in", "12"], "--expires-in"), (["--expires-in", "0m"], "--expires-in"),
    (["--max-uses", "0"], "--max-uses"), (["--max-uses", "x"], "--max-uses"),
])
def test_router_add_registration_token_refuses_bad_bounds_clearly(args, problem):
    with pytest.raises(CommandError, match=re.escape(problem)):
        call_command("router_add_registration_token", "--name", "bad", *args)
    assert not RegistrationToken.objects.filter(name="bad").exists()


def test_the_router_admin_shows_uses_of_max_and_expiry_and_sets_them_on_add(admin_client):
    expires = (timezone.now() + timedelta(days=7)).replace(microsecond=0)
    r = admin_client.post("/admin/router/registrationtoken/add/", {
        "name": "fleet-eu", "regions": "eu-west-3", "max_uses": "25",
        "expires_at_0": expires.strftime("%Y-%m-%d"), "expires_at_1": expires.strftime("%H:%M:%S")})
    assert r.status_code == 200, r.content.decode()[:2000]
    token = RegistrationToken.objects.get(name="fleet-eu")
    assert token.max_uses == 25 and token.expires_at == expires
    assert "max uses: 25" in AuditEvent.objects.get(action="token.create").detail
    RegistrationToken.objects.filter(pk=token.pk).update(uses=7)
    listing = admin_client.get("/admin/router/registrationtoken/").content.decode()
    assert "7 of 25" in listing
    change = admin_client.get(f"/admin/router/registrationtoken/{token.pk}/change/").content.decode()
    assert "7 of 25" in change and 'name="uses"' not in change
    RegistrationToken.objects.filter(pk=token.pk).update(uses=9)  # placements while the form was open
    r = admin_client.post(f"/admin/router/registrationtoken/{token.pk}/change/", {
        "name": "fleet-eu", "regions": "eu-west-3", "max_uses": "", "expires_at_0": "", "expires_at_1": ""})
    assert r.status_code == 302, r.content.decode()[:3000]
    token.refresh_from_db()
    assert token.max_uses is None and token.expires_at is None and token.uses == 9
