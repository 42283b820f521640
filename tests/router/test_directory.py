"""The route directory at scale (issue 10): a summary replaces what routes, in
the process that took it at once and in the others by re-reading only what
changed; and the fast paths give what the general ones gave."""
import time

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings, strategies as st
from rest_framework import serializers

from router import inputs, selectors
from router.services.refusals import NoRegion, Stale
from router.services.regions import region_create
from router.services.routing import route
from router.services.summaries import summary_ingest
from router.models import Region

pytestmark = pytest.mark.django_db


def summary(region_id, caps, at=None, config="c1"):
    return {"region_id": region_id, "orchestrator_url": f"http://{region_id}.example:8000", "available_agents": 5,
            "agent_capabilities_summary": caps, "last_updated": at or time.time(), "config_version": config}


@pytest.fixture
def fleet():
    regions = {}
    for region_id, labels in [("r1", ["eu"]), ("r2", ["us"]), ("r3", ["eu"])]:
        regions[region_id], _ = region_create(region_id=region_id, labels=labels,
                                              orchestrator_url=f"http://{region_id}.example:8000")
    return regions


def push(fleet, region_id, caps, **extra):
    return summary_ingest(region=Region.objects.get(pk=fleet[region_id].pk),
                          summary=summary(region_id, caps, **extra))


def routed(capability, **extra):
    try:
        return [r["region_id"] for r in route(capability=capability, **extra).regions]
    except NoRegion:
        return []


def test_a_newer_summary_replaces_what_routes_in_this_process(fleet):
    push(fleet, "r1", {"echo": {"count": 5, "idle": 5}, "sleep": {"count": 1, "idle": 1}})
    push(fleet, "r2", {"echo": {"count": 5, "idle": 1}})
    assert routed("echo") == ["r1", "r2"]  # loads the directory
    push(fleet, "r2", {"echo": {"count": 9, "idle": 9}})
    assert routed("echo") == ["r2", "r1"]  # no wait: this process put it in its directory
    push(fleet, "r1", {"echo": {"count": 5, "idle": 5}})  # sleep removed
    assert routed("sleep") == []
    answer = route(capability="echo", residency="eu")
    assert [r["region_id"] for r in answer.regions] == ["r1"]
    assert answer.skipped == {"r2": "residency: not labelled eu", "r3": "stale: no summary for more than 3 intervals"}


def test_another_process_summary_is_seen_after_the_check_interval_rereading_only_that_region(
        fleet, monkeypatch, django_assert_max_num_queries, django_assert_num_queries):
    monkeypatch.setattr(selectors, "DIRECTORY_CHECK_SECONDS", 3600.0)  # "not yet", however slow the host
    for region_id in fleet:
        push(fleet, region_id, {"echo": {"count": 5, "idle": 2}})
    assert routed("echo") == ["r3", "r2", "r1"]  # equal idle: the freshest first
    with django_assert_num_queries(0):
        routed("echo")  # within the check interval: no query at all
    # Another process stores a summary for r1: only the database knows.
    Region.objects.filter(pk=fleet["r1"].pk).update(capabilities={"echo": {"count": 5, "idle": 4}},
                                                    received_at=timezone.now())
    assert routed("echo")[0] != "r1"  # not yet: checked at most every DIRECTORY_CHECK_SECONDS
    monkeypatch.setattr(selectors, "DIRECTORY_CHECK_SECONDS", 0.0)
    with django_assert_max_num_queries(3):  # the aggregate, the recent (id, received_at), the one changed row
        assert routed("echo")[0] == "r1"
    reread, entry = [], selectors.directory_entry
    monkeypatch.setattr(selectors, "directory_entry", lambda r: reread.append(r.region_id) or entry(r))
    Region.objects.filter(pk=fleet["r2"].pk).update(capabilities={}, received_at=timezone.now())
    assert routed("echo") == ["r1", "r3"]
    assert reread == ["r2"]  # r1 and r3 arrived within the look-back too, but did not change


def test_a_removed_or_disabled_region_stops_routing(fleet, monkeypatch):
    monkeypatch.setattr(selectors, "DIRECTORY_CHECK_SECONDS", 0.0)
    for region_id in fleet:
        push(fleet, region_id, {"echo": {"count": 5, "idle": 2}})
    assert set(routed("echo")) == {"r1", "r2", "r3"}
    Region.objects.filter(pk=fleet["r2"].pk).update(enabled=False)
    Region.objects.filter(pk=fleet["r3"].pk).delete()
    assert routed("echo") == ["r1"]


