"""Property tests of the region's parsers of outside input: heartbeat bodies,
task submissions, outcome reports, messages on the wire and configuration
YAML. Any input gives a bounded value or a clean refusal, never another
exception (and, through the API, never a 5xx)."""
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from rest_framework.test import APIClient

from project.jsonsafe import MAX_DEPTH, json_problem
from wire.consumer import bounded_json_loads
from wire.endpoints import MAX_BUSY
from kombu.exceptions import DecodeError
from regions.api.views.agents import HeartbeatBodyInvalid, heartbeat_busy
from regions.services.config.parse import ConfigError, config_parse
from regions.services.reports import OutcomeInvalid, outcome_clean
from tests import factories

BOUNDED = settings(max_examples=200, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)
numbers = st.integers() | st.floats() | st.sampled_from([1e308, -1e308, 2 ** 40, 2 ** 64, 10 ** 30])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=16,
)
raw_bodies = st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()) | \
    st.integers(min_value=0, max_value=3000).map(lambda n: b"[" * n + b"]" * n)


@BOUNDED
@given(raw_bodies | st.fixed_dictionaries({"busy": json_values | numbers}).map(
    lambda v: json.dumps(v, allow_nan=True).encode()))
def test_heartbeat_body_is_a_bounded_busy_or_a_clean_refusal(raw):
    try:
        busy = heartbeat_busy(raw)
    except HeartbeatBodyInvalid as exc:
        assert str(exc)
    else:
        assert isinstance(busy, int) and not isinstance(busy, bool) and 0 <= busy <= MAX_BUSY


@BOUNDED
@given(json_values)
def test_outcome_bodies_are_storable_or_refused(body):
    for kind in ("success", "failure"):
        try:
            clean = outcome_clean(kind=kind, body=body)
        except OutcomeInvalid as exc:
            assert str(exc)
        else:
            assert json_problem(clean) is None


@BOUNDED
@given(raw_bodies)
def test_wire_messages_decode_bounded_or_not_at_all(raw):
    try:
        value = bounded_json_loads(raw)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert json_problem(value, max_depth=MAX_DEPTH + 8) is None


def _submissions():
    task_fields = st.fixed_dictionaries({"capability": st.sampled_from(["echo", "sleep"]) | text}, optional={
        "payload": json_values, "priority": json_values, "timeout": json_values, "max_attempts": json_values,
        "idempotency_key": text, "target_agent": text,
    })
    return (task_fields | json_values).map(lambda v: json.dumps(v, allow_nan=True).encode()) | raw_bodies


@pytest.fixture
def api(redis_clean):
    # Function-scoped, shared by every example of a test: only a key, no state the examples depend on.
    _, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.mark.django_db
@BOUNDED
@given(body=_submissions())
def test_task_submission_answers_201_200_or_a_4xx_json_never_a_5xx(api, body):
    response = api.generic("POST", "/api/v1/tasks", body, content_type="application/json")
    assert response.status_code in (200, 201, 400, 403, 409, 413, 429), (response.status_code, body[:200])
    assert response["Content-Type"].startswith("application/json")
    if response.status_code == 201:
        assert json_problem(response.json()["payload"]) is None


yaml_scalars = st.none() | st.booleans() | numbers | text
yaml_values = st.recursive(yaml_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(["schema_version", "agents", "tasks", "secrets", "blocklist", "summary_interval",
                     "heartbeat_interval", "heartbeat_ttl", "timeout", "echo", "ref", "hosts"]) | text, c,
    max_size=4), max_leaves=16)
yaml_texts = text | yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)) | st.sampled_from([
    "a: &a [1, 2]\nb: *a\n",
    "a: &a ['x','x']\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: [*c,*c]\n",
    "when: 2026-11-29\n", "? [1, 2]\n: x\n", "bin: !!binary aGVsbG8=\n", "x: !!python/object:os.system {}\n",
    "[" * 5000 + "]" * 5000, "schema_version: 1\nagents: {heartbeat_interval: .nan}\n",
])


@pytest.mark.django_db
@BOUNDED
@given(yaml_texts, yaml_texts)
def test_configuration_yaml_is_a_valid_config_or_a_config_error(global_text, region_text):
    try:
        merged = config_parse({"global.yaml": global_text, "regions/unit-1.yaml": region_text})
    except ConfigError as exc:
        assert str(exc).startswith(("global.yaml", "regions/unit-1.yaml")), str(exc)
    else:
        assert isinstance(merged, dict) and json_problem(merged) is None


@pytest.mark.django_db
@pytest.mark.parametrize("text,words", [
    ("a: &a ['x','x']\nb: &b [*a,*a]\nc: [*b,*b]\n", "aliases"),
    ("schema_version: 1\nwhen: 2026-11-29\n", "date is not a JSON value"),
    ("[" * 5000 + "]" * 5000, "global.yaml"),
    ("x: " + "y" * (1024 * 1024 + 1), "larger than"),
])
def test_hostile_configuration_files_are_refused_with_the_reason(text, words):
    with pytest.raises(ConfigError, match=words):
        config_parse({"global.yaml": text})
