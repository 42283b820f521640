"""The credentials a region takes besides API keys: a registration token (an
agent joining) and an agent's own token (its claims, reports and dead letters,
for the agent named in the path only). API keys: project.accounts."""
from __future__ import annotations

from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import BasePermission

from project.accounts.authentication import AGENT_TOKEN, REGISTRATION_TOKEN, BearerAuthentication, Principal
from project.exceptions import credential_refusals
from regions.services.agent_auth import AgentCaller, agent_caller
from regions.services.agents.registry import agent_authenticate, registration_token_valid
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current


class RegistrationTokenAuthentication(BearerAuthentication):
    scheme = REGISTRATION_TOKEN

    def verify(self, raw, request):
        if not registration_token_valid(raw):
            raise AuthenticationFailed("A valid registration token is required (Authorization: Bearer …).")
        return Principal(), None


class AgentTokenAuthentication(BearerAuthentication):
    """The agent named by the path's agent_id, proven by its own token:
    another agent's token is a 403, an unknown agent a 404. On the task path
    (claims, reports) a token this web process verified is trusted within the
    revocation bound, without a database read (regions.services.agent_auth); a
    view that changes the registration itself (deregistration) sets
    `agent_token_checked = True` and the token is checked against the database
    every time, so a token replaced a moment ago elsewhere is already refused."""

    scheme = AGENT_TOKEN

    def verify(self, raw, request):
        agent_id = request.parser_context["kwargs"]["agent_id"]
        with credential_refusals():
            if getattr(request.parser_context["view"], "agent_token_checked", False):
                agent = agent_authenticate(agent_id=agent_id, raw_token=raw)
                return AgentCaller(agent_id=agent.agent_id, capabilities=list(agent.capabilities)), None
            return agent_caller(agent_id=agent_id, raw_token=raw), None


class AgentNotBlocklisted(BasePermission):
    """On the task path: an agent the configuration blocklists may not claim or report."""

    def has_permission(self, request, view) -> bool:
        config = config_current(max_age=HOT_PATH_CHECK_SECONDS)  # claims and reports are the task path
        if config.agent_blocked(request.user.agent_id):
            raise PermissionDenied(f"Agent {request.user.agent_id} is blocklisted by configuration "
                                   f"{config.sha[:12]}.")
        return True
