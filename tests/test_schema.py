"""The OpenAPI schema of both roles says what the API does: which credential each
operation takes, the body each one reads, the envelope of lists, the errors, and
the plain views (heartbeat, /metrics, /healthz); the schema and its docs need a
credential and load nothing from a CDN."""
import json
import os
import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from tests import factories
from tests.harness import ROOT


def _schema(role: str) -> dict:
    """The schema as `manage.py spectacular` writes it for the role, failing on
    any generator warning (an unresolved credential, a component name collision)."""
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_APPS"}
    env.update(ROLE=role, DJANGO_SETTINGS_MODULE="project.settings")
    out = subprocess.run([sys.executable, "manage.py", "spectacular", "--format", "openapi-json", "--fail-on-warn"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def region_schema():
    return _schema("region")


@pytest.fixture(scope="module")
def router_schema():
    return _schema("router")


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _resolve(schema, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref")
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else ref_or_schema


def test_every_credential_kind_is_a_bearer_scheme_of_its_own(region_schema, router_schema):
    region = region_schema["components"]["securitySchemes"]
    router = router_schema["components"]["securitySchemes"]
    for name in ("apiKey", "agentToken", "registrationToken", "metricsToken"):
        assert region[name]["scheme"] == "bearer", name
    for name in ("apiKey", "registrationToken", "regionToken", "metricsToken"):
        assert router[name]["scheme"] == "bearer", name


@pytest.mark.parametrize("role", ["region", "router"])
def test_no_operation_but_healthz_is_documented_as_open(role, region_schema, router_schema):
    schema = region_schema if role == "region" else router_schema
    open_ = {(path, method) for path, method, op in _operations(schema)
             if not op.get("security") or {} in op["security"]}
    assert open_ == {("/healthz", "get")}


def test_each_operation_names_the_credential_it_takes(region_schema, router_schema):
    def security(schema, path, method):
        return [next(iter(s)) for s in schema["paths"][path][method]["security"]]

    # What the router forwards takes its assertion too (never the caller's key).
    assert security(region_schema, "/api/v1/tasks", "post") == ["apiKey", "cookieAuth", "routerAssertion"]
    assert security(region_schema, "/api/v1/tasks/batch", "post") == ["apiKey", "cookieAuth", "routerAssertion"]
    # The callback signing secret is the region's alone: never through the router.
    assert security(region_schema, "/api/v1/callbacks/secret", "post") == ["apiKey", "cookieAuth"]
    assert security(region_schema, "/api/v1/agents/register", "post") == ["registrationToken"]
    for action in ("heartbeat", "claim", "report", "deregister"):
        assert security(region_schema, f"/api/v1/agents/{{agent_id}}/{action}", "post") == ["agentToken"]
    # The router's task finder: its locate assertion only, no caller's key (it would see others' tasks).
    assert security(region_schema, "/api/v1/tasks/{task_id}/locate", "get") == ["routerLocate"]
    assert security(router_schema, "/register_agent", "post") == ["registrationToken"]
    assert security(router_schema, "/update_regional_status", "post") == ["regionToken"]
    assert security(router_schema, "/metrics", "get") == ["metricsToken", "apiKey"]


def test_task_submission_body_is_the_task_not_an_agent_registration(region_schema):
    body = region_schema["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = _resolve(region_schema, body)["properties"]
    assert {"capability", "payload", "priority", "idempotency_key"} <= set(fields)
    assert "agent_id" not in fields
    assert fields["payload"]["type"] == "object"  # the only payload the region takes
    register = region_schema["paths"]["/api/v1/agents/register"]["post"]["requestBody"]["content"]
    assert "agent_id" in _resolve(region_schema, register["application/json"]["schema"])["properties"]


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/agents"])
def test_lists_are_documented_as_the_cursor_paginated_envelope(region_schema, path):
    operation = region_schema["paths"][path]["get"]
    body = _resolve(region_schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert body["type"] == "object"
    assert {"next", "previous", "results"} <= set(body["properties"])
    assert body["properties"]["results"]["type"] == "array"
    assert {"cursor", "limit", "status", "capability"} <= {p["name"] for p in operation["parameters"]}


def test_heartbeat_metrics_and_healthz_are_documented(region_schema, router_schema):
    heartbeat = region_schema["paths"]["/api/v1/agents/{agent_id}/heartbeat"]["post"]
    assert {"200", "400", "401", "403", "404", "503"} <= set(heartbeat["responses"])
    for schema in (region_schema, router_schema):
        assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert "/healthz" in schema["paths"]
    assert "/api/v1/agents/{agent_id}/heartbeat" not in router_schema["paths"]


def test_refusals_are_documented_with_the_error_shape(region_schema, router_schema):
    for schema in (region_schema, router_schema):
        for path, method, operation in _operations(schema):
            if path == "/healthz":
                continue
            assert "401" in operation["responses"], (method, path)
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert "application/json" in answer.get("content", {}), (method, path, code)
            if method == "post":
                assert "413" in operation["responses"], path  # the server's body limit
    submit = region_schema["paths"]["/api/v1/tasks"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "429", "503"} <= set(submit)


@pytest.mark.django_db
def test_schema_and_docs_refuse_an_anonymous_caller_with_json():
    client = APIClient()
    for path in ("/api/schema", "/api/docs", "/api/docs/assets/swagger-ui-bundle.js"):
        response = client.get(path, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")  # a browser
        assert response.status_code == 401, path
        assert response["Content-Type"].startswith("application/json"), path
        assert response.json()["error"] == "not_authenticated"


@pytest.mark.django_db
def test_docs_load_swagger_ui_from_this_server_with_a_key():
    _, key = factories.caller("reader")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    schema = client.get("/api/schema")
    assert schema.status_code == 200
    assert schema["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert client.get("/api/schema?format=yaml")["Content-Type"].startswith("application/vnd.oai.openapi")
    page = client.get("/api/docs").content.decode()
    assert "/api/docs/assets/swagger-ui-bundle.js" in page and "/api/schema" in page
    assert "cdn" not in page.lower() and "https://" not in page
    asset = client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and asset["Content-Type"] == "text/javascript"
    assert client.get("/api/docs/assets/..%2Fsettings.py").status_code == 404


def test_operation_ids_and_tags_are_the_published_ones(region_schema, router_schema):
    """A client generated from the schema names operations by these: they are a
    promise (a region's /metrics, a DRF view, once renamed every one of them)."""
    claim = region_schema["paths"]["/api/v1/agents/{agent_id}/claim"]["post"]
    assert (claim["operationId"], claim["tags"]) == ("v1_agents_claim_create", ["v1"])
    assert region_schema["paths"]["/api/schema"]["get"]["operationId"] == "schema_retrieve"
    assert router_schema["paths"]["/register_agent"]["post"]["operationId"] == "register_agent_create"


def test_the_locate_answer_is_where_a_task_is_never_what_it_holds(region_schema):
    operation = region_schema["paths"]["/api/v1/tasks/{task_id}/locate"]["get"]
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    body = _resolve(region_schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"found", "status", "capability", "created_at", "finished_at"}
