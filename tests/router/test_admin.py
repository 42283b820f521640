"""The router's admin, in-process: the region directory as an operator reads it,
tokens made through the services and shown once, the drift page."""
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from project.accounts.tokens import token_hash
from router.services.refusals import Unauthenticated
from router.services.regions import region_authenticate, region_create, registration_token_check
from router.services.summaries import summary_ingest
from router.models import Region, RegistrationToken

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/router/region/"


def summary(region_id, *, caps=None, config="", at=None):
    return {"region_id": region_id, "orchestrator_url": f"http://{region_id}.example:8000", "available_agents": 7,
            "agent_capabilities_summary": caps or {"echo": {"count": 5, "idle": 3}, "ingest": {"count": 2, "idle": 0}},
            "last_updated": at or time.time(), "config_version": config}


def push(token, body):
    """The summary path the /update_regional_status view takes."""
    return summary_ingest(region=region_authenticate(token), summary=body)


@pytest.fixture
def fleet():
    """eu-west-3 fresh, us-east-1 stale (its summary 10 minutes old with a 60 s interval)."""
    tokens = {}
    for region_id, labels in [("eu-west-3", ["eu", "gdpr"]), ("us-east-1", ["us"])]:
        _, tokens[region_id] = region_create(region_id=region_id, labels=labels,
                                             orchestrator_url=f"http://{region_id}.example:8000")
        push(tokens[region_id], summary(region_id, config="a" * 40))
    Region.objects.filter(region_id="us-east-1").update(received_at=timezone.now() - timedelta(minutes=10))
    return tokens


def token_on_page(html: str, prefix: str) -> str:
    found = re.findall(rf"{prefix}_[A-Za-z0-9_-]{{43}}", html)
    assert len(found) == 1, html
    return found[0]


def test_the_regions_changelist_shows_freshness_badges_label_chips_and_capacity(admin_client, fleet):
    html = admin_client.get(CHANGELIST).content.decode()
    assert html.count(">fresh</span>") == 1 and html.count(">stale</span>") == 1
    assert re.search(r"\d+ s ago", html) and "10 min ago" in html
    assert 'class="mrd-chip"' in html and ">gdpr</span>" in html
    assert "echo 3/5 · ingest 0/2" in re.sub(r"<[^>]+>", "", html)
    assert 'href="http://eu-west-3.example:8000/admin/" target="_blank" rel="noopener noreferrer"' in html
    assert "Config drift" in html


def test_the_region_change_page_shows_the_capacity_table_and_times_to_the_second(admin_client, fleet):
    region = Region.objects.get(region_id="eu-west-3")
    html = admin_client.get(f"{CHANGELIST}{region.pk}/change/").content.decode()
    assert '<table class="mrd-capacity">' in html and "<td>echo</td><td>3/5</td>" in html
    assert timezone.localtime(region.received_at).strftime("%H:%M:%S") in html
    assert region.token_hash not in html and f"sha256:{region.token_hash[:8]}…" in html


def test_posting_the_region_change_form_leaves_the_summary_fields_alone(admin_client, fleet):
    region = Region.objects.get(region_id="eu-west-3")
    before = Region.objects.filter(pk=region.pk).values().get()
    r = admin_client.post(f"{CHANGELIST}{region.pk}/change/", {
        "orchestrator_url": "http://eu-west-3.example:8000", "labels": "eu", "enabled": "on", "weight": "1.0",
        "available_agents": "999", "capabilities": '{"x": {"count": 9, "idle": 9}}', "config_version": "forged",
        "token_hash": "0" * 64, "last_updated": "2001-01-01 00:00:00", "received_at": "2001-01-01 00:00:00",
        "region_id": "moved", "summary_interval": "5",
        "address_rules-TOTAL_FORMS": "0", "address_rules-INITIAL_FORMS": "0",
    })
    assert r.status_code == 302, r.content.decode()[:3000]
    after = Region.objects.filter(pk=region.pk).values().get()
    assert after.pop("labels") == ["eu"]
    before.pop("labels")
    assert after == before


def test_a_region_added_in_the_admin_shows_its_token_once_and_stores_only_its_digest(admin_client):
    r = admin_client.post(f"{CHANGELIST}add/", {
        "region_id": "ap-south-1", "orchestrator_url": "http://ap-south-1:8000", "labels": "apac, in",
        "summary_interval": "30", "address_rules-TOTAL_FORMS": "1", "address_rules-INITIAL_FORMS": "0",
        "address_rules-0-cidr": "10.9.0.0/16", "address_rules-0-priority": "100",
    })
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    token = token_on_page(r.content.decode(), "mrg")
    region = Region.objects.get(region_id="ap-south-1")
    assert region.token_hash == token_hash(token) and region.labels == ["apac", "in"]
    assert region.summary_interval == 30 and list(region.address_rules.values_list("cidr", flat=True)) == ["10.9.0.0/16"]
    assert token not in admin_client.get(f"{CHANGELIST}{region.pk}/change/").content.decode()
    body = summary("ap-south-1")
    body["orchestrator_url"] = "http://ap-south-1:8000"
    assert push(token, body).available_agents == 7


