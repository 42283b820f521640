"""Both roles' live servers keep the promises of their OpenAPI schema.

schemathesis (pinned in requirements.txt) loads each role's schema from its
running gunicorn and runs its engine, as `schemathesis run` does, over every
operation, the heartbeat included: once with valid credentials (a staff API
key, and for the operations that take another kind the registration, agent or
region token) and once with no credential. Each run must give no server error, no answer outside the
schema (status code, content type, body, headers) and leave no operation
untested. The figures (operations, cases, failures per role and credential) are
printed at the end of the test run with the fault matrix's.

Bounded so it fits in CI: a fixed seed, few examples per operation, no stateful
phase; the whole module takes well under two minutes here.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic

from tests import harness
from tests.accounting import record

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 12
SEED = 20261129
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
]
# Not run: positive_data_acceptance (a request valid by the schema may still be
# refused for what the schema cannot say: an opaque cursor, an unknown region
# hint, a NUL anywhere in a body), unsupported_method (the plain views answer
# TRACE; not a schema question).


@pytest.fixture(scope="module")
def router(router_template):
    r = harness.Router(router_template).start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def region(region_template, router):
    """A region that takes the router's API key, so a task the router forwards
    is accepted there. The agent registered below stays online for the whole run
    (a 2 s TTL would let schemathesis, which learns its id from GET
    /api/v1/agents, re-register it and rotate its token mid-run; online, that
    needs its token: a 409)."""
    # Waits held 0.5 s at most: schemathesis asks ?wait= up to 60 with a 10 s read timeout.
    r = harness.Region(region_template, HEARTBEAT_TTL="600", WAIT_HOLD_MAX_SECONDS="0.5").start(
        api_key=router.api_key)
    yield r
    r.stop()


@dataclass
class Run:
    role: str
    credential: str
    operations: set[str]
    tested: set[str] = field(default_factory=set)
    cases: int = 0
    seconds: float = 0.0
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # operation -> codes
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def untested(self) -> set[str]:
        return self.operations - self.tested

    def figures(self) -> str:
        return record(f"API CONFORMANCE {self.role} {self.credential}: operations={len(self.operations)} "
                      f"tested={len(self.tested)} cases={self.cases} failures={len(self.failures)} "
                      f"errors={len(self.errors)} seconds={self.seconds:.1f}")


@dataclass
class Credentials:
    """What a caller holding every credential sends: the staff API key, and for
    the operations that take another kind (registration, agent or region token)
    that one. agent_id: the agent whose token is given (its operations are
    called for it, so the heartbeat's and the claim's 200 answers are checked
    too)."""

    api_key: str
    by_path: dict[str, str] = field(default_factory=dict)  # path regex -> bearer token
    agent_id: str | None = None


AGENT_OPERATIONS = r"^/api/v1/agents/\{agent_id\}/(heartbeat|claim|report|dead-letters)$"


def _config(server, credentials: Credentials | None, server_errors_allowed: list[str]):
    operations = []
    for path_regex, token in (credentials.by_path.items() if credentials else ()):
        operation = {"include-path-regex": path_regex, "headers": {"Authorization": f"Bearer {token}"}}
        if path_regex == AGENT_OPERATIONS and credentials.agent_id:
            operation["parameters"] = {"path.agent_id": credentials.agent_id}
        operations.append(operation)
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": server.url,
        "headers": {"Authorization": f"Bearer {credentials.api_key}"} if credentials else {},
        "operations": operations,
        "request-timeout": 10,
        "cache": {"enabled": False},  # no .schemathesis/ left in the work tree
        "workers": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
                   "not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", *server_errors_allowed]}},
    })


def conformance_run(server: harness.Region, role: str, credentials: Credentials | None, *,
                    unavailable_expected: bool = False) -> Run:
    """One schemathesis run against a live server; the schema is read with the
    staff key, the calls carry `credentials` (None: no Authorization header at
    all). unavailable_expected: a 503 is the right answer here (a router with no
    region that can take a task), not a server error."""
    config = _config(server, credentials, ["503"] if unavailable_expected else [])
    # Read here and handed over whole: loaded from its URL, schemathesis would leave
    # the schema's own operation (GET /api/schema) untested.
    raw = server.session.get(f"{server.url}/api/schema?format=json", timeout=10,
                             headers={"Authorization": f"Bearer {server.api_key}"})
    assert raw.status_code == 200, raw.text
    schema = schemathesis.openapi.from_dict(raw.json(), config=config)
    operations = {result.ok().label for result in schema.get_all_operations()}
    run = Run(role=role, credential="with credentials" if credentials else "without credentials",
              operations=operations)
    statistic = Statistic()
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
            for case_id, interaction in event.recorder.interactions.items():
                if interaction.response is not None and case_id in event.recorder.cases:
                    label = event.recorder.cases[case_id].value.operation.label
                    run.statuses[label][interaction.response.status_code] += 1
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
    run.seconds = time.monotonic() - started
    run.tested = set(statistic.tested_operations)
    run.cases = statistic.total_cases
    for label, groups in statistic.failures.items():
        for group in groups.values():
            status = group.response.status_code if group.response is not None else "-"
            for failure in group.failures:
                run.failures.append(f"{label} -> {status}: {failure.title}: {failure.message.strip()[:300]}"
                                    f"\n    {group.code_sample or ''}")
    return run


def _assert_conforms(run: Run) -> None:
    run.figures()
    problems = [*run.failures, *run.errors, *(f"untested: {op}" for op in sorted(run.untested))]
    assert not problems, f"{run.role} {run.credential}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def region_credentials(region) -> Credentials:
    agent_id = "conformance-agent"
    r = region.call("POST", "/api/v1/agents/register", key=harness.REGISTRATION_TOKEN,
                    json={"agent_id": agent_id, "capabilities": ["echo"]})
    assert r.status_code == 201, r.text
    return Credentials(api_key=region.api_key, agent_id=agent_id, by_path={
        r"^/api/v1/agents/register$": harness.REGISTRATION_TOKEN,
        AGENT_OPERATIONS: r.json()["token"],
    })


@pytest.fixture(scope="module")
def router_credentials(router, region) -> Credentials:
    """The router knows the region and has a fresh summary from it: routes are
    answered and tasks forwarded (and the region's answers passed back)."""
    region_token = router.add_region(region, labels="eu", interval=600)
    summary = router.call("POST", "/update_regional_status", key=region_token, json={
        "region_id": region.region_id, "orchestrator_url": region.url, "available_agents": 1,
        # "a": the capability schemathesis tries first (the shortest the pattern takes).
        "agent_capabilities_summary": {"a": {"count": 1, "idle": 1}, "echo": {"count": 1, "idle": 1}},
        "last_updated": time.time(),
        "summary_interval": 600})
    assert summary.status_code == 200, summary.text
    return Credentials(api_key=router.api_key, by_path={
        r"^/register_agent$": harness.REGISTRATION_TOKEN,
        r"^/update_regional_status$": region_token,
    })


@pytest.mark.parametrize("with_credentials", [True, False], ids=["with-credentials", "without-credentials"])
def test_region_answers_as_its_schema_says(region, region_credentials, with_credentials):
    run = conformance_run(region, "region", region_credentials if with_credentials else None)
    assert {"POST /api/v1/agents/{agent_id}/heartbeat", "GET /api/schema"} <= run.operations
    _assert_conforms(run)
    if with_credentials:  # each credential was taken: the calls got past authentication
        for operation, code in [("POST /api/v1/agents/{agent_id}/heartbeat", 200), ("GET /api/schema", 200),
                                ("POST /api/v1/agents/register", 201), ("POST /api/v1/tasks", 201),
                                ("GET /metrics", 200)]:
            assert run.statuses[operation][code], (operation, run.statuses[operation])
    else:
        # Nothing but refusals: mostly 401; a 400, 404 or 405 refuses a malformed
        # request, a path, method or ?format before any credential is looked at.
        answered = {op: codes for op, codes in run.statuses.items()
                    if op != "GET /healthz" and any(code < 400 for code in codes)}
        assert not answered, answered


@pytest.mark.parametrize("with_credentials", [True, False], ids=["with-credentials", "without-credentials"])
def test_router_answers_as_its_schema_says(router, router_credentials, with_credentials):
    # A capability no region serves is a 503 (no region can take it), as
    # documented; any other 5xx is a failure.
    run = conformance_run(router, "router", router_credentials if with_credentials else None,
                          unavailable_expected=True)
    assert {"POST /update_regional_status", "GET /api/schema"} <= run.operations
    _assert_conforms(run)
    if with_credentials:
        for operation in ("POST /update_regional_status", "POST /register_agent", "GET /api/v1/regions"):
            assert set(run.statuses[operation]) - {401}, (operation, run.statuses[operation])
        # Routed, and forwarded to the region, which took the task.
        assert run.statuses["GET /api/v1/route"][200], run.statuses["GET /api/v1/route"]
        assert run.statuses["POST /api/v1/tasks"][201], run.statuses["POST /api/v1/tasks"]


@pytest.mark.django_db
@pytest.mark.parametrize("query, field", [("limit=abc", "limit"), ("limit=0", "limit"), ("limit=1001", "limit"),
                                          ("limit=null&limit=null", "limit"), ("cursor=%C3%97", "cursor")])
def test_list_query_outside_the_documented_one_is_a_400_naming_it(query, field):
    """Found by schemathesis: a page size it could not read gave the default page,
    a cursor it could not decode a 404; the schema promises a 400."""
    from rest_framework.test import APIClient

    from tests import factories

    _, key = factories.caller("lister", staff=True)  # every scope: the agents' list needs fleet:read
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for path in ("/api/v1/tasks", "/api/v1/agents"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, response.content)
        assert field in response.json()["fields"]
    assert client.get("/api/v1/tasks?limit=1000&cursor=").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/agents/register", "/register_agent"])
def test_agent_id_that_is_not_a_string_is_a_400_naming_it(path, settings, redis_clean):
    """Found by schemathesis: `"agent_id": 0` registered an agent named "0"."""
    from rest_framework.test import APIClient

    from router.services.regions import registration_token_create

    settings.AGENT_REGISTRATION_TOKEN = "registration"
    registration_token_create(name="conformance", token="registration")
    if path == "/register_agent":
        settings.ROOT_URLCONF = "tests.router_urls"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer registration")
    for agent_id in (0, 7.5, True, ["a1"], {"a": 1}, None):
        response = client.post(path, {"agent_id": agent_id, "capabilities": ["echo"]}, format="json")
        assert response.status_code == 400, (agent_id, response.content)
        assert "agent_id" in response.json()["fields"]


@pytest.mark.django_db
@pytest.mark.parametrize("path, credential, body, field", [
    ("/api/v1/tasks", "api_key", {"capability": "echo", "idempotency_key": 12}, "idempotency_key"),
    ("/api/v1/tasks", "api_key", {"capability": "echo", "target_agent": 7}, "target_agent"),
    ("/api/v1/agents/register", "registration", {"agent_id": "a9", "capabilities": ["echo"], "version": 2},
     "version"),
    ("/api/v1/agents/a1/claim", "agent", {"task_id": False, "attempt": 1}, "task_id"),
    ("/api/v1/agents/a1/claim", "agent", {"task_id": 0, "attempt": 1}, "task_id"),
    ("/api/v1/agents/a1/report", "agent", {"task_id": False, "attempt": 1, "kind": "success", "body": {}}, "task_id"),
])
def test_a_number_where_a_string_is_documented_is_a_400_naming_it(path, credential, body, field, settings,
                                                                  redis_clean):
    """Found by schemathesis: DRF's CharField took 12 as "12" and its UUIDField
    took false as the nil UUID."""
    from rest_framework.test import APIClient

    from tests import factories

    settings.AGENT_REGISTRATION_TOKEN = "registration"
    token = {"api_key": lambda: factories.caller("strict")[1], "registration": lambda: "registration",
             "agent": lambda: factories.agent("a1").token}[credential]()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post(path, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]


@pytest.mark.django_db
def test_options_describes_no_view_to_an_anonymous_caller():
    """DRF's OPTIONS answer described a view's fields to anyone where the view
    checks its own token (registration, agent operations)."""
    from rest_framework.test import APIClient

    for path in ("/api/v1/agents/register", "/api/v1/agents/a1/claim", "/api/v1/tasks"):
        response = APIClient().options(path)
        assert response.status_code in (401, 405), (path, response.status_code)
        assert "actions" not in response.json() and "name" not in response.json()