def test_the_replay_watermark_and_config_since_hold_with_the_single_update(fleet):
    at = time.time()
    region = push(fleet, "r1", {"echo": {"count": 1, "idle": 1}}, at=at)
    since = Region.objects.get(pk=region.pk).config_since
    assert since is not None
    with pytest.raises(Stale, match="not newer"):
        push(fleet, "r1", {}, at=at)
    assert routed("echo") == ["r1"]  # the refused one changed nothing
    push(fleet, "r1", {"echo": {"count": 1, "idle": 1}}, at=at + 1)
    assert Region.objects.get(pk=region.pk).config_since == since  # same commit: since unchanged
    push(fleet, "r1", {"echo": {"count": 1, "idle": 1}}, at=at + 2, config="c2")
    stored = Region.objects.get(pk=region.pk)
    assert stored.config_since > since and stored.config_version == "c2" and stored.last_updated.timestamp() == pytest.approx(at + 2)


def test_route_reads_stored_counts_as_capability_counts_does(fleet, monkeypatch, settings):
    """Rows that predate the bounds: route's inline reading clamps as the selector does
    (with no ceiling below the bounds: the ceiling's own test is below)."""
    monkeypatch.setattr(selectors, "DIRECTORY_CHECK_SECONDS", 0.0)
    settings.ROUTER_REGION_CEILING = inputs.MAX_AGENTS
    now = timezone.now()
    rows = {"r1": {"echo": {"count": 2 ** 40, "idle": -3}}, "r2": {"echo": {"count": True, "idle": 1}},
            "r3": {"echo": {"count": 4, "idle": 9}}}
    for region_id, caps in rows.items():
        Region.objects.filter(region_id=region_id).update(capabilities=caps, received_at=now)
    answer = route(capability="echo")
    got = {r["region_id"]: (r["count"], r["idle"]) for r in answer.regions}
    want = {rid: (c["count"], c["idle"]) for rid, caps in rows.items()
            if (c := selectors.capability_counts(caps, "echo")) and c["count"]}
    assert got == want == {"r1": (inputs.MAX_AGENTS, 0), "r3": (4, 4)}
    assert answer.skipped == {"r2": "no agent serves echo"}


def _slow(data):
    """The serializer's own reading, without the fast path."""
    return {name: dict(c) for name, c in serializers.DictField.to_internal_value(inputs.CapabilitiesField(), data)
            .items()}


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.fixed_dictionaries(
    {"count": st.integers(0, inputs.MAX_AGENTS), "idle": st.integers(0, inputs.MAX_AGENTS)},
    optional={"extra": st.integers()}).map(lambda d: {**d, "idle": min(d["idle"], d["count"])}), max_size=20))
def test_well_formed_capabilities_read_the_same_by_the_fast_path(caps):
    assert inputs._plain_counts(caps) == _slow(caps)
    assert inputs.CapabilitiesField().run_validation(caps) == _slow(caps)


@pytest.mark.parametrize("caps", [{"echo": {"count": 1}}, {"echo": {"count": 1, "idle": 2}},
                                  {"echo": {"count": "3", "idle": 1}}, {"echo": {"count": True, "idle": 0}},
                                  {"echo": {"count": inputs.MAX_AGENTS + 1, "idle": 0}}, {"echo": [1]}])
def test_anything_else_goes_through_the_serializer(caps):
    assert inputs._plain_counts(caps) is None
    if caps == {"echo": {"count": "3", "idle": 1}}:
        assert inputs.CapabilitiesField().run_validation(caps) == {"echo": {"count": 3, "idle": 1}}  # as before
    else:
        with pytest.raises(serializers.ValidationError):
            inputs.CapabilitiesField().run_validation(caps)


def test_a_region_cannot_attract_more_than_its_operator_set_ceiling_allows(fleet, settings):
    """A region token reported 1,000,000 idle agents (inside the summary's bounds)
    and won every unpinned task and agent."""
    from router.services.regions import region_update
    from router.services.routing import region_pick

    settings.ROUTER_REGION_CEILING = 500
    push(fleet, "r1", {"echo": {"count": inputs.MAX_AGENTS, "idle": inputs.MAX_AGENTS}})  # the liar
    push(fleet, "r2", {"echo": {"count": 300, "idle": 300}})
    push(fleet, "r3", {"echo": {"count": 400, "idle": 400}})
    answer = route(capability="echo")
    assert [r["region_id"] for r in answer.regions] == ["r1", "r3", "r2"]  # held to the default ceiling, 500
    assert answer.regions[0]["idle"] == 500 and answer.regions[0]["count"] == 500
    region_update(region_id="r1", orchestrator_url="http://r1.example:8000", labels=["eu"], enabled=True,
                  capacity_ceiling=100, weight=1.0)
    assert routed("echo") == ["r3", "r2", "r1"]
    region_update(region_id="r3", orchestrator_url="http://r3.example:8000", labels=["eu"], enabled=True,
                  capacity_ceiling=None, weight=0.5)  # 400 x 0.5 ranks below r2's 300
    assert routed("echo") == ["r2", "r3", "r1"]
    assert region_pick(capabilities=["echo"], hint=None, client_ip=None, allowed=None).region_id == "r2"
    region_update(region_id="r2", orchestrator_url="http://r2.example:8000", labels=["us"], enabled=True,
                  capacity_ceiling=None, weight=0)  # chosen only when no other region serves
    push(fleet, "r1", {"echo": {"count": 100, "idle": 0}})
    assert routed("echo") == ["r3", "r1", "r2"]
    assert region_pick(capabilities=["echo"], hint=None, client_ip=None, allowed=None).region_id == "r3"
    region_create(region_id="r1", orchestrator_url="http://r1.example:8000", labels=["eu"])  # a re-key
    assert Region.objects.get(region_id="r1").capacity_ceiling == 100  # keeps the operator's hold


