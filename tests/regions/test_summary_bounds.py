"""Agents choose their capability names: however many distinct ones the online
agents offer, the region's summary stays within what the router takes, so it is
never refused whole (and the region never goes stale at the router)."""
import logging

import pytest

from project.region_summary import MAX_CAPABILITIES
from regions.models import Agent
from regions.services import liveness
from regions.services.config.current import config_current
from regions.services.summary import region_summary_build
from router import inputs

pytestmark = pytest.mark.django_db


def online(agent_id: str, capabilities: list[str], busy: bool = False) -> Agent:
    return Agent.objects.create(agent_id=agent_id, capabilities=capabilities, busy=busy, token_hash=agent_id)


def test_capability_spam_is_cut_to_the_routers_bound_keeping_the_most_idle(caplog):
    # Six agents of 200 names each, as anyone holding a registration token may
    # register: 1,195 distinct names, past the router's 1,000.
    for i in range(5):
        online(f"idle{i}", ["echo"] + [f"spam_{i}_{j:03}" for j in range(199)])
    online("busy", ["echo"] + [f"busy_{j:03}" for j in range(199)], busy=True)
    config_current.cache_clear()
    with caplog.at_level(logging.WARNING, logger="regions.services.summary"):
        built = region_summary_build()

    caps = built["agent_capabilities_summary"]
    assert len(caps) == MAX_CAPABILITIES == inputs.MAX_CAPABILITIES
    assert caps["echo"] == {"count": 6, "idle": 5}  # most idle first
    assert all(f"spam_{i}_{j:03}" in caps for i in range(5) for j in range(199))
    assert sorted(name for name in caps if name.startswith("busy_")) == ["busy_000", "busy_001", "busy_002",
                                                                          "busy_003"]  # then by name
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "195 left out" in warnings[0] and "1195" in warnings[0], warnings
    assert len(inputs.summary_parse(built)["agent_capabilities_summary"]) == MAX_CAPABILITIES


def test_a_summary_within_the_bound_is_sent_whole_without_a_warning(caplog):
    online("a1", [f"cap_{j:03}" for j in range(200)])
    config_current.cache_clear()
    with caplog.at_level(logging.WARNING, logger="regions.services.summary"):
        built = region_summary_build()
    assert len(built["agent_capabilities_summary"]) == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_shorter_summary_interval_is_in_force_at_the_next_tick(redis_clean):
    """A push under a 60 s interval, then the configuration says 3 s: the next
    tick after 3 s pushes, not the one after 60 s (the demo's first summaries
    stalled for a minute behind such a mark)."""
    from regions.services.summary import _due

    assert _due(60.0) is True
    assert _due(60.0) is False
    assert _due(3.0) is True      # the mark was set for 60 s: shortened to 3 s
    assert _due(3.0) is False     # and it holds for those 3 s
    assert 0 < redis_clean.pttl(liveness.key("summary_due")) <= 3000
