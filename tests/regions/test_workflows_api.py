"""The workflow endpoints in process: shapes, bounds and 400s naming the field,
scoping as tasks have it, cancel and retry."""
import pytest
from rest_framework.test import APIClient

from project.accounts.services import api_key_create
from regions.models import Task, Workflow
from regions.services.tasks.claim import task_claim
from regions.services.tasks.outcome import task_succeed

pytestmark = pytest.mark.django_db

URL = "/api/v1/workflows"


def keyed(*scopes: str, username: str) -> APIClient:
    _, raw = api_key_create(username=username, scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_submit_answers_the_workflow_with_every_step_and_the_first_started(api, sent):
    answer = api.post(URL, {"steps": [{"capability": "echo", "payload": {"a": 1}},
                                      {"group": [{"capability": "echo"}, {"capability": "echo", "priority": 9}]},
                                      {"capability": "echo", "max_attempts": 2, "timeout": 30}]}, format="json")
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["status"] == "running" and body["created"] is True
    assert body["url"].endswith(f"/api/v1/workflows/{body['id']}")
    assert [(s["index"], s["kind"], s["status"], len(s["tasks"])) for s in body["steps"]] == [
        (0, "task", "running", 1), (1, "group", "pending", 2), (2, "task", "pending", 1)]
    first = body["steps"][0]["tasks"][0]
    assert first["task_id"] and first["status"] in ("waiting", "queued")
    assert body["steps"][1]["tasks"][1] == {"member": 1, "capability": "echo", "task_id": None, "status": "pending"}
    assert api.get(f"{URL}/{body['id']}").json()["steps"] == body["steps"]
    task = Task.objects.get(id=first["task_id"])
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1", capabilities=["echo"]).run
    assert task_succeed(task_id=task.id, attempt=1, agent_id="a1", result={"b": 2}, capabilities=["echo"])
    steps = api.get(f"{URL}/{body['id']}").json()["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "running", "pending"]
    assert [t["status"] for t in steps[1]["tasks"]] == [Task.objects.get(id=t["task_id"]).status
                                                         for t in steps[1]["tasks"]]


@pytest.mark.parametrize("steps, named", [
    ([], "steps"),
    ([{"capability": "Bad Name"}], "steps[0].capability"),
    ([{"capability": "echo"}, {"group": []}], "steps[1].group"),
    ([{"group": [{"capability": "echo", "payload": [1]}]}], "steps[0].group[0].payload"),
    ([{"capability": "echo", "priority": 12}], "steps[0].priority"),
    ([{"capability": "echo", "target_agent": "a1"}], "steps[0]: unknown field(s) target_agent"),
    ([{"group": [{"capability": "echo"}], "capability": "echo"}], "steps[0]: a group has only"),
    ([{"capability": "echo"}] * 51, "steps"),
    ([{"group": [{"capability": "echo"}] * 101}], "steps[0].group"),
    (["echo"], "steps"),
])
def test_a_malformed_workflow_is_a_400_naming_the_field(api, sent, steps, named):
    answer = api.post(URL, {"steps": steps}, format="json")
    assert answer.status_code == 400
    assert named in str(answer.json())
    assert not Workflow.objects.exists() and not Task.objects.exists()


def test_an_idempotent_replay_answers_200_with_the_same_workflow(api, sent):
    body = {"steps": [{"capability": "echo"}], "idempotency_key": "w-1"}
    first = api.post(URL, body, format="json").json()
    again = api.post(URL, body, format="json")
    assert again.status_code == 200 and again.json()["id"] == first["id"] and again.json()["created"] is False
    assert api.post(URL, {**body, "steps": [{"capability": "sleep"}]}, format="json").status_code == 409


def test_a_caller_sees_and_acts_on_its_own_workflows_only(redis_clean, sent):
    alice = keyed("tasks:submit", "tasks:read", username="alice")
    bob = keyed("tasks:submit", "tasks:read", username="bob")
    reader = keyed("tasks:read", "tasks:read_all", username="reader")
    operator = keyed("tasks:operate", username="operator")
    workflow = alice.post(URL, {"steps": [{"capability": "echo"}]}, format="json").json()
    assert [w["id"] for w in alice.get(URL).json()["results"]] == [workflow["id"]]
    assert bob.get(URL).json()["results"] == []
    assert bob.get(f"{URL}/{workflow['id']}").status_code == 404
    assert bob.post(f"{URL}/{workflow['id']}/cancel").status_code == 404
    assert reader.get(f"{URL}/{workflow['id']}").status_code == 200
    assert reader.post(URL, {"steps": [{"capability": "echo"}]}, format="json").status_code == 403
    assert operator.post(f"{URL}/{workflow['id']}/cancel").json()["status"] == "cancelled"
    assert alice.post(f"{URL}/{workflow['id']}/cancel").status_code == 409
    retried = alice.post(f"{URL}/{workflow['id']}/retry")
    assert retried.status_code == 201 and retried.json()["status"] == "running"
    assert alice.get(f"{URL}?status=running").json()["results"][0]["id"] == workflow["id"]
    assert alice.get(f"{URL}?status=nonsense").status_code == 400
