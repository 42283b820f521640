"""Both roles' live servers keep the promises of their OpenAPI schema.

schemathesis (pinned in requirements.txt) loads each role's schema from its
running gunicorn and runs its engine, as `schemathesis run` does, over every
operation, the heartbeat included: once with a valid staff API key and once
with no credential. Each run must give no server error, no answer outside the
schema (status code, content type, body, headers) and leave no operation
untested. The figures (operations, cases, failures per role and credential) are
printed at the end of the test run with the fault matrix's.

Bounded so it fits in CI: a fixed seed, few examples per operation, no stateful
phase; the whole module takes well under two minutes here.
"""
from __future__ import annotations

import time
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


@pytest.fixture(scope="module")
def router(router_template):
    r = harness.Router(router_template).start()
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
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def untested(self) -> set[str]:
        return self.operations - self.tested

    def figures(self) -> str:
        return record(f"API CONFORMANCE {self.role} {self.credential}: operations={len(self.operations)} "
                      f"tested={len(self.tested)} cases={self.cases} failures={len(self.failures)} "
                      f"errors={len(self.errors)} seconds={self.seconds:.1f}")


def conformance_run(server: harness.Region, role: str, key: str | None, *, unavailable_expected=False) -> Run:
    """One schemathesis run against a live server; the schema is read with the
    staff key, the calls carry `key` (None: no Authorization header at all).
    unavailable_expected: a 503 is the right answer here (a router with no
    region to send to), not a server error."""
    server_errors_allowed = ["503"] if unavailable_expected else []
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": server.url,
        "headers": {"Authorization": f"Bearer {key}"} if key else {},
        "request-timeout": 10,
        "cache": {"enabled": False},  # no .schemathesis/ left in the work tree
        "workers": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
                   "not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", *server_errors_allowed]}},
    })
    # Read here and handed over whole: loaded from its URL, schemathesis would leave
    # the schema's own operation (GET /api/schema) untested.
    raw = server.session.get(f"{server.url}/api/schema?format=json", timeout=10,
                             headers={"Authorization": f"Bearer {server.api_key}"})
    assert raw.status_code == 200, raw.text
    schema = schemathesis.openapi.from_dict(raw.json(), config=config)
    operations = {result.ok().label for result in schema.get_all_operations()}
    run = Run(role=role, credential="with key" if key else "without key", operations=operations)
    statistic = Statistic()
    started = time.monotonic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
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


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_region_answers_as_its_schema_says(region, with_key):
    run = conformance_run(region, "region", region.api_key if with_key else None)
    assert {"POST /api/v1/agents/{agent_id}/heartbeat", "GET /api/schema"} <= run.operations
    _assert_conforms(run)


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_router_answers_as_its_schema_says(router, with_key):
    # No region has sent a summary: routing and forwarding answer 503 (no region can
    # take it), as documented; any other 5xx is a failure.
    run = conformance_run(router, "router", router.api_key if with_key else None, unavailable_expected=True)
    assert {"POST /update_regional_status", "GET /api/schema"} <= run.operations
    _assert_conforms(run)


@pytest.mark.django_db
@pytest.mark.parametrize("query, field", [("limit=abc", "limit"), ("limit=0", "limit"), ("limit=1001", "limit"),
                                          ("limit=null&limit=null", "limit"), ("cursor=%C3%97", "cursor")])
def test_list_query_outside_the_documented_one_is_a_400_naming_it(query, field):
    """Found by schemathesis: a page size it could not read gave the default page,
    a cursor it could not decode a 404; the schema promises a 400."""
    from rest_framework.test import APIClient

    from tests import factories

    _, key = factories.caller("lister")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for path in ("/api/v1/tasks", "/api/v1/agents"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, response.content)
        assert field in response.json()["fields"]
    assert client.get("/api/v1/tasks?limit=1000&cursor=").status_code == 200
