"""What a handler declares (version, default timeout, payload schema) reaches the
region when its agent registers; a payload that breaks its capability's schema
(declared, or in the configuration) is refused with 400 naming the path, before
anything is stored or queued."""
import pytest
from rest_framework.test import APIClient

from regions.models import HandlerDeclaration, Task
from regions.services.config.current import EffectiveConfig
from regions.services.config.parse import ConfigError, config_parse
from regions.services import handlers
from regions.services.tasks import submit, waiting

pytestmark = pytest.mark.django_db

SCHEMA = {"type": "object", "required": ["n"], "additionalProperties": False,
          "properties": {"n": {"type": "integer", "minimum": 0},
                         "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}}}}


@pytest.fixture
def register(settings, redis_clean):
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-secret")

    def post(agent_id: str, capabilities: list[str], declared: dict):
        return client.post("/api/v1/agents/register", {"agent_id": agent_id, "capabilities": capabilities,
                                                       "handlers": declared}, format="json")

    return post


def test_registration_keeps_what_each_handler_declares(register):
    r = register("a1", ["checked", "plain"], {"checked": {"version": "3.1", "timeout": 7, "payload_schema": SCHEMA},
                                               "plain": {"version": ""}})
    assert r.status_code == 201, r.content
    row = HandlerDeclaration.objects.get(capability="checked")
    assert (row.version, row.timeout, row.payload_schema, row.agent_id) == ("3.1", 7, SCHEMA, "a1")
    # the newest registration wins: a new version without a schema drops it
    assert register("a2", ["checked"], {"checked": {"version": "4.0"}}).status_code == 201
    row.refresh_from_db()
    assert (row.version, row.timeout, row.payload_schema, row.agent_id) == ("4.0", None, None, "a2")


def _nested(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"items": schema}
    return schema


@pytest.mark.parametrize("declared, where", [
    ({"checked": {"payload_schema": {"type": "nonsense"}}}, "payload_schema is not a valid JSON Schema"),
    # References resolve within the schema only: nothing is ever fetched.
    ({"checked": {"payload_schema": {"$ref": "https://example.com/s.json"}}}, "is outside the schema"),
    ({"checked": {"payload_schema": {"$ref": "http://127.0.0.1:9/s.json"}}}, "is outside the schema"),
    ({"checked": {"payload_schema": {"$ref": "#/$defs/nope"}}}, "does not exist"),
    ({"checked": {"payload_schema": {"$dynamicRef": "#meta"}}}, "does not exist"),
    ({"checked": {"payload_schema": _nested(50)}}, "nested deeper than 32 levels"),
    ({"checked": {"payload_schema": ["not", "an", "object"]}}, "JSON object"),
    ({"checked": {"timeout": 0}}, "timeout"),
    ({"other": {"version": "1"}}, "declared for capabilities not served: other"),
])
def test_a_bad_declaration_is_refused_with_a_400_naming_it(register, declared, where):
    r = register("a1", ["checked"], declared)
    assert r.status_code == 400 and where in r.content.decode(), r.content
    assert not HandlerDeclaration.objects.exists()


def test_a_payload_breaking_the_declared_schema_is_refused_naming_the_path(api, register, sent):
    register("a1", ["checked"], {"checked": {"payload_schema": SCHEMA}})
    r = api.post("/api/v1/tasks", {"capability": "checked", "payload": {"n": -1}}, format="json")
    assert r.status_code == 400
    assert r.json()["fields"]["payload"][0].startswith("payload.n: -1 is less than the minimum of 0")
    r = api.post("/api/v1/tasks", {"capability": "checked", "payload": {"n": 1, "items": [{"sku": "a"}, {}]}},
                 format="json")
    assert r.status_code == 400 and 'payload.items[1]: "sku" is a required property' in r.json()["fields"]["payload"][0]
    assert not Task.objects.exists() and not sent
    assert api.post("/api/v1/tasks", {"capability": "checked", "payload": {"n": 3}}, format="json").status_code == 201


def test_the_handlers_timeout_is_the_default_after_the_configurations(api, register, sent, monkeypatch):
    register("a1", ["checked"], {"checked": {"timeout": 7}})
    assert api.post("/api/v1/tasks", {"capability": "checked"}, format="json").json()["timeout"] == 7
    assert api.post("/api/v1/tasks", {"capability": "checked", "timeout": 9}, format="json").json()["timeout"] == 9
    cfg = EffectiveConfig(sha="abc", content={"tasks": {"checked": {"timeout": 11}}})
    monkeypatch.setattr(submit, "config_current", lambda **kw: cfg)
    monkeypatch.setattr(waiting, "config_current", lambda **kw: cfg)
    assert api.post("/api/v1/tasks", {"capability": "checked"}, format="json").json()["timeout"] == 11


def test_the_configurations_schema_wins_and_holds_for_batches_too(api, register, sent, monkeypatch):
    register("a1", ["checked"], {"checked": {"payload_schema": SCHEMA}})
    cfg = EffectiveConfig(sha="abc", content={"tasks": {"checked": {"payload_schema": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}})
    monkeypatch.setattr(submit, "config_current", lambda **kw: cfg)
    monkeypatch.setattr(waiting, "config_current", lambda **kw: cfg)
    r = api.post("/api/v1/tasks/batch", {"tasks": [{"capability": "checked", "payload": {"name": "x"}},
                                                   {"capability": "checked", "payload": {"n": 1}},
                                                   {"capability": "checked", "payload": {"name": 5},
                                                    "idempotency_key": "k"}]}, format="json")
    results = r.json()["results"]
    assert [item["status"] for item in results] == [201, 400, 400]
    assert '"name" is a required property' in results[1]["detail"]
    assert results[2]["detail"].startswith('payload.name: 5 is not of type "string"')
    assert Task.objects.count() == 1


def test_a_configuration_with_a_broken_payload_schema_is_rejected_at_sync():
    with pytest.raises(ConfigError, match=r"tasks.checked.payload_schema is not a valid JSON Schema"):
        config_parse({"global.yaml": "schema_version: 1\ntasks:\n  checked:\n"
                                     "    payload_schema: {type: 12}\n"})


def test_a_catastrophic_pattern_costs_a_submission_no_time(api, register, sent):
    """Python's re takes minutes on ^(a+)+$ against 35 a's and a '!'; the web
    worker's event loop would stop with it."""
    import time

    register("a1", ["checked"], {"checked": {"payload_schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"},
                                         "b": {"type": "object", "patternProperties": {"^(x+)+$": {"type": "string"}},
                                               "additionalProperties": False}}}}})
    started = time.monotonic()
    r = api.post("/api/v1/tasks/batch", {"tasks": [{"capability": "checked", "payload": {
        "a": "a" * 40 + "!", "b": {"x" * 40 + "!": "v"}}}] * 50}, format="json")
    assert time.monotonic() - started < 5
    assert [item["status"] for item in r.json()["results"]] == [400] * 50
    assert "does not match" in r.json()["results"][0]["detail"]