def test_the_region_add_form_refuses_a_bad_label_without_creating_anything(admin_client):
    r = admin_client.post(f"{CHANGELIST}add/", {
        "region_id": "ap-south-1", "orchestrator_url": "http://ap-south-1:8000", "labels": "Bad Label",
        "summary_interval": "30", "address_rules-TOTAL_FORMS": "0", "address_rules-INITIAL_FORMS": "0",
    })
    assert r.status_code == 200 and "invalid label" in r.content.decode()
    assert not Region.objects.filter(region_id="ap-south-1").exists()


def test_rotating_a_region_token_asks_first_then_shows_the_new_one_and_the_old_one_stops_working(admin_client, fleet):
    region = Region.objects.get(region_id="eu-west-3")
    form = {"action": "rotate_token", "_selected_action": [str(region.pk)]}
    confirm = admin_client.post(CHANGELIST, form)
    assert confirm.status_code == 200 and "Yes, rotate" in confirm.content.decode()
    assert Region.objects.get(pk=region.pk).token_hash == region.token_hash
    r = admin_client.post(CHANGELIST, {**form, "post": "yes"})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    new = token_on_page(r.content.decode(), "mrg")
    with pytest.raises(Unauthenticated):
        region_authenticate(fleet["eu-west-3"])
    assert push(new, summary("eu-west-3")).region_id == "eu-west-3"


def test_a_registration_token_added_in_the_admin_is_shown_once_and_checks(admin_client):
    r = admin_client.post("/admin/router/registrationtoken/add/", {"name": "fleet-eu", "regions": "eu-west-3"})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    token = token_on_page(r.content.decode(), "mrt")
    stored = RegistrationToken.objects.get(name="fleet-eu")
    assert stored.token_hash == token_hash(token) and stored.regions == ["eu-west-3"]
    assert registration_token_check(token).pk == stored.pk
    listing = admin_client.get("/admin/router/registrationtoken/").content.decode()
    assert f"{stored.prefix}…" in listing and stored.token_hash not in listing and token not in listing
    admin_client.post("/admin/router/registrationtoken/", {"action": "revoke", "_selected_action": [str(stored.pk)],
                                                           "post": "yes"})
    with pytest.raises(Unauthenticated):
        registration_token_check(token)


def test_the_drift_page_groups_regions_by_commit_and_marks_the_majority(admin_client, fleet):
    _, token = region_create(region_id="ap-south-1", orchestrator_url="http://ap-south-1.example:8000")
    push(token, summary("ap-south-1", config="b" * 40))
    Region.objects.filter(region_id="ap-south-1").update(config_subject="Raise the echo timeout")
    html = admin_client.get(f"{CHANGELIST}drift/").content.decode()
    assert re.search(r"bbbbbbbbbbbb\s+— Raise the echo timeout", re.sub(r"<[^>]+>", "", html))
    majority = html.index(f'data-commit="{"a" * 40}"')
    off = html.index(f'data-commit="{"b" * 40}"')
    assert majority < off and "majority</span>" in html[majority:off]
    assert html.index("eu-west-3") > majority and html.index("us-east-1") < off < html.index("ap-south-1")
    assert "mrd-off" in html[off:]


@pytest.mark.parametrize("url", [CHANGELIST, f"{CHANGELIST}drift/", f"{CHANGELIST}add/",
                                 "/admin/router/registrationtoken/add/"])
def test_anonymous_users_are_sent_to_the_login_page(client, url):
    r = client.get(url)
    assert r.status_code == 302 and r["Location"].startswith("/admin/login/")


