"""Property tests of the router's parsers: any JSON value a region or a caller
can send gives either bounded data or a clean validation error, never another
exception; and the readers hold any stored value to the same bounds."""
import json
import math
import re
import time
from datetime import datetime, timezone as dt_timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from router import inputs, selectors
from router.services.refusals import NoRegion
from router.services.regions import region_create
from router.services.routing import route

NOW = 1_800_000_000.0
# Bounded so the suite stays fast; no example database written to the work tree.
BOUNDED = settings(max_examples=200, deadline=None, database=None)

# Text as JSON can carry it: NUL, control characters and lone surrogates included.
text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)
# Numbers as the JSON parser returns them: huge integers, and "1e400" reads as inf.
numbers = st.integers() | st.floats(allow_nan=False) | st.sampled_from([1e308, -1e308, 2 ** 40, 2 ** 64, 1e20])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
counts = st.integers(min_value=-2, max_value=inputs.MAX_AGENTS + 2) | numbers


def mostly(valid, other=json_values):
    """Seven times in eight a valid value, else any other: a summary with one
    bad field reaches the parser's later checks, not only its first."""
    return st.integers(min_value=0, max_value=7).flatmap(lambda n: other if n == 0 else valid)


capability_names = mostly(st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True), text)
capability_counts = st.integers(min_value=0, max_value=inputs.MAX_AGENTS).flatmap(
    lambda count: st.fixed_dictionaries({"count": st.just(count), "idle": st.integers(min_value=0, max_value=count)}))
capabilities = mostly(st.dictionaries(
    capability_names, mostly(capability_counts, st.fixed_dictionaries({"count": counts, "idle": counts}) | json_values),
    max_size=4))
skew = inputs.DEFAULT_MAX_SKEW_SECONDS
summaries = st.fixed_dictionaries(
    {
        "region_id": mostly(st.just("eu-west-3"), text | json_values),
        "orchestrator_url": mostly(st.just("http://eu-west-3.example:8000"),
                                   text.map(lambda t: "http://" + t) | json_values),
        "available_agents": mostly(st.integers(min_value=0, max_value=inputs.MAX_AGENTS), counts | json_values),
        "agent_capabilities_summary": capabilities,
        "last_updated": mostly(st.floats(min_value=NOW - 3600, max_value=NOW + 2 * skew),
                               st.floats(min_value=-1) | numbers | json_values),
    },
    optional={
        "config_version": mostly(st.text(alphabet="0123456789abcdef", max_size=64), text | json_values),
        "schema_version": mostly(st.just(1), st.integers(min_value=-1, max_value=3) | json_values),
        "summary_interval": mostly(st.floats(min_value=inputs.MIN_SUMMARY_INTERVAL,
                                             max_value=inputs.MAX_SUMMARY_INTERVAL), numbers | json_values),
    },
)


def assert_renderable(value):
    """What the router would answer or store encodes as UTF-8 JSON."""
    JSONRenderer().render(value)


def assert_clean_error(exc: ValidationError):
    assert exc.detail
    assert_renderable({"error": "invalid", "fields": exc.detail})


def assert_bounded_summary(s: dict):
    assert isinstance(s["region_id"], str) and 1 <= len(s["region_id"]) <= 64
    assert len(s["orchestrator_url"]) <= inputs.MAX_URL_LENGTH and inputs.orchestrator_url(s["orchestrator_url"])
    assert type(s["available_agents"]) is int and 0 <= s["available_agents"] <= inputs.MAX_AGENTS
    caps = s["agent_capabilities_summary"]
    assert isinstance(caps, dict) and len(caps) <= inputs.MAX_CAPABILITIES
    for name, entry in caps.items():
        assert inputs.capability_name(name)
        assert set(entry) == {"count", "idle"}
        assert type(entry["count"]) is int and type(entry["idle"]) is int
        assert 0 <= entry["idle"] <= entry["count"] <= inputs.MAX_AGENTS
    assert isinstance(s["last_updated"], float) and 0 <= s["last_updated"] <= NOW + inputs.max_skew_seconds()
    datetime.fromtimestamp(s["last_updated"], tz=dt_timezone.utc)
    assert isinstance(s["config_version"], str) and len(s["config_version"]) <= inputs.MAX_CONFIG_VERSION_LENGTH
    assert s["config_version"].isprintable()
    assert s["schema_version"] == inputs.SCHEMA_VERSION
    if "summary_interval" in s:
        assert inputs.MIN_SUMMARY_INTERVAL <= s["summary_interval"] <= inputs.MAX_SUMMARY_INTERVAL
    assert_renderable(s)