def test_a_schema_stored_before_the_checks_gives_a_400_naming_it_not_a_500(api, sent):
    from django.utils import timezone

    HandlerDeclaration.objects.create(capability="checked", payload_schema={"$ref": "#/$defs/nope"},
                                      declared_at=timezone.now())
    r = api.post("/api/v1/tasks", {"capability": "checked", "payload": {"n": 1}}, format="json")
    assert r.status_code == 400 and "payload schema of capability checked is unusable" in r.content.decode()


def test_an_empty_schema_in_the_configuration_switches_the_declared_one_off(api, register, sent, monkeypatch):
    register("a1", ["checked"], {"checked": {"payload_schema": SCHEMA}})
    cfg = EffectiveConfig(sha="abc", content={"tasks": {"checked": {"payload_schema": {}}}})
    monkeypatch.setattr(submit, "config_current", lambda **kw: cfg)
    monkeypatch.setattr(waiting, "config_current", lambda **kw: cfg)
    assert api.post("/api/v1/tasks", {"capability": "checked", "payload": {"n": "any"}},
                    format="json").status_code == 201


def test_a_retried_submission_finds_its_task_even_after_its_schema_tightened(api, register, sent):
    register("a1", ["checked"], {"checked": {"version": "1"}})
    body = {"capability": "checked", "payload": {"n": -5}, "idempotency_key": "retry-me"}
    first = api.post("/api/v1/tasks", body, format="json")
    assert first.status_code == 201
    register("a2", ["checked"], {"checked": {"version": "2", "payload_schema": SCHEMA}})
    handlers._declared.clear()
    again = api.post("/api/v1/tasks", body, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    body["idempotency_key"] = "new"
    assert api.post("/api/v1/tasks", body, format="json").status_code == 400