def test_view_only_staff_cannot_rotate_a_token_nor_open_the_drift_page_without_view(client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    from router.models import Region
    from router.services.regions import region_create

    region_create(region_id="eu-west-3", orchestrator_url="http://eu.example.com:8000", labels=["eu"])
    digest = Region.objects.get().token_hash
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/router/region/drift/").status_code == 403
    user.user_permissions.set(Permission.objects.filter(codename="view_region"))
    answer = client.post("/admin/router/region/", {"action": "rotate_token",
                                                   "_selected_action": [str(Region.objects.get().pk)],
                                                   "post": "yes", "index": 0})
    assert b"mrg_" not in answer.content and Region.objects.get().token_hash == digest
    assert client.get("/admin/router/region/drift/").status_code == 200


def test_a_rotation_confirmed_twice_rotates_once_and_each_change_is_in_the_audit_trail(admin_client, fleet):
    from project.accounts.models import AuditEvent

    region = Region.objects.get(region_id="eu-west-3")
    form = {"action": "rotate_token", "_selected_action": [str(region.pk)]}
    confirm = admin_client.post(CHANGELIST, form).content.decode()
    ticket = re.search(r'name="shown_once_ticket" value="([^"]+)"', confirm).group(1)
    first = admin_client.post(CHANGELIST, {**form, "post": "yes", "shown_once_ticket": ticket})
    new = token_on_page(first.content.decode(), "mrg")
    again = admin_client.post(CHANGELIST, {**form, "post": "yes", "shown_once_ticket": ticket})
    assert again.status_code == 409 and "mrg_" not in again.content.decode()
    assert push(new, summary("eu-west-3")).region_id == "eu-west-3"  # the token shown first still works
    event = AuditEvent.objects.get(action="region.rotate_token")
    assert event.target == "eu-west-3" and event.actor.startswith("user ")
    admin_client.post("/admin/router/registrationtoken/add/", {"name": "edge", "regions": ""})
    assert AuditEvent.objects.filter(action="token.create", target__startswith="registration token edge").exists()


def test_the_operator_sets_a_regions_ceiling_and_weight_in_the_change_form(admin_client, fleet):
    region = Region.objects.get(region_id="eu-west-3")
    form = {"orchestrator_url": "http://eu-west-3.example:8000", "labels": "eu", "enabled": "on",
            "address_rules-TOTAL_FORMS": "0", "address_rules-INITIAL_FORMS": "0"}
    refused = admin_client.post(f"{CHANGELIST}{region.pk}/change/", {**form, "capacity_ceiling": "100",
                                                                     "weight": "11"})
    assert refused.status_code == 200 and "weight: a number from 0 to 10" in refused.content.decode()
    r = admin_client.post(f"{CHANGELIST}{region.pk}/change/", {**form, "capacity_ceiling": "100", "weight": "0.5"})
    assert r.status_code == 302
    region.refresh_from_db()
    assert (region.capacity_ceiling, region.weight) == (100, 0.5)


def _text(response) -> str:
    import html

    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def test_the_rotation_confirmation_names_each_regions_summary_state_and_is_an_accessible_form(admin_client, fleet):
    ids = [str(pk) for pk in Region.objects.order_by("region_id").values_list("pk", flat=True)]
    confirm = admin_client.post(CHANGELIST, {"action": "rotate_token", "_selected_action": ids, "index": 0})
    html, text = confirm.content.decode(), _text(confirm)
    assert confirm.status_code == 200
    assert re.search(r"eu-west-3: its last summary came \d+ s ago \(fresh\); from now on its summaries are refused "
                     r"until its REGION_TOKEN is the new token", text), text[-2000:]
    assert "us-east-1: its last summary came 10 min ago (stale)" in text, text[-2000:]
    assert "<h1>" in html and 'name="csrfmiddlewaretoken"' in html and 'value="Yes, rotate 2 tokens"' in html
    assert f'href="{CHANGELIST}"' in html and "No, take me back" in html


def test_revoking_a_registration_token_asks_first_and_is_audited(admin_client):
    from project.accounts.models import AuditEvent
    from router.services.regions import registration_token_create

    token, raw = registration_token_create(name="fleet-eu", regions=["eu-west-3"], max_uses=10)
    url = "/admin/router/registrationtoken/"
    confirm = admin_client.post(url, {"action": "revoke", "_selected_action": [str(token.pk)], "index": 0})
    text = _text(confirm)
    assert confirm.status_code == 200 and "fleet-eu" in text, text[-2000:]
    assert "no agent can register with it from now on; agents it admitted keep their own credentials" in text
    assert 'value="Yes, revoke 1 token"' in confirm.content.decode()
    assert registration_token_check(raw).pk == token.pk  # not yet
    done = admin_client.post(url, {"action": "revoke", "_selected_action": [str(token.pk)], "post": "yes"})
    assert done.status_code == 302
    with pytest.raises(Unauthenticated):
        registration_token_check(raw)
    event = AuditEvent.objects.get(action="token.revoke")
    assert event.actor == "user admin" and event.target == f"registration token fleet-eu ({token.prefix}…)"
    # Revoked already: nothing to confirm, and said.
    again = admin_client.post(url, {"action": "revoke", "_selected_action": [str(token.pk)], "post": "yes"},
                              follow=True)
    assert f"Not revoked: registration token fleet-eu ({token.prefix}…) is revoked already" in _text(again)
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_deleting_a_region_or_a_registration_token_is_in_the_audit_trail(admin_client, fleet):
    from project.accounts.models import AuditEvent
    from router.services.regions import registration_token_create

    token, _ = registration_token_create(name="old", regions=[])
    region = Region.objects.get(region_id="us-east-1")
    assert admin_client.post(f"{CHANGELIST}{region.pk}/delete/", {"post": "yes"}).status_code == 302
    admin_client.post("/admin/router/registrationtoken/", {"action": "delete_selected",
                                                           "_selected_action": [str(token.pk)], "post": "yes"})
    assert not Region.objects.filter(region_id="us-east-1").exists()
    assert not RegistrationToken.objects.filter(pk=token.pk).exists()
    assert list(AuditEvent.objects.order_by("id").values_list("actor", "action", "target")) == [
        ("user admin", "region.delete", "us-east-1"),
        ("user admin", "token.delete", f"registration token old ({token.prefix}…)")]