@BOUNDED
@given(json_values)
def test_any_json_value_is_a_bounded_summary_or_a_clean_error(body):
    try:
        summary = inputs.summary_parse(body, now=NOW)
    except ValidationError as exc:
        assert_clean_error(exc)
    else:
        assert_bounded_summary(summary)


@BOUNDED
@given(summaries)
def test_any_near_summary_is_a_bounded_summary_or_a_clean_error(body):
    try:
        summary = inputs.summary_parse(body, now=NOW)
    except ValidationError as exc:
        assert_clean_error(exc)
    else:
        assert_bounded_summary(summary)


@BOUNDED
@given(json_values | st.fixed_dictionaries({}, optional={
    "capability": mostly(capability_names), "residency": mostly(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}",
                                                                                 fullmatch=True), text),
    "region": mostly(st.from_regex(r"[-a-zA-Z0-9_]{1,64}", fullmatch=True), text | json_values),
    "payload": json_values}))
def test_any_task_body_gives_its_routing_head_or_a_clean_error(body):
    try:
        head = inputs.task_forward_parse(body)
    except ValidationError as exc:
        assert_clean_error(exc)
    else:
        assert set(head) == {"capability", "residency", "region"}
        assert inputs.capability_name(head["capability"])
        assert head["residency"] is None or inputs.label_name(head["residency"])
        assert head["region"] is None or re.fullmatch(r"[-a-zA-Z0-9_]{1,64}", head["region"])


@BOUNDED
@given(capabilities, json_values, json_values | st.floats())
def test_readers_hold_any_stored_value_to_the_bounds(caps, labels, interval):
    clean = selectors.region_capabilities(caps)
    assert len(clean) <= inputs.MAX_CAPABILITIES
    for name, entry in clean.items():
        assert inputs.capability_name(name) and 0 <= entry["idle"] <= entry["count"] <= inputs.MAX_AGENTS
    assert all(inputs.label_name(label) for label in selectors.region_labels(labels))
    value = selectors.region_interval(interval)
    assert inputs.MIN_SUMMARY_INTERVAL <= value <= inputs.MAX_SUMMARY_INTERVAL and not math.isnan(value)
    allowed = selectors.region_allowed(labels)
    assert allowed is None or all(isinstance(name, str) for name in allowed)


@pytest.mark.django_db
@pytest.mark.urls("tests.router_urls")
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=summaries)
def test_any_summary_through_the_api_is_answered_in_json_and_leaves_reads_working(body):
    region, token = region_create(region_id="eu-west-3", orchestrator_url="http://eu-west-3.example:8000",
                                  token="mrg_property")
    region.last_updated = None
    region.save(update_fields=["last_updated"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    if isinstance(body.get("last_updated"), float) and body["last_updated"] >= NOW - 1:
        body = {**body, "last_updated": time.time() + body["last_updated"] - NOW}  # the same skew, today
    r = client.post("/update_regional_status", json.dumps(body), content_type="application/json")
    assert r.status_code in (200, 400, 403), r.content[:300]
    r.json()
    for region in selectors.region_list():
        assert_renderable({"capabilities": region.capabilities, "labels": region.labels,
                           **selectors.region_health(region)})
    caps = body.get("agent_capabilities_summary")
    for capability in ["echo", *(caps if isinstance(caps, dict) else [])][:3]:
        if inputs.capability_name(capability):
            try:
                route(capability=capability)
            except NoRegion:
                pass


# A route query's fast path (router/views.py) reads what the serializer reads, or leaves it to the serializer.
ROUTE_QUERY_VALUES = {
    "capability": st.sampled_from(["echo", "e", "a" * 64, "a" * 65, " echo", "echo\n", "Echo", ""]) | text,
    "residency": st.sampled_from(["eu", "eu-west", "-eu", "EU", " eu", ""]) | text,
    "count": st.integers(-5, 120).map(str) | st.sampled_from(["03", "1.0", "\u00b3", " 3", "3\n", ""]) | text,
    "other": text,
}


@BOUNDED
@given(st.fixed_dictionaries({}, optional={name: st.lists(values, min_size=1, max_size=2)
                                           for name, values in ROUTE_QUERY_VALUES.items()}))
def test_a_plain_route_query_reads_as_the_serializer_reads_it(fields):
    from django.http import QueryDict

    from router.views import RouteApi, _route_query_plain

    params = QueryDict(mutable=True)
    for name, values in fields.items():
        params.setlist(name, values)
    plain = _route_query_plain(params)
    serializer = RouteApi.QuerySerializer(data=params)
    if plain is not None:
        assert serializer.is_valid(), (params, serializer.errors)
        assert plain == dict(serializer.validated_data)
