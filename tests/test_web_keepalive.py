"""The web keeps an idle connection open longer than the longest heartbeat
interval its region hands out: when gunicorn's keepalive and the interval were
both 5 s, an agent reused its connection just as the web closed it and about one
beat in 55 was lost to a reset (the agent's side: tests/agents/test_client.py)."""
import os
import re
import subprocess
import sys

import pytest
from django.test import override_settings

from regions.services.config.current import EffectiveConfig
from tests.harness import ROOT


def served_keepalive(env: dict[str, str]) -> int:
    """The keepalive gunicorn resolves from project/gunicorn_conf.py in this environment."""
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "project/gunicorn_conf.py", "--print-config"], cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", **env},
        capture_output=True, text=True, timeout=60, check=True)
    return int(re.search(r"^keepalive\s*=\s*(\d+)\s*$", out.stdout, re.M).group(1))


def longest_interval_handed_out(env: dict[str, str]) -> float:
    """The bounded-chatter rule's longest interval: what a fleet far over its budget gets."""
    with override_settings(**{name: float(value) for name, value in env.items()}):
        config = EffectiveConfig(sha="", content={})
        return max(config.heartbeat_timing(fleet).interval for fleet in (0, 10**9))


@pytest.mark.parametrize("env", [
    {},  # the defaults: 5 s, up to 60 s for a large fleet
    {"HEARTBEAT_INTERVAL": "5", "HEARTBEAT_INTERVAL_MAX": "5"},  # the interval that lost beats
    {"HEARTBEAT_INTERVAL": "2.5", "HEARTBEAT_INTERVAL_MAX": "120.5"},
    {"HEARTBEAT_INTERVAL": "90", "HEARTBEAT_INTERVAL_MAX": "30", "HEARTBEAT_BUDGET_PER_SECOND": "0"},
], ids=["defaults", "5s", "max-120.5s", "floor-90s"])
def test_the_web_keeps_idle_connections_longer_than_any_heartbeat_interval_it_hands_out(env):
    longest = longest_interval_handed_out(env)
    assert served_keepalive(env) >= longest + 5  # the margin for the agent's own delay between beats