# --- the per-capability index (issue 21) ------------------------------------------------

def _brute_force(capability, residency=None):
    """What a route over every region says, without the index: the regions that
    serve, and why each other region was passed over (route's reasons, in its order)."""
    now = timezone.now()
    served, skipped = set(), {}
    for entry in selectors.Directory.of({r.pk: selectors.directory_entry(r)
                                         for r in Region.objects.filter(enabled=True)}).entries:
        region_id = entry.region.region_id
        counts = selectors.capability_counts(entry.caps, capability)
        if entry.stale(now):
            skipped[region_id] = "stale: no summary for more than 3 intervals"
        elif residency and residency not in entry.region.labels:
            skipped[region_id] = f"residency: not labelled {residency}"
        elif counts and counts["count"] > 0:
            served.add(region_id)
        else:
            skipped[region_id] = f"no agent serves {capability}"
    return served, skipped


CAPS = ("echo", "sleep", "resize", "ocr")


# One fleet for every example (each goes on from where the last left it): the claims hold after any change.
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]),
                          st.dictionaries(st.sampled_from(CAPS), st.integers(0, 3), max_size=4)),
                min_size=1, max_size=12))
def test_the_capability_index_answers_as_a_pass_over_every_region(fleet_for_hypothesis, changes):
    """Summaries that add and drop capabilities, in this process and (a row
    written behind the directory's back) in another: every route and every
    skipped reason is what a pass over every region gives."""
    fleet, clock = fleet_for_hypothesis
    for i, (region_id, caps) in enumerate(changes):
        counts = {name: {"count": n, "idle": n} for name, n in caps.items()}
        if i % 3 == 2:  # another process's summary: read back on the next check
            Region.objects.filter(region_id=region_id).update(capabilities=counts, received_at=timezone.now())
            selectors._cache["checked"] = -float("inf")
        else:
            clock[0] += 1
            push(fleet, region_id, counts, at=clock[0])
        for capability in CAPS:
            for residency in (None, "eu"):
                served, skipped = _brute_force(capability, residency)
                try:
                    answer = route(capability=capability, residency=residency, count=3)
                except NoRegion as refused:
                    assert not served and refused.extra["skipped"] == skipped
                    continue
                assert {r["region_id"] for r in answer.regions} == served
                assert answer.skipped == skipped
                assert answer.skipped_first(1) == (dict(list(skipped.items())[:1]), len(skipped))


@pytest.fixture
def fleet_for_hypothesis(fleet):
    """The fleet, summarized once (no region stale), with a summary clock that only moves forward."""
    clock = [time.time()]
    for region_id in fleet:
        clock[0] += 1
        push(fleet, region_id, {}, at=clock[0])
    return fleet, clock


def test_a_route_reads_only_the_regions_that_name_the_capability(fleet, monkeypatch):
    push(fleet, "r1", {"echo": {"count": 1, "idle": 1}})
    push(fleet, "r2", {"sleep": {"count": 1, "idle": 1}})
    push(fleet, "r3", {"sleep": {"count": 2, "idle": 2}})
    route(capability="echo")  # the directory loaded
    snapshot = selectors.directory()
    assert snapshot.serving == {"echo": (fleet["r1"].pk,), "sleep": (fleet["r2"].pk, fleet["r3"].pk)}
    push(fleet, "r2", {"sleep": {"count": 3, "idle": 3}})  # the same capabilities: the index is kept as it was
    assert selectors.directory().serving is snapshot.serving
    push(fleet, "r1", {"sleep": {"count": 1, "idle": 1}})  # echo dropped, sleep added
    assert selectors.directory().serving == {"sleep": (fleet["r1"].pk, fleet["r2"].pk, fleet["r3"].pk)}
