"""What a credential may do is its scopes (project/accounts/scopes.py): an API key
carries the ones chosen when it was made; a person signed in gets those their
Django permissions give, and `is_staff` alone gives nothing. Once, a staff user
with no permission at all cordoned, drained and revoked agents and read every
caller's payloads with its session, and any key listed every agent."""
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from project.accounts.models import SCOPES
from project.accounts.scopes import HasScope
from project.accounts.services import api_key_create
from regions.models import Agent, Task
from tests import factories

pytestmark = pytest.mark.django_db


def keyed(*scopes: str, username: str = "someone") -> APIClient:
    _, raw = api_key_create(username=username, scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def views(resolver) -> list:
    found = []
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            found += views(pattern)
        elif isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls"):
            found.append(pattern.callback.cls)
    return found


@pytest.mark.parametrize("urlconf", ["project.urls", "tests.router_urls"])
def test_every_api_view_names_the_scopes_it_asks(urlconf):
    checked = [cls for cls in views(get_resolver(urlconf)) if HasScope in cls.permission_classes]
    assert len(checked) > 5
    undeclared = [cls.__name__ for cls in checked if not hasattr(cls, "required_scopes")]
    assert not undeclared
    for cls in checked:
        needed = cls.required_scopes.values() if isinstance(cls.required_scopes, dict) else [cls.required_scopes]
        assert all(set(scopes) <= set(SCOPES) for scopes in needed), cls


def test_a_callers_key_submits_and_reads_its_own_tasks_and_nothing_of_the_fleet(redis_clean, settings):
    settings.METRICS_TOKEN = "scrape-me"
    factories.agent("a1")
    caller = keyed()  # the default: tasks:submit, tasks:read
    task = caller.post("/api/v1/tasks", {"capability": "echo"}, format="json")
    assert task.status_code == 201, task.content
    assert caller.get(f"/api/v1/tasks/{task.json()['id']}").status_code == 200
    for method, path in [("get", "/api/v1/agents"), ("get", "/api/v1/agents/a1"), ("get", "/api/v1/region/status"),
                         ("post", "/api/v1/agents/a1/cordon"), ("get", "/metrics")]:
        r = getattr(caller, method)(path)
        assert r.status_code == 403, (path, r.content)
        assert "fleet:" in r.json()["detail"], r.json()
    assert Agent.objects.get(agent_id="a1").desired == Agent.Desired.ACTIVE


def test_a_read_only_key_reads_but_cannot_submit(redis_clean):
    r = keyed("tasks:read").post("/api/v1/tasks", {"capability": "echo"}, format="json")
    assert r.status_code == 403 and "tasks:submit" in r.json()["detail"]
    assert Task.objects.count() == 0


def test_another_callers_task_is_a_404_unless_the_key_may_read_or_operate_on_all(redis_clean):
    owner = keyed(username="owner")
    task_id = owner.post("/api/v1/tasks", {"capability": "echo"}, format="json").json()["id"]
    other = keyed(username="other")
    assert other.get(f"/api/v1/tasks/{task_id}").status_code == 404
    assert other.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 404
    assert other.get("/api/v1/tasks").json()["results"] == []
    reader = keyed("tasks:read", "tasks:read_all", username="auditor")
    assert reader.get(f"/api/v1/tasks/{task_id}").json()["payload"] == {}
    assert [t["id"] for t in reader.get("/api/v1/tasks").json()["results"]] == [task_id]
    assert reader.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 403  # reading is not operating
    operator = keyed("tasks:operate", username="operator")
    assert operator.post(f"/api/v1/tasks/{task_id}/cancel").json()["status"] == "cancelled"


def test_a_fleet_operators_key_drains_an_agent(redis_clean):
    factories.agent("a1")
    r = keyed("fleet:operate").post("/api/v1/agents/a1/drain")
    assert r.status_code == 200 and r.json()["desired"] == "draining", r.content


@pytest.fixture
def signed_in(client):
    def login(*permissions: str, superuser: bool = False):
        user = get_user_model().objects.create_user("person", password="pw", is_staff=True, is_superuser=superuser)
        user.user_permissions.add(*Permission.objects.filter(content_type__app_label="accounts",
                                                             codename__in=permissions))
        client.force_login(user)
        return client
    return login


def test_is_staff_alone_grants_nothing_on_the_api(redis_clean, signed_in):
    factories.agent("a1")
    _, raw = factories.caller("owner")
    task = Task.objects.create(capability="echo", timeout=10, max_attempts=1, status=Task.Status.QUEUED,
                               payload={"secret": "s"})
    client = signed_in()
    for method, path in [("post", "/api/v1/agents/a1/cordon"), ("post", "/api/v1/agents/a1/revoke"),
                         ("get", "/api/v1/agents"), ("get", f"/api/v1/tasks/{task.id}"),
                         ("post", f"/api/v1/tasks/{task.id}/cancel"), ("get", "/api/v1/tasks")]:
        r = getattr(client, method)(path)
        assert r.status_code == 403, (path, r.status_code, r.content)
    assert Agent.objects.get(agent_id="a1").desired == Agent.Desired.ACTIVE
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED


def test_a_session_gets_exactly_what_its_permissions_give(redis_clean, signed_in):
    factories.agent("a1")
    client = signed_in("fleet_read")
    assert client.get("/api/v1/agents").status_code == 200
    assert client.post("/api/v1/agents/a1/cordon").status_code == 403
    get_user_model().objects.filter(username="person").update(is_superuser=True)
    assert client.post("/api/v1/agents/a1/cordon").status_code == 200


@override_settings(ROOT_URLCONF="tests.router_urls")
def test_at_the_router_a_callers_key_routes_and_submits_but_reads_no_regions():
    caller = keyed()
    assert caller.get("/api/v1/regions").status_code == 403
    assert caller.get("/api/v1/config/drift").status_code == 403
    assert caller.get("/api/v1/route?capability=echo").status_code in (200, 503)  # no region yet: 503
    assert keyed("fleet:read").get("/api/v1/regions").status_code == 200


def test_create_api_key_takes_scopes_and_names_the_unknown_one(capsys):
    call_command("create_api_key", "auditor", "--scope", "tasks:read", "--scope", "tasks:read_all")
    raw = capsys.readouterr().out.strip()
    from project.accounts.models import ApiKey
    from project.accounts.tokens import token_hash
    assert ApiKey.objects.get(key_hash=token_hash(raw)).scopes == ["tasks:read", "tasks:read_all"]
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("create_api_key", "x", "--scope", "tasks:everything")
    call_command("create_api_key", "ops", "--staff")
    assert ApiKey.objects.get(key_hash=token_hash(capsys.readouterr().out.strip())).scopes == list(SCOPES)
