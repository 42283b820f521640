"""The agent's HTTP calls, one table for both sides.

The region builds its URL patterns from these (regions/api/urls.py, mounted at
REGION_API_ROOT by project/urls.py); the agent formats its requests from them
(agents/client.py). A route names the agent's id as ``{agent_id}``:
``HEARTBEAT.url(agent_id="a-1")`` is the path an agent posts to, and
``HEARTBEAT.url(agent_id="{agent_id}")`` the path as OpenAPI writes it.

The region's other agent routes (list, detail, drain, cordon, revoke) are its
API for people, not what an agent calls: they stay in regions/api/urls.py.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Where the region mounts its API (and with it every agent route).
REGION_API_ROOT = "api/v1/"


@dataclass(frozen=True)
class Endpoint:
    name: str  # the URL name on the serving side
    route: str  # below `root`, without a leading slash
    root: str = REGION_API_ROOT

    def url(self, **params: str) -> str:
        """The absolute path, with the route's parameters filled in."""
        return f"/{self.root}{self.route.format(**params)}"

    @functools.cached_property  # matched on every request the web serves (project/asgi.py)
    def pattern(self) -> str:
        """The absolute path as a regular expression (a parameter: anything but a slash)."""
        return re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(f"/{self.root}{self.route}"))

    def matches(self, path: str) -> bool:
        """Whether a request's path is this endpoint's."""
        return re.fullmatch(self.pattern, path) is not None


# Agent -> region, each with its own bearer credential (registration with the
# registration token, the rest with the agent's token).
HEARTBEAT = Endpoint("agent-heartbeat", "agents/{agent_id}/heartbeat")
REGISTER = Endpoint("agent-register", "agents/register")
CLAIM = Endpoint("agent-claim", "agents/{agent_id}/claim")
DEAD_LETTERS = Endpoint("agent-dead-letters", "agents/{agent_id}/dead-letters")
REPORT = Endpoint("agent-report", "agents/{agent_id}/report")
DEREGISTER = Endpoint("agent-deregister", "agents/{agent_id}/deregister")
AGENT_ENDPOINTS = (HEARTBEAT, REGISTER, CLAIM, DEAD_LETTERS, REPORT, DEREGISTER)

# Agent -> router: discovery, before the agent knows its region.
DISCOVER = Endpoint("register-agent", "register_agent", root="")

# In the router's discovery answer: a registration grant, signed by the router for
# the region it names and this agent id only (project/accounts/assertions.py), which
# the agent presents to that region as its registration token (minutes, then expired).
REGISTRATION_GRANT = "registration_grant"

# Sent with a registration, next to the registration token: the agent's current
# token, which proves it is the agent holding the id (re-registering an online
# agent's id without it is refused with 409).
AGENT_TOKEN_HEADER = "X-Agent-Token"
# The most task slots a heartbeat may say are busy ({"busy": n}, 0..MAX_BUSY):
# the region's view refuses more and the schema documents the bound.
MAX_BUSY = 100_000
